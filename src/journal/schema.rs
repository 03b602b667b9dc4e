//! The journal's schema, versioned with `PRAGMA user_version` and migrated in order.
//!
//! To change the schema, append a migration to [`MIGRATIONS`]; never edit one that has shipped.
//! A journal's `user_version` is the number of migrations applied to it.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::error::{DbContext, JournalError};

/// `PRAGMA application_id` of a tapgate journal (`"TAPG"`), so a foreign SQLite file is
/// recognised instead of being migrated into.
pub const APPLICATION_ID: i64 = 0x5441_5047;

/// The ordered migrations; index `i` takes a journal from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

// Tables are STRICT so a value of the wrong type is refused on write instead of being found
// on read. fare_ops and journeys reference each other; SQLite checks foreign keys when rows
// are written, so the forward reference is fine.
const V1: &str = r#"
CREATE TABLE journeys (
    id            INTEGER PRIMARY KEY,
    pan_key       TEXT    NOT NULL,
    entry_station TEXT    NOT NULL,
    tap_in_ref    TEXT    NOT NULL REFERENCES fare_ops(partner_reference_no),
    tap_out_ref   TEXT    REFERENCES fare_ops(partner_reference_no),
    state         TEXT    NOT NULL
                  CHECK (state IN ('OPEN', 'CLOSED', 'VOID', 'STALE_CLOSED', 'RELEASED')),
    fare          INTEGER CHECK (fare IS NULL OR fare >= 0),
    opened_at_ms  INTEGER NOT NULL,
    closed_at_ms  INTEGER
) STRICT;

-- Anti-passback relies on there being at most one open journey per passenger.
CREATE UNIQUE INDEX journeys_one_open_per_pan ON journeys(pan_key) WHERE state = 'OPEN';
CREATE INDEX journeys_open_by_age ON journeys(opened_at_ms) WHERE state = 'OPEN';

CREATE TABLE fare_ops (
    partner_reference_no TEXT    PRIMARY KEY NOT NULL,
    kind                 TEXT    NOT NULL CHECK (kind IN ('hold', 'settle')),
    lane                 TEXT    NOT NULL,
    direction            TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
    station_id           TEXT    NOT NULL,
    amount               INTEGER NOT NULL CHECK (amount > 0),
    pan_key              TEXT    NOT NULL,
    pan_masked           TEXT    NOT NULL,
    nns                  TEXT    NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN ('PENDING', 'UNKNOWN', 'SUCCEEDED',
                                 'DECLINED', 'REFUND_PENDING', 'REFUNDED', 'ATTENTION')),
    reference_no         TEXT,
    response_code        TEXT,
    gate_opened          INTEGER CHECK (gate_opened IN (0, 1)),
    reason               TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at_ms   INTEGER,
    refund_no            TEXT,
    refund_amount        INTEGER CHECK (refund_amount IS NULL OR refund_amount > 0),
    created_at_ms        INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL,
    journey_id           INTEGER REFERENCES journeys(id)
) STRICT;

CREATE INDEX fare_ops_due ON fare_ops(created_at_ms)
    WHERE state IN ('PENDING', 'UNKNOWN', 'REFUND_PENDING');
CREATE INDEX fare_ops_created ON fare_ops(created_at_ms);
CREATE INDEX fare_ops_state ON fare_ops(state);

CREATE TABLE events (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    partner_reference_no TEXT    NOT NULL REFERENCES fare_ops(partner_reference_no),
    at_ms                INTEGER NOT NULL,
    from_state           TEXT,
    to_state             TEXT    NOT NULL,
    detail               TEXT    NOT NULL
) STRICT;

CREATE INDEX events_by_op ON events(partner_reference_no, id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"#;

// Version 2: the reconciler looks for successful holds that belong to no journey on every
// pass; the partial index keeps that a lookup of the few such rows, not a scan of every hold.
// `owner` names the process that began an operation (`pid:start time`), so that start-up
// recovery takes over the PENDING rows of dead processes at once and leaves those of a live
// one (another `tapgate tap`, a daemon sharing the file) to it.
const V2: &str = r#"
CREATE INDEX fare_ops_holds_without_journey ON fare_ops(created_at_ms)
    WHERE kind = 'hold' AND state = 'SUCCEEDED' AND journey_id IS NULL;
ALTER TABLE fare_ops ADD COLUMN owner TEXT;
"#;

// Retention (version 3): whole operations can now leave the journal, exported first.
// - Events stay append-only while their operation is journaled; once retention has deleted the
//   operation (in the same transaction, foreign keys deferred), its events may go too.
// - The indexes let SQLite find a journey by either of its operations, and the operations of a
//   journey, without scanning the table: both retention and the foreign-key checks of a delete
//   need them.
// - prune_log numbers the export files: a batch's file is named after the next number, and the
//   number is taken in the transaction that deletes the rows, so a crash between writing the
//   file and deleting the rows leaves a file whose number is not taken: the next run writes that
//   same file again, over it, and nothing is exported twice.
const V3: &str = r#"
DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN EXISTS (SELECT 1 FROM fare_ops WHERE partner_reference_no = OLD.partner_reference_no)
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE INDEX journeys_by_tap_in ON journeys(tap_in_ref);
CREATE INDEX journeys_by_tap_out ON journeys(tap_out_ref);
CREATE INDEX fare_ops_by_journey ON fare_ops(journey_id);

CREATE TABLE prune_log (
    batch       INTEGER PRIMARY KEY,
    file        TEXT    NOT NULL,
    operations  INTEGER NOT NULL CHECK (operations >= 0),
    journeys    INTEGER NOT NULL CHECK (journeys >= 0),
    cutoff_ms   INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL
) STRICT;
"#;

// The line (version 4): journey events for the line's shared store are written to
// line_outbox in the same transaction as the journey change, and deleted once the line has
// them. An exit charged the unknown-entry fare while a line is in use is marked
// entry_unknown; converged_* record when the reconciler matched it on the line.
const V4: &str = r#"
CREATE TABLE line_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    tap_in_ref      TEXT    NOT NULL,
    kind            TEXT    NOT NULL
                    CHECK (kind IN ('OPENED', 'CLOSED', 'STALE_CLOSED', 'VOID', 'RELEASED')),
    station         TEXT    NOT NULL,
    at_ms           INTEGER NOT NULL,
    pan_key         TEXT,
    tap_out_ref     TEXT,
    fare            INTEGER CHECK (fare IS NULL OR fare >= 0),
    references_hold INTEGER CHECK (references_hold IS NULL OR references_hold IN (0, 1)),
    created_at_ms   INTEGER NOT NULL
) STRICT;

