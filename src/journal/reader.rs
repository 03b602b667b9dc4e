//! Reading the journal beside the writer, for metrics: [`JournalReader`] answers "how many
//! operations are in each state" from its own read-only SQLite connection on its own thread,
//! so a scrape never takes the writer's lock and never queues behind (or in front of) a tap.
//!
//! In WAL mode a reader and the writer never block each other: the reader sees every
//! transaction committed before its read began and nothing after.
//!
//! The counts are kept incrementally: one full count at the start, then only the `events`
//! appended since (every change of an operation's state appends one, in the same transaction,
//! from state → to state), so a read costs what changed since the last one, not the size of
//! the journal. A retention batch deletes rows and their events: when `prune_log` has a new
//! batch, and every [`FULL_COUNT_EVERY`] as a self-check, the reader counts everything again.
//! Requests that arrive while a read runs are answered together by the next one.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::types::Value;

use super::error::DbContext;
use super::{Journal, JournalError, ALL_STATES};
use crate::fare::OpState;

/// How often the incremental counts are checked against a full count even when no retention
/// batch ran. A difference is logged (it means a state changed without its event) and the
/// full count wins.
pub const FULL_COUNT_EVERY: Duration = Duration::from_secs(600);

/// Operations by state, every state listed (zero included) in the order of the state machine,
/// as [`Journal::counts_by_state`] gives them.
pub type StateCounts = Vec<(OpState, u64)>;

type Reply = tokio::sync::oneshot::Sender<Result<StateCounts, String>>;

/// A read-only connection to the journal on a thread of its own (see the module
/// documentation). Dropping it ends the thread once the requests in flight are answered.
#[derive(Debug)]
pub struct JournalReader {
    requests: mpsc::Sender<Reply>,
}

impl JournalReader {
    /// Opens `path` read-only (it must already be a journal: the writer creates and migrates
    /// it) and starts the reader's thread.
    pub fn open(path: &Path) -> Result<JournalReader, JournalError> {
        let journal = Journal::open_for_salvage(path)?;
        let (requests, rx) = mpsc::channel::<Reply>();
        std::thread::Builder::new()
            .name("journal-reader".into())
            .spawn(move || serve(journal, rx))
            .map_err(|e| JournalError::Worker(format!("starting the journal reader: {e}")))?;
        Ok(JournalReader { requests })
    }

    /// How many operations are in each state, as of a read that began after this call: every
    /// state listed (zero included) in the order of the state machine.
    pub async fn counts_by_state(&self) -> Result<StateCounts, JournalError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| JournalError::Worker("the journal reader has stopped".into()))?;
        match rx.await {
            Ok(Ok(counts)) => Ok(counts),
            // The error was the reader's; it is shared by every request it answered at once.
            Ok(Err(e)) => Err(JournalError::Worker(format!("journal reader: {e}"))),
            Err(_) => Err(JournalError::Worker(
                "the journal reader has stopped".into(),
            )),
        }
    }
}

/// The reader's thread: answers requests until every [`JournalReader`] is dropped.
fn serve(journal: Journal, rx: mpsc::Receiver<Reply>) {
    let mut counter = Counter::default();
    while let Ok(first) = rx.recv() {
        // One read answers everything already asked: the read begins after each of them.
        let waiting: Vec<Reply> = std::iter::once(first).chain(rx.try_iter()).collect();
        let result = counter.read(&journal).map_err(|e| e.to_string());
        for reply in waiting {
            let _ = reply.send(result.clone());
        }
    }
}

/// The counts as of the last read, and where that read stopped.
#[derive(Default)]
struct Counter {
    /// Counts as of `last_event`; `None` until the first full count.
    counts: Option<StateCounts>,
    /// The id of the last event the counts include.
    last_event: i64,
    /// The last retention batch when the counts were taken in full.
    last_batch: i64,
    /// When the counts were last taken in full.
    counted_at: Option<Instant>,
}

impl Counter {
    /// Brings the counts up to date in one read snapshot.
    fn read(&mut self, journal: &Journal) -> Result<StateCounts, JournalError> {
        // A deferred transaction on a read-only connection: a snapshot, never a write lock.
        let tx = journal
            .conn
            .unchecked_transaction()
            .ctx("starting a read")?;
        let batch: i64 = tx
            .query_row("SELECT coalesce(max(batch), 0) FROM prune_log", [], |r| {
                r.get(0)
            })
            .ctx("reading the retention log")?;
        let due = match self.counted_at {
            Some(t) => t.elapsed() >= FULL_COUNT_EVERY,
            None => true,
        };
        let counts = match self.counts.take() {
            Some(mut counts) if batch == self.last_batch && !due => {
                self.last_event = apply_events(journal, &mut counts, self.last_event)?;
                counts
            }
            kept => {
                let full = journal.counts_by_state()?;
                let last_event: i64 = tx
                    .query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
                    .ctx("reading the last event")?;
                if let Some(mut kept) = kept.filter(|_| batch == self.last_batch) {
                    // The kept counts, brought to the same snapshot, must agree.
                    apply_events(journal, &mut kept, self.last_event)?;
                    if kept != full {
                        tracing::warn!(
                            journal = %journal.path.display(),
                            incremental = ?kept,
                            full = ?full,
                            "journal state counts kept from events differ from a full count \
                             (a state changed without its event): using the full count"
                        );
                    }
                }
                self.last_event = last_event;
                self.last_batch = batch;
                self.counted_at = Some(Instant::now());
                full
            }
        };
        self.counts = Some(counts.clone());
        tx.finish().ctx("ending a read")?;
        Ok(counts)
    }
}

