//! Fast open on the lane tier: the real executor over the in-memory fakes, tokio's time
//! paused. A slow answer opens the gate at `wait_ms`; a fast one is used as in strict mode;
//! the station's exposure never passes its cap; a silent aggregator turns fast open off; a
//! fast-opened payment that ends unpaid lists the passenger, whose next entry is refused and
//! whose exit is not.

#[path = "lane_flow/rig.rs"]
mod rig;

use rig::*;
use tapgate::aggregator::{QueryOutcome, TxStatus};
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::{OpState, Rupiah};
use tapgate::journal::JourneyState;
use tapgate::ports::fake::Answer;

const WAIT_MS: u64 = 100;

fn fast_open(extra: &str) -> Rig {
    Rig::with(
        &format!("[policy.fast_open]\nenabled = true\nwait_ms = {WAIT_MS}\n{extra}"),
        "",
    )
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_opens_the_gate_at_wait_ms_and_its_late_success_confirms_it() {
    let rig = fast_open("");
    rig.answer_after(600, success("R-1"));
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert!(r.opened && r.fast_open, "{r:?}");
    assert_eq!(
        r.timings.decision_us,
        WAIT_MS * 1000,
        "decided at the wait, not the answer"
    );
    assert_eq!(rig.core.fast_open_state().0, Rupiah(HOLD));
    let op = rig.op_of(&r);
    assert!(op.fast_opened);
    assert_eq!(op.state, OpState::Unknown, "no answer yet: {op:?}");
    assert_eq!(rig.journal.journeys()[0].state, JourneyState::Open);
    assert_eq!(
        rig.counter("tapgate_fast_opens_total", &[("lane", "in-1")]),
        1
    );

    rig.core.drain().await;
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Succeeded, "{op:?}");
    assert_eq!(op.reference_no.as_deref(), Some("R-1"));
    assert_eq!(op.gate_opened, Some(true));
    assert_eq!(
        rig.core.fast_open_state().0,
        Rupiah(0),
        "confirmed: no exposure"
    );
    assert!(rig.journal.unpaid().is_empty());
    assert_eq!(rig.pay.payments().len(), 1, "one payment, never re-sent");
}

#[tokio::test(start_paused = true)]
async fn an_answer_within_the_wait_decides_as_in_strict_mode() {
    let rig = fast_open("");
    rig.answer_after(WAIT_MS - 20, declined());
    let r = rig.tap("in-1", PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Declined);
    assert!(!r.opened && !r.fast_open);
    rig.answer_after(WAIT_MS - 20, success("R-2"));
    let r = rig.tap("in-1", PAN_B).await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    assert!(r.opened && !r.fast_open);
    assert_eq!(rig.op_of(&r).state, OpState::Succeeded);
    assert!(!rig.op_of(&r).fast_opened);
    assert_eq!(rig.core.fast_open_state().0, Rupiah(0));
}

#[tokio::test(start_paused = true)]
async fn a_fast_opened_decline_lists_the_passenger_refuses_their_next_entry_and_never_their_exit() {
    let rig = fast_open("");
    rig.answer_after(600, declined());
    let first = rig.tap("in-1", PAN_A).await;
    assert!(first.opened && first.fast_open);
    rig.core.drain().await;
    let op = rig.op_of(&first);
    assert_eq!(op.state, OpState::Declined);
    assert_eq!(op.gate_opened, Some(true));
    let unpaid = rig.journal.unpaid();
    assert_eq!(unpaid.len(), 1);
    assert_eq!(unpaid[0].partner_reference_no, pref(&first));
    assert_eq!(
        rig.counter("tapgate_fast_opens_unpaid_total", &[("lane", "in-1")]),
        1
    );
    assert_eq!(
        rig.counter(
            "tapgate_fast_opens_unpaid_rupiah_total",
            &[("lane", "in-1")]
        ),
        HOLD
    );
    assert_eq!(rig.core.fast_open_state().0, Rupiah(0));

    // The exit is attempted as usual: the passenger is never kept in.
    sleep_ms(DEBOUNCE_MS + 1).await;
    let out = rig.tap("out-1", PAN_A).await;
    assert_eq!(out.outcome, TapOutcome::Approved, "{}", out.message);
    assert!(out.opened);
    assert_eq!(rig.pay.payments().len(), 2);

    // The next entry is refused before any payment, with what is owed.
    sleep_ms(DEBOUNCE_MS + 1).await;
    let again = rig.tap("in-2", PAN_A).await;
    assert_eq!(again.outcome, TapOutcome::Unpaid, "{}", again.message);
    assert!(!again.opened);
    assert!(
        again.message.contains("Rp6,000") || again.message.contains("6000"),
        "{}",
        again.message
    );
    assert_eq!(
        rig.pay.payments().len(),
        2,
        "no payment for a refused entry"
    );
    assert_eq!(
        rig.counter("tapgate_taps_refused_unpaid_total", &[("lane", "in-2")]),
        1
    );
    // Another passenger is not affected.
    let other = rig.tap("in-2", PAN_B).await;
    assert_eq!(other.outcome, TapOutcome::Approved, "{}", other.message);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_resolved_to_not_paid_by_the_reconciler_lists_the_passenger() {
    let rig = fast_open("");
    rig.pay.then_pay(Answer::Never);
    let r = rig.tap("in-1", PAN_A).await;
    assert!(r.opened && r.fast_open);
    assert_eq!(rig.core.fast_open_state().0, Rupiah(HOLD));
    // The request never answers (the fake hangs, so the late reply is not awaited); once
    // its time is up, the reconciler's query finds it failed.
    sleep_ms(REQUEST_TIMEOUT_MS + 3_000).await;
    rig.pay.then_query(QueryOutcome::Status {
        status: TxStatus::Failed,
        reference_no: None,
        response_code: "2005100".into(),
        amount: None,
    });
    rig.reconciler().pass().await.expect("pass");
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::Declined, "{op:?}");
    assert_eq!(rig.journal.unpaid().len(), 1);
    assert_eq!(rig.core.fast_open_state().0, Rupiah(0));
}

