//! Retention with real journal files: exactly the old final operations leave (with their closed
//! journeys and events), each exported exactly once to a CSV file written before the delete;
//! a process killed between export and delete loses nothing and doubles nothing; the file
//! stops growing.

mod common;
#[path = "support/csv.rs"]
mod csv;
mod journal_common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use journal_common::{all_refs, bulk_succeeded, new_op, reach, settle_op};
use rusqlite::Connection;
use tapgate::fare::{OpState, Rupiah};
use tapgate::journal::retention::{self, ExportDir, PruneError, DAY_MS};
use tapgate::journal::{Journal, JourneyState, OpRow};

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn prune_cli(journal: &Path, exports: &Path, batch: u32, failpoint: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapgate"));
    cmd.args(["journal", "--journal"])
        .arg(journal)
        .args([
            "prune",
            "--retain-days",
            "30",
            "--batch",
            &batch.to_string(),
        ])
        .arg("--export-dir")
        .arg(exports);
    match failpoint {
        Some(p) => cmd.env("TAPGATE_FAILPOINT", p),
        None => cmd.env_remove("TAPGATE_FAILPOINT"),
    };
    cmd.output().unwrap()
}

/// Every export file in `dir` (sorted by name) with its data rows (header checked, dropped).
fn exports(dir: &Path) -> BTreeMap<PathBuf, Vec<Vec<String>>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "csv") {
            let mut rows = csv::parse(&std::fs::read_to_string(&p).unwrap());
            assert_eq!(rows[0][0], "partner_reference_no", "{}", p.display());
            rows.remove(0);
            out.insert(p, rows);
        }
    }
    out
}

/// The references in all exports, in file order, duplicates kept.
fn exported_refs(dir: &Path) -> Vec<String> {
    exports(dir)
        .into_values()
        .flatten()
        .map(|r| r[0].clone())
        .collect()
}

/// The CSV rows `tapgate journal export` would print for `rows`.
fn csv_of(rows: &[OpRow]) -> Vec<Vec<String>> {
    let mut buf = Vec::new();
    tapgate::journal::write_csv(rows, &mut buf).unwrap();
    let mut v = csv::parse(&String::from_utf8(buf).unwrap());
    v.remove(0);
    v
}

