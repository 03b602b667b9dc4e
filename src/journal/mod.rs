//! The SQLite journal of fare operations and journeys: what makes "never lose or double a
//! rupiah" true.
//!
//! Every payment is recorded with [`Journal::begin`] *before* its first byte is sent, and
//! every later fact (the aggregator's answer, the gate outcome, a query, a refund) with
//! [`Journal::transition`], which only allows the moves of the state machine in [`allowed`]
//! and the money rules in [`apply`]. Each change also appends to an `events` table, so
//! [`Journal::events`] tells an operation's whole story.
//!
//! Durability: the file is in WAL mode with `synchronous=FULL`, so a write method that returned
//! `Ok` has been fsynced and survives a crash or power cut. A [`JournalError`] for which
//! [`JournalError::is_storage_fault`] holds means the journal cannot promise that right now:
//! the lane must refuse taps until it can.
//!
//! All methods are blocking; the daemon calls them under `tokio::task::block_in_place` (see
//! `JournalHandle::run`), or from `spawn_blocking` or a dedicated thread. Times are Unix milliseconds supplied by the caller (the clock is the
//! caller's), so the journal itself never reads a clock.
//!
//! Never stored: the `qrContent`, the full PAN, cardholder names, secrets. [`NewOp`] has no
//! field for them, and [`Journal::begin`] refuses a `pan_masked` that holds a whole PAN.

mod csv;
mod error;
pub mod integrity;
mod outbox;
mod reader;
pub mod retention;
pub mod schema;
mod unpaid;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

pub use csv::{write_csv, CSV_COLUMNS};
pub use error::{ErrorClass, JournalError, StorageFault};
pub use outbox::{OutboxRow, OutboxStats};
pub use reader::{JournalReader, StateCounts, FULL_COUNT_EVERY};
pub use tapgate_core::journal::{
    allowed, apply, validate_new, Channel, EventRow, FoundJourney, JourneyClose, JourneyRow,
    JourneyState, NewOp, OpFilter, OpKind, OpRow, Owed, Rejection, TapBlock, TapClaim, TapDecision,
    TapStart, Transition, TransitionError, MAX_REASON_CHARS, MPM_PAYER,
};
pub use tapgate_core::journal::{model, rules};
pub use tapgate_core::journal::{ElsewhereClose, JourneyEvent, JourneyEventKind, LineWrites};
pub use unpaid::{ClearOutcome, UnpaidEntry};

use crate::fare::{Direction, OpState, Rupiah};
use crate::flow::JourneyChange;
use error::DbContext;

