//! Retention: final operations older than `[journal] retain_days` leave the journal, exported
//! first.
//!
//! A batch is at most `prune_batch` operations (plus the other operation of a journey when one
//! of its two is chosen: a journey leaves whole or not at all) and goes in three steps:
//!
//! 1. [`Journal::prune_candidates`] picks it in one read snapshot: operations that are final
//!    (`SUCCEEDED`, `DECLINED`, `REFUNDED`; never `PENDING`, `UNKNOWN`, `REFUND_PENDING` nor
//!    `ATTENTION`), begun and last changed before the cutoff, whose journeys are closed before
//!    the cutoff and hold only such operations. An operation that a non-final one depends on
//!    (the tap-in of a journey whose tap-out is still uncertain) stays with it.
//! 2. [`ExportDir::write`] writes the batch as the settlement CSV of `tapgate journal export`
//!    to `<stem>-pruned-<batch>.csv` and fsyncs it and its folder.
//! 3. [`Journal::prune_commit`] deletes the rows (events and journeys with them) and records
//!    the batch in `prune_log`, in one transaction, after checking that no row changed since
//!    step 1.
//!
//! A crash between 2 and 3 leaves a file whose batch number `prune_log` does not hold: the next
//! run removes it and exports those rows again under the same number, so nothing is lost and
//! nothing is exported twice. The journal lock is only held for steps 1 and 3; the daemon
//! releases it between batches so a tap waits for at most one batch.
//!
//! Deleted pages go to SQLite's freelist and are reused by new rows: once retention runs, the
//! file stops growing (it does not shrink; `VACUUM` with the daemon stopped gives the space
//! back to the filesystem).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::error::DbContext;
use super::{load_op, write_csv, Journal, JournalError, OpRow};
use crate::fare::OpState;

/// The states retention may delete. `ATTENTION` is not among them: it waits for a person.
pub const PRUNABLE_STATES: [OpState; 3] =
    [OpState::Succeeded, OpState::Declined, OpState::Refunded];

/// A group larger than this (operations and journeys linked to each other) is left alone: a
/// sound journal links one or two operations to a journey.
const MAX_GROUP: usize = 16;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// One retention batch, as picked by [`Journal::prune_candidates`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneBatch {
    /// The batch number, which names its export file.
    pub number: i64,
    /// Only operations begun and last changed before this time (Unix ms) are in it.
    pub cutoff_ms: i64,
    /// The operations, oldest first, exactly as they will be exported.
    pub ops: Vec<OpRow>,
    /// The journeys that leave with them.
    pub journeys: Vec<i64>,
}

/// Operations and journeys that are linked to each other and must leave together.
#[derive(Default)]
struct Group {
    ops: BTreeSet<String>,
    journeys: BTreeSet<i64>,
}

