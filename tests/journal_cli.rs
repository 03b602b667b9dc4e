//! `tapgate journal` as operations run it: the real binary against journal files prepared with
//! the journal API (or written by `tapgate tap` against the loopback simulator).

mod common;
#[path = "support/csv.rs"]
mod csv;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::journal::{Journal, NewOp, OpFilter, OpKind, Transition};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn tapgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(args)
        .output()
        .expect("run tapgate")
}

fn journal_cmd(path: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["journal", "--journal", path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = tapgate(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn new_op(reference: &str, lane: &str, created_at_ms: i64) -> NewOp {
    let out = lane.starts_with("out");
    NewOp {
        partner_reference_no: reference.to_owned(),
        kind: if out { OpKind::Settle } else { OpKind::Hold },
        lane: lane.to_owned(),
        direction: if out { Direction::Out } else { Direction::In },
        station_id: "BLM".into(),
        amount: Rupiah(9000),
        pan_key: "5f1c0e9a".repeat(8),
        pan_masked: "93600914*******1234".into(),
        nns: "93600914".into(),
        journey_id: None,
        next_attempt_at_ms: created_at_ms + 2_000,
        created_at_ms,
    }
}

/// A journal with one operation in each interesting state, at known ages and lanes:
///
/// | ref | lane | age | state |
/// |---|---|---|---|
/// | `OLD-OK` | in-1 | 3 h | SUCCEEDED |
/// | `DECL` | out-1 | 1 h | DECLINED (reason with a comma and quotes) |
/// | `ATT-Q` | in-1 | 10 min | ATTENTION from UNKNOWN |
/// | `ATT-R` | in-1 | 5 min | ATTENTION from REFUND_PENDING (a refund is owed) |
fn prepared_journal(path: &Path) -> i64 {
    let now = now_ms();
    let mut j = Journal::open(path).unwrap();
    j.begin(&new_op("OLD-OK", "in-1", now - 3 * HOUR)).unwrap();
    j.transition(
        "OLD-OK",
        &Transition {
            reference_no: Some("FP-OLD".into()),
            response_code: Some("2006000".into()),
            gate_opened: Some(true),
            reason: Some("paid".into()),
            ..Transition::new(OpState::Succeeded, now - 3 * HOUR + 300)
        },
    )
    .unwrap();

    j.begin(&new_op("DECL", "out-1", now - HOUR)).unwrap();
    j.transition(
        "DECL",
        &Transition {
            response_code: Some("4036014".into()),
            reason: Some("declined by issuer: \"Insufficient Funds\", try another".into()),
            ..Transition::new(OpState::Declined, now - HOUR + 200)
        },
    )
    .unwrap();

    j.begin(&new_op("ATT-Q", "in-1", now - 10 * MIN)).unwrap();
    j.transition(
        "ATT-Q",
        &Transition::new(OpState::Unknown, now - 10 * MIN + 900),
    )
    .unwrap();
    j.transition(
        "ATT-Q",
        &Transition {
            reason: Some("query refused 4017300: unauthorized".into()),
            bump_attempts: true,
            ..Transition::new(OpState::Attention, now - 9 * MIN)
        },
    )
    .unwrap();

    j.begin(&new_op("ATT-R", "in-1", now - 5 * MIN)).unwrap();
    j.transition(
        "ATT-R",
        &Transition {
            reference_no: Some("FP-ATT-R".into()),
            response_code: Some("2006000".into()),
            gate_opened: Some(false),
            reason: Some("late reply: paid".into()),
            ..Transition::new(OpState::Succeeded, now - 5 * MIN + 1500)
        },
    )
    .unwrap();
    j.transition(
        "ATT-R",
        &Transition {
            refund_amount: Some(Rupiah(9000)),
            reason: Some("gate did not open: refund owed".into()),
            ..Transition::new(OpState::RefundPending, now - 5 * MIN + 1500)
        },
    )
    .unwrap();
    j.transition(
        "ATT-R",
        &Transition {
            response_code: Some("4048000".into()),
            reason: Some("refund refused 4048000: merchant not found".into()),
            bump_attempts: true,
            ..Transition::new(OpState::Attention, now - 4 * MIN)
        },
    )
    .unwrap();
    now
}

/// The references in a table's rows (first column, header and footer left out).
fn table_refs(stdout: &str) -> Vec<String> {
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("REF"), "header: {stdout}");
    assert!(lines.last().unwrap().ends_with("operation(s)"), "{stdout}");
    lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[test]
fn list_filters_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    prepared_journal(&path);

    let (code, out, err) = journal_cmd(&path, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(table_refs(&out), ["OLD-OK", "DECL", "ATT-Q", "ATT-R"]);
    assert!(out.contains("4 operation(s)"));
    let decl = out.lines().find(|l| l.starts_with("DECL")).unwrap();
    for field in [
        "out-1",
        "out",
        "DECLINED",
        "9000",
        "1h00m",
        "Insufficient Funds",
    ] {
        assert!(decl.contains(field), "{field:?} missing in {decl:?}");
    }
    let pan_key = new_op("DECL", "out-1", 0).pan_key;
    assert!(!out.contains(&pan_key), "the table must not show pan_key");

    let (_, out, _) = journal_cmd(&path, &["list", "--state", "attention"]);
    assert_eq!(table_refs(&out), ["ATT-Q", "ATT-R"]);
    let (_, out, _) = journal_cmd(&path, &["list", "--lane", "out-1"]);
    assert_eq!(table_refs(&out), ["DECL"]);
    let (_, out, _) = journal_cmd(&path, &["list", "--since", "2h"]);
    assert_eq!(table_refs(&out), ["DECL", "ATT-Q", "ATT-R"]);
    let (_, out, _) = journal_cmd(&path, &["list", "--since", "30m", "--lane", "in-1"]);
    assert_eq!(table_refs(&out), ["ATT-Q", "ATT-R"]);
    let since = jiff::Timestamp::from_millisecond(now_ms() - 7 * MIN)
        .unwrap()
        .to_string();
    let (_, out, _) = journal_cmd(&path, &["list", "--since", &since]);
    assert_eq!(table_refs(&out), ["ATT-R"]);
    let (code, out, _) = journal_cmd(&path, &["list", "--state", "refunded"]);
    assert_eq!(code, 0);
    assert!(table_refs(&out).is_empty());

    // JSON lines are the journal's own rows, field for field.
    let (code, out, _) = journal_cmd(&path, &["list", "--json", "--state", "ATTENTION"]);
    assert_eq!(code, 0);
    let got: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let j = Journal::open_read_only(&path).unwrap();
    let want: Vec<Value> = j
        .list(&OpFilter {
            state: Some(OpState::Attention),
            ..OpFilter::default()
        })
        .unwrap()
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 2);

    // Wrong input says what would be right.
    let (code, _, err) = journal_cmd(&path, &["list", "--state", "PAID"]);
    assert_eq!(code, 2);
    assert!(err.contains("REFUND_PENDING"), "{err}");
    let (code, _, err) = journal_cmd(&path, &["list", "--since", "last tuesday"]);
    assert_eq!(code, 1);
    assert!(err.contains("RFC 3339") && err.contains("2h"), "{err}");
}

#[test]
fn show_tells_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    prepared_journal(&path);

    let (code, out, err) = journal_cmd(&path, &["show", "ATT-R"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state             ATTENTION"), "{out}");
    assert!(out.contains("FP-ATT-R"));
    assert!(out.contains("refund            9000"), "{out}");
    let history: Vec<&str> = out.lines().skip_while(|l| *l != "events").skip(1).collect();
    assert_eq!(history.len(), 4, "{out}");
    for (line, (from, to)) in history.iter().zip([
        ("-", "PENDING"),
        ("PENDING", "SUCCEEDED"),
        ("SUCCEEDED", "REFUND_PENDING"),
        ("REFUND_PENDING", "ATTENTION"),
    ]) {
        assert!(line.contains(&format!("{from} -> {to}")), "{line}");
    }
    assert!(history[3].contains("merchant not found"));

    let (code, out, _) = journal_cmd(&path, &["show", "ATT-R", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["operation"]["state"], "ATTENTION");
    assert_eq!(v["events"].as_array().unwrap().len(), 4);
    assert_eq!(v["events"][3]["from_state"], "REFUND_PENDING");

    let (code, out, err) = journal_cmd(&path, &["show", "NOPE"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("no operation \"NOPE\""), "{err}");
}

#[test]
fn attention_and_retry_hand_rows_back_to_the_reconciler() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    prepared_journal(&path);

    let (code, out, _) = journal_cmd(&path, &["attention"]);
    assert_eq!(code, 1, "ATTENTION rows make the check fail");
    assert_eq!(table_refs(&out), ["ATT-Q", "ATT-R"]);
    assert!(out.contains("query refused 4017300"));
    assert!(out.contains("merchant not found"));

    // Not an ATTENTION row: refused, nothing written.
    let events_before = Journal::open_read_only(&path)
        .unwrap()
        .events("OLD-OK")
        .unwrap()
        .len();
    let (code, _, err) = journal_cmd(&path, &["retry", "OLD-OK"]);
    assert_eq!(code, 1);
    assert!(err.contains("is SUCCEEDED, not ATTENTION"), "{err}");
    let (code, _, err) = journal_cmd(&path, &["retry", "NOPE"]);
    assert_eq!(code, 1);
    assert!(err.contains("no operation"), "{err}");

    let before = now_ms();
    let (code, out, err) = journal_cmd(&path, &["retry", "ATT-Q"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ATTENTION -> UNKNOWN"), "{out}");
    let (code, out, err) = journal_cmd(&path, &["retry", "ATT-R"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ATTENTION -> REFUND_PENDING"), "{out}");
    let after = now_ms();

    let j = Journal::open_read_only(&path).unwrap();
    assert_eq!(j.events("OLD-OK").unwrap().len(), events_before);
    let q = j.get("ATT-Q").unwrap().unwrap();
    assert_eq!(q.state, OpState::Unknown);
    let r = j.get("ATT-R").unwrap().unwrap();
    assert_eq!(r.state, OpState::RefundPending);
    assert_eq!(r.refund_amount, Some(Rupiah(9000)));
    for row in [&q, &r] {
        let due = row.next_attempt_at_ms.unwrap();
        assert!((before..=after).contains(&due), "due now: {row:?}");
        assert!(row.reason.as_deref().unwrap().contains("retry requested"));
    }
    // Both are now the reconciler's work, at once.
    let due: Vec<String> = j
        .due(after, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.partner_reference_no)
        .collect();
    assert_eq!(due, ["ATT-Q", "ATT-R"]);
    let last = j.events("ATT-R").unwrap().pop().unwrap();
    assert_eq!(last.from_state, Some(OpState::Attention));
    assert_eq!(last.to_state, OpState::RefundPending);

    let (code, out, _) = journal_cmd(&path, &["attention"]);
    assert_eq!(code, 0);
    assert!(out.contains("no operation needs attention"));
}

#[test]
fn export_matches_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    prepared_journal(&path);
    let j = Journal::open_read_only(&path).unwrap();
    let all = j.export(0).unwrap();

    let (code, out, err) = journal_cmd(&path, &["export", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let got: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got, serde_json::to_value(&all).unwrap());

    let (code, out, _) = journal_cmd(&path, &["export", "--since", "2h", "--format", "csv"]);
    assert_eq!(code, 0);
    let recs = csv::parse(&out);
    assert_eq!(recs[0], tapgate::journal::CSV_COLUMNS);
    let refs: Vec<&str> = recs[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(refs, ["DECL", "ATT-Q", "ATT-R"]);
    let decl = &recs[1];
    assert_eq!(
        decl[13],
        "declined by issuer: \"Insufficient Funds\", try another"
    );
    assert_eq!(decl[5], "9000");
    assert_eq!(decl[6], all[1].pan_key, "export carries the passenger key");
    assert!(recs
        .iter()
        .all(|r| r.len() == tapgate::journal::CSV_COLUMNS.len()));

    // Through --config: the same file, found where the daemon finds it.
    let cfg = common::station_config(dir.path(), "http://127.0.0.1:9", "", "");
    let out = tapgate(&[
        "journal",
        "export",
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "json",
        "--since",
        "2026-01-01",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, serde_json::to_value(&all).unwrap());
}

#[test]
fn where_the_journal_is_must_be_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let (code, _, err) = journal_cmd(&missing, &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("no journal at"), "{err}");
    let (code, _, _) = journal_cmd(&missing, &["retry", "X"]);
    assert_eq!(code, 1);
    assert!(!missing.exists(), "a wrong path must not create a journal");

    let out = tapgate(&["journal", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config FILE"));
    let out = tapgate(&[
        "journal",
        "--config",
        "a.toml",
        "--journal",
        missing.to_str().unwrap(),
        "list",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));

    // Not a journal: refused by name, file left alone.
    let other = dir.path().join("other.db");
    let c = rusqlite::Connection::open(&other).unwrap();
    c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(c);
    let (code, _, err) = journal_cmd(&other, &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a tapgate journal"), "{err}");
}

#[test]
fn reads_while_a_writer_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let now = prepared_journal(&path);

    // The daemon in the middle of a write: an open write transaction with a row not yet
    // committed. WAL readers neither wait for it nor see it.
    let mut writer = Journal::open(&path).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("BEGIN IMMEDIATE").unwrap();
    raw.execute(
        "UPDATE fare_ops SET reason = 'uncommitted' WHERE partner_reference_no = 'OLD-OK'",
        [],
    )
    .unwrap();
    let (code, out, err) = journal_cmd(&path, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(table_refs(&out).len(), 4);
    assert!(!out.contains("uncommitted"));

    // A write (retry) waits for the lock, then says clearly what stopped it.
    let (code, _, err) = journal_cmd(&path, &["retry", "ATT-Q"]);
    assert_eq!(code, 1);
    assert!(err.contains("locked by another process"), "{err}");
    raw.execute_batch("COMMIT").unwrap();

    // Committed writes of a live writer are seen by the next read.
    writer.begin(&new_op("LIVE", "in-1", now + 1000)).unwrap();
    let (_, out, _) = journal_cmd(&path, &["list"]);
    assert_eq!(
        table_refs(&out).last().map(String::as_str),
        Some("LIVE"),
        "{out}"
    );
    assert!(out.contains("uncommitted"), "committed since: {out}");

    // Between the writer's transactions, retry goes through next to it, and the writer
    // sees the result on its next read.
    let (code, _, err) = journal_cmd(&path, &["retry", "ATT-Q"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        writer.get("ATT-Q").unwrap().unwrap().state,
        OpState::Unknown
    );
    writer.begin(&new_op("LIVE-2", "in-1", now + 2000)).unwrap();
}

#[test]
fn damaged_rows_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    prepared_journal(&path);
    // Damage two rows behind the journal's back, as bit rot or a hand edit would.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "ignore_check_constraints", "ON")
        .unwrap();
    c.execute(
        "UPDATE fare_ops SET state = 'SUCCEDED' WHERE partner_reference_no = 'OLD-OK'",
        [],
    )
    .unwrap();
    c.execute(
        "UPDATE fare_ops SET amount = -9000 WHERE partner_reference_no = 'ATT-Q'",
        [],
    )
    .unwrap();
    drop(c);

    let (code, out, err) = journal_cmd(&path, &["list"]);
    assert_eq!(code, 0, "listing goes on: {err}");
    assert_eq!(table_refs(&out), ["DECL", "ATT-R"]);
    assert!(err.contains("2 damaged row(s)"), "{err}");
    assert!(
        err.contains("OLD-OK") && err.contains("ATT-Q"),
        "each one named: {err}"
    );

    // An incomplete export or attention check must not pass as complete.
    let (code, out, err) = journal_cmd(&path, &["export", "--format", "csv"]);
    assert_eq!(code, 1);
    assert_eq!(csv::parse(&out).len(), 3, "header and the two sound rows");
    assert!(err.contains("2 damaged row(s)"), "{err}");
    let (code, out, err) = journal_cmd(&path, &["attention"]);
    assert_eq!(code, 1);
    assert_eq!(table_refs(&out), ["ATT-R"]);
    assert!(err.contains("1 damaged row(s)"), "{err}");

    // The damaged row itself: what is wrong, and its history.
    let (code, out, err) = journal_cmd(&path, &["show", "OLD-OK"]);
    assert_eq!(code, 1);
    assert!(err.contains("SUCCEDED"), "{err}");
    assert!(out.contains("PENDING -> SUCCEEDED"), "{out}");
}

/// The whole loop with real parts: a late success through `tapgate tap` owes a refund, the
/// refund fails until the reconciler gives up (ATTENTION), an operator retries it, and the
/// reconciler refunds it at the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_is_picked_up_by_the_reconciler() {
    use tapgate::sim::{Fault, Service};
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let rec = "[reconciler]\nbackoff_base_ms = 10\nbackoff_cap_ms = 20\nmax_attempts = 1\n";
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", rec);
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let journal = dir.path().join("journal.db");

    // Paid after the 800 ms deadline: the gate stayed shut, a refund is owed.
    sim.push_fault_on(Service::Payment, Fault::Delay { ms: 1300 });
    let out = tokio::task::spawn_blocking({
        let cfg_s = cfg_s.clone();
        move || {
            tapgate(&[
                "tap",
                "--config",
                &cfg_s,
                "--lane",
                "in-1",
                &common::tap_payload("9360000201100456781"),
            ])
        }
    })
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["opened"], false, "{v}");
    let pref = v["partnerReferenceNo"].as_str().unwrap().to_owned();
    let row = Journal::open_read_only(&journal)
        .unwrap()
        .get(&pref)
        .unwrap()
        .unwrap();
    assert_eq!(row.state, OpState::RefundPending, "{row:?}");

    // The refund fails once; with max_attempts = 1 the reconciler hands it to a person.
    sim.push_fault_on(Service::Refund, Fault::ServerError { applied: false });
    let reconcile = |cfg: String| async move {
        tokio::task::spawn_blocking(move || {
            tapgate(&["reconcile", "--config", &cfg, "--max-seconds", "10"])
        })
        .await
        .unwrap()
    };
    let out = reconcile(cfg_s.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (code, list, _) = journal_cmd(&journal, &["attention"]);
    assert_eq!(code, 1);
    assert_eq!(table_refs(&list), std::slice::from_ref(&pref));
    assert_eq!(sim.entry(&pref).unwrap().refunded, 0);

    // The operator retries; this station's limits would send it straight back, and the
    // command says so.
    let out = tokio::task::spawn_blocking({
        let (cfg_s, pref) = (cfg_s.clone(), pref.clone());
        move || tapgate(&["journal", "--config", &cfg_s, "retry", &pref])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ATTENTION -> REFUND_PENDING"));
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(warn.contains("max_attempts 1"), "{warn}");

    // With the limit raised, the reconciler refunds it.
    let rec2 = "[reconciler]\nbackoff_base_ms = 10\nbackoff_cap_ms = 20\nmax_attempts = 5\n";
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = common::station_config(dir2.path(), &sim.base_url(), "", rec2);
    let text = std::fs::read_to_string(&cfg2).unwrap().replace(
        &format!("{:?}", dir2.path().join("journal.db")),
        &format!("{journal:?}"),
    );
    std::fs::write(&cfg2, text).unwrap();
    let out = reconcile(cfg2.to_str().unwrap().to_owned()).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let row = Journal::open_read_only(&journal)
        .unwrap()
        .get(&pref)
        .unwrap()
        .unwrap();
    assert_eq!(row.state, OpState::Refunded, "{row:?}");
    let entry = sim.entry(&pref).unwrap();
    assert_eq!(entry.refunded, entry.amount);
    assert_eq!(entry.refunds.len(), 1, "refunded exactly once");
    let (code, _, _) = journal_cmd(&journal, &["attention"]);
    assert_eq!(code, 0);
}
