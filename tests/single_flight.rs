//! One passenger, one decision: two taps of the same phone at the same moment — on two lanes of
//! one station (one process), or in two `tapgate tap` processes sharing a journal — move money
//! once. Real parts: the simulator over loopback HTTP, real SQLite journals, real processes.
//! And a successful hold that belongs to no journey is found and refunded by the reconciler.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tapgate::config::Config;
use tapgate::daemon::lane::Lane;
use tapgate::daemon::reconcile::Reconciler;
use tapgate::daemon::{station_from_config, Station};
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::relay::RecordingRelay;
use tapgate::sim::SimHandle;

/// A station config with two entry lanes (`in-1`, `in-2`) and two exit lanes (`out-1`,
/// `out-2`), as at a station with adjacent readers.
fn two_by_two(dir: &Path, sim: &SimHandle, policy: &str) -> PathBuf {
    let path = common::station_config(dir, &sim.base_url(), policy, common::FAST_RECONCILER);
    let extra = "[[lane]]\nname = \"in-2\"\ndirection = \"in\"\nrelay = { kind = \"recording\" }\n\n\
                 [[lane]]\nname = \"out-2\"\ndirection = \"out\"\nrelay = { kind = \"recording\" }\n\n\
                 [tariff]\n";
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("[tariff]\n", extra, 1);
    std::fs::write(&path, text).unwrap();
    path
}

/// A PAN for round `i` (each round a different passenger).
fn pan(i: usize) -> String {
    format!("93600914{:011}", 30_000_000 + i)
}

struct Station2 {
    station: Arc<Station>,
    lanes: Vec<(Lane, RecordingRelay)>,
}

fn station_with_lanes(path: &Path) -> Station2 {
    let cfg = Config::load(path).unwrap();
    let station = station_from_config(cfg.clone(), path).unwrap();
    let lanes = cfg
        .lanes
        .iter()
        .map(|l| {
            let relay = RecordingRelay::new();
            let lane = Lane::new(l.clone(), station.clone(), Arc::new(relay.clone()));
            (lane, relay)
        })
        .collect();
    Station2 { station, lanes }
}

impl Station2 {
    fn lane(&self, name: &str) -> &Lane {
        &self.lanes.iter().find(|(l, _)| l.name() == name).unwrap().0
    }

    fn opens(&self) -> usize {
        self.lanes.iter().map(|(_, r)| r.opens()).sum()
    }
}

/// Two entry lanes and two exit lanes of one station read the same phone at the same moment,
/// round after round: each time one payment reaches the aggregator, one gate opens, the other
/// lane says it is the same tap; the exit closes the journey the entry opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_lanes_of_one_station_pay_once_for_one_phone() {
    const ROUNDS: usize = 12;
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = two_by_two(dir.path(), &sim, "");
    let s = station_with_lanes(&path);
    let (mut holds, mut settles) = (0, 0);
    for i in 0..ROUNDS {
        let p = pan(i);
        let before = sim.ledger().len();
        let (x, y) = (common::tap_payload(&p), common::tap_payload(&p));
        let (a, b) = tokio::join!(
            s.lane("in-1").handle_payload(&x, 0),
            s.lane("in-2").handle_payload(&y, 0),
        );
        let outcomes = [a.outcome, b.outcome];
        assert!(
            outcomes.contains(&TapOutcome::Approved) && outcomes.contains(&TapOutcome::Duplicate),
            "round {i} entry: {a:?}\n{b:?}"
        );
        assert_eq!(sim.ledger().len(), before + 1, "round {i}: one hold");
        holds += sim.ledger().len() - before;

        let before = sim.ledger().len();
        let (x, y) = (common::tap_payload(&p), common::tap_payload(&p));
        let (a, b) = tokio::join!(
            s.lane("out-1").handle_payload(&x, 0),
            s.lane("out-2").handle_payload(&y, 0),
        );
        let outcomes = [a.outcome, b.outcome];
        assert!(
            outcomes.contains(&TapOutcome::Approved) && outcomes.contains(&TapOutcome::Duplicate),
            "round {i} exit: {a:?}\n{b:?}"
        );
        assert_eq!(sim.ledger().len(), before + 1, "round {i}: one settlement");
        settles += sim.ledger().len() - before;
        let paid = if a.outcome == TapOutcome::Approved {
            &a
        } else {
            &b
        };
        assert_eq!(
            paid.amount,
            Some(3000),
            "round {i}: the exit saw the journey"
        );
    }
    assert_eq!(s.opens(), 2 * ROUNDS, "one gate opening per tap");
    assert_eq!(
        sim.stats().payment_requests,
        2 * ROUNDS as u64,
        "one payment sent per tap"
    );
    let rows = s.station.journal.run(|j| j.export(0)).await.unwrap();
    assert_eq!(rows.len(), 2 * ROUNDS, "one journaled payment per tap");
    let open = s
        .station
        .journal
        .run(|j| j.stale_journeys(i64::MAX))
        .await
        .unwrap();
    assert!(open.is_empty(), "every journey closed: {open:?}");
    let left = Reconciler::new(s.station.clone())
        .run_until_settled(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(left, 0);
    let rows = s.station.journal.run(|j| j.export(0)).await.unwrap();
    assert!(
        rows.iter().all(|r| r.state == OpState::Succeeded),
        "{rows:#?}"
    );
    assert!(tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows).is_empty());
    assert_eq!(sim.stats().protocol_violations(), 0);
    println!(
        "two lanes, one station: {ROUNDS} rounds, {} taps, {holds} holds and {settles} \
         settlements at the ledger",
        4 * ROUNDS
    );
}