fn count(path: &Path, sql: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn prune_removes_exactly_the_old_final_operations_and_exports_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let exports_dir = dir.path().join("exports");
    let now = now_ms();
    let old = now - 40 * DAY_MS;
    let recent = now - DAY_MS;
    let mut j = Journal::open(&path).unwrap();
    let mut pruned: Vec<OpRow> = Vec::new();
    let mut kept: Vec<String> = Vec::new();

    // Standalone operations, old and final: they go.
    for (i, s) in [OpState::Succeeded, OpState::Declined, OpState::Refunded]
        .into_iter()
        .enumerate()
    {
        let r = format!("OLD-FINAL-{s}");
        pruned.push(reach(&mut j, &new_op(&r, old + i as i64), s, old + 500));
    }
    // Many more, so that the run takes several batches.
    for i in 0..23 {
        let r = format!("OLD-MANY-{i:02}");
        pruned.push(reach(
            &mut j,
            &new_op(&r, old + 10 + i),
            OpState::Succeeded,
            old + 600,
        ));
    }
    // Old but not final: never, and ATTENTION waits for a person.
    for s in [
        OpState::Pending,
        OpState::Unknown,
        OpState::RefundPending,
        OpState::Attention,
    ] {
        let r = format!("OLD-OPEN-{s}");
        reach(&mut j, &new_op(&r, old), s, old + 500);
        kept.push(r);
    }
    // Final but recent, or old but changed recently.
    reach(
        &mut j,
        &new_op("NEW-FINAL", recent),
        OpState::Succeeded,
        recent,
    );
    kept.push("NEW-FINAL".into());
    reach(&mut j, &new_op("OLD-LATE", old), OpState::Succeeded, recent);
    kept.push("OLD-LATE".into());

    // J1: closed long ago, both taps final: the journey leaves with both.
    let tin = reach(
        &mut j,
        &new_op("J1-IN", old + 1000),
        OpState::Succeeded,
        old + 1100,
    );
    let j1 = j
        .open_journey(&tin.pan_key, "LBB", "J1-IN", old + 1100)
        .unwrap();
    let tout = reach(
        &mut j,
        &settle_op("J1-OUT", old + 9000),
        OpState::Succeeded,
        old + 9100,
    );
    j.close_journey(
        j1,
        JourneyState::Closed,
        Some("J1-OUT"),
        Some(Rupiah(9000)),
        old + 9200,
    )
    .unwrap();
    pruned.push(j.get("J1-IN").unwrap().unwrap());
    pruned.push(j.get("J1-OUT").unwrap().unwrap());
    assert_eq!(tout.partner_reference_no, "J1-OUT");
    // J2: still open (the passenger is inside): its paid tap-in stays.
    let t2 = reach(
        &mut j,
        &new_op("J2-IN", old + 2000),
        OpState::Succeeded,
        old + 2100,
    );
    let j2 = j
        .open_journey(&t2.pan_key, "LBB", "J2-IN", old + 2100)
        .unwrap();
    kept.push("J2-IN".into());
    // J3: closed, but its tap-out is still UNKNOWN: the tap-in it depends on stays with it.
    let t3 = reach(
        &mut j,
        &new_op("J3-IN", old + 3000),
        OpState::Succeeded,
        old + 3100,
    );
    let j3 = j
        .open_journey(&t3.pan_key, "LBB", "J3-IN", old + 3100)
        .unwrap();
    reach(
        &mut j,
        &settle_op("J3-OUT", old + 4000),
        OpState::Unknown,
        old + 4100,
    );
    j.close_journey(
        j3,
        JourneyState::Closed,
        Some("J3-OUT"),
        Some(Rupiah(9000)),
        old + 4200,
    )
    .unwrap();
    kept.extend(["J3-IN".into(), "J3-OUT".into()]);
    // J4: old final taps, but closed recently (stale-closed by policy yesterday): stays.
    let t4 = reach(
        &mut j,
        &new_op("J4-IN", old + 5000),
        OpState::Succeeded,
        old + 5100,
    );
    let j4 = j
        .open_journey(&t4.pan_key, "LBB", "J4-IN", old + 5100)
        .unwrap();
    j.close_journey(j4, JourneyState::StaleClosed, None, None, recent)
        .unwrap();
    kept.push("J4-IN".into());
    drop(j);
    let kept_events: i64 = count(
        &path,
        "SELECT count(*) FROM events WHERE partner_reference_no NOT IN \
         (SELECT partner_reference_no FROM fare_ops WHERE partner_reference_no LIKE 'OLD-FINAL%' \
          OR partner_reference_no LIKE 'OLD-MANY%' OR partner_reference_no LIKE 'J1-%')",
    );

    let out = prune_cli(&path, &exports_dir, 4, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "pruned {} operation(s) and 1 journey(s)",
            pruned.len()
        )),
        "{stdout}"
    );

    // The journal keeps exactly the others, their events and journeys untouched.
    kept.sort();
    assert_eq!(all_refs(&path), kept);
    assert_eq!(count(&path, "SELECT count(*) FROM events"), kept_events);
    let journeys: Vec<i64> = {
        let c = Connection::open(&path).unwrap();
        let mut s = c.prepare("SELECT id FROM journeys ORDER BY id").unwrap();
        let v = s
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        v
    };
    assert_eq!(journeys, vec![j2, j3, j4]);
    assert_eq!(
        count(&path, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );

    // The exports hold exactly the pruned rows, each once, as `journal export` prints them.
    let files = exports(&exports_dir);
    assert!(files.len() >= 7, "batches of about 4: {files:?}");
    let mut got: Vec<Vec<String>> = files.values().flatten().cloned().collect();
    let mut want = csv_of(&pruned);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for p in files.keys() {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let dmode = std::fs::metadata(&exports_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
    // A journey leaves whole: both of J1's taps in one file.
    let j1_file: Vec<_> = files
        .iter()
        .filter(|(_, rows)| rows.iter().any(|r| r[0].starts_with("J1-")))
        .collect();
    assert_eq!(j1_file.len(), 1);
    assert_eq!(
        j1_file[0]
            .1
            .iter()
            .filter(|r| r[0].starts_with("J1-"))
            .count(),
        2
    );

    // The journal is whole and readable; a second run has nothing to do.
    let r = Journal::open_read_only(&path).unwrap();
    assert!(r.quick_check().unwrap().is_empty());
    drop(r);
    let out = prune_cli(&path, &exports_dir, 4, None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pruned 0 operation(s)"));
    assert_eq!(exports(&exports_dir).len(), files.len());
}

#[test]
fn a_kill_between_export_and_delete_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let exports_dir = dir.path().join("exports");
    let old = now_ms() - 40 * DAY_MS;
    drop(Journal::open(&path).unwrap());
    bulk_succeeded(&path, "OLD-", 25, old);
    let before = all_refs(&path);

    // Killed (SIGKILL) with the first batch's file written and fsynced, its rows not deleted.
    let out = prune_cli(&path, &exports_dir, 10, Some("prune-after-export"));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    assert_eq!(all_refs(&path), before, "rows deleted before the commit");
    let leftover = exports(&exports_dir);
    assert_eq!(leftover.len(), 1);
    assert_eq!(leftover.values().next().unwrap().len(), 10);

    // Meanwhile, an older row becomes prunable: the re-run's first batch differs from the
    // interrupted one, and still nothing is doubled.
    bulk_succeeded(&path, "OLDER-", 3, old - DAY_MS);

    let out = prune_cli(&path, &exports_dir, 10, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(stdout.contains("pruned 28 operation(s)"), "{stdout}");
    assert!(all_refs(&path).is_empty());
    let mut got = exported_refs(&exports_dir);
    got.sort();
    let mut want = before.clone();
    want.extend((0..3).map(|i| format!("OLDER-{i:08}")));
    want.sort();
    assert_eq!(got, want, "every pruned row exactly once");
    assert_eq!(count(&path, "SELECT count(*) FROM prune_log"), 3);
    assert_eq!(count(&path, "SELECT count(*) FROM events"), 0);
}

#[test]
fn an_interrupted_batch_in_process_is_redone_under_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let exports_dir = dir.path().join("exports");
    let now = now_ms();
    let cutoff = now - 30 * DAY_MS;
    drop(Journal::open(&path).unwrap());
    bulk_succeeded(&path, "A-", 12, now - 40 * DAY_MS);
    let mut j = Journal::open(&path).unwrap();
    {
        let ex = ExportDir::lock(&exports_dir, &path).unwrap();
        // A second prune of the same journal is turned away while this one runs.
        assert!(matches!(
            ExportDir::lock(&exports_dir, &path),
            Err(PruneError::Busy { .. })
        ));
        let b1 = j.prune_candidates(cutoff, 5).unwrap().unwrap();
        ex.write(&b1).unwrap();
        j.prune_commit(&b1, &ex.file_name(b1.number), now).unwrap();
        let b2 = j.prune_candidates(cutoff, 5).unwrap().unwrap();
        assert_eq!(b2.number, 2);
        ex.write(&b2).unwrap();
        // The process "dies" here: no commit.
    }
    assert_eq!(all_refs(&path).len(), 7);
    let report = retention::prune_all(&mut j, &exports_dir, cutoff, 5, now).unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.operations, 7);
    let mut got = exported_refs(&exports_dir);
    got.sort();
    let want: Vec<String> = (0..12).map(|i| format!("A-{i:08}")).collect();
    assert_eq!(got, want);

    // A batch whose rows changed after the pick is refused whole.
    bulk_succeeded(&path, "B-", 2, now - 40 * DAY_MS);
    let b = j.prune_candidates(cutoff, 5).unwrap().unwrap();
    // Changed behind the pick's back (by hand: no legal move leaves SUCCEEDED with the gate
    // opened, which is exactly why such rows may go).
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE fare_ops SET updated_at_ms = ?1 WHERE partner_reference_no = 'B-00000000'",
            [now],
        )
        .unwrap();
    let e = j.prune_commit(&b, "x.csv", now).unwrap_err();
    assert!(e.to_string().contains("changed after its export"), "{e}");
    assert_eq!(all_refs(&path), ["B-00000000", "B-00000001"]);
}

