//! A tap's durable commits on the real SQLite journal: the lane executor over the real
//! journal port ([`tapgate::daemon::station::JournalHandle`]) and a scripted aggregator.
//! Commits are counted in the journal's write-ahead log (each one is an fsync under
//! `synchronous=FULL`), so "one commit before the send, one after the decision" is read from
//! the file, not assumed.

#[path = "lane_flow/rig.rs"]
mod rig;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rig::*;
use tapgate::daemon::lane::Lane;
use tapgate::daemon::station::{JournalHandle, PassengerKey, Ports, StationCore};
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::flow::{JourneyChange, Settlement};
use tapgate::journal::{Journal, JournalError, JourneyState, NewOp, OpKind};
use tapgate::ports::fake::FakePayments;
use tapgate::ports::OpJournal as _;

/// How many transactions the write-ahead log of `db` holds since its last reset: its valid
/// frames (the header's salts) that end a commit (a non-zero database size).
fn wal_commits(db: &Path) -> usize {
    let wal = std::fs::read(format!("{}-wal", db.display())).unwrap_or_default();
    if wal.len() < 32 {
        return 0;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let page = be(&wal[8..12]) as usize;
    let salts = &wal[16..24];
    let (mut off, mut n) = (32, 0);
    while off + 24 + page <= wal.len() {
        let frame = &wal[off..off + 24];
        if &frame[8..16] != salts {
            break;
        }
        if be(&frame[4..8]) != 0 {
            n += 1;
        }
        off += 24 + page;
    }
    n
}

struct Real {
    _dir: tempfile::TempDir,
    db: PathBuf,
    journal: JournalHandle,
    core: Arc<StationCore>,
}

impl Real {
    fn new() -> Real {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("journal.db");
        let journal = JournalHandle::new(Journal::open(&db).unwrap());
        let core = StationCore::new(
            Arc::new(config("", "")),
            Arc::new(TokioClock::new()),
            PassengerKey::from_bytes([7; 32]),
            Ports {
                payments: Arc::new(FakePayments::new()),
                journeys: Arc::new(journal.clone()),
                ops: Arc::new(journal.clone()),
                line: None,
                qr: None,
            },
        );
        Real {
            _dir: dir,
            db,
            journal,
            core,
        }
    }

    fn lane(&self, name: &str) -> Lane {
        let cfg = self
            .core
            .config
            .lanes
            .iter()
            .find(|l| l.name == name)
            .unwrap();
        Lane::on_core(
            cfg.clone(),
            self.core.clone(),
            Arc::new(TestRelay::default()),
        )
    }

    fn open_op(&self, reference: &str, pan_key: &str) -> NewOp {
        let now = self.core.now_ms();
        NewOp {
            partner_reference_no: reference.into(),
            kind: OpKind::Hold,
            lane: "in-1".into(),
            direction: Direction::In,
            station_id: "BLM".into(),
            amount: Rupiah(HOLD),
            pan_key: pan_key.into(),
            pan_masked: "93600002*******6781".into(),
            nns: "93600002".into(),
            journey_id: None,
            next_attempt_at_ms: now + 60_000,
            created_at_ms: now,
        }
    }
}

/// Item 5: a tap commits twice, the journal row before the send and the journey with the
/// result after the decision (it committed three times when the journey and the result were
/// two transactions). On the multi-threaded runtime, as the daemon runs its lanes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_commits_once_before_the_send_and_once_after_the_decision() {
    let real = Real::new();
    let pan = payload_for(PAN_A, 1);
    let before = wal_commits(&real.db);
    let r = real.lane("in-1").handle_payload(&pan, 1500).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert_eq!(
        wal_commits(&real.db) - before,
        2,
        "tap-in: begin, then settle"
    );
    let j = real
        .journal
        .run(|j| j.list(&Default::default()))
        .await
        .unwrap();
    assert_eq!(j.len(), 1);
    assert_eq!(
        (j[0].state, j[0].gate_opened),
        (OpState::Succeeded, Some(true))
    );
    assert!(
        j[0].journey_id.is_some(),
        "the journey came with the result"
    );

    let before = wal_commits(&real.db);
    let r = real
        .lane("out-1")
        .handle_payload(&payload_for(PAN_A, 2), 1500)
        .await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert_eq!(
        wal_commits(&real.db) - before,
        2,
        "tap-out: begin, then settle"
    );
    let pan_key = j[0].pan_key.clone();
    let open = real
        .journal
        .run(move |j| j.find_open_journey(&pan_key))
        .await
        .unwrap();
    assert_eq!(open, None, "the journey closed with the tap-out's result");
}