#[tokio::test(start_paused = true)]
async fn the_exposure_cap_is_never_passed_and_room_comes_back_as_answers_arrive() {
    // Room for two holds of Rp6,000 and not a third.
    let rig = fast_open("exposure_cap = 12000");
    let lanes = ["in-1", "in-2"];
    let mut fast = 0;
    let mut waited = 0;
    let mut peak = Rupiah(0);
    for i in 0..40u32 {
        // Every answer takes 700 ms: longer than the wait, shorter than the deadline.
        rig.answer_after(700, success(&format!("R-{i}")));
        let pan = format!("93600002011{i:08}");
        let r = rig.tap(lanes[(i % 2) as usize], &pan).await;
        assert!(r.opened, "{}", r.message);
        let (now, _, _) = rig.core.fast_open_state();
        assert!(now <= Rupiah(12_000), "exposure {now} above the cap");
        peak = peak.max(now);
        if r.fast_open {
            fast += 1;
        } else {
            waited += 1;
            assert_eq!(r.timings.decision_us, 700_000, "{:?}", r.timings);
        }
        sleep_ms(100).await;
    }
    rig.core.drain().await;
    assert_eq!(
        rig.core.fast_open_state().1,
        Rupiah(12_000),
        "the cap was reached"
    );
    assert_eq!(peak, Rupiah(12_000));
    assert!(fast >= 5 && waited >= 5, "fast {fast}, waited {waited}");
    assert_eq!(
        rig.counter("tapgate_fast_opens_total", &[("lane", "in-1")])
            + rig.counter("tapgate_fast_opens_total", &[("lane", "in-2")]),
        fast
    );
    assert!(
        rig.counter(
            "tapgate_fast_open_refused_total",
            &[("lane", "in-1"), ("reason", "exposure_cap")]
        ) > 0
    );
    assert_eq!(rig.core.fast_open_state().0, Rupiah(0));
    eprintln!("40 taps: {fast} fast-opened, {waited} waited for the answer at the cap");
}

#[tokio::test(start_paused = true)]
async fn a_silent_aggregator_turns_fast_open_off_until_it_answers_again() {
    let rig = fast_open("degraded_after_ms = 1000");
    rig.pay.then_pay(Answer::Never);
    let first = rig.tap("in-1", PAN_A).await;
    assert!(first.fast_open, "silent for only {WAIT_MS} ms");
    sleep_ms(1_200).await;
    rig.pay.then_pay(Answer::Never);
    let second = rig.tap("in-2", PAN_B).await;
    assert!(!second.fast_open && !second.opened, "{second:?}");
    assert_eq!(second.outcome, TapOutcome::TryAgain);
    assert_eq!(
        rig.counter(
            "tapgate_fast_open_refused_total",
            &[("lane", "in-2"), ("reason", "degraded")]
        ),
        1
    );
    assert!(rig.core.fast_open_state().2, "degraded");
    // Any answer (here a quick decline) brings it back.
    rig.answer_after(10, declined());
    let third = rig.tap("in-1", "9360000201100456799").await;
    assert_eq!(third.outcome, TapOutcome::Declined);
    assert!(!rig.core.fast_open_state().2, "recovered");
    rig.answer_after(500, success("R-4"));
    let fourth = rig.tap("in-2", "9360000201100456800").await;
    assert!(fourth.fast_open && fourth.opened, "{fourth:?}");
}

#[tokio::test(start_paused = true)]
async fn an_issuer_not_on_the_list_waits_for_the_answer() {
    // PAN_A's issuer is 93600002; only Mandiri (93600009) may be fast-opened.
    let rig = fast_open("issuers = [\"93600009\"]");
    rig.answer_after(500, success("R-1"));
    let r = rig.tap("in-1", PAN_A).await;
    assert!(r.opened && !r.fast_open);
    assert_eq!(r.timings.decision_us, 500_000);
    let rig = fast_open("issuers = [\"93600002\"]");
    rig.answer_after(500, success("R-1"));
    let r = rig.tap("in-1", PAN_A).await;
    assert!(r.opened && r.fast_open);
}

#[tokio::test(start_paused = true)]
async fn a_relay_failure_after_a_fast_open_gives_the_exposure_back_and_a_late_success_is_refunded()
{
    let rig = fast_open("");
    rig.relay("in-1").break_with("gpio line busy");
    rig.answer_after(600, success("R-1"));
    let r = rig.tap("in-1", PAN_A).await;
    assert!(!r.opened);
    assert_eq!(r.outcome, TapOutcome::TryAgain);
    assert_eq!(rig.core.fast_open_state().0, Rupiah(0));
    rig.core.drain().await;
    let op = rig.op_of(&r);
    assert_eq!(op.state, OpState::RefundPending, "{op:?}");
    assert!(!op.fast_opened, "the gate never opened");
}

#[tokio::test(start_paused = true)]
async fn strict_mode_waits_for_the_answer_as_before() {
    let rig = Rig::new();
    rig.answer_after(600, success("R-1"));
    let r = rig.tap("in-1", PAN_A).await;
    assert!(r.opened && !r.fast_open);
    assert_eq!(r.timings.decision_us, 600_000);
    assert_eq!(
        rig.counter("tapgate_fast_opens_total", &[("lane", "in-1")]),
        0
    );
}