/// How long a write waits for another process's lock before failing with
/// [`StorageFault::Busy`]. The daemon is the only writer and WAL readers never block it, so a
/// longer wait would only hide a stuck process while passengers queue at the gate.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// The states the reconciler still has work for, as an SQL list: those [`OpState::is_final`]
/// says are not final, so the two cannot disagree.
fn non_final_sql() -> String {
    let states: Vec<String> = OpState::ALL
        .into_iter()
        .filter(|s| !s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", states.join(", "))
}

const OP_COLUMNS: &str = "partner_reference_no, kind, lane, direction, station_id, amount, \
     pan_key, pan_masked, nns, state, reference_no, response_code, gate_opened, reason, \
     attempts, next_attempt_at_ms, refund_no, refund_amount, created_at_ms, updated_at_ms, \
     journey_id, fast_opened, channel";

const JOURNEY_COLUMNS: &str =
    "id, pan_key, entry_station, tap_in_ref, tap_out_ref, state, fare, opened_at_ms, closed_at_ms";

/// An open journal file.
#[derive(Debug)]
pub struct Journal {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    quarantined: AtomicU64,
    line_station: Option<String>,
}

impl Journal {
    /// Opens the journal at `path` for reading and writing, creating the file (not its folder)
    /// when missing and migrating its schema to [`schema::SCHEMA_VERSION`].
    ///
    /// Refuses a file written by a newer tapgate ([`JournalError::NewerSchema`]) and an SQLite
    /// file that is not a journal ([`JournalError::NotAJournal`]).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        integrity::create_private(path);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|e| JournalError::open(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| JournalError::open(path, e))?;
        // SQLite falls back to read-only, silently, on a read-only filesystem: a journal that
        // cannot take a payment row must not start as if it could.
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(JournalError::open(
                path,
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                    Some(
                        "the journal opened read-only: is its filesystem mounted read-only?".into(),
                    ),
                ),
            ));
        }
        // Look before changing anything: a foreign or newer file must be left as it was.
        let header = schema::read_header(&conn).map_err(|e| JournalError::open(path, e))?;
        schema::check_header(path, header)?;
        check_integrity(&conn, path, header, integrity::OPEN_CHECK_BUDGET)?;
        let exposed = integrity::open_to_others(path);
        if !exposed.is_empty() {
            tracing::warn!(
                journal = %path.display(),
                files = ?exposed,
                "journal files are readable by others: `chmod 600` them (tapgate doctor checks this)"
            );
        }

        let mode = switch_to_wal(&conn).map_err(|e| JournalError::open(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::NoWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        // FULL: with WAL, NORMAL may lose the last commits on power loss; a committed payment
        // row must survive it.
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| JournalError::open(path, e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| JournalError::open(path, e))?;
        schema::migrate(&mut conn, path)?;
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
            read_only: false,
            quarantined: AtomicU64::new(0),
            line_station: None,
        })
    }

    /// Opens an existing journal read-only, for `tapgate journal ...` while the daemon runs.
    /// In WAL mode it sees every transaction the writer committed before each read.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        let j = Self::open_for_salvage(path)?;
        let header = schema::read_header(&j.conn).map_err(|e| JournalError::open(path, e))?;
        check_integrity(&j.conn, path, header, integrity::READ_ONLY_CHECK_BUDGET)?;
        Ok(j)
    }

    /// Like [`Journal::open_read_only`] but without the integrity check: to read what can
    /// still be read from a journal refused as [`JournalError::Damaged`] (see
    /// [`Journal::salvage`]). Nothing read through it can be taken as complete.
    pub fn open_for_salvage(path: &Path) -> Result<Journal, JournalError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| JournalError::open(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| JournalError::open(path, e))?;
        conn.pragma_update(None, "query_only", "ON")
            .map_err(|e| JournalError::open(path, e))?;
        let header = schema::read_header(&conn).map_err(|e| JournalError::open(path, e))?;
        schema::check_header(path, header)?;
        if header.user_version == 0 {
            return Err(JournalError::NotAJournal {
                path: path.to_path_buf(),
                why: "it is empty (the daemon creates the schema on first start)",
            });
        }
        if header.user_version < schema::SCHEMA_VERSION {
            return Err(JournalError::OlderSchema {
                path: path.to_path_buf(),
                found: header.user_version,
                supported: schema::SCHEMA_VERSION,
            });
        }
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
            read_only: true,
            quarantined: AtomicU64::new(0),
            line_station: None,
        })
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle was opened with [`Journal::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// How many damaged rows reads through this handle have skipped so far (each also
    /// logged with `tracing::warn!`). Export it as a metric: it should stay zero.
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Records a new operation as `PENDING`. Durable when it returns `Ok`: only then may the
    /// payment's first byte be sent.
    ///
    /// Each call waits for one fsync of the WAL: that is the fsync in the tap's latency
    /// budget. Hardware truth: the row survives a power cut only if the storage honours flush
    /// requests; some SD cards and USB sticks acknowledge before the data is on flash, and no
    /// software setting can fix that.
    pub fn begin(&mut self, op: &NewOp) -> Result<(), JournalError> {
        self.begin_on(op, Channel::Cpm)
    }

    fn begin_on(&mut self, op: &NewOp, channel: Channel) -> Result<(), JournalError> {
        validate_new(op).map_err(|(field, why)| JournalError::InvalidOp { field, why })?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting begin")?;
        begin_in(&tx, op, channel)?;
        tx.commit().ctx("committing begin")
    }

    /// Journals a QRIS MPM sale before its `qr-mpm-generate` is sent: [`Journal::begin`] with
    /// the operation marked [`Channel::Mpm`], in the same transaction, so that the reconciler
    /// queries and refunds it through the MPM endpoints. `op` carries no PAN: see
    /// [`Channel::Mpm`].
    pub fn begin_qr(&mut self, op: &NewOp) -> Result<(), JournalError> {
        self.begin_on(op, Channel::Mpm)
    }

    /// Starts a tap of one passenger: single-flight on `claim.pan_key`, across the lanes of a
    /// daemon and across processes sharing this file.
    ///
    /// In ONE write transaction (`BEGIN IMMEDIATE`, so two processes take turns): looks for
    /// another tap of the passenger in the way ([`TapBlock`]: a payment in flight, or a
    /// passage through a gate of the same direction since `claim.passed_since_ms`), then
    /// reads the passenger's open journey and hands it to `decide`, then journals what
    /// `decide` returned. A second tap of the same phone at the same moment therefore either
    /// finds the first one in flight, or (once the first has finished) sees the journey it
    /// opened or closed; it can never be paid from the same view of the journal.
    pub fn begin_tap<B, R>(
        &mut self,
        claim: &TapClaim,
        decide: impl FnOnce(Option<FoundJourney>) -> TapDecision<B, R>,
    ) -> Result<TapStart<B, R>, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a tap")?;
        if let Some(block) = tap_block(&tx, claim)? {
            return Ok(TapStart::Blocked(block));
        }
        let open = match find_open_journey_in(&tx, &claim.pan_key, &self.quarantined)? {
            Some(journey) => {
                let tap_in = get_in(&tx, &journey.tap_in_ref, &self.quarantined)?;
                Some(FoundJourney { journey, tap_in })
            }
            None => None,
        };
        match decide(open) {
            TapDecision::Refuse(t) => Ok(TapStart::Refused(t)),
            TapDecision::Begin {
                op,
                close_first,
                line,
                then,
            } => {
                validate_new(&op).map_err(|(field, why)| JournalError::InvalidOp { field, why })?;
                let at = op.created_at_ms;
                if let Some(c) = &line.closed_elsewhere {
                    outbox::close_elsewhere_in(&tx, c, at)?;
                }
                let station = self.line_station.as_deref();
                if let Some(c) = close_first {
                    close_journey_in(&tx, c.id, c.state, None, c.fare, at, station)?;
                }
                if station.is_some() {
                    for ev in &line.events {
                        outbox::outbox_insert(&tx, ev)?;
                    }
                }
                begin_in(&tx, &op, Channel::Cpm)?;
                if line.entry_unknown {
                    exec(
                        &tx,
                        "UPDATE fare_ops SET entry_unknown = 1 WHERE partner_reference_no = ?1",
                        [&op.partner_reference_no],
                    )
                    .ctx("marking an exit whose entry the line could not tell")?;
                }
                tx.commit().ctx("committing a tap")?;
                Ok(TapStart::Begun(then))
            }
        }
    }

    /// The `PENDING` operations and the process that began each (`pid:start time`, `None`
    /// for rows written before schema version 2), for start-up recovery with
    /// [`owner_is_alive`].
    pub fn pending_owners(&self) -> Result<Vec<(String, Option<String>)>, JournalError> {
        self.owners("state = 'PENDING'", "reading pending operations")
    }

    /// The operations matching `filter` (SQL), each with the process that began it.
    fn owners(
        &self,
        filter: &str,
        what: &'static str,
    ) -> Result<Vec<(String, Option<String>)>, JournalError> {
        let sql = format!("SELECT partner_reference_no, owner FROM fare_ops WHERE {filter}");
        let mut stmt = self.conn.prepare(&sql).ctx(what)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(what)?
            .collect::<Result<Vec<_>, _>>()
            .ctx(what)?;
        Ok(rows)
    }

    /// QR sales (channel `mpm`) still PENDING or UNKNOWN whose gate outcome is not known: a
    /// QR some process may still show. Each with the process that began it.
    pub fn qr_sales_on_screen(&self) -> Result<Vec<(String, Option<String>)>, JournalError> {
        self.owners(
            "channel = 'mpm' AND state IN ('PENDING', 'UNKNOWN') AND gate_opened IS NULL",
            "reading QR sales",
        )
    }

    /// Successful holds (tap-in `SUCCEEDED`) that belong to no journey, oldest first, at most
    /// `limit`. The lane opens the journey with the success (the same transaction), so such a
    /// hold is never a tap in progress: it is a second hold for one passenger, or a hold whose
    /// journey could not be written. Nothing will ever settle it; the reconciler refunds it.
    pub fn holds_without_journey(&self, limit: usize) -> Result<Vec<OpRow>, JournalError> {
        let sql = format!(
            "SELECT {OP_COLUMNS} FROM fare_ops WHERE kind = 'hold' AND state = 'SUCCEEDED' \
             AND journey_id IS NULL ORDER BY created_at_ms, partner_reference_no LIMIT ?1"
        );
        let args = vec![Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX))];
        self.collect(&sql, args, "fare_ops", parse_op)
    }

    /// Moves an operation to `t.to`, recording what `t` carries, and returns the row as
    /// written. Refuses moves the state machine forbids ([`JournalError::IllegalTransition`])
    /// and fields that break a money rule ([`JournalError::Rejected`]); nothing is written
    /// then.
    pub fn transition(&mut self, partner_ref: &str, t: &Transition) -> Result<OpRow, JournalError> {
        self.transitions(partner_ref, std::slice::from_ref(t))
    }

    /// Applies several transitions to one operation in ONE SQLite transaction: all of them or
    /// none (e.g. SUCCEEDED then REFUND_PENDING: a crash between two separate commits would
    /// leave a paid operation that looks final and owes a refund nobody would send). Returns
    /// the row as written last.
    pub fn transitions(
        &mut self,
        partner_ref: &str,
        ts: &[Transition],
    ) -> Result<OpRow, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a transition")?;
        let cur = transitions_in(&tx, partner_ref, ts)?;
        tx.commit().ctx("committing a transition")?;
        Ok(cur)
    }

    fn transition_in(
        tx: &Connection,
        partner_ref: &str,
        cur: &OpRow,
        t: &Transition,
    ) -> Result<OpRow, JournalError> {
        let next = apply(cur, t).map_err(|e| match e {
            TransitionError::Illegal => JournalError::IllegalTransition {
                partner_ref: partner_ref.to_owned(),
                from: cur.state,
                to: t.to,
            },
            TransitionError::Rejected(why) => JournalError::Rejected {
                partner_ref: partner_ref.to_owned(),
                from: cur.state,
                to: t.to,
                why,
            },
        })?;
        let refund_amount = next
            .refund_amount
            .map(|a| i64::try_from(a.0))
            .transpose()
            .map_err(|_| JournalError::InvalidOp {
                field: "refund_amount",
                why: "too large",
            })?;
        exec(
            tx,
            "UPDATE fare_ops SET state = ?2, reference_no = ?3, response_code = ?4, \
             gate_opened = ?5, reason = ?6, attempts = ?7, next_attempt_at_ms = ?8, \
             refund_no = ?9, refund_amount = ?10, updated_at_ms = ?11 \
             WHERE partner_reference_no = ?1",
            params![
                partner_ref,
                next.state.as_str(),
                next.reference_no,
                next.response_code,
                next.gate_opened,
                next.reason,
                next.attempts,
                next.next_attempt_at_ms,
                next.refund_no,
                refund_amount,
                next.updated_at_ms,
            ],
        )
        .ctx("updating a fare operation")?;
        if cur.fast_opened && next.state == OpState::Declined && cur.state != OpState::Declined {
            unpaid::insert_in(tx, &next, t.at_ms)?;
        }
        let detail = rules::describe_change(cur, &next);
        insert_event(
            tx,
            partner_ref,
            t.at_ms,
            Some(cur.state),
            next.state,
            &detail,
        )?;
        Ok(next)
    }

    /// One operation, or `None` when the reference is not journaled. A damaged row is
    /// reported as [`JournalError::CorruptRow`].
    pub fn get(&self, partner_ref: &str) -> Result<Option<OpRow>, JournalError> {
        load_op(&self.conn, partner_ref)
    }

    /// Operations matching `f`, oldest first. Damaged rows are skipped and counted in
    /// [`Journal::quarantined`].
    pub fn list(&self, f: &OpFilter) -> Result<Vec<OpRow>, JournalError> {
        let mut sql = format!("SELECT {OP_COLUMNS} FROM fare_ops WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(s) = f.state {
            args.push(Value::Text(s.as_str().to_owned()));
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(lane) = &f.lane {
            args.push(Value::Text(lane.clone()));
            sql.push_str(&format!(" AND lane = ?{}", args.len()));
        }
        if let Some(since) = f.since_ms {
            args.push(Value::Integer(since));
            sql.push_str(&format!(" AND created_at_ms >= ?{}", args.len()));
        }
        sql.push_str(" ORDER BY created_at_ms, partner_reference_no");
        if let Some(limit) = f.limit {
            args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }
        self.collect(&sql, args, "fare_ops", parse_op)
    }

    /// Operations the reconciler must drive now: `PENDING`, `UNKNOWN` or `REFUND_PENDING`
    /// with `next_attempt_at_ms <= now_ms` (or none set), oldest first, at most `limit`.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OpRow>, JournalError> {
        let sql = format!(
            "SELECT {OP_COLUMNS} FROM fare_ops WHERE state IN {} \
             AND coalesce(next_attempt_at_ms, 0) <= ?1 \
             ORDER BY created_at_ms, partner_reference_no LIMIT ?2",
            non_final_sql()
        );
        let args = vec![
            Value::Integer(now_ms),
            Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.collect(&sql, args, "fare_ops", parse_op)
    }

    /// The history of one operation, in the order it was written.
    pub fn events(&self, partner_ref: &str) -> Result<Vec<EventRow>, JournalError> {
        let sql = "SELECT id, partner_reference_no, at_ms, from_state, to_state, detail \
                   FROM events WHERE partner_reference_no = ?1 ORDER BY id";
        let args = vec![Value::Text(partner_ref.to_owned())];
        self.collect(sql, args, "events", parse_event)
    }

    /// Opens a journey for the passenger `pan_key`, starting with the tap-in operation
    /// `tap_in_ref` (which must be journaled), and links that operation to it. Returns the
    /// journey's id. A passenger has at most one open journey:
    /// [`JournalError::JourneyAlreadyOpen`] otherwise.
    pub fn open_journey(
        &mut self,
        pan_key: &str,
        entry_station: &str,
        tap_in_ref: &str,
        at_ms: i64,
    ) -> Result<i64, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting open_journey")?;
        let station = self.line_station.as_deref();
        let id = open_journey_in(&tx, pan_key, entry_station, tap_in_ref, at_ms, station)?;
        tx.commit().ctx("committing open_journey")?;
        Ok(id)
    }

    /// Writes what a tap learned once its gate decided, in ONE transaction (one fsync on the
    /// tap's path instead of two): the journey change (`journey`: opened at a tap-in, closed
    /// at a tap-out, or a close sent to the line), then the operation's `transitions`.
    ///
    /// The two parts keep their own results, as two transactions had them: each runs in its
    /// own savepoint, so a part that fails (a journey already open, a move the state machine
    /// forbids, a damaged row) writes nothing and the other part is still committed. When the
    /// transaction itself is lost (its start or its commit fails, or SQLite rolled it back on
    /// a storage fault), nothing of it was written, and each part is tried again alone, as
    /// before: the journey first (it says who was let through, which is already true), then
    /// the transitions.
    pub fn settle_tap(
        &mut self,
        journey: Option<&JourneyChange>,
        partner_ref: &str,
        transitions: &[Transition],
        fast_opened: bool,
    ) -> Settled {
        match self.settle_in_one(journey, partner_ref, transitions, fast_opened) {
            Ok(s) => s,
            Err(lost) => {
                tracing::warn!(error = %lost,
                    "the tap's settlement could not commit as one transaction: writing its parts apart");
                let journey = journey.map_or(Ok(()), |c| self.change_journey(c));
                let marked = if fast_opened {
                    unpaid::mark_fast_opened(&self.conn, partner_ref)
                } else {
                    Ok(())
                };
                Settled {
                    journey,
                    record: marked.and_then(|()| self.record(partner_ref, transitions)),
                }
            }
        }
    }

    /// [`Journal::settle_tap`]'s single transaction; `Err` when the transaction was lost
    /// (nothing written).
    fn settle_in_one(
        &mut self,
        journey: Option<&JourneyChange>,
        partner_ref: &str,
        transitions: &[Transition],
        fast_opened: bool,
    ) -> Result<Settled, JournalError> {
        let station = self.line_station.clone();
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a settlement")?;
        let journey = match journey {
            None => Ok(()),
            Some(c) => in_savepoint(&mut tx, |sp| change_journey_in(sp, c, station.as_deref()))?,
        };
        let record = if transitions.is_empty() && !fast_opened {
            Ok(None)
        } else {
            in_savepoint(&mut tx, |sp| {
                if fast_opened {
                    unpaid::mark_fast_opened(sp, partner_ref)?;
                }
                if transitions.is_empty() {
                    return Ok(None);
                }
                transitions_in(sp, partner_ref, transitions).map(Some)
            })?
        };
        tx.commit().ctx("committing a settlement")?;
        Ok(Settled { journey, record })
    }

    /// One journey change in its own transaction.
    fn change_journey(&mut self, c: &JourneyChange) -> Result<(), JournalError> {
        match c {
            JourneyChange::Open {
                pan_key,
                station_id,
                tap_in_ref,
                at_ms,
            } => self
                .open_journey(pan_key, station_id, tap_in_ref, *at_ms)
                .map(|_| ()),
            JourneyChange::Close {
                close,
                tap_out_ref,
                at_ms,
            } => self.close_journey(close.id, close.state, Some(tap_out_ref), close.fare, *at_ms),
            JourneyChange::CloseOnLine {
                tap_in_ref,
                tap_out_ref,
                fare,
                at_ms,
            } => self.close_on_line(tap_in_ref, tap_out_ref, *fare, *at_ms),
        }
    }

    /// An operation's transitions in their own transaction (`None`: there were none).
    fn record(
        &mut self,
        partner_ref: &str,
        transitions: &[Transition],
    ) -> Result<Option<OpRow>, JournalError> {
        if transitions.is_empty() {
            return Ok(None);
        }
        self.transitions(partner_ref, transitions).map(Some)
    }

    /// The passenger's open journey, if any. A damaged row is skipped (and counted), so a
    /// damaged journey reads as no journey: the unknown-entry rule then applies.
    pub fn find_open_journey(&self, pan_key: &str) -> Result<Option<JourneyRow>, JournalError> {
        let sql = format!(
            "SELECT {JOURNEY_COLUMNS} FROM journeys WHERE pan_key = ?1 AND state = 'OPEN' \
             ORDER BY id"
        );
        let rows = self.collect(
            &sql,
            vec![Value::Text(pan_key.to_owned())],
            "journeys",
            parse_journey,
        )?;
        Ok(rows.into_iter().next())
    }

    /// One journey by id.
    pub fn get_journey(&self, id: i64) -> Result<Option<JourneyRow>, JournalError> {
        let sql = format!("SELECT {JOURNEY_COLUMNS} FROM journeys WHERE id = ?1");
        let mut stmt = self.conn.prepare(&sql).ctx("reading a journey")?;
        let mut rows = stmt.query([id]).ctx("reading a journey")?;
        match rows.next().ctx("reading a journey")? {
            None => Ok(None),
            Some(row) => parse_journey(row)
                .map(Some)
                .map_err(|e| e.into_error("journeys")),
        }
    }

    /// Closes an open journey into `state` (anything but `OPEN`), with its tap-out operation
    /// (linked to the journey when given) and the fare finally charged.
    pub fn close_journey(
        &mut self,
        id: i64,
        state: JourneyState,
        tap_out_ref: Option<&str>,
        fare: Option<Rupiah>,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting close_journey")?;
        let station = self.line_station.as_deref();
        close_journey_in(&tx, id, state, tap_out_ref, fare, at_ms, station)?;
        tx.commit().ctx("committing close_journey")
    }

    /// Open journeys whose tap-in happened before `older_than_ms` (a Unix-millisecond
    /// cutoff: now minus the maximum trip time), oldest first.
    pub fn stale_journeys(&self, older_than_ms: i64) -> Result<Vec<JourneyRow>, JournalError> {
        let sql = format!(
            "SELECT {JOURNEY_COLUMNS} FROM journeys WHERE state = 'OPEN' AND opened_at_ms < ?1 \
             ORDER BY opened_at_ms, id"
        );
        self.collect(
            &sql,
            vec![Value::Integer(older_than_ms)],
            "journeys",
            parse_journey,
        )
    }

    /// How many operations are in each state, every state listed (zero included) in the
    /// order of the state machine; for metrics.
    pub fn counts_by_state(&self) -> Result<Vec<(OpState, u64)>, JournalError> {
        let mut counts: Vec<(OpState, u64)> = ALL_STATES.iter().map(|s| (*s, 0)).collect();
        let mut stmt = self
            .conn
            .prepare("SELECT state, count(*) FROM fare_ops GROUP BY state")
            .ctx("counting operations")?;
        let mut rows = stmt.query([]).ctx("counting operations")?;
        while let Some(row) = rows.next().ctx("counting operations")? {
            let state: Value = row.get(0).ctx("counting operations")?;
            let n: i64 = row.get(1).ctx("counting operations")?;
            let parsed = match &state {
                Value::Text(s) => OpState::parse(s),
                _ => None,
            };
            match parsed.and_then(|s| counts.iter_mut().find(|(c, _)| *c == s)) {
                Some(slot) => slot.1 = u64::try_from(n).unwrap_or(0),
                None => self.quarantine(
                    "fare_ops",
                    &format!("{n} rows"),
                    &format!("unknown state {state:?}"),
                ),
            }
        }
        Ok(counts)
    }

    /// Every operation begun at or after `since_ms`, oldest first, for reconciliation with
    /// the aggregator's settlement reports (see [`write_csv`]).
    pub fn export(&self, since_ms: i64) -> Result<Vec<OpRow>, JournalError> {
        self.list(&OpFilter {
            since_ms: Some(since_ms),
            ..OpFilter::default()
        })
    }

    /// Runs SQLite's `PRAGMA quick_check`, for `tapgate doctor`: empty when the file is
    /// sound, else SQLite's findings. It reads the whole file, so never call it on the tap
    /// path.
    pub fn quick_check(&self) -> Result<Vec<String>, JournalError> {
        match integrity::quick_check(&self.conn, None).ctx("checking the file")? {
            integrity::CheckOutcome::Sound => Ok(Vec::new()),
            integrity::CheckOutcome::Damaged(found) => Ok(found),
            integrity::CheckOutcome::Unfinished => Ok(vec!["the check was interrupted".into()]),
        }
    }

    fn quarantine(&self, table: &str, key: &str, detail: &str) {
        self.quarantined.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            journal = %self.path.display(),
            table,
            key,
            detail,
            "damaged journal row skipped"
        );
    }

    fn collect<T>(
        &self,
        sql: &str,
        args: Vec<Value>,
        table: &'static str,
        parse: fn(&Row<'_>) -> Result<T, RowError>,
    ) -> Result<Vec<T>, JournalError> {
        let mut stmt = self.conn.prepare(sql).ctx("reading the journal")?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args))
            .ctx("reading the journal")?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx("reading the journal")? {
            match parse(row) {
                Ok(v) => out.push(v),
                Err(RowError::Corrupt { key, detail }) => self.quarantine(table, &key, &detail),
                Err(RowError::Db(e)) => return Err(JournalError::db("reading the journal", e)),
            }
        }
        Ok(out)
    }
}

/// Refuses a damaged file: `quick_check` within `budget`. A fresh file has nothing to check.
fn check_integrity(
    conn: &Connection,
    path: &Path,
    header: schema::Header,
    budget: Duration,
) -> Result<(), JournalError> {
    if header.objects == 0 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    match integrity::quick_check(conn, Some(budget)) {
        Ok(integrity::CheckOutcome::Sound) => Ok(()),
        Ok(integrity::CheckOutcome::Damaged(findings))
            if findings.iter().all(|f| integrity::is_row_finding(f)) =>
        {
            // Readable rows with values the schema forbids: reads quarantine them one by one.
            tracing::warn!(
                journal = %path.display(),
                findings = %findings.join("; "),
                "journal rows break the schema's constraints: reads skip and count them"
            );
            Ok(())
        }
        Ok(integrity::CheckOutcome::Damaged(findings)) => Err(JournalError::Damaged {
            path: path.to_path_buf(),
            findings,
        }),
        Ok(integrity::CheckOutcome::Unfinished) => {
            tracing::warn!(
                journal = %path.display(),
                budget_s = budget.as_secs(),
                "journal integrity check cut off at its time budget: not fully checked (`tapgate \
                 doctor` runs the whole check; set [journal] retain_days to keep the file small)"
            );
            Ok(())
        }
        // SQLite may refuse the check itself on a badly damaged file.
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            Err(JournalError::Damaged {
                path: path.to_path_buf(),
                findings: vec![e.to_string()],
            })
        }
        Err(e) => Err(JournalError::open(path, e)),
    }
    .inspect(|()| {
        tracing::debug!(
            journal = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "journal integrity check passed"
        );
    })
}

/// Puts the file in WAL mode (persistent, so only a fresh file changes) and returns the mode
/// SQLite settled on.
///
/// While another process is creating the same fresh file, SQLite can answer the switch with
/// `SQLITE_BUSY` at once, without calling the busy handler (it refuses to wait where a
/// deadlock is possible), so the switch is retried here for up to [`BUSY_TIMEOUT`].
fn switch_to_wal(conn: &Connection) -> Result<String, rusqlite::Error> {
    const PAUSE: Duration = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && waited < BUSY_TIMEOUT =>
            {
                std::thread::sleep(PAUSE);
                waited += PAUSE;
            }
            other => return other,
        }
    }
}

/// A fare as SQLite stores it.
fn fare_sql(fare: Option<Rupiah>) -> Result<Option<i64>, JournalError> {
    fare.map(|f| i64::try_from(f.0))
        .transpose()
        .map_err(|_| JournalError::InvalidOp {
            field: "fare",
            why: "too large",
        })
}

/// What [`Journal::settle_tap`] wrote: each part's own result.
#[derive(Debug)]
pub struct Settled {
    /// The journey change (`Ok` when there was none).
    pub journey: Result<(), JournalError>,
    /// The transitions: the row as it ends (`None` when there were none).
    pub record: Result<Option<OpRow>, JournalError>,
}

/// Runs `f` in a savepoint of `tx`: kept when `f` succeeds, rolled back when it fails (the
/// part's error is returned as `Ok(Err(..))`). `Err` when the transaction itself is gone: a
/// storage fault can make SQLite roll back the whole transaction, and a statement run after
/// that would commit on its own.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, JournalError>,
) -> Result<Result<T, JournalError>, JournalError> {
    let sp = tx.savepoint().ctx("starting a savepoint")?;
    let r = f(&sp);
    match r {
        Ok(v) => {
            sp.commit().ctx("releasing a savepoint")?;
            Ok(Ok(v))
        }
        Err(e) => {
            if sp.is_autocommit() {
                return Err(e);
            }
            // Rolls back to the savepoint and releases it.
            sp.finish().ctx("rolling back a savepoint")?;
            if tx.is_autocommit() {
                return Err(e);
            }
            Ok(Err(e))
        }
    }
}

/// Applies `ts` to one operation inside the caller's transaction; returns the row as written
/// last.
fn transitions_in(
    tx: &Connection,
    partner_ref: &str,
    ts: &[Transition],
) -> Result<OpRow, JournalError> {
    let mut cur = match load_op(tx, partner_ref)? {
        Some(row) => row,
        None => return Err(JournalError::UnknownReference(partner_ref.to_owned())),
    };
    for t in ts {
        cur = Journal::transition_in(tx, partner_ref, &cur, t)?;
    }
    Ok(cur)
}

/// A tap's journey change inside the caller's transaction.
fn change_journey_in(
    tx: &Connection,
    c: &JourneyChange,
    line_station: Option<&str>,
) -> Result<(), JournalError> {
    match c {
        JourneyChange::Open {
            pan_key,
            station_id,
            tap_in_ref,
            at_ms,
        } => open_journey_in(tx, pan_key, station_id, tap_in_ref, *at_ms, line_station).map(|_| ()),
        JourneyChange::Close {
            close,
            tap_out_ref,
            at_ms,
        } => close_journey_in(
            tx,
            close.id,
            close.state,
            Some(tap_out_ref),
            close.fare,
            *at_ms,
            line_station,
        ),
        JourneyChange::CloseOnLine {
            tap_in_ref,
            tap_out_ref,
            fare,
            at_ms,
        } => outbox::close_on_line_in(tx, line_station, tap_in_ref, tap_out_ref, *fare, *at_ms),
    }
}

/// Opens a journey inside the caller's transaction (see [`Journal::open_journey`]); with
/// `line_station`, the opening also goes to the line's outbox.
fn open_journey_in(
    tx: &Connection,
    pan_key: &str,
    entry_station: &str,
    tap_in_ref: &str,
    at_ms: i64,
    line_station: Option<&str>,
) -> Result<i64, JournalError> {
    let op_state = op_state(tx, tap_in_ref)?;
    let open: Option<i64> = one(
        tx,
        "SELECT id FROM journeys WHERE pan_key = ?1 AND state = 'OPEN'",
        [pan_key],
        |r| r.get(0),
    )
    .optional()
    .ctx("looking for an open journey")?;
    if let Some(id) = open {
        return Err(JournalError::JourneyAlreadyOpen { id });
    }
    exec(
        tx,
        "INSERT INTO journeys (pan_key, entry_station, tap_in_ref, state, opened_at_ms) \
         VALUES (?1, ?2, ?3, 'OPEN', ?4)",
        params![pan_key, entry_station, tap_in_ref, at_ms],
    )
    .ctx("inserting a journey")?;
    let id = tx.last_insert_rowid();
    exec(
        tx,
        "UPDATE fare_ops SET journey_id = ?2 WHERE partner_reference_no = ?1",
        params![tap_in_ref, id],
    )
    .ctx("linking the tap-in to its journey")?;
    let detail = format!("journey={id} opened entry_station={entry_station}");
    insert_event(tx, tap_in_ref, at_ms, Some(op_state), op_state, &detail)?;
    if let Some(station) = line_station {
        outbox::outbox_insert(
            tx,
            &JourneyEvent {
                tap_in_ref: tap_in_ref.to_owned(),
                station: station.to_owned(),
                at_ms,
                kind: JourneyEventKind::Opened {
                    pan_key: pan_key.to_owned(),
                    tap_in_reference_no: None,
                },
            },
        )?;
    }
    Ok(id)
}

/// Closes an open journey inside the caller's transaction (see [`Journal::close_journey`]);
/// with `line_station`, the close also goes to the line's outbox.
fn close_journey_in(
    tx: &Connection,
    id: i64,
    state: JourneyState,
    tap_out_ref: Option<&str>,
    fare: Option<Rupiah>,
    at_ms: i64,
    line_station: Option<&str>,
) -> Result<(), JournalError> {
    if state == JourneyState::Open {
        return Err(JournalError::CloseIntoOpen(id));
    }
    let fare = fare_sql(fare)?;
    let found: Option<(String, String)> = one(
        tx,
        "SELECT state, tap_in_ref FROM journeys WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .ctx("reading a journey")?;
    let Some((current, tap_in_ref)) = found else {
        return Err(JournalError::UnknownJourney(id));
    };
    match JourneyState::parse(&current) {
        Some(JourneyState::Open) => {}
        Some(other) => return Err(JournalError::JourneyNotOpen { id, state: other }),
        None => {
            return Err(JournalError::CorruptRow {
                table: "journeys",
                key: id.to_string(),
                detail: format!("unknown state {current:?}"),
            })
        }
    }
    let out_state = match tap_out_ref {
        Some(r) => Some(op_state(tx, r)?),
        None => None,
    };
    exec(
        tx,
        "UPDATE journeys SET state = ?2, tap_out_ref = ?3, fare = ?4, closed_at_ms = ?5 \
             WHERE id = ?1",
        params![id, state.as_str(), tap_out_ref, fare, at_ms],
    )
    .ctx("closing a journey")?;
    if let Some(station) = line_station {
        let fare = fare.and_then(|f| u64::try_from(f).ok()).map(Rupiah);
        // A tap-out here named the tap-in (this journal holds both): the hold is finalized.
        if let Some(kind) = JourneyEventKind::for_close(state, fare, tap_out_ref, true) {
            let ev = JourneyEvent {
                tap_in_ref: tap_in_ref.clone(),
                station: station.to_owned(),
                at_ms,
                kind,
            };
            outbox::outbox_insert(tx, &ev)?;
        }
    }
    let fare_text = fare.map_or_else(|| "-".to_owned(), |f| f.to_string());
    let detail = format!("journey={id} {state} fare={fare_text}");
    let in_state = op_state(tx, &tap_in_ref)?;
    insert_event(tx, &tap_in_ref, at_ms, Some(in_state), in_state, &detail)?;
    if let (Some(r), Some(s)) = (tap_out_ref, out_state) {
        exec(
            tx,
            "UPDATE fare_ops SET journey_id = ?2 WHERE partner_reference_no = ?1",
            params![r, id],
        )
        .ctx("linking the tap-out to its journey")?;
        if r != tap_in_ref {
            insert_event(tx, r, at_ms, Some(s), s, &detail)?;
        }
    }
    Ok(())
}

/// Inserts a new `PENDING` operation inside the caller's transaction; `op` is validated.
fn begin_in(tx: &Connection, op: &NewOp, channel: Channel) -> Result<(), JournalError> {
    let amount = i64::try_from(op.amount.0).map_err(|_| JournalError::InvalidOp {
        field: "amount",
        why: "too large",
    })?;
    let exists: bool = one(
        tx,
        "SELECT EXISTS (SELECT 1 FROM fare_ops WHERE partner_reference_no = ?1)",
        [&op.partner_reference_no],
        |r| r.get(0),
    )
    .ctx("checking the reference is new")?;
    if exists {
        return Err(JournalError::DuplicateReference(
            op.partner_reference_no.clone(),
        ));
    }
    if let Some(id) = op.journey_id {
        if !journey_exists(tx, id)? {
            return Err(JournalError::UnknownJourney(id));
        }
    }
    exec(
        tx,
        "INSERT INTO fare_ops (partner_reference_no, kind, lane, direction, station_id, \
         amount, pan_key, pan_masked, nns, state, attempts, next_attempt_at_ms, \
         created_at_ms, updated_at_ms, journey_id, owner, channel) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'PENDING', 0, ?10, ?11, ?11, ?12, ?13, ?14)",
        params![
            op.partner_reference_no,
            op.kind.as_str(),
            op.lane,
            op.direction.as_str(),
            op.station_id,
            amount,
            op.pan_key,
            op.pan_masked,
            op.nns,
            op.next_attempt_at_ms,
            op.created_at_ms,
            op.journey_id,
            this_process(),
            channel.as_str(),
        ],
    )
    .ctx("inserting a fare operation")?;
    let detail = format!(
        "begin kind={} lane={} station={} amount={} nns={} pan={}",
        op.kind, op.lane, op.station_id, op.amount.0, op.nns, op.pan_masked
    );
    insert_event(
        tx,
        &op.partner_reference_no,
        op.created_at_ms,
        None,
        OpState::Pending,
        &detail,
    )
}

/// This process as an operation's `owner`: `pid:start time` (the start time, in clock ticks
/// since boot, tells a reused pid apart). `None` where `/proc` cannot tell.
/// `execute` through the connection's statement cache: the tap's statements are parsed once
/// per connection, not on every tap.
pub(super) fn exec<P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the connection's statement cache (see [`exec`]).
pub(super) fn one<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(params, f)
}

fn this_process() -> Option<&'static str> {
    static TAG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TAG.get_or_init(|| process_tag(std::process::id()))
        .as_deref()
}

fn process_tag(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime); the fields after the command's closing parenthesis start at 3.
    let start = stat.rsplit(')').next()?.split_whitespace().nth(19)?;
    Some(format!("{pid}:{start}"))
}

/// Whether the process named by an operation's `owner` (see [`Journal::pending_owners`]) is
/// still running. Unknown or unreadable owners count as gone.
pub fn owner_is_alive(owner: &str) -> bool {
    let Some(pid) = owner.split(':').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    process_tag(pid).as_deref() == Some(owner)
}

/// What stands in the way of a new tap of `claim.pan_key`, if anything.
fn tap_block(conn: &Connection, claim: &TapClaim) -> Result<Option<TapBlock>, JournalError> {
    let in_flight: Option<String> = one(
        conn,
        "SELECT partner_reference_no FROM fare_ops WHERE state = 'PENDING' \
             AND pan_key = ?1 AND coalesce(next_attempt_at_ms, 0) > ?2 \
             ORDER BY created_at_ms DESC LIMIT 1",
        params![claim.pan_key, claim.now_ms],
        |r| r.get(0),
    )
    .optional()
    .ctx("looking for a tap in flight")?;
    if let Some(partner_reference_no) = in_flight {
        return Ok(Some(TapBlock::InFlight {
            partner_reference_no,
        }));
    }
    if claim.check_unpaid {
        if let Some(owed) = unpaid::owed_in(conn, &claim.pan_key)? {
            return Ok(Some(TapBlock::Unpaid(owed)));
        }
    }
    if claim.passed_since_ms >= claim.now_ms {
        return Ok(None);
    }
    let passed: Option<String> = one(
        conn,
        "SELECT partner_reference_no FROM fare_ops WHERE created_at_ms >= ?1 \
             AND pan_key = ?2 AND direction = ?3 AND gate_opened = 1 \
             ORDER BY created_at_ms DESC LIMIT 1",
        params![
            claim.passed_since_ms,
            claim.pan_key,
            claim.direction.as_str()
        ],
        |r| r.get(0),
    )
    .optional()
    .ctx("looking for a passage moments ago")?;
    Ok(passed.map(|partner_reference_no| TapBlock::JustPassed {
        partner_reference_no,
    }))
}

/// The passenger's open journey; a damaged row reads as none (see
/// [`Journal::find_open_journey`]).
fn find_open_journey_in(
    conn: &Connection,
    pan_key: &str,
    quarantined: &AtomicU64,
) -> Result<Option<JourneyRow>, JournalError> {
    let sql = format!(
        "SELECT {JOURNEY_COLUMNS} FROM journeys WHERE pan_key = ?1 AND state = 'OPEN' ORDER BY id"
    );
    let mut stmt = conn.prepare_cached(&sql).ctx("reading the journal")?;
    let mut rows = stmt.query([pan_key]).ctx("reading the journal")?;
    while let Some(row) = rows.next().ctx("reading the journal")? {
        match parse_journey(row) {
            Ok(j) => return Ok(Some(j)),
            Err(RowError::Corrupt { key, detail }) => {
                skip_damaged("journeys", &key, &detail, quarantined)
            }
            Err(RowError::Db(e)) => return Err(JournalError::db("reading the journal", e)),
        }
    }
    Ok(None)
}

const ALL_STATES: [OpState; 7] = OpState::ALL;

fn journey_exists(conn: &Connection, id: i64) -> Result<bool, JournalError> {
    one(
        conn,
        "SELECT EXISTS (SELECT 1 FROM journeys WHERE id = ?1)",
        [id],
        |r| r.get(0),
    )
    .ctx("checking a journey exists")
}

/// The state of a journaled operation; [`JournalError::UnknownReference`] if there is none.
fn op_state(conn: &Connection, partner_ref: &str) -> Result<OpState, JournalError> {
    let state: Option<String> = one(
        conn,
        "SELECT state FROM fare_ops WHERE partner_reference_no = ?1",
        [partner_ref],
        |r| r.get(0),
    )
    .optional()
    .ctx("reading an operation's state")?;
    let Some(state) = state else {
        return Err(JournalError::UnknownReference(partner_ref.to_owned()));
    };
    OpState::parse(&state).ok_or_else(|| JournalError::CorruptRow {
        table: "fare_ops",
        key: partner_ref.to_owned(),
        detail: format!("unknown state {state:?}"),
    })
}

/// A journey's tap-in operation; a damaged row reads as none (and is counted), like a damaged
/// journey in [`find_open_journey_in`].
fn get_in(
    conn: &Connection,
    partner_ref: &str,
    quarantined: &AtomicU64,
) -> Result<Option<OpRow>, JournalError> {
    match load_op(conn, partner_ref) {
        Err(JournalError::CorruptRow { key, detail, .. }) => {
            skip_damaged("fare_ops", &key, &detail, quarantined);
            Ok(None)
        }
        other => other,
    }
}

/// Counts and logs a damaged row read as none.
fn skip_damaged(table: &str, key: &str, detail: &str, quarantined: &AtomicU64) {
    quarantined.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(table, key, detail, "damaged journal row skipped");
}

fn load_op(conn: &Connection, partner_ref: &str) -> Result<Option<OpRow>, JournalError> {
    let sql = format!("SELECT {OP_COLUMNS} FROM fare_ops WHERE partner_reference_no = ?1");
    let mut stmt = conn.prepare_cached(&sql).ctx("reading an operation")?;
    let mut rows = stmt.query([partner_ref]).ctx("reading an operation")?;
    match rows.next().ctx("reading an operation")? {
        None => Ok(None),
        Some(row) => parse_op(row)
            .map(Some)
            .map_err(|e| e.into_error("fare_ops")),
    }
}

fn insert_event(
    conn: &Connection,
    partner_ref: &str,
    at_ms: i64,
    from: Option<OpState>,
    to: OpState,
    detail: &str,
) -> Result<(), JournalError> {
    exec(
        conn,
        "INSERT INTO events (partner_reference_no, at_ms, from_state, to_state, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            partner_ref,
            at_ms,
            from.map(OpState::as_str),
            to.as_str(),
            detail
        ],
    )
    .ctx("appending an event")?;
    Ok(())
}

/// Why a row could not be read.
enum RowError {
    /// The row holds something this build cannot understand.
    Corrupt { key: String, detail: String },
    /// SQLite failed.
    Db(rusqlite::Error),
}

impl RowError {
    fn into_error(self, table: &'static str) -> JournalError {
        match self {
            RowError::Corrupt { key, detail } => JournalError::CorruptRow { table, key, detail },
            RowError::Db(e) => JournalError::db("reading the journal", e),
        }
    }
}

/// Reads one typed column; a value of the wrong type or range is a damaged row.
fn col<T: rusqlite::types::FromSql>(
    row: &Row<'_>,
    idx: usize,
    name: &str,
    key: &str,
) -> Result<T, RowError> {
    row.get(idx).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => RowError::Corrupt {
            key: key.to_owned(),
            detail: format!("column {name}: {e}"),
        },
        other => RowError::Db(other),
    })
}

fn corrupt(key: &str, detail: String) -> RowError {
    RowError::Corrupt {
        key: key.to_owned(),
        detail,
    }
}

fn parse_enum<T>(
    row: &Row<'_>,
    idx: usize,
    name: &str,
    key: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, RowError> {
    let s: String = col(row, idx, name, key)?;
    parse(&s).ok_or_else(|| corrupt(key, format!("column {name}: unknown value {s:?}")))
}

fn rupiah(v: i64, name: &str, key: &str) -> Result<Rupiah, RowError> {
    u64::try_from(v)
        .map(Rupiah)
        .map_err(|_| corrupt(key, format!("column {name}: negative amount {v}")))
}

fn parse_direction(s: &str) -> Option<Direction> {
    match s {
        "in" => Some(Direction::In),
        "out" => Some(Direction::Out),
        _ => None,
    }
}

fn parse_op(row: &Row<'_>) -> Result<OpRow, RowError> {
    let key_value: Value = row.get(0).map_err(RowError::Db)?;
    let key = match &key_value {
        Value::Text(s) => s.clone(),
        other => format!("{other:?}"),
    };
    let k = key.as_str();
    let gate: Option<i64> = col(row, 12, "gate_opened", k)?;
    let gate_opened = match gate {
        None => None,
        Some(0) => Some(false),
        Some(1) => Some(true),
        Some(v) => return Err(corrupt(k, format!("column gate_opened: {v}"))),
    };
    let amount: i64 = col(row, 5, "amount", k)?;
    let refund: Option<i64> = col(row, 17, "refund_amount", k)?;
    Ok(OpRow {
        partner_reference_no: col(row, 0, "partner_reference_no", k)?,
        kind: parse_enum(row, 1, "kind", k, OpKind::parse)?,
        lane: col(row, 2, "lane", k)?,
        direction: parse_enum(row, 3, "direction", k, parse_direction)?,
        station_id: col(row, 4, "station_id", k)?,
        amount: rupiah(amount, "amount", k)?,
        pan_key: col(row, 6, "pan_key", k)?,
        pan_masked: col(row, 7, "pan_masked", k)?,
        nns: col(row, 8, "nns", k)?,
        state: parse_enum(row, 9, "state", k, OpState::parse)?,
        reference_no: col(row, 10, "reference_no", k)?,
        response_code: col(row, 11, "response_code", k)?,
        gate_opened,
        reason: col(row, 13, "reason", k)?,
        attempts: col(row, 14, "attempts", k)?,
        next_attempt_at_ms: col(row, 15, "next_attempt_at_ms", k)?,
        refund_no: col(row, 16, "refund_no", k)?,
        refund_amount: refund.map(|v| rupiah(v, "refund_amount", k)).transpose()?,
        created_at_ms: col(row, 18, "created_at_ms", k)?,
        updated_at_ms: col(row, 19, "updated_at_ms", k)?,
        journey_id: col(row, 20, "journey_id", k)?,
        fast_opened: col::<i64>(row, 21, "fast_opened", k)? == 1,
        channel: parse_enum(row, 22, "channel", k, Channel::parse)?,
    })
}

fn parse_event(row: &Row<'_>) -> Result<EventRow, RowError> {
    let id: i64 = row.get(0).map_err(RowError::Db)?;
    let key = id.to_string();
    let k = key.as_str();
    let from: Option<String> = col(row, 3, "from_state", k)?;
    let from_state = match from {
        None => None,
        Some(s) => Some(
            OpState::parse(&s)
                .ok_or_else(|| corrupt(k, format!("column from_state: unknown value {s:?}")))?,
        ),
    };
    Ok(EventRow {
        id,
        partner_reference_no: col(row, 1, "partner_reference_no", k)?,
        at_ms: col(row, 2, "at_ms", k)?,
        from_state,
        to_state: parse_enum(row, 4, "to_state", k, OpState::parse)?,
        detail: col(row, 5, "detail", k)?,
    })
}

fn parse_journey(row: &Row<'_>) -> Result<JourneyRow, RowError> {
    let id: i64 = row.get(0).map_err(RowError::Db)?;
    let key = id.to_string();
    let k = key.as_str();
    let fare: Option<i64> = col(row, 6, "fare", k)?;
    Ok(JourneyRow {
        id,
        pan_key: col(row, 1, "pan_key", k)?,
        entry_station: col(row, 2, "entry_station", k)?,
        tap_in_ref: col(row, 3, "tap_in_ref", k)?,
        tap_out_ref: col(row, 4, "tap_out_ref", k)?,
        state: parse_enum(row, 5, "state", k, JourneyState::parse)?,
        fare: fare.map(|v| rupiah(v, "fare", k)).transpose()?,
        opened_at_ms: col(row, 7, "opened_at_ms", k)?,
        closed_at_ms: col(row, 8, "closed_at_ms", k)?,
    })
}

#[cfg(test)]
mod tests;