/// After the first exit tap has finished, a second exit tap of the same phone at the next
/// reader moments later sees the journey the first one closed: the same tap, no unknown-entry
/// fare. Likewise at the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reader_moments_later_is_the_same_tap() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = two_by_two(dir.path(), &sim, "");
    let s = station_with_lanes(&path);
    let p = pan(99);
    let a = s
        .lane("in-1")
        .handle_payload(&common::tap_payload(&p), 0)
        .await;
    assert_eq!(a.outcome, TapOutcome::Approved);
    let b = s
        .lane("in-2")
        .handle_payload(&common::tap_payload(&p), 0)
        .await;
    assert_eq!(b.outcome, TapOutcome::Duplicate, "{b:?}");
    let a = s
        .lane("out-1")
        .handle_payload(&common::tap_payload(&p), 0)
        .await;
    assert_eq!(a.outcome, TapOutcome::Approved);
    assert_eq!(a.amount, Some(3000));
    let b = s
        .lane("out-2")
        .handle_payload(&common::tap_payload(&p), 0)
        .await;
    assert_eq!(b.outcome, TapOutcome::Duplicate, "{b:?}");
    assert_eq!(sim.ledger().len(), 2);
    assert_eq!(s.opens(), 2);
}

fn tap_process(cfg: &Path, lane: &str, pan: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["tap", "--config"])
        .arg(cfg)
        .args(["--lane", lane, &common::tap_payload(pan)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn outcome(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Two `tapgate tap` processes on one journal, the same phone at the same moment, round after
/// round: one hold at the aggregator each time, one journey, and nothing left to refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tap_processes_on_one_journal_pay_once() {
    const ROUNDS: usize = 6;
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = two_by_two(dir.path(), &sim, "");
    let mut approved = 0;
    for i in 0..ROUNDS {
        let p = pan(1000 + i);
        let before = sim.ledger().len();
        let a = tap_process(&path, "in-1", &p);
        let b = tap_process(&path, "in-2", &p);
        let (a, b) = (outcome(a), outcome(b));
        let outcomes = [a["outcome"].clone(), b["outcome"].clone()];
        approved += outcomes.iter().filter(|o| *o == "approved").count();
        assert_eq!(
            sim.ledger().len(),
            before + 1,
            "round {i}: one hold at the aggregator\n{a}\n{b}"
        );
        assert!(
            outcomes.contains(&"approved".into()),
            "round {i}: one of them is approved\n{a}\n{b}"
        );
    }
    assert_eq!(approved, ROUNDS);
    assert_eq!(
        sim.stats().payment_requests,
        ROUNDS as u64,
        "one payment sent per tap"
    );
    common::reconcile(&path);
    let rows = common::journal_rows(dir.path());
    assert_eq!(rows.len(), ROUNDS, "{rows:#?}");
    assert!(
        rows.iter().all(|r| r.state == OpState::Succeeded),
        "{rows:#?}"
    );
    assert!(tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows).is_empty());
    println!(
        "two tap processes: {ROUNDS} rounds, {} taps, {} holds at the ledger",
        2 * ROUNDS,
        sim.ledger().len()
    );
}

/// A successful hold whose gate opened but which belongs to no journey (what the race above
/// used to leave behind) is never silent: the reconciler refunds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_without_a_journey_is_refunded() {
    use tapgate::aggregator::{PayOutcome, TapPayment};
    use tapgate::journal::{NewOp, OpKind, Transition};
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = two_by_two(dir.path(), &sim, "");
    let s = station_with_lanes(&path);
    let st = s.station.clone();
    let p = pan(7);
    let payload = common::tap_payload(&p);
    let decoded = tapgate::cpm::decode(&payload).unwrap();
    let pref = "TGBLM99ORPHAN0001".to_string();
    let now = st.now_ms();
    let op = NewOp {
        partner_reference_no: pref.clone(),
        kind: OpKind::Hold,
        lane: "in-2".into(),
        direction: Direction::In,
        station_id: "BLM".into(),
        amount: Rupiah(9000),
        pan_key: st.passenger_key.of(decoded.pan()),
        pan_masked: decoded.pan().masked(),
        nns: decoded.nns().to_string(),
        journey_id: None,
        next_attempt_at_ms: now,
        created_at_ms: now,
    };
    st.journal.run(move |j| j.begin(&op)).await.unwrap();
    let paid = st
        .aggregator
        .pay(&TapPayment {
            partner_reference_no: pref.clone(),
            qr_content: payload.clone(),
            amount: Rupiah(9000),
            direction: Direction::In,
            station_id: "BLM".into(),
            gate_id: "BLM-in-2".into(),
            tap_in: None,
        })
        .await;
    let PayOutcome::Success {
        reference_no: Some(reference),
        ..
    } = paid
    else {
        panic!("{paid:?}")
    };
    let t = Transition {
        reference_no: Some(reference),
        response_code: Some("2006000".into()),
        gate_opened: Some(true),
        reason: Some("paid".into()),
        ..Transition::new(OpState::Succeeded, now)
    };
    let r = pref.clone();
    st.journal.run(move |j| j.transition(&r, &t)).await.unwrap();
    assert_eq!(sim.entry(&pref).unwrap().net_charged(), 9000);

    let left = Reconciler::new(st.clone())
        .run_until_settled(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(left, 0);
    let r = pref.clone();
    let row = st.journal.run(move |j| j.get(&r)).await.unwrap().unwrap();
    assert_eq!(row.state, OpState::Refunded, "{row:?}");
    assert_eq!(sim.entry(&pref).unwrap().net_charged(), 0);
    let r = pref.clone();
    let events = st.journal.run(move |j| j.events(&r)).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.detail.contains("without a journey")),
        "{events:#?}"
    );
    let rows = st.journal.run(|j| j.export(0)).await.unwrap();
    assert!(tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows).is_empty());
}

