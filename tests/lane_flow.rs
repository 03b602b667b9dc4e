//! The lane tier on fakes: every branch of a tap, carried out by the real executor
//! ([`tapgate::daemon::lane::Lane`]) through the ports' in-memory fakes, and the reconciler's
//! decisions likewise. Tokio's time is paused: a deadline, a late reply or a four-hour trip
//! takes no wall time. No sockets, no files. Each test says what the passenger saw (outcome,
//! gate), what the aggregator was asked, and what the journal holds.

#[path = "lane_flow/rig.rs"]
mod rig;

use std::sync::Arc;
use std::time::Duration;

use rig::*;
use tapgate::aggregator::{
    AmountMismatch, PayOutcome, QueryOutcome, RefundOutcome, RefusedWhy, TxStatus,
};
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::flow::settle::{in_flight_window_ms, late_reply_window_ms};
use tapgate::flow::{TapInRef, LATE_REPLY_MARGIN_MS};
use tapgate::journal::{JourneyState, OpKind};
use tapgate::nfc::{CardEvent, TapReadError};
use tapgate::ports::fake::{Answer, JournalCall};

fn refused(why: RefusedWhy) -> PayOutcome {
    PayOutcome::Refused {
        response_code: None,
        message: "connection refused".into(),
        why,
    }
}

fn unknown_outcome() -> PayOutcome {
    PayOutcome::Unknown {
        response_code: Some("5006000".into()),
        reason: "internal server error".into(),
    }
}

fn status(s: TxStatus, reference: Option<&str>) -> QueryOutcome {
    QueryOutcome::Status {
        status: s,
        reference_no: reference.map(str::to_string),
        response_code: "2005100".into(),
        amount: None,
    }
}

/// What a tap that moved no money leaves: nothing asked, nothing journaled, gate shut.
fn assert_nothing_moved(rig: &Rig, r: &tapgate::daemon::lane::TapReport) {
    assert!(!r.opened, "{r:?}");
    assert_eq!(rig.opens(), 0, "no gate opened");
    assert!(rig.pay.payments().is_empty(), "no payment asked");
    assert!(rig.journal.ops().is_empty(), "nothing journaled");
    assert!(rig.journal.journeys().is_empty(), "no journey");
    assert_eq!(r.partner_reference_no, None, "no reference used");
}

/// The aggregator was asked for exactly one payment, this tap's, of `amount`, and nothing else.
fn asked_once(rig: &Rig, r: &tapgate::daemon::lane::TapReport, amount: u64) {
    let pays = rig.pay.payments();
    assert_eq!(pays.len(), 1, "one payment asked");
    assert_eq!(pays[0].partner_reference_no, pref(r));
    assert_eq!(pays[0].amount, Rupiah(amount));
    assert!(rig.pay.queries().is_empty(), "no query");
    assert!(rig.pay.refunds().is_empty(), "no refund");
}

