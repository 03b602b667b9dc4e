//! The lane tier on a line: a station whose taps also ask the line's shared journeys (a
//! [`FakeLine`]), on the in-memory fakes with paused time. What the line says changes the
//! fare, the references a tap-out carries, and what the station's journal writes.

#[path = "lane_flow/rig.rs"]
mod rig;

use std::time::Duration;

use rig::*;
use tapgate::aggregator::PayOutcome;
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::flow::{LineAnswer, LineEntry, LineState, LineView, TapInRef};
use tapgate::journal::{JourneyEventKind, JourneyState};

fn entry_at(station: &str, tap_in: &str) -> LineEntry {
    LineEntry {
        tap_in_ref: tap_in.into(),
        entry_station: station.into(),
        tap_in_reference_no: Some(format!("REF-{tap_in}")),
        opened_at_ms: START_MS - 600_000,
    }
}

fn open_on_line(station: &str, tap_in: &str) -> LineView {
    LineView::Answered(LineAnswer {
        open: Some(entry_at(station, tap_in)),
        ..LineAnswer::default()
    })
}

#[tokio::test(start_paused = true)]
async fn an_exit_finds_an_entry_made_at_another_station_pays_that_fare_and_names_the_hold() {
    let rig = Rig::on_line("");
    let line = rig.line.clone().unwrap();
    line.answer(open_on_line("LBB", "TGLBB-IN-1"));
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert_eq!(r.amount, Some(FARE_FROM_LBB));
    assert_eq!(r.fare_rule, Some("matrix"));
    let p = &rig.pay.payments()[0];
    assert_eq!(
        p.tap_in,
        Some(TapInRef {
            partner_reference_no: "TGLBB-IN-1".into(),
            reference_no: Some("REF-TGLBB-IN-1".into()),
        })
    );
    // The exit claimed the journey with its own reference, asked once.
    let q = line.queries();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].claim, r.partner_reference_no);
    assert_eq!(q[0].local_tap_in_ref, None);
    // This journal never held the journey: the close goes to the line only.
    assert!(rig.journal.journeys().is_empty());
    let evs = rig.journal.line_events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].tap_in_ref, "TGLBB-IN-1");
    assert_eq!(
        evs[0].kind,
        JourneyEventKind::Closed {
            tap_out_ref: r.partner_reference_no.clone().unwrap(),
            fare: Rupiah(FARE_FROM_LBB),
            references_hold: true,
        }
    );
    assert!(rig.journal.entry_unknown().is_empty());
    assert_eq!(rig.op_of(&r).journey_id, None);
}

