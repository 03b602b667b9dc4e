//! The QR sale's every branch on the ports' fakes with tokio's paused time: a QR's two-minute
//! life runs in no time, and the aggregator's answers are scripted ([`FakeQr`]). What the
//! real parts do (the simulator over HTTP, SQLite, `tapgate run`, SIGKILL) is
//! `tests/qr_mpm_e2e.rs`; this tier covers what the simulator cannot be made to answer: a
//! refused or unanswered generate, another amount, a broken relay, a tap or a shutdown while
//! a QR is shown.

#[path = "lane_flow/rig.rs"]
mod rig;

use std::sync::Arc;
use std::time::Duration;

use rig::{Rig, MAX_FARE, PAN_A};
use tapgate::aggregator::mpm::GenerateOutcome;
use tapgate::display::{DisplayHub, ScreenKind};
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::{OpState, Rupiah};
use tapgate::journal::{Channel, OpRow};
use tapgate::qr::{QrDesk, QrRefusal, Withdrawn};

const LANE: &str = "out-1";

/// A rig whose exit sells QRs (validity 120 s, polled every second) on a display hub.
fn selling() -> (Rig, Arc<QrDesk>, Arc<DisplayHub>) {
    let rig = Rig::new();
    let hub = DisplayHub::new(
        rig.core
            .config
            .lanes
            .iter()
            .map(|l| (l.name.clone(), l.direction)),
        Duration::from_secs(4),
        rig.core.clock.clone(),
    );
    let cfg: tapgate::config::QrConfig =
        toml::from_str("lanes = [\"out-1\"]\nvalidity_seconds = 120\npoll_ms = 1000\n")
            .expect("[qr]");
    let keys = tapgate::qr::NotifyKeys {
        client_secret: "s".into(),
        partner_id: "P".into(),
    };
    let desk = QrDesk::new(rig.core.clone(), hub.clone(), cfg, keys, rig.relays());
    assert!(rig.core.attach_qr(desk.clone()));
    assert!(rig.core.attach_display(hub.clone()), "taps show on it too");
    (rig, desk, hub)
}

/// The one QR sale in the journal.
fn sale(rig: &Rig) -> OpRow {
    let sales: Vec<OpRow> = rig
        .journal
        .ops()
        .into_iter()
        .filter(|o| o.channel == Channel::Mpm)
        .collect();
    assert_eq!(sales.len(), 1, "{sales:#?}");
    sales[0].clone()
}

/// Starts a sale and lets it reach the screen.
async fn shown(desk: &Arc<QrDesk>, hub: &DisplayHub) {
    assert_eq!(desk.request(LANE), Ok(Rupiah(MAX_FARE)));
    rig::sleep_ms(10).await;
    let s = hub.snapshot(LANE).expect("lane");
    assert_eq!(s.kind, ScreenKind::Qr);
    assert_eq!(s.amount.as_deref(), Some("Rp9.000"));
}

fn pref(rig: &Rig) -> String {
    sale(rig).partner_reference_no
}

