//! Journal errors, shaped by what the caller must do next.

use std::fmt;
use std::path::PathBuf;

use rusqlite::ErrorCode;

use super::model::JourneyState;
use super::rules::Rejection;
use crate::fare::OpState;

/// What kind of storage trouble SQLite reported. Every kind means the same thing to a lane:
/// the journal cannot promise durability right now, so no tap may be charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFault {
    /// `SQLITE_FULL`: the disk (or the journal's size cap) is full.
    Full,
    /// `SQLITE_IOERR`: the kernel refused a read, write or fsync.
    Io,
    /// `SQLITE_READONLY` / `SQLITE_PERM`: the file, its folder or the handle is read-only.
    ReadOnly,
    /// `SQLITE_BUSY` / `SQLITE_LOCKED`: another process held the lock past the busy timeout.
    Busy,
    /// `SQLITE_CORRUPT` / `SQLITE_NOTADB`: the file is damaged.
    Corrupt,
    /// `SQLITE_CANTOPEN`: the file or its folder is missing or not accessible.
    CannotOpen,
    /// Any other SQLite failure. Treated as storage trouble because a journal that cannot
    /// explain its failure cannot be trusted with money either.
    Other,
}

impl StorageFault {
    /// Classifies a SQLite result code.
    pub fn from_code(code: ErrorCode) -> StorageFault {
        match code {
            ErrorCode::DiskFull => StorageFault::Full,
            ErrorCode::SystemIoFailure | ErrorCode::NoLargeFileSupport => StorageFault::Io,
            ErrorCode::ReadOnly | ErrorCode::PermissionDenied => StorageFault::ReadOnly,
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::FileLockingProtocolFailed => StorageFault::Busy,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StorageFault::Corrupt,
            ErrorCode::CannotOpen => StorageFault::CannotOpen,
            _ => StorageFault::Other,
        }
    }
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageFault::Full => "disk full",
            StorageFault::Io => "I/O error",
            StorageFault::ReadOnly => "read-only",
            StorageFault::Busy => "locked by another process",
            StorageFault::Corrupt => "file damaged",
            StorageFault::CannotOpen => "cannot open",
            StorageFault::Other => "database failure",
        })
    }
}

/// The three things a caller can do about a journal error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The journal cannot write durably: refuse taps (no payment without a journal row),
    /// report it, try again later. Nothing about the operation itself was wrong.
    Storage,
    /// The request was wrong for the journal's current contents (unknown reference, illegal
    /// transition, a damaged row): this operation only; the journal itself is fine.
    Logic,
    /// The file is not a journal this build can use (newer schema, foreign file): stop and
    /// have a person fix the installation. Retrying cannot help.
    Schema,
}