#[test]
fn the_file_stops_growing_over_fill_and_prune_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let exports_dir = dir.path().join("exports");
    let now = now_ms();
    drop(Journal::open(&path).unwrap());
    let mut sizes = Vec::new();
    for cycle in 0..5 {
        bulk_succeeded(&path, &format!("C{cycle}-"), 2000, now - 40 * DAY_MS);
        let mut j = Journal::open(&path).unwrap();
        let report =
            retention::prune_all(&mut j, &exports_dir, now - 30 * DAY_MS, 500, now).unwrap();
        assert_eq!(report.operations, 2000);
        drop(j);
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
        drop(c);
        sizes.push(std::fs::metadata(&path).unwrap().len());
    }
    eprintln!("journal size after each fill of 2000 and prune: {sizes:?} bytes");
    let first = sizes[0];
    for (i, s) in sizes.iter().enumerate() {
        // Freed pages are reused: later cycles need no new pages (a few for the prune log).
        assert!(
            *s <= first + 4 * 4096,
            "cycle {i}: {s} bytes after {first}: {sizes:?}"
        );
    }
}

/// The daemon's retention task, on a station built from a config file with `retain_days`: one
/// run prunes the old final rows batch by batch, into `export_dir`, and leaves the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_task_prunes_with_the_configured_retention() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: retention never talks to the aggregator.
    let cfg_path = common::station_config(dir.path(), "http://127.0.0.1:9", "", "");
    let exports_dir = dir.path().join("settlement");
    let text = std::fs::read_to_string(&cfg_path).unwrap().replacen(
        "[journal]\n",
        &format!(
            "[journal]\nretain_days = 30\nprune_batch = 7\nexport_dir = {:?}\n",
            exports_dir
        ),
        1,
    );
    std::fs::write(&cfg_path, text).unwrap();
    let path = dir.path().join("journal.db");
    let now = now_ms();
    let mut j = Journal::open(&path).unwrap();
    reach(
        &mut j,
        &new_op("OLD-UNKNOWN", now - 40 * DAY_MS),
        OpState::Unknown,
        now - 40 * DAY_MS,
    );
    reach(
        &mut j,
        &new_op("NEW-OK", now - DAY_MS),
        OpState::Succeeded,
        now - DAY_MS,
    );
    drop(j);
    bulk_succeeded(&path, "OLD-", 30, now - 40 * DAY_MS);

    let cfg = tapgate::config::Config::load(&cfg_path).unwrap();
    let station = tapgate::daemon::station_from_config(cfg, &cfg_path).unwrap();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let n = tapgate::daemon::retention::run_once(&station, &stop_rx)
        .await
        .unwrap();
    assert_eq!(n, 30);
    assert_eq!(all_refs(&path), ["NEW-OK", "OLD-UNKNOWN"]);
    let files = exports(&exports_dir);
    assert_eq!(files.len(), 5, "30 rows in batches of 7: {files:?}");
    let mut got = exported_refs(&exports_dir);
    got.sort();
    let want: Vec<String> = (0..30).map(|i| format!("OLD-{i:08}")).collect();
    assert_eq!(got, want);
    // The station's journal still takes writes afterwards.
    station
        .journal
        .run(move |j| j.begin(&new_op("AFTER", now)))
        .await
        .unwrap();
}
