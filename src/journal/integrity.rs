//! The integrity check every open runs, and the journal file's permissions.
//!
//! A journal whose b-tree pages are damaged can still accept inserts into its sound pages, so
//! SQLite would happily commit taps to it while some of its payment rows are unreadable or
//! wrong. [`Journal::open`](super::Journal::open) and
//! [`Journal::open_read_only`](super::Journal::open_read_only) therefore run
//! `PRAGMA quick_check` first and refuse a damaged file with
//! [`JournalError::Damaged`](super::JournalError::Damaged).
//!
//! `quick_check` reads every page (it skips only the index-versus-table cross check of the full
//! `integrity_check`), so its cost grows with the file: `cargo bench --bench journal_retention`
//! prints it at 100 k and 1 M operations. Retention keeps a gate's journal to its last
//! `retain_days`; the check is still cut off after [`OPEN_CHECK_BUDGET`] (read-only opens:
//! [`READ_ONLY_CHECK_BUDGET`]) so that a huge journal cannot hold the start-up past systemd's
//! timeout. A cut-off check is logged and counts as
//! passed; `tapgate doctor` runs the whole check without a limit.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

/// Longest a read-write open (the daemon's start, `tapgate tap`, `reconcile`) spends in
/// `quick_check`: well inside systemd's start timeout.
pub const OPEN_CHECK_BUDGET: Duration = Duration::from_secs(10);

/// Longest a read-only open (`tapgate journal list`, `show`, ...) spends in `quick_check`: a
/// technician is waiting, and the daemon already checked the file when it started.
pub const READ_ONLY_CHECK_BUDGET: Duration = Duration::from_secs(3);

/// What the integrity check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CheckOutcome {
    /// `quick_check` said `ok`.
    Sound,
    /// `quick_check`'s findings.
    Damaged(Vec<String>),
    /// The budget ran out before the check finished.
    Unfinished,
}

/// Runs `PRAGMA quick_check` on `conn`, interrupting it after `budget` (`None`: no limit).
pub(crate) fn quick_check(
    conn: &Connection,
    budget: Option<Duration>,
) -> Result<CheckOutcome, rusqlite::Error> {
    let Some(budget) = budget else {
        return run_check(conn);
    };
    let interrupt = conn.get_interrupt_handle();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            // Disconnected (the check ended) or an explicit `done`: no interrupt. An interrupt
            // that arrives just after the check ended is harmless: SQLite clears it when the
            // next statement starts with none running.
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(budget) {
                interrupt.interrupt();
            }
        });
        let result = run_check(conn);
        drop(done_tx);
        match result {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {
                Ok(CheckOutcome::Unfinished)
            }
            other => other,
        }
    })
}

/// Whether a `quick_check` finding is about the values of one row (a constraint a well-formed
/// record breaks: written around the journal's checks, by hand say) rather than about the
/// file's structure. Such rows are readable and the journal's reads already skip and count
/// them ([`Journal::quarantined`](super::Journal::quarantined)); damaged pages are not.
pub(crate) fn is_row_finding(finding: &str) -> bool {
    finding.starts_with("CHECK constraint failed in ")
        || finding.starts_with("NULL value in ")
        || finding.starts_with("NUMERIC value in ")
        || finding.starts_with("TEXT value in ")
        || (finding.starts_with("non-") && finding.contains(" value in "))
}

fn run_check(conn: &Connection) -> Result<CheckOutcome, rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<String>, _>>()?;
    // SQLite puts several findings in one row, after a "*** in database main ***" heading:
    // one finding per line, headings dropped, so a message stays on one line.
    let found: Vec<String> = rows
        .iter()
        .flat_map(|row| row.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "ok" && !l.starts_with("*** in database"))
        .map(str::to_owned)
        .collect();
    // Never read a verdict other than "ok" as sound, whatever its layout.
    let found = if found.is_empty() && rows.iter().any(|r| r != "ok") {
        vec![rows.join(" ")]
    } else {
        found
    };
    Ok(if found.is_empty() {
        CheckOutcome::Sound
    } else {
        CheckOutcome::Damaged(found)
    })
}

/// Permission bits the journal's files get: read and write for the owner only. They hold
/// passenger keys, masked PANs and the aggregator's references.
pub const FILE_MODE: u32 = 0o600;

/// Creates an empty journal file with [`FILE_MODE`] when `path` does not exist yet, so that
/// SQLite (which would create it 0644 less the umask) opens ours. SQLite creates the `-wal` and
/// `-shm` files with the main file's mode, so they are 0600 too.
///
/// Any failure is left for SQLite to report in its own words (a missing folder, say).
pub(crate) fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    // create_new: another process creating the same journal at this moment wins, harmlessly.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
}

/// The journal's files (the file itself, `-wal`, `-shm`) that exist and that group or others
/// may read or write, with their modes.
pub fn open_to_others(path: &Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if let Ok(m) = std::fs::metadata(&p) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push((p, mode));
            }
        }
    }
    out
}