/// Everything the journal can fail with.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The worker thread running a journal call died (a panic, or the runtime shutting down):
    /// nothing is known about that call, so it counts as a storage fault.
    #[error("journal worker failed: {0}")]
    Worker(String),
    /// The journal file could not be opened or set up.
    #[error("cannot open journal {}: {fault}: {source}", path.display())]
    Open {
        /// The journal file.
        path: PathBuf,
        /// What kind of trouble.
        fault: StorageFault,
        /// SQLite's own error.
        source: rusqlite::Error,
    },
    /// The file could not be put in WAL mode (some network and FUSE filesystems cannot):
    /// without WAL, readers block the writer and a commit is not one sequential append.
    #[error(
        "journal {} stays in journal_mode {mode}, not WAL: put it on a local filesystem",
        path.display()
    )]
    NoWal {
        /// The journal file.
        path: PathBuf,
        /// The mode SQLite kept.
        mode: String,
    },
    /// SQLite failed while reading or writing an open journal.
    #[error("journal {fault} while {context}: {source}")]
    Storage {
        /// What kind of trouble.
        fault: StorageFault,
        /// What the journal was doing.
        context: &'static str,
        /// SQLite's own error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer tapgate; this build refuses to touch it.
    #[error(
        "journal {} has schema version {found}, newer than the {supported} this tapgate knows; \
         refusing to downgrade: run the newer tapgate, or move the file aside",
        path.display()
    )]
    NewerSchema {
        /// The journal file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A read-only open found an older schema that only a read-write open can migrate.
    #[error(
        "journal {} has schema version {found}, older than the {supported} this tapgate reads; \
         start the daemon (or open it read-write) once to migrate it",
        path.display()
    )]
    OlderSchema {
        /// The journal file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: i64,
        /// The version this build reads.
        supported: i64,
    },
    /// The file is an SQLite database, but not a tapgate journal (or an empty one opened
    /// read-only).
    #[error("{} is not a tapgate journal: {why}", path.display())]
    NotAJournal {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        why: &'static str,
    },
    /// SQLite's integrity check found the file damaged: the journal refuses to be written
    /// to or read as if it were whole. The message is the technician's procedure.
    #[error(
        "journal {} is damaged: SQLite's quick_check found {}. tapgate will not write to it \
         nor list it as if it were whole. What to do: (1) stop tapgate and keep the damaged \
         file, with its -wal and -shm files, for the investigation: copy all three somewhere \
         safe and change nothing in them; (2) export what can still be read: `tapgate journal \
         export --salvage --journal {} > salvaged.csv`; (3) move the three files aside \
         (`mv {} {}.damaged`, and the same for -wal and -shm); (4) start tapgate: it creates a \
         new, empty journal; (5) reconcile the salvaged export with the aggregator's \
         settlement report: payments that were PENDING, UNKNOWN, REFUND_PENDING or ATTENTION \
         in the damaged journal are no longer followed up by tapgate and must be resolved by \
         a person",
        path.display(),
        summary(findings),
        path.display(),
        path.display(),
        path.display()
    )]
    Damaged {
        /// The journal file.
        path: PathBuf,
        /// SQLite's findings, one per line of `PRAGMA quick_check`.
        findings: Vec<String>,
    },
    /// A retention batch changed between its export and its deletion (a row moved on, or
    /// another prune took the batch number): nothing was deleted; the next run exports again.
    #[error(
        "retention batch {batch} not deleted: {why}; nothing was deleted, the next run retries"
    )]
    PruneConflict {
        /// The batch number.
        batch: i64,
        /// What changed.
        why: String,
    },
    /// No fare operation has this `partnerReferenceNo`.
    #[error("no fare operation {0} in the journal")]
    UnknownReference(String),
    /// `begin` with a `partnerReferenceNo` already journaled: never a second payment with it.
    #[error("fare operation {0} is already journaled")]
    DuplicateReference(String),
    /// A field of a new operation is unacceptable; nothing was written.
    #[error("fare operation field {field}: {why}")]
    InvalidOp {
        /// The [`super::NewOp`] field.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The state machine does not allow this move (see [`super::allowed`]).
    #[error("fare operation {partner_ref}: {from} -> {to} is not allowed")]
    IllegalTransition {
        /// The operation.
        partner_ref: String,
        /// Its state in the journal.
        from: OpState,
        /// The state asked for.
        to: OpState,
    },
    /// The move is allowed in principle but its fields break a money rule.
    #[error("fare operation {partner_ref}: {from} -> {to} rejected: {why}")]
    Rejected {
        /// The operation.
        partner_ref: String,
        /// Its state in the journal.
        from: OpState,
        /// The state asked for.
        to: OpState,
        /// The rule it broke.
        why: Rejection,
    },
    /// No journey has this id.
    #[error("no journey {0} in the journal")]
    UnknownJourney(i64),
    /// This passenger already has an open journey: anti-passback must decide first.
    #[error("journey {id} is already open for this passenger")]
    JourneyAlreadyOpen {
        /// The open journey.
        id: i64,
    },
    /// Only an open journey can be closed.
    #[error("journey {id} is {state}, not OPEN")]
    JourneyNotOpen {
        /// The journey.
        id: i64,
        /// Its state.
        state: JourneyState,
    },
    /// `close_journey` was asked to close a journey into `OPEN`.
    #[error("journey {0} cannot be closed into OPEN")]
    CloseIntoOpen(i64),
    /// A row exists but cannot be read back (unknown state spelling, out-of-range number).
    /// Listing functions skip such rows and count them; single-row reads report them.
    #[error("{table} row {key} is damaged: {detail}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// Its key, as text.
        key: String,
        /// What could not be read.
        detail: String,
    },
    /// SQLite refused a write for a constraint the journal's own checks should have caught.
    #[error("journal constraint violated while {context}: {source}")]
    Constraint {
        /// What the journal was doing.
        context: &'static str,
        /// SQLite's own error.
        source: rusqlite::Error,
    },
}