/// Start-up recovery (`tapgate tap`, `tapgate reconcile`, the daemon) leaves a PENDING row of a
/// live process alone (its tap is in flight: taking it over would let a second tap of the
/// passenger through) and takes over one whose process is gone, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_leaves_a_live_tap_alone_and_takes_over_a_dead_one() {
    use tapgate::journal::{NewOp, OpKind};
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = two_by_two(dir.path(), &sim, "");
    let s = station_with_lanes(&path);
    let st = s.station.clone();
    let now = st.now_ms();
    for r in ["TGLIVE1", "TGDEAD1"] {
        let op = NewOp {
            partner_reference_no: r.into(),
            kind: OpKind::Hold,
            lane: "in-1".into(),
            direction: Direction::In,
            station_id: "BLM".into(),
            amount: Rupiah(9000),
            pan_key: "ab".repeat(32),
            pan_masked: "93600914*******0000".into(),
            nns: "93600914".into(),
            journey_id: None,
            next_attempt_at_ms: now + 60_000,
            created_at_ms: now,
        };
        st.journal.run(move |j| j.begin(&op)).await.unwrap();
    }
    // TGDEAD1 was begun by a process that no longer runs.
    let conn = rusqlite::Connection::open(dir.path().join("journal.db")).unwrap();
    conn.execute(
        "UPDATE fare_ops SET owner = '4194304:1' WHERE partner_reference_no = 'TGDEAD1'",
        [],
    )
    .unwrap();
    drop(conn);
    let n = Reconciler::new(st.clone()).recover_pending().await.unwrap();
    assert_eq!(n, 1);
    let state = |r: &'static str| {
        let st = st.clone();
        async move {
            st.journal
                .run(move |j| j.get(r))
                .await
                .unwrap()
                .unwrap()
                .state
        }
    };
    assert_eq!(state("TGLIVE1").await, OpState::Pending);
    assert_eq!(state("TGDEAD1").await, OpState::Unknown);
}
