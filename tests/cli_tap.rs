//! `tapgate tap` as an integrator runs it: the real binary, a config file with secret files,
//! the simulator over loopback HTTP, a real SQLite journal.

mod common;

use std::process::Command;

use serde_json::Value;

fn tap(config: &std::path::Path, lane: &str, payload: &str) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["tap", "--config"])
        .arg(config)
        .args(["--lane", lane, payload])
        .output()
        .expect("run tapgate");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), v, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_declined_and_journaled() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");

    let sari = "9360000201100456781";
    let (code, v, stderr) = tap(&cfg, "in-1", &common::tap_payload(sari));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(v["opened"], true, "{v}");
    assert_eq!(v["outcome"], "approved");
    assert_eq!(v["amount"], 9000);
    let pref = v["partnerReferenceNo"]
        .as_str()
        .expect("reference")
        .to_string();
    assert!(!stderr.contains(sari), "full PAN in logs");

    // The simulator holds exactly that payment.
    let entry = sim.entry(&pref).expect("ledger has the hold");
    assert_eq!(entry.amount, 9000);
    assert_eq!(entry.tap.tap_type.as_deref(), Some("IN"));

    // A declined passenger: gate stays shut, nothing charged.
    let dewi = "9360091530271057414";
    sim.decline_pan(dewi, "4036014");
    let (_, v, _) = tap(&cfg, "in-1", &common::tap_payload(dewi));
    assert_eq!(v["opened"], false, "{v}");
    assert_eq!(v["outcome"], "declined");
    assert_eq!(v["responseCode"], "4036014");

    // Sari taps out in a second process: the journal links it to her tap-in.
    let (_, v, _) = tap(&cfg, "out-1", &common::tap_payload(sari));
    assert_eq!(v["opened"], true, "{v}");
    assert_eq!(v["amount"], 3000, "same-station exit fare");
    assert_eq!(v["fare_rule"], "matrix");
    let out_ref = v["partnerReferenceNo"].as_str().unwrap().to_string();
    let out_entry = sim.entry(&out_ref).expect("ledger has the settlement");
    assert_eq!(out_entry.tap.tap_type.as_deref(), Some("OUT"));
    assert_eq!(
        out_entry.tap.tap_in_partner_reference_no.as_deref(),
        Some(pref.as_str())
    );

    // An invalid payload changes nothing.
    let before = sim.ledger().len();
    let (_, v, _) = tap(
        &cfg,
        "in-1",
        "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=",
    );
    assert_eq!(v["opened"], false);
    assert_eq!(v["outcome"], "invalid_payload");
    assert!(v.get("partnerReferenceNo").is_none());
    assert_eq!(sim.ledger().len(), before);

    let stats = sim.stats();
    assert_eq!(stats.protocol_violations(), 0, "{stats:?}");

    // The journal agrees with the ledger.
    let j = tapgate::journal::Journal::open_read_only(&dir.path().join("journal.db")).unwrap();
    let rows = j.export(0).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_lane_and_bad_config_fail_clearly() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["tap", "--config"])
        .arg(&cfg)
        .args(["--lane", "nope", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lane named \"nope\""));

    std::fs::remove_file(dir.path().join("client-secret")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["tap", "--config"])
        .arg(&cfg)
        .args(["--lane", "in-1", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("client secret") && err.contains("client-secret"),
        "{err}"
    );
}
