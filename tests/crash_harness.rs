//! The crash-consistency harness: real `tapgate tap` and `tapgate reconcile` processes against
//! the simulator with seeded random faults on payments, queries and refunds, SIGKILLed at
//! random moments, then reconciled to the end. Checks, over the journal and the ledger:
//! nobody is charged twice for one tap, every hold whose gate did not open is refunded, every
//! operation is final (or in ATTENTION with a reason), and every amount agrees.
//!
//! CI runs at least 100 kills. For the long run (figures for thousands):
//! `TAPGATE_CRASH_KILLS=2000 cargo test --release --test crash_harness -- --nocapture`
//! (`TAPGATE_CRASH_SEED` picks another seed).

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tapgate::cmd::audit::compare_with_journal;
use tapgate::fare::OpState;
use tapgate::sim::{FaultMix, Service};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kills `child` after `delay` if it is still running; returns whether it was killed.
fn kill_after(mut child: Child, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_harness() {
    let kills_wanted = env_u64("TAPGATE_CRASH_KILLS", 100);
    let seed = env_u64("TAPGATE_CRASH_SEED", 0x7A96_A7E5);
    let started = Instant::now();
    let sim = common::start_sim_with(|c| c.pending_ms = 300).await;
    let mut mix = FaultMix::chaos(0.35, 1200);
    mix.services = vec![Service::Payment, Service::Query, Service::Refund];
    sim.set_random_faults(seed, mix);
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(
        dir.path(),
        &sim.base_url(),
        "decision_deadline_ms = 600\ndebounce_ms = 0\nanti_passback = \"close_at_max_fare\"",
        // "Not found" only counts once nothing can still be in flight: the simulator delays
        // some requests by 1.2 s before applying them.
        &common::FAST_RECONCILER
            .replace("not_found_after_seconds = 0", "not_found_after_seconds = 3"),
    );
    let bin = env!("CARGO_BIN_EXE_tapgate");
    let pans: Vec<String> = (0..12)
        .map(|i| {
            format!(
                "93600{:03}{:011}",
                [2, 8, 9, 14, 914, 915, 918, 912][i % 8],
                1000 + i
            )
        })
        .collect();

    let mut rng = common::SplitMix(seed);
    let (mut taps, mut tap_kills, mut rec_kills, mut runs) = (0u64, 0u64, 0u64, 0u64);
    let budget = Duration::from_secs(env_u64("TAPGATE_CRASH_SECONDS", 300));
    while tap_kills + rec_kills < kills_wanted && started.elapsed() < budget {
        runs += 1;
        if runs % 8 == 0 {
            let child = Command::new(bin)
                .args(["reconcile", "--max-seconds", "2", "--config"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if kill_after(child, Duration::from_millis(rng.below(300) as u64)) {
                rec_kills += 1;
            }
            continue;
        }
        let pan = &pans[rng.below(pans.len())];
        let lane = if rng.chance(50) { "in-1" } else { "out-1" };
        let child = Command::new(bin)
            .args(["tap", "--config"])
            .arg(&cfg)
            .args(["--lane", lane, &common::tap_payload(pan)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        taps += 1;
        if rng.chance(70) {
            // Mostly early, where the work is: start-up, journal, request, reply, relay.
            let ms: usize = if rng.chance(70) {
                rng.below(40)
            } else {
                rng.below(900)
            };
            if kill_after(child, Duration::from_millis(ms as u64)) {
                tap_kills += 1;
            }
        } else {
            kill_after(child, Duration::from_secs(30));
        }
    }
    let kills = tap_kills + rec_kills;
    assert!(
        kills >= kills_wanted,
        "only {kills} kills in {:?}",
        started.elapsed()
    );

    // The aggregator recovers; the reconciler finishes the work.
    sim.clear_faults();
    let settle = Instant::now();
    common::reconcile(&cfg);
    let settle_ms = settle.elapsed().as_millis();

    let rows = common::journal_rows(dir.path());
    let ledger = sim.ledger();
    let mismatches = compare_with_journal(&ledger, &rows);
    let count = |s: OpState| rows.iter().filter(|r| r.state == s).count();
    println!(
        "crash harness seed {seed:#x}: {taps} taps, {kills} SIGKILLs ({tap_kills} taps, {rec_kills} reconciles) in {:.1} s; \
         journal {} ops: {} succeeded, {} declined, {} refunded, {} attention; ledger {} payments, {} refunded; \
         final reconcile {settle_ms} ms; {} mismatches",
        started.elapsed().as_secs_f64(),
        rows.len(),
        count(OpState::Succeeded),
        count(OpState::Declined),
        count(OpState::Refunded),
        count(OpState::Attention),
        ledger.len(),
        ledger.iter().filter(|e| e.refunded > 0).count(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    for r in &rows {
        assert!(r.state.is_final(), "not final: {r:?}");
        if r.state == OpState::Attention {
            assert!(r.reason.as_deref().is_some_and(|s| !s.is_empty()), "{r:?}");
        }
        if r.state == OpState::Succeeded {
            assert_eq!(
                r.gate_opened,
                Some(true),
                "a paid operation whose gate did not open was not refunded: {r:?}"
            );
        }
    }
    // One tap, one payment at most: every ledger payment is a distinct journaled operation.
    let journaled: HashSet<&str> = rows
        .iter()
        .map(|r| r.partner_reference_no.as_str())
        .collect();
    let mut seen = HashSet::new();
    for e in &ledger {
        assert!(
            seen.insert(e.partner_reference_no.as_str()),
            "two payments for {}",
            e.partner_reference_no
        );
        assert!(journaled.contains(e.partner_reference_no.as_str()) || e.net_charged() == 0);
    }
    assert!(rows.len() as u64 <= taps);
    assert_eq!(sim.stats().protocol_violations(), 0, "{:?}", sim.stats());
}
