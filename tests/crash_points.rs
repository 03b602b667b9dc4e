//! A crash at each point of a tap: the real `tapgate tap` process SIGKILLs itself at a named
//! point (debug builds' crash points), or is killed while the aggregator holds its request;
//! then `tapgate reconcile` runs, and the journal and the simulator's ledger must agree with the
//! expected end state.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use tapgate::cmd::audit::compare_with_journal;
use tapgate::fare::OpState;
use tapgate::sim::Fault;

const PAN: &str = "9360001417451180859";

fn tap_cmd(config: &std::path::Path, lane: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapgate"));
    c.args(["tap", "--config"])
        .arg(config)
        .args(["--lane", lane, &common::tap_payload(PAN)])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// What a crash at each point must end as, once reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_ends_consistent() {
    for (point, lane, want) in [
        // Nothing journaled, nothing sent.
        ("before_journal", "in-1", None),
        // Journaled, never sent: the aggregator has no such payment.
        ("after_journal", "in-1", Some(OpState::Declined)),
        // Paid, but the gate never opened: refunded.
        ("after_reply", "in-1", Some(OpState::Refunded)),
        // The gate opened, the process died before recording it: not knowing, refund (the
        // passenger is never charged for a gate that may not have opened).
        ("after_relay", "in-1", Some(OpState::Refunded)),
        ("after_reply", "out-1", Some(OpState::Refunded)),
    ] {
        let sim = common::start_sim().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = common::station_config(dir.path(), &sim.base_url(), "", common::FAST_RECONCILER);
        let status = tap_cmd(&cfg, lane)
            .env("TAPGATE_FAILPOINT", point)
            .status()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "{point}: the process must die at the point"
        );
        common::reconcile(&cfg);
        let rows = common::journal_rows(dir.path());
        match want {
            None => assert!(rows.is_empty(), "{point}: {rows:?}"),
            Some(state) => {
                assert_eq!(rows.len(), 1, "{point}");
                assert_eq!(rows[0].state, state, "{point} {lane}: {:?}", rows[0]);
            }
        }
        let m = compare_with_journal(&sim.ledger(), &rows);
        assert!(m.is_empty(), "{point}: {m:#?}");
        assert_eq!(sim.stats().protocol_violations(), 0, "{point}");
    }
}

/// Killed while the aggregator still holds the request (after send, before reply), with the
/// payment applied later; and the same when the aggregator never applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_send_and_reply() {
    for (fault, want) in [
        (Fault::Delay { ms: 1200 }, OpState::Refunded),
        (Fault::Drop { applied: false }, OpState::Declined),
    ] {
        let sim = common::start_sim().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = common::station_config(
            dir.path(),
            &sim.base_url(),
            "decision_deadline_ms = 5000",
            common::FAST_RECONCILER,
        );
        sim.push_fault(fault);
        let mut child = tap_cmd(&cfg, "in-1").spawn().unwrap();
        // Wait until the payment request is at the aggregator (its fault is drawn on arrival,
        // before the delay), then kill.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while sim.queued_faults() > 0 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if matches!(fault, Fault::Delay { .. }) {
            assert_eq!(
                status.signal(),
                Some(9),
                "killed while waiting for the reply"
            );
            tokio::time::sleep(Duration::from_millis(1400)).await;
        }
        common::reconcile(&cfg);
        let rows = common::journal_rows(dir.path());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, want, "{fault:?}");
        assert!(compare_with_journal(&sim.ledger(), &rows).is_empty());
    }
}
