//! A process killed with SIGKILL keeps every journal write that had returned.
//!
//! The test re-executes its own binary as a child (selected by an environment variable) that
//! journals operations as fast as it can and says so on stdout after each write returns; the
//! parent kills it mid-stream and reopens the file. SIGKILL leaves the kernel's page cache
//! alone, so this proves each write was committed (not left in an open transaction) and that
//! WAL recovery opens the file; surviving a power cut additionally relies on
//! `synchronous=FULL`, which the library's unit tests check is set.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::journal::{Journal, NewOp, OpFilter, OpKind, Transition};

const CHILD_ENV: &str = "TAPGATE_JOURNAL_CRASH_CHILD";
const TEST_NAME: &str = "sigkill_right_after_begin_leaves_the_rows_on_disk";
const T0: i64 = 1_763_780_000_000;
/// The child stops on its own after this many operations, so a parent that died early cannot
/// leave it filling the disk.
const CHILD_MAX_OPS: u32 = 20_000;

fn op(n: u32) -> NewOp {
    NewOp {
        partner_reference_no: format!("TG-BLM-02-{n:06}"),
        kind: OpKind::Settle,
        lane: "BLM-OUT-2".into(),
        direction: Direction::Out,
        station_id: "BLM".into(),
        amount: Rupiah(8000),
        pan_key: format!("{n:064x}"),
        pan_masked: "93600522*******0042".into(),
        nns: "93600522".into(),
        journey_id: None,
        next_attempt_at_ms: T0 + i64::from(n) + 2_000,
        created_at_ms: T0 + i64::from(n),
    }
}

fn child(path: &Path) {
    let mut j = Journal::open(path).unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0..CHILD_MAX_OPS {
        let o = op(n);
        j.begin(&o).unwrap();
        writeln!(out, "BEGUN {}", o.partner_reference_no).unwrap();
        out.flush().unwrap();
        if n % 2 == 0 {
            j.transition(
                &o.partner_reference_no,
                &Transition::new(OpState::Unknown, o.created_at_ms + 500),
            )
            .unwrap();
            writeln!(out, "UNKNOWN {}", o.partner_reference_no).unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_right_after_begin_leaves_the_rows_on_disk() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&path));
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();

    let mut begun = Vec::new();
    let mut unknown = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(r) = line.strip_prefix("BEGUN ") {
            begun.push(r.to_owned());
        } else if let Some(r) = line.strip_prefix("UNKNOWN ") {
            unknown.push(r.to_owned());
        }
        if begun.len() == 40 {
            // Child::kill is SIGKILL on Unix: no destructor, no SQLite close, no flush.
            proc.kill().unwrap();
            break;
        }
    }
    let status = proc.wait().unwrap();
    assert_eq!(begun.len(), 40, "the child stopped early: {status:?}");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    let j = Journal::open(&path).unwrap();
    for r in &begun {
        let row = j
            .get(r)
            .unwrap()
            .unwrap_or_else(|| panic!("{r} was begun but is not on disk"));
        let expected = if unknown.contains(r) {
            OpState::Unknown
        } else {
            OpState::Pending
        };
        assert!(
            row.state == expected
                || (expected == OpState::Pending && row.state == OpState::Unknown),
            "{r}: {} (expected {expected})",
            row.state
        );
    }
    // Rows the child wrote after its last report may be there too, but only whole ones.
    let all = j.list(&OpFilter::default()).unwrap();
    assert!(all.len() >= begun.len());
    assert_eq!(j.quarantined(), 0);
    for row in &all {
        assert!(!j.events(&row.partner_reference_no).unwrap().is_empty());
    }
    // Every one of them is the reconciler's to resolve: none is lost.
    let due = j.due(i64::MAX, usize::MAX).unwrap();
    assert_eq!(due.len(), all.len());
}