impl Journal {
    /// The next retention batch: at most about `limit` prunable operations (see the module
    /// documentation) whose last change is before `cutoff_ms`, with their journeys; `None` when
    /// there is nothing to prune. Reads only.
    pub fn prune_candidates(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Option<PruneBatch>, JournalError> {
        let limit = limit.max(1);
        // One snapshot for the whole pick.
        let tx = self
            .conn
            .unchecked_transaction()
            .ctx("starting a retention pick")?;
        let number = next_batch(&tx)?;
        let mut stmt = tx
            .prepare(
                // Walk the time index from the oldest row and stop once the batch is full:
                // without the hint SQLite may prefer the state index and sort every final
                // row of the journal for each batch.
                "SELECT partner_reference_no FROM fare_ops INDEXED BY fare_ops_created \
                 WHERE created_at_ms < ?1 AND updated_at_ms < ?1 \
                 AND state IN ('SUCCEEDED', 'DECLINED', 'REFUNDED') \
                 ORDER BY created_at_ms",
            )
            .ctx("picking a retention batch")?;
        let mut rows = stmt.query([cutoff_ms]).ctx("picking a retention batch")?;
        let mut chosen = Group::default();
        while chosen.ops.len() < limit {
            let Some(row) = rows.next().ctx("picking a retention batch")? else {
                break;
            };
            let Ok(reference) = row.get::<_, String>(0) else {
                continue;
            };
            if chosen.ops.contains(&reference) {
                continue;
            }
            if let Some(g) = group_if_prunable(&tx, &reference, cutoff_ms)? {
                chosen.ops.extend(g.ops);
                chosen.journeys.extend(g.journeys);
            }
        }
        drop(rows);
        drop(stmt);
        if chosen.ops.is_empty() {
            return Ok(None);
        }
        let mut ops = Vec::with_capacity(chosen.ops.len());
        for r in &chosen.ops {
            if let Some(op) = load_op(&tx, r)? {
                ops.push(op);
            }
        }
        ops.sort_by(|a, b| {
            (a.created_at_ms, &a.partner_reference_no)
                .cmp(&(b.created_at_ms, &b.partner_reference_no))
        });
        Ok(Some(PruneBatch {
            number,
            cutoff_ms,
            ops,
            journeys: chosen.journeys.into_iter().collect(),
        }))
    }

    /// Deletes `batch` (its operations, their events and its journeys) and records it in
    /// `prune_log` as exported to `file`, in one transaction. Refuses with
    /// [`JournalError::PruneConflict`], deleting nothing, when any row changed since
    /// [`Journal::prune_candidates`] or another prune took the batch number.
    pub fn prune_commit(
        &mut self,
        batch: &PruneBatch,
        file: &str,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        let conflict = |why: String| JournalError::PruneConflict {
            batch: batch.number,
            why,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("starting a retention delete")?;
        let next = next_batch(&tx)?;
        if next != batch.number {
            return Err(conflict(format!(
                "batch {} was taken by another prune (next is {next})",
                batch.number
            )));
        }
        let refs: BTreeSet<&str> = batch
            .ops
            .iter()
            .map(|o| o.partner_reference_no.as_str())
            .collect();
        let journeys: BTreeSet<i64> = batch.journeys.iter().copied().collect();
        for op in &batch.ops {
            let now = load_op(&tx, &op.partner_reference_no)?;
            if now.as_ref() != Some(op) {
                return Err(conflict(format!(
                    "operation {} changed after its export",
                    op.partner_reference_no
                )));
            }
            match group_if_prunable(&tx, &op.partner_reference_no, batch.cutoff_ms)? {
                Some(g)
                    if g.ops.iter().all(|r| refs.contains(r.as_str()))
                        && g.journeys.is_subset(&journeys) => {}
                _ => {
                    return Err(conflict(format!(
                        "operation {} or its journey is no longer prunable with this batch",
                        op.partner_reference_no
                    )))
                }
            }
        }
        // The three tables reference each other; the checks run at commit, when all of a
        // group's rows are gone.
        tx.pragma_update(None, "defer_foreign_keys", "ON")
            .ctx("deferring foreign keys")?;
        for id in &batch.journeys {
            tx.execute("DELETE FROM journeys WHERE id = ?1", [id])
                .ctx("deleting a pruned journey")?;
        }
        for r in &refs {
            tx.execute("DELETE FROM fare_ops WHERE partner_reference_no = ?1", [r])
                .ctx("deleting a pruned operation")?;
            tx.execute("DELETE FROM events WHERE partner_reference_no = ?1", [r])
                .ctx("deleting a pruned operation's events")?;
        }
        tx.execute(
            "INSERT INTO prune_log (batch, file, operations, journeys, cutoff_ms, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                batch.number,
                file,
                i64::try_from(batch.ops.len()).unwrap_or(i64::MAX),
                i64::try_from(batch.journeys.len()).unwrap_or(i64::MAX),
                batch.cutoff_ms,
                at_ms
            ],
        )
        .ctx("recording a retention batch")?;
        tx.commit().ctx("committing a retention delete")
    }

    /// The number of the last retention batch deleted (0: none yet).
    pub fn last_prune_batch(&self) -> Result<i64, JournalError> {
        Ok(next_batch(&self.conn)? - 1)
    }

    /// Every operation that can still be read, oldest first, for a journal refused as damaged
    /// (opened with [`Journal::open_for_salvage`]). Row ids are gathered from the table and
    /// from two of its indexes (each read up to its first damaged page), then each row is
    /// read on its own, so one damaged page costs only the rows on it. Returns the rows and
    /// how many of the row ids found could not be read (plus the first error met, if any).
    pub fn salvage(&self) -> (Vec<OpRow>, u64, Option<JournalError>) {
        let mut first_error: Option<JournalError> = None;
        let note = |e: rusqlite::Error, first: &mut Option<JournalError>| {
            if first.is_none() {
                *first = Some(JournalError::db("salvaging the journal", e));
            }
        };
        let mut ids = BTreeSet::new();
        // NOT INDEXED walks the table itself; the two indexes reach rows past a damaged table
        // page.
        for sql in [
            "SELECT rowid FROM fare_ops NOT INDEXED",
            "SELECT rowid FROM fare_ops INDEXED BY fare_ops_created",
            "SELECT rowid FROM fare_ops INDEXED BY fare_ops_state",
        ] {
            let mut stmt = match self.conn.prepare(sql) {
                Ok(s) => s,
                Err(e) => {
                    note(e, &mut first_error);
                    continue;
                }
            };
            let mut rows = match stmt.query([]) {
                Ok(r) => r,
                Err(e) => {
                    note(e, &mut first_error);
                    continue;
                }
            };
            loop {
                match rows.next() {
                    Ok(Some(row)) => match row.get::<_, i64>(0) {
                        Ok(id) => {
                            ids.insert(id);
                        }
                        Err(e) => note(e, &mut first_error),
                    },
                    Ok(None) => break,
                    Err(e) => {
                        note(e, &mut first_error);
                        break;
                    }
                }
            }
        }
        let sql = format!(
            "SELECT {} FROM fare_ops WHERE rowid = ?1",
            super::OP_COLUMNS
        );
        let mut out = Vec::new();
        let mut unreadable = 0u64;
        let mut stmt = match self.conn.prepare(&sql) {
            Ok(s) => s,
            Err(e) => {
                note(e, &mut first_error);
                return (out, ids.len() as u64, first_error);
            }
        };
        for id in ids {
            let mut rows = match stmt.query([id]) {
                Ok(r) => r,
                Err(e) => {
                    unreadable += 1;
                    note(e, &mut first_error);
                    continue;
                }
            };
            match rows.next() {
                Ok(Some(row)) => match super::parse_op(row) {
                    Ok(op) => out.push(op),
                    Err(super::RowError::Corrupt { key, detail }) => {
                        unreadable += 1;
                        self.quarantine("fare_ops", &key, &detail);
                    }
                    Err(super::RowError::Db(e)) => {
                        unreadable += 1;
                        note(e, &mut first_error);
                    }
                },
                // A row id from a damaged index that leads nowhere.
                Ok(None) => {}
                Err(e) => {
                    unreadable += 1;
                    note(e, &mut first_error);
                }
            }
        }
        out.sort_by(|a, b| {
            (a.created_at_ms, &a.partner_reference_no)
                .cmp(&(b.created_at_ms, &b.partner_reference_no))
        });
        (out, unreadable, first_error)
    }
}

fn next_batch(conn: &Connection) -> Result<i64, JournalError> {
    conn.query_row(
        "SELECT coalesce(max(batch), 0) + 1 FROM prune_log",
        [],
        |r| r.get(0),
    )
    .ctx("reading the retention log")
}

/// The operations and journeys linked to `reference` (through `journey_id`, a journey's tap-in
/// or tap-out), when every one of them may leave the journal before `cutoff_ms`; `None` when
/// any may not (or a row cannot be read).
fn group_if_prunable(
    conn: &Connection,
    reference: &str,
    cutoff_ms: i64,
) -> Result<Option<Group>, JournalError> {
    let mut g = Group::default();
    let mut todo_ops = vec![reference.to_owned()];
    let mut todo_journeys: Vec<i64> = Vec::new();
    while !todo_ops.is_empty() || !todo_journeys.is_empty() {
        if g.ops.len() + g.journeys.len() > MAX_GROUP {
            return Ok(None);
        }
        if let Some(r) = todo_ops.pop() {
            if !g.ops.insert(r.clone()) {
                continue;
            }
            let op = match load_op(conn, &r) {
                Ok(Some(op)) => op,
                Ok(None) | Err(JournalError::CorruptRow { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let prunable = PRUNABLE_STATES.contains(&op.state)
                && op.created_at_ms < cutoff_ms
                && op.updated_at_ms < cutoff_ms;
            if !prunable {
                return Ok(None);
            }
            todo_journeys.extend(op.journey_id);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM journeys WHERE tap_in_ref = ?1 \
                     UNION SELECT id FROM journeys WHERE tap_out_ref = ?1",
                )
                .ctx("finding an operation's journeys")?;
            let ids = stmt
                .query_map([&r], |row| row.get::<_, i64>(0))
                .ctx("finding an operation's journeys")?
                .collect::<Result<Vec<i64>, _>>()
                .ctx("finding an operation's journeys")?;
            todo_journeys.extend(ids);
        } else if let Some(id) = todo_journeys.pop() {
            if !g.journeys.insert(id) {
                continue;
            }
            let found: Option<(String, Option<i64>, String, Option<String>)> = conn
                .query_row(
                    "SELECT state, closed_at_ms, tap_in_ref, tap_out_ref FROM journeys \
                     WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .ctx("reading a journey")?;
            // An open journey, or one closed too recently, keeps its operations.
            let Some((state, Some(closed), tap_in, tap_out)) = found else {
                return Ok(None);
            };
            if state == "OPEN" || closed >= cutoff_ms {
                return Ok(None);
            }
            todo_ops.push(tap_in);
            todo_ops.extend(tap_out);
            let mut stmt = conn
                .prepare_cached("SELECT partner_reference_no FROM fare_ops WHERE journey_id = ?1")
                .ctx("finding a journey's operations")?;
            let refs = stmt
                .query_map([id], |row| row.get::<_, String>(0))
                .ctx("finding a journey's operations")?
                .collect::<Result<Vec<String>, _>>()
                .ctx("finding a journey's operations")?;
            todo_ops.extend(refs);
        }
    }
    Ok(Some(g))
}

/// The folder retention exports to, locked for one prune at a time (the daemon's task and
/// `tapgate journal prune` may both run: the second waits its turn or gives up).
#[derive(Debug)]
pub struct ExportDir {
    dir: PathBuf,
    prefix: String,
    _lock: File,
}

/// Why a retention run stopped.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The journal refused (a storage fault, or a batch that changed: try again later).
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The export could not be written; nothing was deleted.
    #[error("retention export in {}: {source}; nothing was deleted", dir.display())]
    Export {
        /// The export folder.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Another prune holds the export folder's lock.
    #[error("another prune of this journal is running (lock {}); try again later", lock.display())]
    Busy {
        /// The lock file.
        lock: PathBuf,
    },
}

impl ExportDir {
    /// Creates `dir` (mode 0700) when missing and takes its lock for the journal at `journal`;
    /// [`PruneError::Busy`] when another prune holds it.
    pub fn lock(dir: &Path, journal: &Path) -> Result<ExportDir, PruneError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        use std::os::unix::io::AsRawFd as _;
        let export = |source| PruneError::Export {
            dir: dir.to_path_buf(),
            source,
        };
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(export)?;
        }
        let prefix = journal
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("journal")
            .to_owned();
        let lock_path = dir.join(format!(".{prefix}-prune.lock"));
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(export)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(PruneError::Busy { lock: lock_path });
            }
            return Err(export(e));
        }
        Ok(ExportDir {
            dir: dir.to_path_buf(),
            prefix,
            _lock: lock,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The export file name of batch `number`.
    pub fn file_name(&self, number: i64) -> String {
        format!("{}-pruned-{number:08}.csv", self.prefix)
    }

    /// Removes export files the journal has not recorded (numbers above `last_committed`):
    /// left by a run that stopped between its export and its delete, whose rows are still in
    /// the journal and will be exported again.
    pub fn remove_unrecorded(&self, last_committed: i64) -> Result<Vec<PathBuf>, PruneError> {
        let export = |source| PruneError::Export {
            dir: self.dir.clone(),
            source,
        };
        let head = format!("{}-pruned-", self.prefix);
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(export)? {
            let entry = entry.map_err(export)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let number = name
                .strip_prefix(&head)
                .and_then(|n| n.strip_suffix(".csv"))
                .and_then(|n| n.parse::<i64>().ok());
            let stale_tmp = name == self.tmp_name();
            if stale_tmp || number.is_some_and(|n| n > last_committed) {
                std::fs::remove_file(entry.path()).map_err(export)?;
                removed.push(entry.path());
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.dir).map_err(export)?;
        }
        Ok(removed)
    }

    fn tmp_name(&self) -> String {
        format!(".{}-pruned.tmp", self.prefix)
    }

    /// Writes `batch` as CSV to its file, durably (file and folder fsynced) and whole (written
    /// to a temporary file, then renamed over any earlier attempt). Returns the file's path.
    pub fn write(&self, batch: &PruneBatch) -> Result<PathBuf, PruneError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let export = |source| PruneError::Export {
            dir: self.dir.clone(),
            source,
        };
        let tmp = self.dir.join(self.tmp_name());
        let path = self.dir.join(self.file_name(batch.number));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(export)?;
        let mut w = io::BufWriter::new(f);
        write_csv(&batch.ops, &mut w).map_err(export)?;
        w.flush().map_err(export)?;
        let f = w.into_inner().map_err(|e| export(e.into_error()))?;
        f.sync_all().map_err(export)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(export)?;
        sync_dir(&self.dir).map_err(export)?;
        Ok(path)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a retention run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Batches deleted.
    pub batches: u64,
    /// Operations deleted (and exported).
    pub operations: u64,
    /// Journeys deleted with them.
    pub journeys: u64,
    /// The export files written, in order.
    pub files: Vec<PathBuf>,
    /// Export files of an interrupted earlier run that were removed (their rows were exported
    /// again).
    pub removed: Vec<PathBuf>,
}

/// A test hook: when the environment variable `TAPGATE_FAILPOINT` names `point`, the process
/// kills itself there with SIGKILL, as a power cut would stop it. Unset in production.
pub fn failpoint(point: &str) {
    if std::env::var_os("TAPGATE_FAILPOINT").is_some_and(|v| v == point) {
        // SAFETY: raise has no memory preconditions; SIGKILL cannot be caught.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}

/// Runs retention to the end on one open journal, batch after batch: every prunable operation
/// whose last change is before `cutoff_ms` is exported to `dir` and deleted. For `tapgate
/// journal prune`; the daemon runs the same steps through its journal handle, releasing the
/// journal between them.
pub fn prune_all(
    journal: &mut Journal,
    dir: &Path,
    cutoff_ms: i64,
    batch_size: usize,
    now_ms: i64,
) -> Result<PruneReport, PruneError> {
    let export = ExportDir::lock(dir, journal.path())?;
    let mut report = PruneReport {
        removed: export.remove_unrecorded(journal.last_prune_batch()?)?,
        ..PruneReport::default()
    };
    while let Some(batch) = journal.prune_candidates(cutoff_ms, batch_size)? {
        let file = export.write(&batch)?;
        failpoint("prune-after-export");
        let name = export.file_name(batch.number);
        journal.prune_commit(&batch, &name, now_ms)?;
        report.batches += 1;
        report.operations += batch.ops.len() as u64;
        report.journeys += batch.journeys.len() as u64;
        report.files.push(file);
    }
    Ok(report)
}