// ---------------------------------------------------------------------------------------
// Approved taps, fares and journeys.
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn approved_tap_in_holds_the_entry_fare_opens_the_gate_and_opens_a_journey() {
    let rig = Rig::new();
    let payload = rig.payload(PAN_A);
    let r = rig.lane("in-1").handle_payload(&payload, 1500).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert!(r.opened);
    assert_eq!(rig.relay("in-1").opens(), 1);
    assert_eq!(r.amount, Some(HOLD));
    assert_eq!(r.fare_rule, None);
    assert_eq!(r.pan_masked.as_deref(), Some("93600002*******6781"));
    let pays = rig.pay.payments();
    assert_eq!(pays.len(), 1);
    let p = &pays[0];
    assert_eq!(p.partner_reference_no, pref(&r));
    assert_eq!(p.qr_content, payload, "the payload is sent exactly as read");
    assert_eq!(p.amount, Rupiah(HOLD));
    assert_eq!(p.direction, Direction::In);
    assert_eq!(p.station_id, "BLM");
    assert_eq!(p.tap_in, None);
    let op = rig.op_of(&r);
    assert_eq!(op.kind, OpKind::Hold);
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(op.amount, Rupiah(HOLD));
    assert_eq!(op.gate_opened, Some(true));
    assert_eq!(op.reference_no, Some(format!("REF-{}", pref(&r))));
    assert_eq!(op.pan_key, rig.pan_key(PAN_A));
    let js = rig.journal.journeys();
    assert_eq!(js.len(), 1);
    assert_eq!(js[0].state, JourneyState::Open);
    assert_eq!(js[0].tap_in_ref, pref(&r));
    assert_eq!(js[0].entry_station, "BLM");
    assert_eq!(js[0].fare, None);
    assert_eq!(op.journey_id, Some(js[0].id));
    assert_eq!(
        rig.counter(
            "tapgate_taps_total",
            &[
                ("lane", "in-1"),
                ("direction", "in"),
                ("outcome", "approved")
            ]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn approved_tap_out_pays_the_matrix_fare_and_closes_the_journey_with_it() {
    let rig = Rig::new();
    let tap_in = rig.tap("in-1", PAN_A).await;
    assert_eq!(tap_in.outcome, TapOutcome::Approved);
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert!(r.opened);
    assert_eq!(rig.relay("out-1").opens(), 1);
    assert_eq!(r.amount, Some(FARE_SAME_STATION));
    assert_eq!(r.fare_rule, Some("matrix"));
    let pays = rig.pay.payments();
    assert_eq!(pays.len(), 2);
    assert_eq!(pays[1].amount, Rupiah(FARE_SAME_STATION));
    assert_eq!(pays[1].direction, Direction::Out);
    let op = rig.op_of(&r);
    assert_eq!(op.kind, OpKind::Settle);
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(op.gate_opened, Some(true));
    let js = rig.journal.journeys();
    assert_eq!(js.len(), 1);
    assert_eq!(js[0].state, JourneyState::Closed);
    assert_eq!(js[0].fare, Some(Rupiah(FARE_SAME_STATION)));
    assert_eq!(js[0].tap_out_ref.as_deref(), Some(pref(&r).as_str()));
    assert!(js[0].closed_at_ms.is_some());
    assert_eq!(op.journey_id, Some(js[0].id));
}

#[tokio::test(start_paused = true)]
async fn tap_out_from_another_station_pays_that_trips_fare() {
    let rig = Rig::new();
    let (_, id) = rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert_eq!(r.amount, Some(FARE_FROM_LBB));
    assert_eq!(rig.pay.payments()[0].amount, Rupiah(FARE_FROM_LBB));
    let j = &rig.journal.journeys()[0];
    assert_eq!(
        (j.id, j.state, j.fare),
        (id, JourneyState::Closed, Some(Rupiah(FARE_FROM_LBB)))
    );
    assert_eq!(rig.op_of(&r).journey_id, Some(id));
}

/// Regression: the payment task read the journal a second time for the tap-in and
/// `.ok().flatten()` dropped an error, so a tap-out was paid without the tap-in's
/// `referenceNo`. The references now come with the journey `begin_tap` found: with every
/// other journal read failing, the tap-out still quotes both.
#[tokio::test(start_paused = true)]
async fn tap_out_payment_carries_the_tap_ins_partner_reference_and_reference_no_without_a_second_journal_read(
) {
    let rig = Rig::new();
    let (tap_in_ref, _) = rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.journal.fail(
        JournalCall::Other,
        Some("disk I/O error (a second read would fail)"),
    );
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    let pays = rig.pay.payments();
    assert_eq!(pays.len(), 1);
    assert_eq!(
        pays[0].tap_in,
        Some(TapInRef {
            partner_reference_no: tap_in_ref,
            reference_no: Some("REF-SEED-1".into()),
        })
    );
    assert_eq!(rig.op_of(&r).state, OpState::Succeeded);
    assert_eq!(rig.journal.journeys()[0].state, JourneyState::Closed);
}

#[tokio::test(start_paused = true)]
async fn tap_out_quotes_a_tap_in_whose_reference_no_is_not_known_yet_as_none() {
    let rig = Rig::new();
    let tap_in_ref = rig
        .seed_op(Seed {
            path: vec![unknown(Some(true), rig.now_ms() + 60_000)],
            ..Seed::new(PAN_A, Direction::In, "LBB", 9000, 1)
        })
        .await;
    rig.journal
        .insert_journey(&rig.pan_key(PAN_A), "LBB", &tap_in_ref, rig.now_ms())
        .expect("journey opens");
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert_eq!(
        rig.pay.payments()[0].tap_in,
        Some(TapInRef {
            partner_reference_no: tap_in_ref,
            reference_no: None,
        })
    );
}

#[tokio::test(start_paused = true)]
async fn exit_with_no_known_entry_pays_the_lines_highest_fare_and_touches_no_journey() {
    let rig = Rig::new();
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert!(r.opened);
    assert_eq!(r.amount, Some(MAX_FARE));
    assert_eq!(r.fare_rule, Some("unknown_entry"));
    let p = &rig.pay.payments()[0];
    assert_eq!(p.amount, Rupiah(MAX_FARE));
    assert_eq!(p.tap_in, None);
    let op = rig.op_of(&r);
    assert_eq!((op.state, op.journey_id), (OpState::Succeeded, None));
    assert!(rig.journal.journeys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_journey_from_a_station_the_tariff_does_not_list_closes_at_the_lines_highest_fare() {
    let rig = Rig::new();
    let (tap_in_ref, id) = rig.seed_journey(PAN_A, "ZZZ", 9000, 1).await;
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert!(r.opened);
    assert_eq!(r.fare_rule, Some("unknown_entry"));
    asked_once(&rig, &r, MAX_FARE);
    assert_eq!(
        rig.pay.payments()[0]
            .tap_in
            .as_ref()
            .map(|t| t.partner_reference_no.clone()),
        Some(tap_in_ref)
    );
    let j = &rig.journal.journeys()[0];
    assert_eq!(
        (j.id, j.state, j.fare),
        (id, JourneyState::Closed, Some(Rupiah(MAX_FARE)))
    );
    assert_eq!(rig.op_of(&r).journey_id, Some(id));
}

#[tokio::test(start_paused = true)]
async fn a_success_naming_another_amount_lets_the_passenger_in_and_asks_a_person() {
    let rig = Rig::new();
    rig.answer_after(
        50,
        PayOutcome::Success {
            reference_no: Some("R-MISMATCH".into()),
            response_code: "2006000".into(),
            amount_mismatch: Some(AmountMismatch {
                asked: Rupiah(HOLD),
                reported: "999999.00 IDR".into(),
            }),
        },
    );
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert!(r.opened);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Attention);
    assert_eq!(op.reference_no.as_deref(), Some("R-MISMATCH"));
    let reason = op.reason.unwrap_or_default();
    assert!(
        reason.contains("6000.00") && reason.contains("999999.00"),
        "{reason}"
    );
    assert_eq!(rig.journal.journeys()[0].state, JourneyState::Open);
    assert_eq!(
        rig.counter(
            "tapgate_amount_mismatches_total",
            &[("endpoint", "payment")]
        ),
        1
    );
    asked_once(&rig, &r, HOLD);
}

#[tokio::test(start_paused = true)]
async fn a_success_without_reference_no_opens_the_gate_and_leaves_the_row_to_a_query() {
    let rig = Rig::new();
    rig.answer_after(
        50,
        PayOutcome::Success {
            reference_no: None,
            response_code: "2006000".into(),
            amount_mismatch: None,
        },
    );
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert!(r.opened);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Unknown);
    assert_eq!(op.gate_opened, Some(true));
    assert!(op.reason.unwrap_or_default().contains("no referenceNo"));
    rig.pay
        .then_query(status(TxStatus::Success, Some("R-FROM-QUERY")));
    rig.reconciler().pass().await.unwrap();
    assert_eq!(rig.pay.queries(), vec![pref(&r)]);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(op.reference_no.as_deref(), Some("R-FROM-QUERY"));
    assert!(
        rig.pay.refunds().is_empty(),
        "the gate opened: nothing to refund"
    );
}

#[tokio::test(start_paused = true)]
async fn a_card_event_payload_runs_the_tap_and_reader_state_changes_yield_no_report() {
    let rig = Rig::new();
    let lane = rig.lane("in-1");
    let r = lane
        .handle_event(CardEvent::Payload {
            reader: "ACS ACR1252 00".into(),
            qr_content: rig.payload(PAN_A),
            read_us: 4321,
        })
        .await
        .expect("a payload is a tap");
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert_eq!(r.timings.read_us, 4321);
    assert_eq!(rig.relay("in-1").opens(), 1);
    for ev in [
        CardEvent::ReaderUp {
            reader: "ACS".into(),
        },
        CardEvent::ReaderDown {
            reader: "ACS".into(),
            why: "unplugged".into(),
        },
    ] {
        assert!(lane.handle_event(ev).await.is_none());
    }
    assert_eq!(rig.pay.payments().len(), 1);
    assert_eq!(rig.op_of(&r).state, OpState::Succeeded);
    assert_eq!(rig.journal.ops().len(), 1);
    assert_eq!(rig.journal.journeys().len(), 1);
}

// ---------------------------------------------------------------------------------------
// Refusals before any money moves.
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn wallet_not_ready_is_reported_and_moves_nothing() {
    let rig = Rig::new();
    let r = rig
        .lane("in-1")
        .handle_event(CardEvent::ReadFailed {
            reader: "ACS".into(),
            error: TapReadError::WalletNotReady { sw: 0x6A82 },
            read_us: 1234,
        })
        .await
        .expect("a failed read is a tap");
    assert_eq!(r.outcome, TapOutcome::WalletNotReady);
    assert!(r.message.contains("QRIS TAP screen"), "{}", r.message);
    assert_eq!(r.timings.read_us, 1234);
    assert_nothing_moved(&rig, &r);
    assert_eq!(
        rig.counter(
            "tapgate_taps_total",
            &[
                ("lane", "in-1"),
                ("direction", "in"),
                ("outcome", "wallet_not_ready")
            ]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_phone_pulled_away_is_read_failed_and_moves_nothing() {
    let rig = Rig::new();
    let r = rig
        .lane("out-1")
        .handle_event(CardEvent::ReadFailed {
            reader: "ACS".into(),
            error: TapReadError::CardLost {
                step: "READ RECORD 2".into(),
            },
            read_us: 99,
        })
        .await
        .expect("a failed read is a tap");
    assert_eq!(r.outcome, TapOutcome::ReadFailed);
    assert!(r.message.contains("READ RECORD 2"), "{}", r.message);
    assert_nothing_moved(&rig, &r);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_payload_is_refused_and_moves_nothing() {
    let rig = Rig::new();
    for bad in ["", "not base64 at all!", "AAAA"] {
        let r = rig.lane("in-1").handle_payload(bad, 10).await;
        assert_eq!(r.outcome, TapOutcome::InvalidPayload, "{bad:?}");
        assert!(!r.message.is_empty());
        assert_eq!(r.pan_masked, None);
        assert_nothing_moved(&rig, &r);
    }
}

#[tokio::test(start_paused = true)]
async fn free_exit_mode_takes_no_fare_and_drives_no_relay() {
    let rig = Rig::new();
    rig.core
        .free_exit
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for lane in ["in-1", "out-1"] {
        let r = rig.tap(lane, PAN_A).await;
        assert_eq!(r.outcome, TapOutcome::FreeExit, "{lane}");
        assert!(r.message.contains("free-exit"), "{}", r.message);
        assert_nothing_moved(&rig, &r);
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_phone_again_within_the_debounce_window_is_the_same_tap() {
    let rig = Rig::new();
    let first = rig.tap("in-1", PAN_A).await;
    assert_eq!(first.outcome, TapOutcome::Approved);
    sleep_ms(DEBOUNCE_MS - 1).await;
    let again = rig.tap("in-1", PAN_A).await;
    assert_eq!(again.outcome, TapOutcome::Duplicate);
    assert!(again.message.contains("debounce"), "{}", again.message);
    assert!(!again.opened);
    assert_eq!(again.partner_reference_no, None);
    assert_eq!(rig.relay("in-1").opens(), 1, "one open for one passenger");
    assert_eq!(rig.pay.payments().len(), 1, "one payment");
    assert_eq!(rig.journal.ops().len(), 1);
    assert_eq!(rig.journal.journeys().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_declined_passenger_may_tap_again_at_once() {
    let rig = Rig::new();
    rig.answer_after(40, declined());
    let first = rig.tap("in-1", PAN_A).await;
    assert_eq!(first.outcome, TapOutcome::Declined);
    let second = rig.tap("in-1", PAN_A).await;
    assert_eq!(second.outcome, TapOutcome::Approved, "{}", second.message);
    assert_eq!(rig.pay.payments().len(), 2);
    assert_ne!(pref(&first), pref(&second));
    assert_eq!(rig.op_of(&first).state, OpState::Declined);
    assert_eq!(rig.op_of(&second).state, OpState::Succeeded);
    assert_eq!(rig.relay("in-1").opens(), 1);
}

/// No lane waits for another. Lane in-1's tap is slow twice over: its payment takes 600 ms,
/// then its settlement write takes 500 ms. Lane in-2 decides a tap read while in-1 waits for
/// its payment, and another read while in-1 waits for its write, each at once (time is
/// paused: nothing on in-2's path takes a timer, so "at once" is 0 ms exactly).
#[tokio::test(start_paused = true)]
async fn a_slow_payment_or_journal_write_on_one_lane_never_delays_the_decision_on_another() {
    const PAN_C: &str = "9360001417451180859";
    let rig = Rig::new();
    // Payments are answered in the order asked: in-1's first.
    rig.answer_after(600, success("R-SLOW"));
    // Every settlement write takes 500 ms (in-2's too: after its own decision).
    rig.journal
        .slow(JournalCall::Record, Some(Duration::from_millis(500)));
    let t0 = tokio::time::Instant::now();
    let (a, (b, c)) = tokio::join!(rig.tap("in-1", PAN_A), async {
        // in-1 is waiting for its payment.
        sleep_ms(100).await;
        let b = rig.tap("in-2", PAN_B).await;
        // in-1 is writing its settlement (from 600 ms to 1100 ms).
        tokio::time::sleep_until(t0 + Duration::from_millis(700)).await;
        let c = rig.tap("in-2", PAN_C).await;
        (b, c)
    });
    for r in [&a, &b, &c] {
        assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
        assert!(r.opened);
    }
    let ms = |t: tokio::time::Instant| t.duration_since(t0).as_millis();
    let in1: Vec<u128> = rig.relay("in-1").opened_at().into_iter().map(ms).collect();
    let in2: Vec<u128> = rig.relay("in-2").opened_at().into_iter().map(ms).collect();
    assert_eq!(
        in1,
        vec![600],
        "in-1 decided when its slow payment answered"
    );
    assert_eq!(
        in2,
        vec![100, 700],
        "in-2 decided each tap the moment it was read, while in-1 waited for its payment, \
         then for its journal write"
    );
    assert_eq!(
        a.timings.total_us, 1_100_000,
        "in-1's write took its 500 ms"
    );
    assert_eq!(b.timings.aggregator_us, 0);
    assert_eq!(
        c.timings.journal_us, 0,
        "in-2's begin waited for no write of in-1"
    );
    assert_eq!(rig.journal.journeys().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_same_phone_at_another_lane_while_its_payment_hangs_is_the_same_tap() {
    let rig = Rig::new();
    rig.pay.then_pay(Answer::Never);
    let (a, b) = tokio::join!(rig.tap("in-1", PAN_A), async {
        sleep_ms(10).await;
        rig.tap("in-2", PAN_A).await
    });
    assert_eq!(b.outcome, TapOutcome::Duplicate);
    assert!(b.message.contains("another lane"), "{}", b.message);
    assert_eq!(b.partner_reference_no, None);
    assert_eq!(a.outcome, TapOutcome::TryAgain, "{}", a.message);
    assert_eq!(rig.opens(), 0);
    assert_eq!(rig.pay.payments().len(), 1, "one payment for one phone");
    assert_eq!(rig.journal.ops().len(), 1);
    assert_eq!(rig.op_of(&a).lane, "in-1");
}

#[tokio::test(start_paused = true)]
async fn a_payment_in_flight_elsewhere_blocks_the_tap_in_the_journal() {
    let rig = Rig::new();
    let now = rig.now_ms();
    let other = rig
        .seed_op(Seed {
            next_attempt_at_ms: Some(now + 5000),
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Duplicate);
    assert!(
        r.message.contains("in progress") && r.message.contains(&other),
        "{}",
        r.message
    );
    assert!(!r.opened);
    assert_eq!(r.partner_reference_no, None);
    assert!(rig.pay.payments().is_empty());
    assert_eq!(rig.journal.ops().len(), 1, "only the other lane's row");
    assert_eq!(rig.journal.op(&other).unwrap().state, OpState::Pending);
}

#[tokio::test(start_paused = true)]
async fn a_passenger_just_let_through_another_gate_is_the_same_tap() {
    let rig = Rig::new();
    let first = rig.tap("in-1", PAN_A).await;
    assert_eq!(first.outcome, TapOutcome::Approved);
    sleep_ms(100).await;
    // in-2 has its own debounce: the station-wide one is the journal's.
    let r = rig.tap("in-2", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Duplicate);
    assert!(
        r.message.contains("moments ago") && r.message.contains(&pref(&first)),
        "{}",
        r.message
    );
    assert_eq!(rig.relay("in-2").opens(), 0);
    assert_eq!(rig.pay.payments().len(), 1);
    assert_eq!(rig.journal.ops().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn anti_passback_refuse_turns_a_second_tap_in_away_without_a_payment() {
    let rig = Rig::with("anti_passback = \"refuse\"", "");
    let first = rig.tap("in-1", PAN_A).await;
    assert_eq!(first.outcome, TapOutcome::Approved);
    sleep_ms(DEBOUNCE_MS + 1).await;
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Passback);
    assert!(r.message.contains("anti-passback"), "{}", r.message);
    assert!(!r.opened);
    assert_eq!(r.partner_reference_no, None);
    assert_eq!(rig.relay("in-1").opens(), 1);
    assert_eq!(rig.pay.payments().len(), 1);
    assert_eq!(rig.journal.ops().len(), 1);
    let js = rig.journal.journeys();
    assert_eq!(js.len(), 1);
    assert_eq!(
        js[0].state,
        JourneyState::Open,
        "the open journey is left as it was"
    );
}

/// Regression: `close_at_max_fare` closed the old journey with fare `None` while the stale
/// sweep recorded the tap-in's hold. Both now record the hold: the passenger paid the
/// maximum fare, and the journal says how much.
#[tokio::test(start_paused = true)]
async fn close_at_max_fare_closes_the_old_journey_stale_closed_with_the_tap_ins_amount_as_its_fare()
{
    let rig = Rig::with("anti_passback = \"close_at_max_fare\"", "");
    let first = rig.tap("in-1", PAN_A).await;
    assert_eq!(first.outcome, TapOutcome::Approved);
    sleep_ms(DEBOUNCE_MS + 1).await;
    let second = rig.tap("in-1", PAN_A).await;
    assert_eq!(second.outcome, TapOutcome::Approved, "{}", second.message);
    assert_eq!(rig.relay("in-1").opens(), 2);
    assert_eq!(rig.pay.payments().len(), 2);
    let js = rig.journal.journeys();
    assert_eq!(js.len(), 2);
    assert_eq!(js[0].tap_in_ref, pref(&first));
    assert_eq!(js[0].state, JourneyState::StaleClosed);
    assert_eq!(js[0].fare, Some(Rupiah(HOLD)), "the hold is the fare");
    assert!(js[0].closed_at_ms.is_some());
    assert_eq!(js[0].tap_out_ref, None);
    assert_eq!(js[1].tap_in_ref, pref(&second));
    assert_eq!(js[1].state, JourneyState::Open);
    assert_eq!(
        rig.op_of(&first).state,
        OpState::Succeeded,
        "the hold stands"
    );
}

#[tokio::test(start_paused = true)]
async fn close_at_max_fare_with_a_tap_in_still_unresolved_closes_without_a_fare_yet() {
    let rig = Rig::with("anti_passback = \"close_at_max_fare\"", "");
    let old = rig
        .seed_op(Seed {
            path: vec![unknown(Some(true), rig.now_ms() + 60_000)],
            ..Seed::new(PAN_A, Direction::In, "LBB", 9000, 1)
        })
        .await;
    rig.journal
        .insert_journey(&rig.pan_key(PAN_A), "LBB", &old, rig.now_ms())
        .expect("journey opens");
    sleep_ms(DEBOUNCE_MS + 1).await;
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    let js = rig.journal.journeys();
    assert_eq!((js[0].state, js[0].fare), (JourneyState::StaleClosed, None));
    assert_eq!(js[1].state, JourneyState::Open);
    assert_eq!(rig.journal.op(&old).unwrap().state, OpState::Unknown);
    asked_once(&rig, &r, HOLD);
}

#[tokio::test(start_paused = true)]
async fn the_journal_down_at_begin_refuses_the_tap_before_any_payment() {
    let rig = Rig::new();
    rig.journal
        .fail(JournalCall::Begin, Some("database is locked"));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::JournalUnavailable);
    assert!(
        r.message.contains("journal unavailable") && r.message.contains("database is locked"),
        "{}",
        r.message
    );
    assert_nothing_moved(&rig, &r);
    rig.journal.fail(JournalCall::Begin, None);
    let after = rig.tap("in-1", PAN_A).await;
    assert_eq!(
        after.outcome,
        TapOutcome::Approved,
        "taps resume with the journal"
    );
}

// ---------------------------------------------------------------------------------------
// The aggregator's answers and the decision deadline.
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_declined_tap_in_keeps_the_gate_shut_and_journals_the_decline() {
    let rig = Rig::new();
    rig.answer_after(40, declined());
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Declined);
    assert!(!r.opened);
    assert_eq!(r.response_code.as_deref(), Some("4036014"));
    assert_eq!(rig.opens(), 0);
    assert_eq!(rig.pay.payments().len(), 1);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Declined);
    assert_eq!(op.gate_opened, Some(false));
    assert_eq!(op.response_code.as_deref(), Some("4036014"));
    assert!(op.reason.unwrap_or_default().contains("Insufficient Funds"));
    assert!(rig.journal.journeys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_declined_tap_out_keeps_the_gate_shut_and_the_journey_open() {
    let rig = Rig::new();
    rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.answer_after(40, declined());
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Declined);
    assert!(!r.opened);
    assert_eq!(rig.opens(), 0);
    assert_eq!(rig.op_of(&r).state, OpState::Declined);
    let j = &rig.journal.journeys()[0];
    assert_eq!((j.state, j.fare), (JourneyState::Open, None));
    asked_once(&rig, &r, FARE_FROM_LBB);
}

#[tokio::test(start_paused = true)]
async fn a_refused_tap_in_keeps_the_gate_shut_and_journals_no_money() {
    let rig = Rig::new();
    rig.answer_after(40, refused(RefusedWhy::Auth));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Refused);
    assert!(!r.opened);
    assert_eq!(rig.opens(), 0);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Declined);
    assert_eq!(op.gate_opened, Some(false));
    assert!(op.reason.unwrap_or_default().contains("refused (auth)"));
    assert!(rig.journal.journeys().is_empty());
    asked_once(&rig, &r, HOLD);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_aggregator_at_the_exit_lets_the_passenger_out_unpaid_by_default() {
    let rig = Rig::new();
    let (_, id) = rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.answer_after(5, refused(RefusedWhy::Unreachable));
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::UnpaidExit, "{}", r.message);
    assert!(r.opened);
    assert_eq!(rig.relay("out-1").opens(), 1);
    assert!(r.message.contains("unpaid exit"), "{}", r.message);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Declined, "no money moved");
    assert_eq!(op.gate_opened, Some(true));
    assert!(op.reason.unwrap_or_default().contains("unreachable"));
    let j = &rig.journal.journeys()[0];
    assert_eq!(j.id, id);
    assert_eq!(j.state, JourneyState::Closed);
    assert_eq!(j.fare, None, "no fare was charged");
    assert_eq!(
        rig.counter(
            "tapgate_exits_unpaid_total",
            &[("lane", "out-1"), ("reason", "unreachable")]
        ),
        1
    );
    assert!(rig.pay.queries().is_empty() && rig.pay.refunds().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_aggregator_at_the_exit_keeps_the_gate_shut_when_the_policy_says_so() {
    let rig = Rig::with("unreachable_at_exit = \"keep_closed\"", "");
    rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.answer_after(5, refused(RefusedWhy::TokenUnavailable));
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Refused);
    assert!(!r.opened);
    assert_eq!(rig.opens(), 0);
    let op = rig.op_of(&r);
    assert_eq!((op.state, op.gate_opened), (OpState::Declined, Some(false)));
    assert_eq!(rig.journal.journeys()[0].state, JourneyState::Open);
    assert_eq!(
        rig.counter(
            "tapgate_exits_unpaid_total",
            &[("lane", "out-1"), ("reason", "token_unavailable")]
        ),
        0
    );
    asked_once(&rig, &r, FARE_FROM_LBB);
}

#[tokio::test(start_paused = true)]
async fn an_unclear_answer_at_the_exit_releases_the_passenger_and_leaves_the_money_to_a_query() {
    let rig = Rig::new();
    rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.answer_after(100, unknown_outcome());
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Released);
    assert!(r.opened);
    assert_eq!(rig.relay("out-1").opens(), 1);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Unknown);
    assert_eq!(op.gate_opened, Some(true));
    assert_eq!(
        op.next_attempt_at_ms,
        Some(rig.now_ms()),
        "an answer came: nothing more to wait for, query now"
    );
    let j = &rig.journal.journeys()[0];
    assert_eq!(j.state, JourneyState::Closed);
    assert_eq!(j.fare, Some(Rupiah(FARE_FROM_LBB)));
    rig.pay
        .then_query(status(TxStatus::Success, Some("R-EXIT")));
    rig.reconciler().pass().await.unwrap();
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(op.reference_no.as_deref(), Some("R-EXIT"));
    assert!(rig.pay.refunds().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unclear_answer_at_the_exit_keeps_the_gate_shut_when_the_policy_says_so() {
    let rig = Rig::with("unknown_at_exit = \"keep_closed\"", "");
    rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.answer_after(100, unknown_outcome());
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert!(!r.opened);
    assert_eq!(rig.opens(), 0);
    let op = rig.op_of(&r);
    assert_eq!((op.state, op.gate_opened), (OpState::Unknown, Some(false)));
    assert_eq!(rig.journal.journeys()[0].state, JourneyState::Open);
    asked_once(&rig, &r, FARE_FROM_LBB);
}

#[tokio::test(start_paused = true)]
async fn a_tap_in_with_no_answer_by_the_deadline_is_try_again_and_the_row_waits_for_the_reply() {
    let rig = Rig::new();
    rig.pay.then_pay(Answer::Never);
    let started = tokio::time::Instant::now();
    let t0 = rig.now_ms();
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(started.elapsed(), Duration::from_millis(DEADLINE_MS));
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert!(!r.opened);
    assert!(
        r.message.contains("800 ms decision deadline"),
        "{}",
        r.message
    );
    assert_eq!(rig.opens(), 0);
    assert_eq!(rig.pay.payments().len(), 1);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Unknown);
    assert_eq!(op.gate_opened, Some(false));
    let decided = t0 + i64::try_from(DEADLINE_MS).unwrap();
    assert_eq!(
        op.next_attempt_at_ms,
        Some(decided + late_reply_window_ms(REQUEST_TIMEOUT_MS))
    );
    assert!(rig.journal.journeys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_answer_one_millisecond_before_the_deadline_decides_the_tap() {
    let rig = Rig::new();
    rig.answer_after(DEADLINE_MS - 1, success("R-JUST-IN-TIME"));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert!(r.opened);
    assert_eq!(r.reference_no.as_deref(), Some("R-JUST-IN-TIME"));
    let op = rig.op_of(&r);
    assert_eq!((op.state, op.gate_opened), (OpState::Succeeded, Some(true)));
    assert_eq!(rig.journal.journeys().len(), 1);
    rig.core.drain().await;
    assert_eq!(
        rig.op_of(&r).state,
        OpState::Succeeded,
        "no late reply to record"
    );
    asked_once(&rig, &r, HOLD);
}

#[tokio::test(start_paused = true)]
async fn a_success_one_millisecond_after_the_deadline_is_try_again_and_refunded_once_it_arrives() {
    let rig = Rig::new();
    rig.answer_after(DEADLINE_MS + 1, success("R-LATE"));
    let started = tokio::time::Instant::now();
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert!(!r.opened);
    assert_eq!(rig.opens(), 0);
    assert_eq!(rig.op_of(&r).state, OpState::Unknown);
    rig.core.drain().await;
    assert_eq!(started.elapsed(), Duration::from_millis(DEADLINE_MS + 1));
    let op = rig.op_of(&r);
    assert_eq!(
        op.state,
        OpState::RefundPending,
        "paid for a gate that stayed shut"
    );
    assert_eq!(op.reference_no.as_deref(), Some("R-LATE"));
    assert_eq!(op.gate_opened, Some(false));
    assert_eq!(op.refund_amount, Some(Rupiah(HOLD)));
    assert!(op.reason.unwrap_or_default().contains("late reply"));
    assert!(rig.journal.journeys().is_empty());
    rig.reconciler().pass().await.unwrap();
    assert_eq!(rig.pay.refunds(), vec![(pref(&r), Rupiah(HOLD))]);
    assert_eq!(rig.op_of(&r).state, OpState::Refunded);
    assert_eq!(rig.pay.payments().len(), 1, "never paid again");
}

#[tokio::test(start_paused = true)]
async fn a_late_decline_is_recorded_after_drain() {
    let rig = Rig::new();
    rig.answer_after(DEADLINE_MS + 300, declined());
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert_eq!(rig.op_of(&r).state, OpState::Unknown);
    rig.core.drain().await;
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Declined);
    assert!(op.reason.unwrap_or_default().contains("late reply"));
    assert_eq!(op.gate_opened, Some(false));
    asked_once(&rig, &r, HOLD);
}

#[tokio::test(start_paused = true)]
async fn a_late_unclear_reply_leaves_the_row_to_the_reconciler() {
    let rig = Rig::new();
    rig.answer_after(DEADLINE_MS + 300, unknown_outcome());
    let r = rig.tap("in-1", PAN_A).await;
    let before = rig.op_of(&r);
    rig.core.drain().await;
    let after = rig.op_of(&r);
    assert_eq!(after.state, OpState::Unknown);
    assert_eq!(after.next_attempt_at_ms, before.next_attempt_at_ms);
    assert_eq!(
        after.updated_at_ms, before.updated_at_ms,
        "nothing recorded"
    );
    asked_once(&rig, &r, HOLD);
}

#[tokio::test(start_paused = true)]
async fn a_missed_deadline_at_the_exit_releases_the_passenger_and_records_the_late_success() {
    let rig = Rig::new();
    rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.answer_after(2_000, success("R-LATE-EXIT"));
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Released);
    assert!(r.opened);
    assert_eq!(rig.op_of(&r).state, OpState::Unknown);
    let j = &rig.journal.journeys()[0];
    assert_eq!(
        (j.state, j.fare),
        (JourneyState::Closed, Some(Rupiah(FARE_FROM_LBB)))
    );
    rig.core.drain().await;
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(op.reference_no.as_deref(), Some("R-LATE-EXIT"));
    assert_eq!(op.gate_opened, Some(true));
    assert!(rig.pay.refunds().is_empty());
}

// ---------------------------------------------------------------------------------------
// The relay and the journal failing after the payment.
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_relay_failure_at_the_entry_keeps_the_passenger_out_and_owes_the_hold_back() {
    let rig = Rig::new();
    rig.relay("in-1").break_with("gpiochip0 line 17: EIO");
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert!(!r.opened);
    assert!(
        r.message.contains("relay failed") && r.message.contains("EIO"),
        "{}",
        r.message
    );
    assert_eq!(rig.opens(), 0);
    assert_eq!(rig.pay.payments().len(), 1);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::RefundPending);
    assert_eq!(op.gate_opened, Some(false));
    assert_eq!(op.refund_amount, Some(Rupiah(HOLD)));
    assert!(rig.journal.journeys().is_empty(), "nobody went in");
    rig.reconciler().pass().await.unwrap();
    assert_eq!(rig.pay.refunds(), vec![(pref(&r), Rupiah(HOLD))]);
    assert_eq!(rig.op_of(&r).state, OpState::Refunded);
}

#[tokio::test(start_paused = true)]
async fn a_relay_failure_at_the_exit_owes_the_fare_back_and_keeps_the_journey_open() {
    let rig = Rig::new();
    rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.relay("out-1").break_with("relay worker stopped");
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert!(!r.opened);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::RefundPending);
    assert_eq!(op.refund_amount, Some(Rupiah(FARE_FROM_LBB)));
    let j = &rig.journal.journeys()[0];
    assert_eq!((j.state, j.fare), (JourneyState::Open, None));
    asked_once(&rig, &r, FARE_FROM_LBB);
}

#[tokio::test(start_paused = true)]
async fn the_journal_down_at_the_journey_write_of_a_tap_in_leaves_a_hold_the_reconciler_refunds() {
    let rig = Rig::new();
    rig.journal.fail(JournalCall::Change, Some("disk full"));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(
        r.outcome,
        TapOutcome::Approved,
        "the gate had already opened"
    );
    assert!(r.opened);
    assert_eq!(rig.relay("in-1").opens(), 1);
    let op = rig.op_of(&r);
    assert_eq!((op.state, op.gate_opened), (OpState::Succeeded, Some(true)));
    assert_eq!(op.journey_id, None);
    assert!(rig.journal.journeys().is_empty());
    rig.journal.fail(JournalCall::Change, None);
    let stats = rig.reconciler().pass().await.unwrap();
    assert_eq!(stats.holds_without_journey, 1);
    assert_eq!(rig.pay.refunds(), vec![(pref(&r), Rupiah(HOLD))]);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Refunded);
    assert_eq!(op.refund_amount, Some(Rupiah(HOLD)));
}

#[tokio::test(start_paused = true)]
async fn the_journal_down_at_the_journey_write_of_a_tap_out_leaves_the_journey_open() {
    let rig = Rig::new();
    rig.seed_journey(PAN_A, "LBB", 9000, 1).await;
    rig.journal.fail(JournalCall::Change, Some("disk full"));
    let r = rig.tap("out-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert!(r.opened);
    let op = rig.op_of(&r);
    assert_eq!((op.state, op.gate_opened), (OpState::Succeeded, Some(true)));
    let j = &rig.journal.journeys()[0];
    assert_eq!(
        (j.state, j.fare, j.tap_out_ref.clone()),
        (JourneyState::Open, None, None)
    );
    asked_once(&rig, &r, FARE_FROM_LBB);
}

#[tokio::test(start_paused = true)]
async fn the_journal_down_at_the_record_leaves_the_row_pending_for_its_time_then_to_the_reconciler()
{
    let rig = Rig::new();
    rig.journal
        .fail(JournalCall::Record, Some("disk I/O error"));
    let t0 = rig.now_ms();
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert!(r.opened);
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Pending);
    assert_eq!(op.gate_opened, None);
    let window = in_flight_window_ms(DEADLINE_MS, REQUEST_TIMEOUT_MS);
    assert_eq!(op.next_attempt_at_ms, Some(t0 + window));
    assert_eq!(
        rig.journal.journeys().len(),
        1,
        "the journey was written first"
    );
    rig.journal.fail(JournalCall::Record, None);
    rig.reconciler().pass().await.unwrap();
    assert!(rig.pay.queries().is_empty(), "the row is still its lane's");
    sleep_ms(u64::try_from(window).unwrap()).await;
    rig.pay
        .then_query(status(TxStatus::Success, Some("R-QUERIED")));
    rig.reconciler().pass().await.unwrap();
    assert_eq!(rig.pay.queries(), vec![pref(&r)]);
    // The gate's opening was never recorded: it counts as not opened, so the hold is owed
    // back (the passenger keeps the journey and pays at the exit: never twice).
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::RefundPending);
    assert_eq!(op.refund_amount, Some(Rupiah(HOLD)));
    assert_eq!(rig.pay.payments().len(), 1, "never re-sent");
}

// ---------------------------------------------------------------------------------------
// The reconciler on the fakes.
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn reconciler_query_success_settles_an_exit_whose_gate_opened() {
    let rig = Rig::new();
    let p = rig
        .seed_op(Seed {
            path: vec![unknown(Some(true), rig.now_ms())],
            ..Seed::new(PAN_A, Direction::Out, "BLM", 3000, 1)
        })
        .await;
    rig.pay.then_query(status(TxStatus::Success, Some("R-Q")));
    let stats = rig.reconciler().pass().await.unwrap();
    assert_eq!((stats.seen, stats.queries, stats.refunds), (1, 1, 0));
    assert_eq!(rig.pay.queries(), vec![p.clone()]);
    let op = rig.journal.op(&p).unwrap();
    assert_eq!(op.state, OpState::Succeeded);
    assert_eq!(op.reference_no.as_deref(), Some("R-Q"));
    assert_eq!(op.attempts, 1);
    assert!(rig.pay.refunds().is_empty());
}

#[tokio::test(start_paused = true)]
async fn reconciler_query_success_for_a_shut_gate_owes_and_then_refunds_the_amount() {
    let rig = Rig::new();
    let p = rig
        .seed_op(Seed {
            path: vec![unknown(Some(false), rig.now_ms())],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    rig.pay.then_query(status(TxStatus::Success, Some("R-Q")));
    let left = rig
        .reconciler()
        .run_until_settled(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(rig.pay.queries(), vec![p.clone()]);
    assert_eq!(rig.pay.refunds(), vec![(p.clone(), Rupiah(HOLD))]);
    let op = rig.journal.op(&p).unwrap();
    assert_eq!(op.state, OpState::Refunded);
    assert_eq!(op.refund_amount, Some(Rupiah(HOLD)));
}

#[tokio::test(start_paused = true)]
async fn reconciler_query_not_found_declines_the_payment() {
    let rig = Rig::new();
    let p = rig
        .seed_op(Seed {
            path: vec![unknown(Some(false), rig.now_ms())],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    rig.pay.then_query(QueryOutcome::NotFound {
        response_code: "4045101".into(),
    });
    rig.reconciler().pass().await.unwrap();
    let op = rig.journal.op(&p).unwrap();
    assert_eq!(op.state, OpState::Declined);
    assert!(op.reason.unwrap_or_default().contains("no such payment"));
    assert!(rig.pay.refunds().is_empty());
}

#[tokio::test(start_paused = true)]
async fn reconciler_query_not_found_within_the_grace_period_asks_again_later() {
    let rig = Rig::with("", "not_found_after_seconds = 60");
    let p = rig
        .seed_op(Seed {
            path: vec![unknown(Some(false), rig.now_ms())],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    rig.pay.then_query(QueryOutcome::NotFound {
        response_code: "4045101".into(),
    });
    rig.reconciler().pass().await.unwrap();
    let op = rig.journal.op(&p).unwrap();
    assert_eq!(
        op.state,
        OpState::Unknown,
        "not yet indexed is not never made"
    );
    assert_eq!(op.attempts, 1);
    assert!(op.reason.unwrap_or_default().contains("not found yet"));
    sleep_ms(60_000).await;
    rig.pay.then_query(QueryOutcome::NotFound {
        response_code: "4045101".into(),
    });
    rig.reconciler().pass().await.unwrap();
    assert_eq!(rig.pay.queries().len(), 2);
    assert_eq!(rig.journal.op(&p).unwrap().state, OpState::Declined);
}

#[tokio::test(start_paused = true)]
async fn reconciler_query_unavailable_keeps_the_row_and_backs_off() {
    let rig = Rig::new();
    let now = rig.now_ms();
    let p = rig
        .seed_op(Seed {
            path: vec![unknown(Some(false), now)],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    // The fake's unscripted query answer is "unavailable".
    rig.reconciler().pass().await.unwrap();
    let op = rig.journal.op(&p).unwrap();
    assert_eq!(op.state, OpState::Unknown);
    assert_eq!(op.attempts, 1);
    assert!(op.reason.unwrap_or_default().contains("query unavailable"));
    let next = op.next_attempt_at_ms.unwrap();
    assert!(
        (now..=now + 20).contains(&next),
        "backoff within base: {next}"
    );
    assert!(rig.pay.refunds().is_empty());
}

#[tokio::test(start_paused = true)]
async fn reconciler_query_still_paying_polls_and_a_refunded_answer_asks_a_person() {
    let rig = Rig::new();
    let p = rig
        .seed_op(Seed {
            path: vec![unknown(Some(false), rig.now_ms())],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    rig.pay.then_query(status(TxStatus::Paying, None));
    rig.reconciler().pass().await.unwrap();
    assert_eq!(rig.journal.op(&p).unwrap().state, OpState::Unknown);
    sleep_ms(1000).await;
    rig.pay.then_query(status(TxStatus::Refunded, Some("R")));
    rig.reconciler().pass().await.unwrap();
    let op = rig.journal.op(&p).unwrap();
    assert_eq!(op.state, OpState::Attention);
    assert!(op.reason.unwrap_or_default().contains("never refunded"));
    assert_eq!(op.attempts, 2);
    assert!(rig.pay.refunds().is_empty());
}

#[tokio::test(start_paused = true)]
async fn reconciler_refunds_the_amount_owed_not_the_amount_paid() {
    let rig = Rig::new();
    let now = rig.now_ms();
    let p = rig
        .seed_op(Seed {
            path: vec![
                succeeded("R-PART", Some(false), now),
                refund_owed(4000, now),
            ],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    let row = rig.journal.op(&p).unwrap();
    assert_eq!(row.amount_to_refund(), Rupiah(4000));
    let stats = rig.reconciler().pass().await.unwrap();
    assert_eq!(stats.refunds, 1);
    assert_eq!(rig.pay.refunds(), vec![(p.clone(), row.amount_to_refund())]);
    let op = rig.journal.op(&p).unwrap();
    assert_eq!(op.state, OpState::Refunded);
    assert_eq!(op.refund_amount, Some(Rupiah(4000)), "recorded as sent");
}

#[tokio::test(start_paused = true)]
async fn reconciler_refund_unavailable_tries_again_and_refused_asks_a_person() {
    let rig = Rig::new();
    let now = rig.now_ms();
    let p = rig
        .seed_op(Seed {
            path: vec![succeeded("R1", Some(false), now), refund_owed(HOLD, now)],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    rig.pay.then_refund(RefundOutcome::Unavailable {
        reason: "timeout".into(),
    });
    rig.reconciler().pass().await.unwrap();
    let op = rig.journal.op(&p).unwrap();
    assert_eq!((op.state, op.attempts), (OpState::RefundPending, 1));
    sleep_ms(1000).await;
    rig.pay.then_refund(RefundOutcome::Refused {
        response_code: Some("4035815".into()),
        message: "transaction not permitted".into(),
    });
    rig.reconciler().pass().await.unwrap();
    let op = rig.journal.op(&p).unwrap();
    assert_eq!(op.state, OpState::Attention);
    assert!(op
        .reason
        .unwrap_or_default()
        .contains("refund refused 4035815"));
    assert_eq!(rig.pay.refunds().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn reconciler_refunds_a_hold_that_belongs_to_no_journey() {
    let rig = Rig::new();
    let now = rig.now_ms();
    let p = rig
        .seed_op(Seed {
            path: vec![succeeded("R-ORPHAN", Some(true), now)],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    let stats = rig.reconciler().pass().await.unwrap();
    assert_eq!(stats.holds_without_journey, 1);
    assert_eq!(rig.pay.refunds(), vec![(p.clone(), Rupiah(HOLD))]);
    assert_eq!(rig.journal.op(&p).unwrap().state, OpState::Refunded);
    assert_eq!(
        rig.counter(
            "tapgate_holds_without_journey_total",
            &[("lane", "elsewhere")]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn reconciler_closes_a_stale_journey_at_the_held_fare_under_max_fare() {
    let rig = Rig::with("stale_journey = \"max_fare\"\nmax_trip_minutes = 240", "");
    let tap_in = rig.tap("in-1", PAN_A).await;
    assert_eq!(tap_in.outcome, TapOutcome::Approved);
    rig.reconciler().pass().await.unwrap();
    assert_eq!(
        rig.journal.journeys()[0].state,
        JourneyState::Open,
        "not stale yet"
    );
    sleep_ms(240 * 60_000 + 1).await;
    rig.reconciler().pass().await.unwrap();
    let j = &rig.journal.journeys()[0];
    assert_eq!(j.state, JourneyState::StaleClosed);
    assert_eq!(
        j.fare,
        Some(Rupiah(HOLD)),
        "the same fare close_at_max_fare records"
    );
    assert!(rig.pay.refunds().is_empty(), "the hold stands");
    assert_eq!(rig.op_of(&tap_in).state, OpState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn reconciler_releases_a_stale_journey_without_a_fare_or_a_refund_under_release() {
    let rig = Rig::with("stale_journey = \"release\"\nmax_trip_minutes = 240", "");
    let tap_in = rig.tap("in-1", PAN_A).await;
    sleep_ms(240 * 60_000 + 1).await;
    rig.reconciler().pass().await.unwrap();
    let j = &rig.journal.journeys()[0];
    assert_eq!((j.state, j.fare), (JourneyState::Released, None));
    assert!(
        rig.pay.refunds().is_empty(),
        "tapgate never refunds a released hold"
    );
    assert_eq!(rig.op_of(&tap_in).state, OpState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn reconciler_voids_a_stale_journey_whose_hold_is_gone_and_waits_for_an_unresolved_one() {
    let rig = Rig::with("max_trip_minutes = 240", "");
    let now = rig.now_ms();
    let refunded = rig
        .seed_op(Seed {
            path: vec![
                succeeded("R-GONE", Some(false), now),
                refund_owed(HOLD, now),
            ],
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    rig.journal
        .insert_journey(&rig.pan_key(PAN_A), "BLM", &refunded, now)
        .expect("journey opens");
    let unresolved = rig
        .seed_op(Seed {
            path: vec![unknown(Some(true), now + 24 * 3_600_000)],
            ..Seed::new(PAN_B, Direction::In, "BLM", HOLD, 2)
        })
        .await;
    rig.journal
        .insert_journey(&rig.pan_key(PAN_B), "BLM", &unresolved, now)
        .expect("journey opens");
    sleep_ms(240 * 60_000 + 1).await;
    rig.reconciler().pass().await.unwrap();
    let js = rig.journal.journeys();
    assert_eq!((js[0].state, js[0].fare), (JourneyState::Void, None));
    assert_eq!(
        js[1].state,
        JourneyState::Open,
        "its tap-in is still being resolved"
    );
    assert!(
        rig.pay.queries().is_empty(),
        "the unresolved tap-in is not due yet"
    );
}

/// Regression: the lane marked its row as its own for the deadline + 1 s while the reconciler
/// waited deadline + 5 s before touching a PENDING row. There is one margin now: the row is
/// the lane's exactly until `in_flight_window_ms`, and the reconciler waits exactly as long,
/// even for a row whose own mark says it is due.
#[tokio::test(start_paused = true)]
async fn a_pending_row_is_left_alone_until_the_one_in_flight_window_has_passed() {
    let rig = Rig::new();
    let window = in_flight_window_ms(DEADLINE_MS, REQUEST_TIMEOUT_MS);
    assert_eq!(
        window,
        i64::try_from(DEADLINE_MS + REQUEST_TIMEOUT_MS + LATE_REPLY_MARGIN_MS).unwrap()
    );
    let t0 = rig.now_ms();
    let p = rig
        .seed_op(Seed {
            next_attempt_at_ms: Some(t0),
            ..Seed::new(PAN_A, Direction::In, "BLM", HOLD, 1)
        })
        .await;
    rig.reconciler().pass().await.unwrap();
    sleep_ms(u64::try_from(window).unwrap() - 1).await;
    rig.reconciler().pass().await.unwrap();
    assert!(
        rig.pay.queries().is_empty(),
        "still in flight at window - 1 ms"
    );
    assert_eq!(rig.journal.op(&p).unwrap().state, OpState::Pending);
    sleep_ms(1).await;
    rig.pay.then_query(status(TxStatus::Success, Some("R")));
    rig.reconciler().pass().await.unwrap();
    assert_eq!(rig.pay.queries(), vec![p.clone()]);
    assert_eq!(rig.journal.op(&p).unwrap().state, OpState::RefundPending);
}

/// The other half of the one margin: after a missed deadline the lane leaves its row
/// UNKNOWN until the reply can no longer come (request timeout + margin), and the
/// reconciler queries it then, not before.
#[tokio::test(start_paused = true)]
async fn after_a_missed_deadline_the_reconciler_waits_for_the_late_reply_window() {
    let rig = Rig::new();
    rig.pay.then_pay(Answer::Never);
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    let late = late_reply_window_ms(REQUEST_TIMEOUT_MS);
    assert_eq!(
        late,
        i64::try_from(REQUEST_TIMEOUT_MS + LATE_REPLY_MARGIN_MS).unwrap()
    );
    sleep_ms(u64::try_from(late).unwrap() - 1).await;
    rig.reconciler().pass().await.unwrap();
    assert!(rig.pay.queries().is_empty(), "the reply may still come");
    sleep_ms(1).await;
    rig.pay.then_query(QueryOutcome::NotFound {
        response_code: "4045101".into(),
    });
    rig.reconciler().pass().await.unwrap();
    assert_eq!(rig.pay.queries(), vec![pref(&r)]);
    assert_eq!(rig.op_of(&r).state, OpState::Declined);
}

// ---------------------------------------------------------------------------------------
// The flow by hand: no executor, no ports, no runtime.
// ---------------------------------------------------------------------------------------

mod by_hand {
    use super::*;
    use tapgate::fare::tariff::Tariff;
    use tapgate::flow::{
        Claim, Effect, JourneyChange, Reply, Step, TapFlow, TapInput, TapSettings,
    };
    use tapgate::journal::{FoundJourney, JourneyRow, TapDecision, TapStart};

    fn settings(direction: Direction) -> Arc<TapSettings> {
        let c = config("", "");
        Arc::new(TapSettings {
            lane: "hand-1".into(),
            direction,
            station_id: "BLM".into(),
            gate_id: "GATE-HAND-1".into(),
            policy: c.policy.clone(),
            tariff: Arc::new(Tariff::from_config(&c.tariff)),
            request_timeout_ms: c.aggregator.request_timeout_ms,
            line: false,
        })
    }

    fn input(qr: String, free_exit: bool) -> TapInput {
        TapInput {
            qr_content: qr,
            read_us: 7,
            free_exit,
            now_ms: START_MS,
            partner_reference_no: "TGHAND0001".into(),
            passenger_key: Box::new(|pan| format!("key-{}", pan.masked())),
        }
    }

    fn expect_do(step: Step) -> Effect {
        match step {
            Step::Do(e) => e,
            Step::Done(end) => panic!("the tap ended early: {:?}", end.report),
        }
    }

    /// Answers the Begin effect as a journal would, given the passenger's open journey.
    fn begun(
        effect: Effect,
        open: Option<FoundJourney>,
    ) -> (Reply, Option<tapgate::journal::JourneyClose>) {
        let Effect::Begin(b) = effect else {
            panic!("expected Begin, got {effect:?}")
        };
        assert_eq!(b.claim.now_ms, START_MS);
        match b.plan.decide(open) {
            TapDecision::Begin {
                op,
                close_first,
                then,
                ..
            } => {
                assert_eq!(op.partner_reference_no, "TGHAND0001");
                (Reply::Begin(Ok(TapStart::Begun(then))), close_first)
            }
            TapDecision::Refuse(o) => (Reply::Begin(Ok(TapStart::Refused(o))), None),
        }
    }

    #[test]
    fn a_tap_in_runs_start_to_settle_by_hand_without_an_executor() {
        let rig_payload =
            tapgate::cpm::build::payload(&tapgate::cpm::build::PayloadSpec::new(PAN_A));
        let (mut flow, step) =
            TapFlow::start(settings(Direction::In), input(rig_payload.clone(), false));
        let Effect::Claim { pan_key } = expect_do(step) else {
            panic!("a decoded tap asks for its claim first")
        };
        assert_eq!(pan_key, "key-93600002*******6781");
        let begin = expect_do(flow.resume(Reply::Claim(Claim::Granted), START_MS));
        let (reply, close_first) = begun(begin, None);
        assert_eq!(close_first, None);
        let Effect::Pay {
            request, deadline, ..
        } = expect_do(flow.resume(reply, START_MS))
        else {
            panic!("after Begin comes Pay")
        };
        assert_eq!(deadline, Duration::from_millis(DEADLINE_MS));
        assert_eq!(request.amount, Rupiah(HOLD));
        assert_eq!(request.qr_content, rig_payload);
        assert_eq!(request.gate_id, "GATE-HAND-1");
        let paid = START_MS + 120;
        let Effect::OpenGate = expect_do(flow.resume(Reply::Pay(Some(success("R-HAND"))), paid))
        else {
            panic!("a success opens the gate")
        };
        let Effect::Settle(s) = expect_do(flow.resume(Reply::Gate(Ok(())), paid)) else {
            panic!("then the result is written")
        };
        assert_eq!(s.partner_reference_no, "TGHAND0001");
        assert_eq!(
            s.journey,
            Some(JourneyChange::Open {
                pan_key: pan_key.clone(),
                station_id: "BLM".into(),
                tap_in_ref: "TGHAND0001".into(),
                at_ms: paid,
            })
        );
        let states: Vec<_> = s.transitions.iter().map(|t| t.to).collect();
        assert_eq!(states, vec![OpState::Succeeded]);
        assert_eq!(s.transitions[0].gate_opened, Some(true));
        let Step::Done(end) = flow.resume(
            Reply::Settle {
                journey: Ok(()),
                record: Ok(()),
            },
            paid,
        ) else {
            panic!("the tap ends after Settle")
        };
        assert_eq!(end.report.outcome, TapOutcome::Approved);
        assert!(end.report.opened);
        assert_eq!(end.passed_pan_key, Some(pan_key));
        assert!(end.late.is_none() && end.notices.is_empty());
    }

    #[test]
    fn a_tap_out_by_hand_quotes_the_tap_in_and_closes_its_journey_with_the_fare() {
        let qr = tapgate::cpm::build::payload(&tapgate::cpm::build::PayloadSpec::new(PAN_A));
        let (mut flow, step) = TapFlow::start(settings(Direction::Out), input(qr, false));
        let Effect::Claim { pan_key } = expect_do(step) else {
            panic!("claim first")
        };
        let begin = expect_do(flow.resume(Reply::Claim(Claim::Granted), START_MS));
        let journey = JourneyRow {
            id: 41,
            pan_key: pan_key.clone(),
            entry_station: "LBB".into(),
            tap_in_ref: "TGIN".into(),
            tap_out_ref: None,
            state: JourneyState::Open,
            fare: None,
            opened_at_ms: START_MS - 60_000,
            closed_at_ms: None,
        };
        let (reply, _) = begun(
            begin,
            Some(FoundJourney {
                journey,
                tap_in: None,
            }),
        );
        let Effect::Pay { request, .. } = expect_do(flow.resume(reply, START_MS)) else {
            panic!("pay")
        };
        assert_eq!(request.amount, Rupiah(FARE_FROM_LBB));
        assert_eq!(
            request.tap_in,
            Some(TapInRef {
                partner_reference_no: "TGIN".into(),
                reference_no: None,
            })
        );
        let _gate = expect_do(flow.resume(Reply::Pay(Some(success("R"))), START_MS));
        let Effect::Settle(s) = expect_do(flow.resume(Reply::Gate(Ok(())), START_MS)) else {
            panic!("settle")
        };
        match s.journey {
            Some(JourneyChange::Close {
                close, tap_out_ref, ..
            }) => {
                assert_eq!(close.id, 41);
                assert_eq!(close.state, JourneyState::Closed);
                assert_eq!(close.fare, Some(Rupiah(FARE_FROM_LBB)));
                assert_eq!(tap_out_ref, "TGHAND0001");
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }

    #[test]
    fn a_missed_deadline_by_hand_opens_nothing_and_leaves_a_late_reply_to_wait_for() {
        let qr = tapgate::cpm::build::payload(&tapgate::cpm::build::PayloadSpec::new(PAN_A));
        let (mut flow, step) = TapFlow::start(settings(Direction::In), input(qr, false));
        let _claim = expect_do(step);
        let (reply, _) = begun(
            expect_do(flow.resume(Reply::Claim(Claim::Granted), START_MS)),
            None,
        );
        let _pay = expect_do(flow.resume(reply, START_MS));
        let at = START_MS + 800;
        let Effect::Settle(s) = expect_do(flow.resume(Reply::Pay(None), at)) else {
            panic!("no gate on a missed deadline: straight to Settle")
        };
        assert_eq!(s.journey, None);
        assert_eq!(s.transitions.len(), 1);
        assert_eq!(s.transitions[0].to, OpState::Unknown);
        assert_eq!(
            s.transitions[0].next_attempt_at_ms,
            Some(at + late_reply_window_ms(REQUEST_TIMEOUT_MS))
        );
        let Step::Done(end) = flow.resume(
            Reply::Settle {
                journey: Ok(()),
                record: Ok(()),
            },
            at,
        ) else {
            panic!("done")
        };
        assert_eq!(end.report.outcome, TapOutcome::TryAgain);
        assert!(!end.report.opened);
        assert_eq!(end.passed_pan_key, None);
        let late = end.late.expect("the reply is still awaited");
        assert_eq!(late.partner_reference_no, "TGHAND0001");
        assert!(!late.opened);
        assert_eq!(late.amount, Rupiah(HOLD));
    }

    #[test]
    fn free_exit_and_bad_payloads_end_at_start_and_a_stray_reply_keeps_the_gate_shut() {
        let (_, step) = TapFlow::start(settings(Direction::Out), input("whatever".into(), true));
        let Step::Done(end) = step else {
            panic!("free exit ends at once")
        };
        assert_eq!(end.report.outcome, TapOutcome::FreeExit);
        assert_eq!(end.report.partner_reference_no, None);
        let (_, step) = TapFlow::start(settings(Direction::In), input("%%%".into(), false));
        let Step::Done(end) = step else {
            panic!("a bad payload ends at once")
        };
        assert_eq!(end.report.outcome, TapOutcome::InvalidPayload);
        let qr = tapgate::cpm::build::payload(&tapgate::cpm::build::PayloadSpec::new(PAN_A));
        let (mut flow, _claim) = TapFlow::start(settings(Direction::In), input(qr, false));
        let Step::Done(end) = flow.resume(Reply::Gate(Ok(())), START_MS) else {
            panic!("a reply to no effect ends the tap")
        };
        assert_eq!(end.report.outcome, TapOutcome::JournalUnavailable);
        assert!(!end.report.opened);
        assert_eq!(end.passed_pan_key, None);
    }
}
