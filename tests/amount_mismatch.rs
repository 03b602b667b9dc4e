//! Amounts are compared: an aggregator answer (payment or query) naming another amount than
//! the journaled one is a success still (the gate follows the protocol), but the operation is
//! an ATTENTION case naming both amounts, with an error log line and a metric. Real parts: the
//! simulator over loopback HTTP (its wrong-amount fault), a real SQLite journal, the real
//! `tapgate tap` binary.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tapgate::config::Config;
use tapgate::daemon::lane::Lane;
use tapgate::daemon::reconcile::Reconciler;
use tapgate::daemon::station_from_config;
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::OpState;
use tapgate::relay::RecordingRelay;
use tapgate::sim::{Fault, Service};

const SARI: &str = "9360000201100456781";

/// `tapgate tap` at the entry; the payment's answer says 999,999.00 for a Rp9,000 hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_answer_with_another_amount_is_attention() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");
    sim.push_fault_on(Service::Payment, Fault::WrongAmount { rupiah: 999_999 });
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["tap", "--config"])
        .arg(&cfg)
        .args(["--lane", "in-1", &common::tap_payload(SARI)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // The protocol's verdict stands: the hold succeeded, the gate opened.
    assert_eq!(v["opened"], true, "{v}");
    assert_eq!(v["outcome"], "approved", "{v}");
    assert_eq!(v["amount"], 9000);
    // A person is told: an error line with both amounts...
    assert!(
        stderr.contains("ERROR")
            && stderr.contains("another amount")
            && stderr.contains("999999.00"),
        "{stderr}"
    );
    // ...and the journal's ATTENTION case names both.
    let rows = common::journal_rows(dir.path());
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.state, OpState::Attention, "{row:?}");
    assert_eq!(row.gate_opened, Some(true));
    assert!(row.reference_no.is_some(), "kept for the person who looks");
    let reason = row.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("Rp9,000") && reason.contains("999999.00 IDR"),
        "{reason}"
    );
    // The money itself is what was asked.
    assert_eq!(sim.ledger()[0].amount, 9000);
    assert!(tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows).is_empty());
}

/// An exit let out with an unknown outcome; the reconciler's query answers "paid" with
/// another amount: ATTENTION with both, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_answer_with_another_amount_is_attention() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = common::station_config(dir.path(), &sim.base_url(), "", common::FAST_RECONCILER);
    let cfg = Config::load(&path).unwrap();
    let station = station_from_config(cfg.clone(), &path).unwrap();
    let exit = Lane::new(
        cfg.lanes[1].clone(),
        station.clone(),
        Arc::new(RecordingRelay::new()),
    );
    sim.push_fault(Fault::Drop { applied: true });
    sim.push_fault_on(Service::Query, Fault::WrongAmount { rupiah: 999_999 });
    let r = exit.handle_payload(&common::tap_payload(SARI), 0).await;
    assert_eq!(r.outcome, TapOutcome::Released, "{r:?}");
    let asked = r.amount.unwrap();
    let pref = r.partner_reference_no.clone().unwrap();
    let left = Reconciler::new(station.clone())
        .run_until_settled(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(left, 0);
    let p = pref.clone();
    let row = station
        .journal
        .run(move |j| j.get(&p))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, OpState::Attention, "{row:?}");
    let reason = row.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!("{asked}.00")) && reason.contains("999999.00 IDR"),
        "{reason}"
    );
    assert!(row.reference_no.is_some());
    let body = station.metrics.render();
    assert!(
        body.contains("tapgate_amount_mismatches_total{endpoint=\"query\"} 1"),
        "{body}"
    );
    // Without the fault, the same query agrees and the exit settles as paid.
    let r = exit
        .handle_payload(&common::tap_payload("9360091430100531720"), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert!(!station
        .metrics
        .render()
        .contains("tapgate_amount_mismatches_total{endpoint=\"payment\"}"));
}
