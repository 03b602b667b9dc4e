//! A journal damaged on disk (random bytes over one b-tree page of the operations table, made
//! deterministically) is refused by every open, with the technician's procedure; nothing is
//! written to it; what can still be read is exported with `--salvage`.

mod common;
mod journal_common;

use std::path::Path;
use std::process::{Command, Output};

use journal_common::{damage_ops_page, filled, new_op, raw_quick_check};
use tapgate::journal::{Journal, JournalError, StorageFault};

fn tapgate(args: &[&str], journal: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["journal", "--journal"])
        .arg(journal)
        .args(args)
        .output()
        .unwrap()
}

/// The procedure every refusal must carry, in the words a technician needs.
fn assert_procedure(msg: &str, path: &Path) {
    let p = path.display().to_string();
    for needle in [
        "is damaged",
        "quick_check",
        "keep the damaged file",
        &format!("tapgate journal export --salvage --journal {p}"),
        &format!("mv {p} {p}.damaged"),
        "creates a new, empty journal",
        "settlement report",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
}

#[test]
fn a_damaged_journal_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let before = filled(&path, 400);
    let damage = damage_ops_page(&path);
    // The damage is real: SQLite itself says so.
    let found = raw_quick_check(&path);
    assert_ne!(found, ["ok"], "page {} damaged unnoticed", damage.page);
    let damaged_bytes = std::fs::read(&path).unwrap();

    // The daemon's open: refused, nothing written.
    let e = Journal::open(&path).unwrap_err();
    match &e {
        JournalError::Damaged { findings, .. } => assert!(!findings.is_empty()),
        other => panic!("expected Damaged, got {other:?}"),
    }
    assert_eq!(e.storage_fault(), Some(StorageFault::Corrupt));
    assert_procedure(&e.to_string(), &path);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged_bytes,
        "the file was changed"
    );

    // A read-only open too.
    let e = Journal::open_read_only(&path).unwrap_err();
    assert!(matches!(e, JournalError::Damaged { .. }), "{e:?}");

    // `journal list`: non-zero, with the procedure.
    let out = tapgate(&["list"], &path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(0),
        "list on a damaged journal: {err}"
    );
    assert_procedure(&err, &path);
    assert!(out.stdout.is_empty(), "nothing listed as if whole");

    // Salvage: every readable row, each exactly as written, nothing invented; exit 1.
    let out = tapgate(&["export", "--salvage", "--format", "json"], &path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("salvaged"), "{err}");
    let got: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<serde_json::Value> = before
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert!(
        got.len() >= before.len() - damage.cells as usize && got.len() < before.len(),
        "salvaged {} of {} with {} rows on the damaged page",
        got.len(),
        before.len(),
        damage.cells
    );
    for row in &got {
        assert!(want.contains(row), "salvage invented {row}");
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged_bytes,
        "salvage changed the file"
    );
}

#[test]
fn a_tap_is_not_charged_into_a_damaged_journal() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here: a tap that got past the journal would fail later, not here.
    let cfg = common::station_config(dir.path(), "http://127.0.0.1:9", "", "");
    let path = dir.path().join("journal.db");
    filled(&path, 400);
    damage_ops_page(&path);
    let damaged_bytes = std::fs::read(&path).unwrap();
    // Before the check existed, a new row went in: the damaged leaf is not on its path.
    let out = common::tap_command(&cfg, "in-1", &common::tap_payload("9360000201100456781"))
        .output()
        .unwrap();
    // The tap's report (stdout) says the journal refused it, and why.
    let report = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{report}");
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["outcome"], "journal_unavailable", "{report}");
    assert_procedure(&report.to_string(), &path);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged_bytes,
        "the tap wrote to it"
    );
}

#[test]
fn a_sound_journal_opens_and_the_check_does_not_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    filled(&path, 50);
    let bytes = std::fs::read(&path).unwrap();
    drop(Journal::open_read_only(&path).unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let mut j = Journal::open(&path).unwrap();
    j.begin(&new_op("TG-NEW", 1_790_100_000_000)).unwrap();
    let out = tapgate(&["list"], &path);
    assert_eq!(out.status.code(), Some(0));
}