/// One transaction, two results: a journey change the journal refuses (the passenger already
/// has an open journey) writes nothing, and the payment's result is committed all the same,
/// as when they were two transactions (the reconciler then refunds the hold without a
/// journey).
#[tokio::test]
async fn a_refused_journey_change_still_records_the_result() {
    let real = Real::new();
    let key = "a".repeat(64);
    let (first, second) = (
        real.open_op("TGFIRST", &key),
        real.open_op("TGSECOND", &key),
    );
    let at = real.core.now_ms();
    let k2 = key.clone();
    real.journal
        .run(move |j| {
            j.begin(&first)?;
            j.open_journey(&k2, "BLM", "TGFIRST", at)?;
            j.begin(&second)
        })
        .await
        .unwrap();
    let before = wal_commits(&real.db);
    let s = real
        .journal
        .settle(Settlement {
            journey: Some(JourneyChange::Open {
                pan_key: key.clone(),
                station_id: "BLM".into(),
                tap_in_ref: "TGSECOND".into(),
                at_ms: at,
            }),
            partner_reference_no: "TGSECOND".into(),
            transitions: vec![succeeded("R-2", Some(true), at)],
            fast_opened: false,
        })
        .await;
    assert!(
        matches!(s.journey, Err(JournalError::JourneyAlreadyOpen { .. })),
        "{:?}",
        s.journey
    );
    let row = s.record.expect("the result is recorded").expect("a row");
    assert_eq!((row.state, row.journey_id), (OpState::Succeeded, None));
    assert_eq!(wal_commits(&real.db) - before, 1, "one commit");
    let holds = real
        .journal
        .run(|j| j.holds_without_journey(10))
        .await
        .unwrap();
    assert_eq!(holds.len(), 1, "left for the reconciler to refund");
    assert_eq!(holds[0].partner_reference_no, "TGSECOND");
}

/// A result the state machine refuses part-way writes none of its transitions (all of them
/// or none, as before), and the journey, which says who was let through, is still opened.
#[tokio::test]
async fn a_refused_result_writes_none_of_its_transitions_and_still_opens_the_journey() {
    let real = Real::new();
    let key = "b".repeat(64);
    let op = real.open_op("TGONLY", &key);
    let at = real.core.now_ms();
    real.journal.run(move |j| j.begin(&op)).await.unwrap();
    let s = real
        .journal
        .settle(Settlement {
            journey: Some(JourneyChange::Open {
                pan_key: key.clone(),
                station_id: "BLM".into(),
                tap_in_ref: "TGONLY".into(),
                at_ms: at,
            }),
            partner_reference_no: "TGONLY".into(),
            // SUCCEEDED is applied first, then a move back to PENDING is refused.
            transitions: vec![
                succeeded("R-1", Some(true), at),
                tapgate::journal::Transition::new(OpState::Pending, at),
            ],
            fast_opened: false,
        })
        .await;
    assert_eq!(s.journey.as_ref().map_err(|e| e.to_string()), Ok(&()));
    assert!(
        matches!(s.record, Err(JournalError::IllegalTransition { .. })),
        "{:?}",
        s.record
    );
    let (row, journey) = real
        .journal
        .run(move |j| Ok((j.get("TGONLY")?, j.find_open_journey(&key)?)))
        .await
        .unwrap();
    let row = row.unwrap();
    assert_eq!(
        (row.state, row.reference_no.clone()),
        (OpState::Pending, None),
        "the first transition was rolled back with the second"
    );
    let journey = journey.expect("the journey is open");
    assert_eq!(journey.state, JourneyState::Open);
    assert_eq!(row.journey_id, Some(journey.id));
}

/// A journal call that panics on the daemon's runtime is an error of that call, not a lane
/// that dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_call_that_panics_is_an_error_not_a_dead_lane() {
    let real = Real::new();
    let r: Result<(), JournalError> = real.journal.run(|_| panic!("boom")).await;
    match r {
        Err(JournalError::Worker(why)) => assert!(why.contains("boom"), "{why}"),
        other => panic!("expected a worker error, got {other:?}"),
    }
    // The journal still works.
    assert_eq!(real.journal.run(|j| j.due(0, 10)).await.unwrap().len(), 0);
}

fn payload_for(pan: &str, n: u8) -> String {
    tapgate::cpm::build::payload(&tapgate::cpm::build::PayloadSpec::new(pan).with_token(&[n; 16]))
}