ALTER TABLE fare_ops ADD COLUMN entry_unknown INTEGER NOT NULL DEFAULT 0
    CHECK (entry_unknown IN (0, 1));
ALTER TABLE fare_ops ADD COLUMN converged_at_ms INTEGER;
ALTER TABLE fare_ops ADD COLUMN converged_with TEXT;
CREATE INDEX fare_ops_to_converge ON fare_ops(created_at_ms)
    WHERE entry_unknown = 1 AND converged_at_ms IS NULL;
"#;

// Fast open (version 5): an operation whose gate opened before the aggregator answered is
// marked fast_opened; while it is PENDING or UNKNOWN its amount is the station's exposure. One
// that ends DECLINED leaves an entry on the unpaid list, in the same transaction. Entries do
// not reference fare_ops: retention may prune the operation, the debt stays until cleared.
// line_synced = 0 while the line's shared store has not yet been told of the entry or of its
// clearing.
const V5: &str = r#"
ALTER TABLE fare_ops ADD COLUMN fast_opened INTEGER NOT NULL DEFAULT 0
    CHECK (fast_opened IN (0, 1));
CREATE INDEX fare_ops_fast_open_unconfirmed ON fare_ops(created_at_ms)
    WHERE fast_opened = 1 AND state IN ('PENDING', 'UNKNOWN');

CREATE TABLE unpaid (
    partner_reference_no TEXT    PRIMARY KEY NOT NULL,
    pan_key              TEXT    NOT NULL,
    pan_masked           TEXT    NOT NULL,
    nns                  TEXT    NOT NULL,
    station              TEXT    NOT NULL,
    direction            TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
    amount               INTEGER NOT NULL CHECK (amount > 0),
    at_ms                INTEGER NOT NULL,
    reason               TEXT    NOT NULL,
    cleared_at_ms        INTEGER,
    cleared_by           TEXT,
    line_synced          INTEGER NOT NULL DEFAULT 0 CHECK (line_synced IN (0, 1))
) STRICT;
CREATE INDEX unpaid_owed_by_passenger ON unpaid(pan_key) WHERE cleared_at_ms IS NULL;
CREATE INDEX unpaid_to_sync ON unpaid(at_ms) WHERE line_synced = 0;
"#;

/// What a file's header says about it.
// QRIS MPM sales (a QR the gate showed) go through fare_ops like taps; `channel` says which
// endpoints the reconciler queries and refunds them with.
const V6: &str = r#"
ALTER TABLE fare_ops ADD COLUMN channel TEXT NOT NULL DEFAULT 'cpm'
    CHECK (channel IN ('cpm', 'mpm'));
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub user_version: i64,
    pub application_id: i64,
    pub objects: i64,
}

/// Reads the header in one statement, so the three values come from one snapshot even while
/// another process is migrating the same file.
pub(crate) fn read_header(conn: &Connection) -> Result<Header, rusqlite::Error> {
    conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version), \
                (SELECT application_id FROM pragma_application_id), \
                (SELECT count(*) FROM sqlite_schema)",
        [],
        |r| {
            Ok(Header {
                user_version: r.get(0)?,
                application_id: r.get(1)?,
                objects: r.get(2)?,
            })
        },
    )
}

/// Refuses files that are not tapgate journals or are newer than this build.
pub(crate) fn check_header(path: &Path, h: Header) -> Result<(), JournalError> {
    let fresh = h.user_version == 0 && h.application_id == 0 && h.objects == 0;
    if fresh {
        return Ok(());
    }
    if h.application_id != APPLICATION_ID {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
            why: "it holds other tables (application_id is not tapgate's)",
        });
    }
    if h.user_version > SCHEMA_VERSION {
        return Err(JournalError::NewerSchema {
            path: path.to_path_buf(),
            found: h.user_version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Brings the journal at `path` up to [`SCHEMA_VERSION`], one transaction per migration, each
/// setting `user_version` in the same transaction so a crash leaves a whole version.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    loop {
        // IMMEDIATE: two processes opening a fresh file must not both migrate it.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a schema migration")?;
        let h = read_header(&tx).ctx("reading the schema version")?;
        check_header(path, h)?;
        let Some(sql) = usize::try_from(h.user_version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(sql).ctx("migrating the schema")?;
        tx.pragma_update(None, "user_version", h.user_version + 1)
            .ctx("recording the schema version")?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .ctx("recording the application id")?;
        tx.commit().ctx("committing a schema migration")?;
        tracing::info!(
            journal = %path.display(),
            version = h.user_version + 1,
            "journal schema migrated"
        );
    }
}
