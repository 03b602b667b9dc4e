//! A gate selling QRs, for the QR tiers: `tapgate run` (a real process) on the demo station
//! with its passenger display and `[qr]` on `out-1`, against an in-process simulator; the
//! passenger's wallet as `tapgate sim pay-qr` (a real process); and the books compared.

// Each tier that includes this module uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tapgate::fare::OpState;
use tapgate::journal::{Channel, OpRow};
use tapgate::sim::mpm::MpmEntry;
use tapgate::sim::SimHandle;

use crate::common;

/// The exit lane that sells QRs.
pub const LANE: &str = "out-1";
/// The demo line's unknown-entry fare at BLM: the highest fare on the line.
pub const FARE: u64 = 14_000;

/// One gate controller: its temp dir (config, journal, log), display and daemon process.
pub struct Gate {
    dir: tempfile::TempDir,
    /// The station config.
    pub cfg: PathBuf,
    /// The display's base URL.
    pub display: String,
    child: Option<Child>,
}

impl Gate {
    /// The demo station with a display on a free port and `[qr]` on `out-1`; `notify` sends
    /// the display's notification URL as `callback_url`.
    pub fn new(sim: &SimHandle, validity_s: u64, poll_ms: u64, notify: bool) -> Gate {
        let dir = tempfile::tempdir().expect("dir");
        let port = free_port();
        let callback = if notify {
            format!("callback_url = \"http://127.0.0.1:{port}/v1.0/qr/qr-mpm-notify\"\n")
        } else {
            String::new()
        };
        let extra = format!(
            "[display]\nlisten = \"127.0.0.1:{port}\"\n\n[qr]\nlanes = [\"{LANE}\"]\n\
             validity_seconds = {validity_s}\npoll_ms = {poll_ms}\nlate_payment_seconds = 60\n\
             {callback}\n{}",
            common::FAST_RECONCILER
        );
        let cfg = common::station_config(dir.path(), &sim.base_url(), "", &extra);
        Gate {
            dir,
            cfg,
            display: format!("http://127.0.0.1:{port}"),
            child: None,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Starts `tapgate run` and waits until its QR desk takes requests.
    pub async fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_tapgate"))
            .args(["run", "--config"])
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("daemon.log")).expect("log"))
            .spawn()
            .expect("tapgate run");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok(r) = client().get(format!("{}/", self.display)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the display never answered; log:\n{}", self.log());
    }

    /// A passenger touches "pay by QR": `202` once the desk is attached.
    pub async fn ask_for_qr(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client()
                .post(format!("{}/lane/{LANE}/qr", self.display))
                .send()
                .await
                .expect("post");
            if r.status().as_u16() == 202 {
                return;
            }
            assert!(
                r.status().as_u16() == 503 && Instant::now() < until,
                "QR request refused: {} {}; log:\n{}",
                r.status(),
                r.text().await.unwrap_or_default(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn cancel(&self) {
        let r = client()
            .post(format!("{}/lane/{LANE}/qr/cancel", self.display))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 202, "cancel");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn sales(&self) -> Vec<OpRow> {
        common::journal_rows(self.dir.path())
            .into_iter()
            .filter(|r| r.channel == Channel::Mpm)
            .collect()
    }

    /// Waits until the one QR sale satisfies `done`.
    pub async fn sale_until(&self, within: Duration, done: impl Fn(&OpRow) -> bool) -> OpRow {
        let until = Instant::now() + within;
        loop {
            let sales = self.sales();
            if let [one] = &sales[..] {
                if done(one) {
                    return one.clone();
                }
            }
            assert!(
                Instant::now() < until,
                "sale never got there: {sales:#?}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The one QR the simulator generated, once there is one.
pub async fn the_qr(sim: &SimHandle) -> MpmEntry {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let [one] = &sim.mpm_ledger().qrs[..] {
            return one.clone();
        }
        assert!(Instant::now() < until, "no QR generated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gate with a QR on its screen: started with [`Gate::new`]'s settings, a passenger asked
/// for the QR, the aggregator generated it and the journal holds its reference. Returns the
/// gate, the QR and the wallet's balance before it.
pub async fn qr_on_screen(
    sim: &SimHandle,
    validity_s: u64,
    poll_ms: u64,
    notify: bool,
) -> (Gate, MpmEntry, u64) {
    let mut gate = Gate::new(sim, validity_s, poll_ms, notify);
    gate.start().await;
    let before = balance(sim);
    gate.ask_for_qr().await;
    let qr = the_qr(sim).await;
    let shown = gate
        .sale_until(Duration::from_secs(5), |r| r.reference_no.is_some())
        .await;
    assert_eq!(shown.state, OpState::Unknown, "on screen, not yet paid");
    assert_eq!(shown.gate_opened, None);
    (gate, qr, before)
}

/// `tapgate sim pay-qr`: the passenger's wallet pays the QR over Linkage. Returns whether it
/// was paid.
pub fn pay(sim: &SimHandle, qr_content: &str) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["sim", "pay-qr", "--url", &sim.base_url(), qr_content])
        .output()
        .expect("tapgate sim pay-qr");
    eprintln!(
        "pay-qr: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

/// The demo customer's balance (the wallet `tapgate sim pay-qr` pays with by default).
pub fn balance(sim: &SimHandle) -> u64 {
    sim.customer(tapgate::sim::linkage::DEMO_CUSTOMER_ID)
        .expect("the demo customer")
        .balance
}

/// The journal's QR sales and the simulator's QR ledger tell the same story (see
/// `compare_qr_sales`): each sale's amount is its QR's; a sale the gate opened for is paid
/// and not refunded; a refunded sale was refunded exactly once, in full.
pub fn assert_books_agree(gate: &Gate, sim: &SimHandle) {
    let sales = gate.sales();
    assert!(!sales.is_empty());
    let mismatches = tapgate::cmd::audit::compare_qr_sales(&sim.mpm_ledger(), &sales);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    for op in &sales {
        assert_eq!(op.state == OpState::Succeeded, op.gate_opened == Some(true));
    }
}
