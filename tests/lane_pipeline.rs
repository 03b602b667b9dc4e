//! The lane pipeline in-process: recording relay, real SQLite journal, simulator over loopback
//! HTTP with injected faults, then the reconciler. Every test ends by checking the journal
//! against the simulator's ledger.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tapgate::config::Config;
use tapgate::daemon::lane::Lane;
use tapgate::daemon::reconcile::Reconciler;
use tapgate::daemon::{station_from_config, Station};
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::OpState;
use tapgate::relay::RecordingRelay;
use tapgate::sim::{Fault, SimHandle};

const SARI: &str = "9360000201100456781";
const RINA: &str = "9360001417451180859";

struct Rig {
    _dir: tempfile::TempDir,
    sim: SimHandle,
    station: Arc<Station>,
    entry: Lane,
    exit: Lane,
    entry_relay: RecordingRelay,
    exit_relay: RecordingRelay,
}

async fn rig(policy: &str) -> Rig {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let reconciler = "[reconciler]\nbackoff_base_ms = 20\nbackoff_cap_ms = 200\nnot_found_after_seconds = 0\ninterval_ms = 50\n";
    let path = common::station_config(dir.path(), &sim.base_url(), policy, reconciler);
    let cfg = Config::load(&path).unwrap();
    let station = station_from_config(cfg.clone(), &path).unwrap();
    let entry_relay = RecordingRelay::new();
    let exit_relay = RecordingRelay::new();
    let entry = Lane::new(
        cfg.lanes[0].clone(),
        station.clone(),
        Arc::new(entry_relay.clone()),
    );
    let exit = Lane::new(
        cfg.lanes[1].clone(),
        station.clone(),
        Arc::new(exit_relay.clone()),
    );
    Rig {
        _dir: dir,
        sim,
        station,
        entry,
        exit,
        entry_relay,
        exit_relay,
    }
}

impl Rig {
    async fn settle(&self) {
        common::settle(&self.station).await;
    }

    async fn state_of(&self, partner_ref: &str) -> OpState {
        let r = partner_ref.to_string();
        self.station
            .journal
            .run(move |j| j.get(&r))
            .await
            .unwrap()
            .expect("row")
            .state
    }

    async fn assert_books_agree(&self) {
        common::assert_books_agree(&self.station, &self.sim).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pulse_per_approved_tap_and_none_otherwise() {
    let rig = rig("").await;
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert_eq!(rig.entry_relay.opens(), 1);

    // The same phone again within the debounce window: the same tap, no second payment.
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Duplicate);
    assert_eq!(rig.entry_relay.opens(), 1);
    assert_eq!(rig.sim.ledger().len(), 1);

    rig.sim.decline_pan(RINA, "4036014");
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(RINA), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Declined);
    let r = rig.entry.handle_payload("hQVDUFYwMQ==", 0).await;
    assert_eq!(r.outcome, TapOutcome::InvalidPayload);
    assert_eq!(
        rig.entry_relay.opens(),
        1,
        "no relay action without a successful payment"
    );