/// Applies the events after `after` to `counts`; returns the id of the last one.
fn apply_events(
    journal: &Journal,
    counts: &mut StateCounts,
    after: i64,
) -> Result<i64, JournalError> {
    const WHAT: &str = "reading new events";
    let mut stmt = journal
        .conn
        .prepare_cached("SELECT id, from_state, to_state FROM events WHERE id > ?1 ORDER BY id")
        .ctx(WHAT)?;
    let mut rows = stmt.query([after]).ctx(WHAT)?;
    let mut last = after;
    while let Some(row) = rows.next().ctx(WHAT)? {
        let id: i64 = row.get(0).ctx(WHAT)?;
        let from: Value = row.get(1).ctx(WHAT)?;
        let to: Value = row.get(2).ctx(WHAT)?;
        last = id;
        if from == to {
            continue;
        }
        // `from` is NULL for the event of `begin`: a new operation.
        if from != Value::Null {
            match slot(counts, &from) {
                Some(n) => *n = n.saturating_sub(1),
                None => journal.quarantine("events", &id.to_string(), &format!("from {from:?}")),
            }
        }
        match slot(counts, &to) {
            Some(n) => *n += 1,
            None => journal.quarantine("events", &id.to_string(), &format!("to {to:?}")),
        }
    }
    Ok(last)
}

/// The count of the state an event names; `None` for a value that is no state.
fn slot<'a>(counts: &'a mut StateCounts, state: &Value) -> Option<&'a mut u64> {
    let Value::Text(s) = state else {
        return None;
    };
    let state = OpState::parse(s)?;
    debug_assert!(ALL_STATES.contains(&state));
    counts.iter_mut().find(|(c, _)| *c == state).map(|(_, n)| n)
}

impl Journal {
    /// A cheap read through this connection that proves it answers (the watchdog's check of
    /// the writer): it reads the first row of `fare_ops`, not the whole table.
    pub fn answers(&self) -> Result<(), JournalError> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM fare_ops)", [], |r| {
                r.get::<_, bool>(0)
            })
            .ctx("checking the journal answers")
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fare::{Direction, Rupiah};
    use crate::journal::{NewOp, OpKind, Transition};

    fn op(r: &str, at: i64) -> NewOp {
        NewOp {
            partner_reference_no: r.into(),
            kind: OpKind::Hold,
            lane: "in-1".into(),
            direction: Direction::In,
            station_id: "LBB".into(),
            amount: Rupiah(14_000),
            pan_key: format!("{:064x}", r.len() as i64 * 7919 + at),
            pan_masked: "93600914*******1234".into(),
            nns: "93600914".into(),
            journey_id: None,
            next_attempt_at_ms: at + 5_000,
            created_at_ms: at,
        }
    }

    fn succeed(j: &mut Journal, r: &str, at: i64) {
        j.transitions(
            r,
            &[
                Transition {
                    reference_no: Some(format!("AGG-{r}")),
                    response_code: Some("2005400".into()),
                    ..Transition::new(OpState::Succeeded, at)
                },
                Transition {
                    gate_opened: Some(true),
                    ..Transition::new(OpState::Succeeded, at)
                },
            ],
        )
        .expect("succeeded");
    }

    fn n(c: &StateCounts, s: OpState) -> u64 {
        c.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n)
    }

    #[test]
    fn counts_follow_the_writer_through_changes_and_retention() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("j.db");
        let mut w = Journal::open(&path).expect("writer");
        let reader = JournalReader::open(&path).expect("reader");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        // Every read is checked against the writer's own full count.
        let counts = |w: &Journal| {
            let got = rt.block_on(reader.counts_by_state()).expect("counts");
            assert_eq!(got, w.counts_by_state().expect("full count"));
            got
        };
        assert_eq!(counts(&w).len(), OpState::ALL.len());

        for i in 0..6 {
            w.begin(&op(&format!("R{i}"), 1_000 + i)).expect("begin");
        }
        assert_eq!(n(&counts(&w), OpState::Pending), 6);
        // From here on the reader applies events to what it counted.
        for i in 0..4 {
            succeed(&mut w, &format!("R{i}"), 2_000);
        }
        w.transition(
            "R4",
            &Transition {
                response_code: Some("4036005".into()),
                reason: Some("insufficient balance".into()),
                ..Transition::new(OpState::Declined, 2_000)
            },
        )
        .expect("declined");
        w.transition("R5", &Transition::new(OpState::Unknown, 2_000))
            .expect("unknown");
        let c = counts(&w);
        assert_eq!(
            (
                n(&c, OpState::Pending),
                n(&c, OpState::Succeeded),
                n(&c, OpState::Declined),
                n(&c, OpState::Unknown)
            ),
            (0, 4, 1, 1)
        );

        // Retention deletes rows with their events: the reader counts again.
        let batch = w
            .prune_candidates(i64::MAX, 3)
            .expect("pick")
            .expect("a batch");
        w.prune_commit(&batch, "j-pruned-1.csv", 9_000)
            .expect("prune");
        let c = counts(&w);
        assert_eq!(
            n(&c, OpState::Succeeded) + n(&c, OpState::Declined),
            5 - batch.ops.len() as u64
        );
        w.begin(&op("R9", 10_000)).expect("begin after the prune");
        assert_eq!(n(&counts(&w), OpState::Pending), 1);
    }

    #[test]
    fn the_writers_check_answers_on_an_empty_journal() {
        let dir = tempfile::tempdir().expect("tmp");
        let w = Journal::open(&dir.path().join("j.db")).expect("writer");
        w.answers().expect("an empty journal answers");
    }
}