impl JournalError {
    /// Whether this is storage trouble: the lane must refuse taps while it lasts.
    pub fn is_storage_fault(&self) -> bool {
        self.class() == ErrorClass::Storage
    }

    /// What the caller should do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            JournalError::Open { .. }
            | JournalError::Damaged { .. }
            | JournalError::Worker(_)
            | JournalError::NoWal { .. }
            | JournalError::Storage { .. } => ErrorClass::Storage,
            JournalError::NewerSchema { .. }
            | JournalError::OlderSchema { .. }
            | JournalError::NotAJournal { .. } => ErrorClass::Schema,
            JournalError::UnknownReference(_)
            | JournalError::DuplicateReference(_)
            | JournalError::InvalidOp { .. }
            | JournalError::IllegalTransition { .. }
            | JournalError::Rejected { .. }
            | JournalError::UnknownJourney(_)
            | JournalError::JourneyAlreadyOpen { .. }
            | JournalError::JourneyNotOpen { .. }
            | JournalError::CloseIntoOpen(_)
            | JournalError::CorruptRow { .. }
            | JournalError::PruneConflict { .. }
            | JournalError::Constraint { .. } => ErrorClass::Logic,
        }
    }

    /// The storage fault kind, when this is one.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        match self {
            JournalError::Open { fault, .. } | JournalError::Storage { fault, .. } => Some(*fault),
            JournalError::NoWal { .. } => Some(StorageFault::Other),
            JournalError::Damaged { .. } => Some(StorageFault::Corrupt),
            _ => None,
        }
    }

    /// Wraps a SQLite error raised while `context`.
    pub(crate) fn db(context: &'static str, source: rusqlite::Error) -> JournalError {
        match source.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => JournalError::Constraint { context, source },
            Some(code) => JournalError::Storage {
                fault: StorageFault::from_code(code),
                context,
                source,
            },
            None => JournalError::Storage {
                fault: StorageFault::Other,
                context,
                source,
            },
        }
    }

    /// Wraps a SQLite error raised while opening `path`.
    pub(crate) fn open(path: &std::path::Path, source: rusqlite::Error) -> JournalError {
        let fault = source
            .sqlite_error_code()
            .map_or(StorageFault::Other, StorageFault::from_code);
        JournalError::Open {
            path: path.to_path_buf(),
            fault,
            source,
        }
    }
}

/// The first few of SQLite's findings, for a one-line message.
fn summary(findings: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = format!("{} problem(s): ", findings.len());
    let shown: Vec<&str> = findings.iter().take(SHOWN).map(String::as_str).collect();
    s.push_str(&shown.join("; "));
    if findings.len() > SHOWN {
        s.push_str(&format!("; and {} more", findings.len() - SHOWN));
    }
    s
}

/// `?`-friendly context for SQLite results.
pub(crate) trait DbContext<T> {
    /// Maps the error with [`JournalError::db`].
    fn ctx(self, context: &'static str) -> Result<T, JournalError>;
}

impl<T> DbContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, JournalError> {
        self.map_err(|e| JournalError::db(context, e))
    }
}