#[tokio::test(start_paused = true)]
async fn a_line_that_cannot_answer_in_time_degrades_to_the_unknown_entry_fare_marked_to_converge() {
    let rig = Rig::on_line("");
    let line = rig.line.clone().unwrap();
    line.answer(open_on_line("LBB", "TGLBB-IN-1"));
    line.slow(Duration::from_millis(500), Duration::from_millis(50));
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert_eq!(r.amount, Some(MAX_FARE));
    assert_eq!(r.fare_rule, Some("unknown_entry"));
    assert_eq!(rig.pay.payments()[0].tap_in, None);
    assert_eq!(
        rig.journal.entry_unknown(),
        vec![r.partner_reference_no.unwrap()]
    );
    // The lookup cost the budget, not the line's 500 ms.
    assert!(r.timings.line_us <= 60_000, "{}", r.timings.line_us);
    assert_eq!(
        rig.counter("tapgate_line_lookups_degraded_total", &[("lane", "out-1")]),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn an_exit_the_line_has_claimed_or_just_closed_elsewhere_is_the_same_tap_and_pays_nothing() {
    let rig = Rig::on_line("");
    let line = rig.line.clone().unwrap();
    line.answer(LineView::Answered(LineAnswer {
        open: Some(entry_at("LBB", "TGLBB-IN-1")),
        claimed_by: Some("TGDKA-OUT-1".into()),
        ..LineAnswer::default()
    }));
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Duplicate, "{}", r.message);
    assert!(!r.opened);
    line.answer(LineView::Answered(LineAnswer {
        recent_close: Some("TGDKA-OUT-1".into()),
        ..LineAnswer::default()
    }));
    let r = rig.tap("out-1", PAN_B).await;
    assert_eq!(r.outcome, TapOutcome::Duplicate, "{}", r.message);
    assert!(rig.pay.payments().is_empty());
    assert!(rig.journal.ops().is_empty());
    assert_eq!(rig.opens(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_declined_exit_gives_its_claim_back_so_the_next_tap_is_not_a_duplicate() {
    let rig = Rig::on_line("");
    let line = rig.line.clone().unwrap();
    line.answer(open_on_line("LBB", "TGLBB-IN-1"));
    rig.pay.then_pay(tapgate::ports::fake::Answer::After(
        Duration::from_millis(100),
        PayOutcome::Declined {
            response_code: "4036014".into(),
            message: "Insufficient Funds".into(),
        },
    ));
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Declined, "{}", r.message);
    tokio::task::yield_now().await;
    sleep_ms(1).await;
    assert_eq!(
        line.released(),
        vec![("TGLBB-IN-1".to_string(), r.partner_reference_no.unwrap())]
    );
    assert!(rig.journal.line_events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_journey_of_this_station_closed_elsewhere_is_closed_here_and_does_not_block_the_next_entry(
) {
    let rig = Rig::on_line("");
    let (tap_in_ref, id) = rig.seed_journey(PAN_A, "BLM", HOLD, 1).await;
    sleep_ms(DEBOUNCE_MS + 1).await;
    let line = rig.line.clone().unwrap();
    line.answer(LineView::Answered(LineAnswer {
        local: Some(LineState {
            tap_in_ref: tap_in_ref.clone(),
            state: JourneyState::Closed,
            fare: Some(Rupiah(FARE_FROM_LBB)),
            references_hold: Some(true),
        }),
        ..LineAnswer::default()
    }));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert_eq!(line.queries()[0].local_tap_in_ref, Some(tap_in_ref));
    assert_eq!(line.queries()[0].claim, None, "an entry claims nothing");
    let js = rig.journal.journeys();
    let old = js.iter().find(|j| j.id == id).unwrap();
    assert_eq!(
        (old.state, old.fare),
        (JourneyState::Closed, Some(Rupiah(FARE_FROM_LBB)))
    );
    assert_eq!(
        js.iter().filter(|j| j.state == JourneyState::Open).count(),
        1,
        "the new entry's journey"
    );
}

#[tokio::test(start_paused = true)]
async fn anti_passback_is_line_wide() {
    let rig = Rig::on_line("");
    let line = rig.line.clone().unwrap();
    line.answer(open_on_line("DKA", "TGDKA-IN-1"));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Passback, "{}", r.message);
    assert!(rig.pay.payments().is_empty());

    // Under close_at_max_fare, the other station's journey is closed on the line.
    let rig = Rig::on_line("anti_passback = \"close_at_max_fare\"");
    let line = rig.line.clone().unwrap();
    line.answer(open_on_line("DKA", "TGDKA-IN-1"));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    let evs = rig.journal.line_events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].tap_in_ref, "TGDKA-IN-1");
    assert_eq!(evs[0].kind, JourneyEventKind::StaleClosed { fare: None });
    let _ = (Direction::In, OpState::Succeeded);
}

/// The stale sweep asks the line first: a journey that ended at another station is closed
/// as the line has it (its hold released when that exit did not finalize it), never at the
/// maximum fare; while the line cannot answer, nothing is closed.
#[tokio::test(start_paused = true)]
async fn the_stale_sweep_never_charges_the_maximum_for_a_journey_closed_elsewhere() {
    let rig = Rig::on_line("max_trip_minutes = 1");
    let line = rig.line.clone().unwrap();
    let (ended_elsewhere, id1) = rig.seed_journey(PAN_A, "BLM", HOLD, 1).await;
    let (still_open, id2) = rig.seed_journey(PAN_B, "BLM", HOLD, 2).await;
    sleep_ms(61_000).await;

    line.set_down(true);
    assert_eq!(rig.reconciler().close_stale_journeys().await.unwrap(), 0);
    assert!(rig
        .journal
        .journeys()
        .iter()
        .all(|j| j.state == JourneyState::Open));

    line.set_down(false);
    line.set_state(LineState {
        tap_in_ref: ended_elsewhere.clone(),
        state: JourneyState::Closed,
        fare: Some(Rupiah(MAX_FARE)),
        references_hold: Some(false),
    });
    line.set_state(LineState {
        tap_in_ref: still_open.clone(),
        state: JourneyState::Open,
        fare: None,
        references_hold: None,
    });
    assert_eq!(rig.reconciler().close_stale_journeys().await.unwrap(), 2);
    let js = rig.journal.journeys();
    let j1 = js.iter().find(|j| j.id == id1).unwrap();
    assert_eq!(
        (j1.state, j1.fare),
        (JourneyState::Closed, Some(Rupiah(MAX_FARE)))
    );
    let hold = rig.journal.op(&ended_elsewhere).unwrap();
    assert_eq!(
        (hold.state, hold.refund_amount),
        (OpState::RefundPending, Some(Rupiah(HOLD)))
    );
    let j2 = js.iter().find(|j| j.id == id2).unwrap();
    assert_eq!(
        (j2.state, j2.fare),
        (JourneyState::StaleClosed, Some(Rupiah(HOLD)))
    );
    assert_eq!(
        rig.journal.op(&still_open).unwrap().state,
        OpState::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn a_passenger_owing_on_the_lines_unpaid_list_is_refused_at_entry_and_let_out_at_exit() {
    let rig = Rig::on_line("");
    let line = rig.line.clone().unwrap();
    let owing = |open: Option<LineEntry>| {
        LineView::Answered(LineAnswer {
            open,
            unpaid: Some(tapgate::journal::Owed {
                amount: Rupiah(14_000),
                count: 1,
            }),
            ..LineAnswer::default()
        })
    };
    line.answer(owing(None));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Unpaid, "{}", r.message);
    assert!(!r.opened);
    assert!(
        rig.pay.payments().is_empty(),
        "no payment for a refused entry"
    );
    assert!(rig.journal.ops().is_empty(), "nothing journaled");
    // At an exit the debt changes nothing: the fare is attempted as usual.
    line.answer(owing(Some(entry_at("LBB", "TGLBB-IN-9"))));
    let out = rig.tap("out-1", PAN_A).await;
    assert_eq!(out.outcome, TapOutcome::Approved, "{}", out.message);
    assert_eq!(out.amount, Some(FARE_FROM_LBB));
}
