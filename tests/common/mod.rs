//! Shared set-up for the pipeline tests: the simulator on loopback, a station config written
//! to a temp dir with its secret files, and payload builders.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tapgate::cpm::build::{payload, PayloadSpec};
use tapgate::sim::{SimConfig, SimHandle, Simulator};

/// The demo station's config, pointed at `base_url`, with its journal and secrets in `dir`.
/// `extra_policy` lines replace or add `[policy]` keys; `extra_toml` is appended (whole sections).
pub fn station_config(dir: &Path, base_url: &str, extra_policy: &str, extra_toml: &str) -> PathBuf {
    std::fs::write(dir.join("client-secret"), tapgate::sim::DEMO_CLIENT_SECRET).unwrap();
    std::fs::write(
        dir.join("private-key.pem"),
        tapgate::sim::DEMO_PRIVATE_KEY_PEM,
    )
    .unwrap();
    let demo = include_str!("../../config/demo.toml");
    let mut text = demo
        .replace(
            "base_url = \"http://127.0.0.1:8600\"",
            &format!("base_url = \"{base_url}\""),
        )
        .replace(
            "path = \"demo-journal.db\"",
            &format!("path = {:?}", dir.join("journal.db")),
        )
        .replace(
            "client_secret_file = \"demo-client-secret\"",
            "client_secret_file = \"client-secret\"",
        )
        .replace(
            "private_key_file = \"demo-private-key.pem\"",
            "private_key_file = \"private-key.pem\"",
        );
    if !extra_policy.is_empty() {
        text = text.replace("[policy]\n", &format!("[policy]\n{extra_policy}\n"));
        // A key given in `extra_policy` replaces the demo's own line.
        for line in extra_policy.lines() {
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                let demo_line = demo.lines().find(|l| l.starts_with(&format!("{key} =")));
                if let Some(l) = demo_line {
                    text = text.replacen(&format!("{l}\n"), "", 1);
                }
            }
        }
    }
    text.push('\n');
    text.push_str(extra_toml);
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the simulator with the demo partner on an ephemeral loopback port.
pub async fn start_sim() -> SimHandle {
    Simulator::start(SimConfig::demo(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

/// A fresh payload (new issuer token) for `pan`.
pub fn tap_payload(pan: &str) -> String {
    payload(&PayloadSpec::new(pan).with_token(&rand::random::<[u8; 16]>()))
}

/// `tapgate tap --config CONFIG --lane LANE PAYLOAD`, ready for more environment or a
/// working directory before it is run.
pub fn tap_command(config: &Path, lane: &str, payload: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tapgate"));
    cmd.args(["tap", "--config"])
        .arg(config)
        .args(["--lane", lane, payload]);
    cmd
}

/// The decoded bytes of every payload in `tests/fixtures/cpm-payloads.json`.
pub fn fixture_payloads() -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let raw = std::fs::read_to_string("tests/fixtures/cpm-payloads.json").unwrap();
    let cases: serde_json::Value = serde_json::from_str(&raw).unwrap();
    cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c["payload"].as_str().unwrap())
                .unwrap()
        })
        .collect()
}

/// The `[reconciler]` section tests use: fast retries, no grace for "not found".
pub const FAST_RECONCILER: &str = "[reconciler]\nbackoff_base_ms = 20\nbackoff_cap_ms = 200\nnot_found_after_seconds = 0\ninterval_ms = 50\n";

/// Starts the simulator with the demo partner and `edit` applied to its config.
pub async fn start_sim_with(edit: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::demo();
    edit(&mut cfg);
    Simulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

/// Runs `tapgate reconcile` to the end; panics unless every operation ends final.
pub fn reconcile(config: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["reconcile", "--max-seconds", "60", "--config"])
        .arg(config)
        .output()
        .expect("run tapgate reconcile");
    assert!(
        out.status.success(),
        "reconcile left work: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every row of the journal at `dir/journal.db`.
pub fn journal_rows(dir: &Path) -> Vec<tapgate::journal::OpRow> {
    tapgate::journal::Journal::open_read_only(&dir.join("journal.db"))
        .and_then(|j| j.export(0))
        .expect("journal readable")
}

/// SplitMix64: tiny, seedable, and stable across crate versions (unlike a library RNG whose
/// stream may change), so a seed replays the same run forever.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }

    /// True with `percent` % probability.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Late replies journaled, then the reconciler until every operation is final (20 s at most).
pub async fn settle(station: &std::sync::Arc<tapgate::daemon::Station>) {
    station.drain().await;
    let left = tapgate::daemon::reconcile::Reconciler::new(station.clone())
        .run_until_settled(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(left, 0, "operations left non-final");
}

/// The station's journal and the simulator's ledger tell the same story, and the simulator
/// saw no protocol violation.
pub async fn assert_books_agree(station: &tapgate::daemon::Station, sim: &SimHandle) {
    let rows = station.journal.run(|j| j.export(0)).await.unwrap();
    let mismatches = tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert_eq!(sim.stats().protocol_violations(), 0);
}