#[tokio::test(start_paused = true)]
async fn a_paid_qr_opens_the_exit_once_and_records_one_success() {
    let (rig, desk, hub) = selling();
    let idle = hub.snapshot(LANE).expect("lane");
    assert_eq!(idle.qr_offer.as_deref(), Some("Rp9.000"), "offered on idle");
    assert!(hub.snapshot("in-1").expect("lane").qr_offer.is_none());
    shown(&desk, &hub).await;
    assert_eq!(desk.request(LANE), Err(QrRefusal::Busy(LANE.into())));
    assert_eq!(
        desk.request("in-1"),
        Err(QrRefusal::NotOffered("in-1".into())),
        "an entry on a fare matrix"
    );
    let p = pref(&rig);
    assert!(p.starts_with("TQBLM"), "{p}");
    let op = sale(&rig);
    assert_eq!((op.state, op.gate_opened), (OpState::Unknown, None));
    assert_eq!(
        op.reference_no.as_deref(),
        Some(format!("QREF-{p}").as_str())
    );

    rig::sleep_ms(5_000).await;
    assert_eq!(rig.opens(), 0, "not paid: shut");
    rig.qr.pay(&p, Rupiah(MAX_FARE));
    rig::sleep_ms(1_100).await;
    assert_eq!(rig.relay(LANE).opens(), 1);
    let op = sale(&rig);
    assert_eq!((op.state, op.gate_opened), (OpState::Succeeded, Some(true)));
    assert_eq!(hub.snapshot(LANE).expect("lane").kind, ScreenKind::Approved);
    assert_eq!(
        rig.counter(
            "tapgate_qr_sales_total",
            &[("lane", LANE), ("outcome", "paid")]
        ),
        1
    );
    // Nothing more happens to it.
    rig::sleep_ms(200_000).await;
    rig.reconciler().pass().await.expect("pass");
    assert_eq!(rig.relay(LANE).opens(), 1);
    assert!(rig.qr.refunds().is_empty());
    assert_eq!(rig.qr.generated().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_qr_is_withdrawn_and_a_late_payment_is_refunded_once() {
    let (rig, desk, hub) = selling();
    shown(&desk, &hub).await;
    let p = pref(&rig);
    rig::sleep_ms(121_500).await;
    let op = sale(&rig);
    assert_eq!((op.state, op.gate_opened), (OpState::Unknown, Some(false)));
    assert!(op.reason.as_deref().unwrap_or("").contains("expired"));
    assert_eq!(hub.snapshot(LANE).expect("lane").kind, ScreenKind::Idle);
    // About 121 queries: one a second while shown, and the last look.
    let q = rig.qr.queries();
    assert!((119..=123).contains(&q), "{q} queries");

    rig.qr.pay(&p, Rupiah(MAX_FARE));
    rig.reconciler().pass().await.expect("pass");
    rig.reconciler().pass().await.expect("pass");
    assert_eq!(sale(&rig).state, OpState::Refunded);
    assert_eq!(rig.qr.refunds(), vec![(p, Rupiah(MAX_FARE))]);
    assert_eq!(rig.opens(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refused_generate_shows_no_qr_and_is_declined() {
    let (rig, desk, hub) = selling();
    rig.qr.then_generate(GenerateOutcome::Refused {
        response_code: Some("4034705".into()),
        message: "Feature Not Allowed".into(),
    });
    desk.request(LANE).expect("asked");
    rig::sleep_ms(10).await;
    let op = sale(&rig);
    assert_eq!((op.state, op.gate_opened), (OpState::Declined, Some(false)));
    assert_eq!(hub.snapshot(LANE).expect("lane").kind, ScreenKind::Declined);
    assert_eq!(rig.qr.queries(), 0);
    assert_eq!(desk.request(LANE).map(|_| ()), Ok(()), "free again");
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_generate_says_try_again_and_leaves_the_qr_to_the_reconciler() {
    let (rig, desk, hub) = selling();
    rig.qr.then_generate(GenerateOutcome::Unknown {
        response_code: None,
        reason: "timeout".into(),
    });
    desk.request(LANE).expect("asked");
    rig::sleep_ms(10).await;
    let op = sale(&rig);
    assert_eq!((op.state, op.gate_opened), (OpState::Unknown, Some(false)));
    assert_eq!(hub.snapshot(LANE).expect("lane").kind, ScreenKind::TryAgain);
    // Nobody saw it: a payment is impossible, and the reconciler keeps asking.
    rig.reconciler().pass().await.expect("pass");
    assert_eq!(sale(&rig).state, OpState::Unknown);
    assert!(rig.qr.queries() >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_payment_of_another_amount_keeps_the_gate_shut_for_a_person() {
    let (rig, desk, hub) = selling();
    shown(&desk, &hub).await;
    rig.qr.pay(&pref(&rig), Rupiah(MAX_FARE - 1000));
    rig::sleep_ms(1_100).await;
    assert_eq!(rig.opens(), 0);
    let op = sale(&rig);
    assert_eq!(op.state, OpState::Attention);
    assert!(op
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("amount mismatch"));
    assert_eq!(hub.snapshot(LANE).expect("lane").kind, ScreenKind::Declined);
}

#[tokio::test(start_paused = true)]
async fn a_broken_relay_refunds_the_paid_qr() {
    let (rig, desk, hub) = selling();
    shown(&desk, &hub).await;
    rig.relay(LANE).break_with("relay driver gone");
    let p = pref(&rig);
    rig.qr.pay(&p, Rupiah(MAX_FARE));
    rig::sleep_ms(1_100).await;
    assert_eq!(sale(&rig).state, OpState::RefundPending);
    rig.reconciler().pass().await.expect("pass");
    assert_eq!(sale(&rig).state, OpState::Refunded);
    assert_eq!(rig.qr.refunds(), vec![(p, Rupiah(MAX_FARE))]);
}

#[tokio::test(start_paused = true)]
async fn a_tap_that_opens_the_lane_withdraws_its_qr_and_a_payment_after_is_refunded() {
    let (rig, desk, hub) = selling();
    shown(&desk, &hub).await;
    let p = pref(&rig);
    let r = rig.tap(LANE, PAN_A).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    rig::sleep_ms(10).await;
    let op = sale(&rig);
    assert_eq!((op.state, op.gate_opened), (OpState::Unknown, Some(false)));
    assert!(op.reason.as_deref().unwrap_or("").contains("tapped"));
    assert_eq!(
        hub.snapshot(LANE).expect("lane").kind,
        ScreenKind::Approved,
        "the tap's"
    );
    rig.qr.pay(&p, Rupiah(MAX_FARE));
    rig.reconciler().pass().await.expect("pass");
    rig.reconciler().pass().await.expect("pass");
    assert_eq!(sale(&rig).state, OpState::Refunded);
    assert_eq!(rig.relay(LANE).opens(), 1, "the tap's open only");
}

#[tokio::test(start_paused = true)]
async fn shutting_down_withdraws_the_qr_on_screen_and_refuses_new_ones() {
    let (rig, desk, hub) = selling();
    shown(&desk, &hub).await;
    desk.shut_down().await;
    let op = sale(&rig);
    assert_eq!((op.state, op.gate_opened), (OpState::Unknown, Some(false)));
    assert!(op.reason.as_deref().unwrap_or("").contains("shutting_down"));
    assert_eq!(desk.request(LANE), Err(QrRefusal::Stopping));
    assert!(!desk.withdraw(LANE, Withdrawn::Cancelled), "none left");
}