    rig.settle().await;
    rig.assert_books_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_success_at_tap_in_is_refunded() {
    let rig = rig("decision_deadline_ms = 300").await;
    rig.sim.push_fault(Fault::Delay { ms: 900 });
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(RINA), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert!(!r.opened);
    assert_eq!(rig.entry_relay.opens(), 0);
    let pref = r.partner_reference_no.clone().unwrap();
    rig.station.drain().await;
    assert_eq!(rig.state_of(&pref).await, OpState::RefundPending);
    rig.settle().await;
    assert_eq!(rig.state_of(&pref).await, OpState::Refunded);
    assert_eq!(rig.sim.entry(&pref).unwrap().net_charged(), 0);
    rig.assert_books_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_unknown_kind_at_tap_in_resolves_by_query_never_by_resending() {
    for (fault, paid) in [
        (Fault::Drop { applied: true }, true),
        (Fault::Drop { applied: false }, false),
        (Fault::ServerError { applied: true }, true),
        (Fault::ServerError { applied: false }, false),
        (Fault::GatewayTimeout { applied: true }, true),
        (Fault::Garbage { applied: true }, true),
        (Fault::Garbage { applied: false }, false),
    ] {
        let rig = rig("").await;
        rig.sim.push_fault(fault);
        let r = rig
            .entry
            .handle_payload(&common::tap_payload(RINA), 0)
            .await;
        assert_eq!(r.outcome, TapOutcome::TryAgain, "{fault:?}");
        assert_eq!(rig.entry_relay.opens(), 0, "{fault:?}");
        let pref = r.partner_reference_no.clone().unwrap();
        rig.settle().await;
        let want = if paid {
            OpState::Refunded
        } else {
            OpState::Declined
        };
        assert_eq!(rig.state_of(&pref).await, want, "{fault:?}");
        // Never re-sent: one payment request in the ledger at most.
        assert!(rig.sim.ledger().len() <= 1, "{fault:?}");
        rig.assert_books_agree().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_at_exit_follows_the_station_policy() {
    // Default: let the passenger out, settle later; no refund once the query says paid.
    let rig = rig("").await;
    rig.sim.push_fault(Fault::Drop { applied: true });
    let r = rig.exit.handle_payload(&common::tap_payload(SARI), 0).await;
    assert_eq!(r.outcome, TapOutcome::Released);
    assert!(r.opened);
    assert_eq!(rig.exit_relay.opens(), 1);
    let pref = r.partner_reference_no.clone().unwrap();
    rig.settle().await;
    assert_eq!(rig.state_of(&pref).await, OpState::Succeeded);
    rig.assert_books_agree().await;

    // keep_closed: the gate stays shut and the paid exit is refunded.
    let rig = rig_keep_closed().await;
    rig.sim.push_fault(Fault::Drop { applied: true });
    let r = rig.exit.handle_payload(&common::tap_payload(SARI), 0).await;
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert_eq!(rig.exit_relay.opens(), 0);
    let pref = r.partner_reference_no.clone().unwrap();
    rig.settle().await;
    assert_eq!(rig.state_of(&pref).await, OpState::Refunded);
    rig.assert_books_agree().await;
}

async fn rig_keep_closed() -> Rig {
    rig("unknown_at_exit = \"keep_closed\"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_link_tap_out_to_tap_in_and_anti_passback_refuses() {
    let rig = rig("debounce_ms = 0").await;
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert_eq!(r.amount, Some(9000), "hold = highest fare from Blok M");
    let tap_in = r.partner_reference_no.clone().unwrap();

    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Passback);
    assert_eq!(rig.entry_relay.opens(), 1);

    let r = rig.exit.handle_payload(&common::tap_payload(SARI), 0).await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert_eq!(r.amount, Some(3000));
    let out = rig
        .sim
        .entry(r.partner_reference_no.as_deref().unwrap())
        .unwrap();
    assert_eq!(
        out.tap.tap_in_partner_reference_no.as_deref(),
        Some(tap_in.as_str())
    );
    assert!(out.tap.tap_in_reference_no.is_some());

    // Journey closed: a new tap-in is accepted.
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Approved);

    // Unknown entry at exit pays the line's maximum.
    let r = rig.exit.handle_payload(&common::tap_payload(RINA), 0).await;
    assert_eq!(r.amount, Some(14000));
    rig.settle().await;
    rig.assert_books_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_input_holds_every_gate_open_and_takes_no_fare() {
    use std::collections::HashMap;
    use tapgate::relay::inputs::{monotonic_now, InputEvent, InputEventKind, InputRole};
    use tapgate::relay::{Relay, RelayCommand};

    let rig = rig("").await;
    let relays: HashMap<String, Arc<dyn Relay>> = HashMap::from([
        (
            "in-1".to_string(),
            Arc::new(rig.entry_relay.clone()) as Arc<dyn Relay>,
        ),
        (
            "out-1".to_string(),
            Arc::new(rig.exit_relay.clone()) as Arc<dyn Relay>,
        ),
    ]);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(tapgate::daemon::gate::run(
        rig.station.clone(),
        relays,
        rx,
        stop_rx,
    ));
    let alarm = |kind| InputEvent {
        role: InputRole::Emergency,
        lane: None,
        input: "FIRE_ALARM".into(),
        kind,
        at: monotonic_now(),
        initial: false,
    };
    tx.send(alarm(InputEventKind::EmergencyOn)).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while !rig
        .station
        .free_exit
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        assert!(std::time::Instant::now() < until, "free exit not entered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rig.entry_relay.commands(), vec![RelayCommand::FreeExitOn]);
    assert_eq!(rig.exit_relay.commands(), vec![RelayCommand::FreeExitOn]);
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::FreeExit);
    assert!(r.partner_reference_no.is_none());
    assert!(
        rig.sim.ledger().is_empty(),
        "no fare taken in free-exit mode"
    );

    tx.send(alarm(InputEventKind::EmergencyOff)).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while rig
        .station
        .free_exit
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        assert!(std::time::Instant::now() < until, "free exit not left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        rig.entry_relay.commands(),
        vec![RelayCommand::FreeExitOn, RelayCommand::FreeExitOff]
    );
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert_eq!(
        rig.entry_relay.opens(),
        1,
        "exactly one pulse for the one paid tap"
    );
    let _ = stop_tx.send(true);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_journeys_close_at_the_held_fare() {
    use tapgate::clock::{Clock, ManualClock};
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = common::station_config(dir.path(), &sim.base_url(), "max_trip_minutes = 1", "");
    let cfg = Config::load(&path).unwrap();
    let clock = ManualClock::new(jiff::Timestamp::now(), cfg.time_zone());
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let aggregator =
        tapgate::daemon::aggregator_from_config(&cfg, &path, dyn_clock.clone()).unwrap();
    let (journal, key) = tapgate::daemon::open_storage(&cfg).unwrap();
    let station = Station::new(
        Arc::new(cfg.clone()),
        journal,
        aggregator,
        dyn_clock,
        key,
        None,
    );
    let entry = Lane::new(
        cfg.lanes[0].clone(),
        station.clone(),
        Arc::new(RecordingRelay::new()),
    );
    let r = entry.handle_payload(&common::tap_payload(SARI), 0).await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    let rec = Reconciler::new(station.clone());
    assert_eq!(
        rec.close_stale_journeys().await.unwrap(),
        0,
        "not stale yet"
    );
    clock.advance_ms(61_000);
    assert_eq!(rec.close_stale_journeys().await.unwrap(), 1);
    let open = station
        .journal
        .run(|j| j.stale_journeys(i64::MAX))
        .await
        .unwrap();
    assert!(open.is_empty(), "the journey is closed");
    // Closed: the passenger may tap in again (no anti-passback refusal).
    clock.advance_ms(5_000);
    let r = entry.handle_payload(&common::tap_payload(SARI), 0).await;
    assert_eq!(r.outcome, TapOutcome::Approved);
}
