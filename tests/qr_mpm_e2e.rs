//! QRIS MPM at the gate, end to end on real parts: `tapgate run` (a real process) with its
//! passenger display and `[qr]`, the simulator over loopback HTTP playing the aggregator (the
//! gate's generate, query, refund and its signed notification) and the wallet's Linkage API,
//! `tapgate sim pay-qr` (a real process) as the passenger's phone, the SQLite journal, and
//! SIGKILL.
//!
//! Each case ends with the books compared: every QR sale in the journal against the
//! simulator's QR ledger and the paying customer's balance.

mod common;
#[path = "qr_mpm_e2e/gate.rs"]
mod gate;

use std::time::{Duration, Instant};

use gate::{assert_books_agree, balance, pay, qr_on_screen, FARE};
use tapgate::fare::OpState;
use tapgate::sim::mpm::NotifyState;

/// A notification as the aggregator would send it to `url`, signed with `secret`.
async fn notify(url: &str, secret: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let path = url
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .unwrap_or_default();
    let ts = tapgate::snap::sign::timestamp(&jiff::Zoned::now());
    let sig = tapgate::snap::sign::transaction_signature(
        secret,
        "POST",
        &path,
        "tok",
        body.as_bytes(),
        &ts,
    );
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer tok")
        .header("x-timestamp", ts)
        .header("x-signature", sig)
        .header("x-partner-id", "TAPGATE-DEMO")
        .header("x-external-id", "12345678901234567890123456789012")
        .body(body)
        .send()
        .await
        .expect("the gate answers");
    let status = r.status().as_u16();
    let text = r.text().await.expect("an answer");
    (status, serde_json::from_str(&text).expect("a SNAP answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_paid_over_linkage_opens_the_exit_on_the_notification_and_the_books_agree() {
    let sim = common::start_sim().await;
    // Polling every 10 s: an open within a second or two can only be the notification's.
    let (gate, qr, before) = qr_on_screen(&sim, 120, 10_000, true).await;
    assert_eq!(qr.amount, FARE);

    // Forged, or about a QR the gate never sold: answered as SNAP says, nothing changes.
    let url = format!("{}/v1.0/qr/qr-mpm-notify", gate.display);
    let about = |r: &str| serde_json::json!({"originalPartnerReferenceNo": r, "latestTransactionStatus": "00"});
    let (status, body) = notify(&url, "not-the-secret", about(&qr.partner_reference_no)).await;
    assert_eq!(
        (status, body["responseCode"].as_str()),
        (401, Some("4015200"))
    );
    let secret = tapgate::sim::DEMO_CLIENT_SECRET;
    let (status, body) = notify(&url, secret, about("TQNOSUCHSALE")).await;
    assert_eq!(
        (status, body["responseCode"].as_str()),
        (404, Some("4045201"))
    );
    let still = &gate.sales()[0];
    assert_eq!((still.state, still.gate_opened), (OpState::Unknown, None));

    let paid_at = Instant::now();
    assert!(pay(&sim, &qr.qr_content), "the wallet paid");
    let row = gate
        .sale_until(Duration::from_secs(5), |r| r.state == OpState::Succeeded)
        .await;
    let took = paid_at.elapsed();
    eprintln!("payment to gate open: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(5));
    assert_eq!(row.gate_opened, Some(true));
    let qr = sim.mpm_entry(&row.partner_reference_no).expect("qr");
    assert_eq!(
        qr.notification,
        NotifyState::Delivered {
            http_status: 200,
            response_code: Some("2005200".into())
        }
    );
    assert_eq!(balance(&sim), before - FARE, "charged once");
    assert!(gate.log().contains("QR sale paid"), "log:\n{}", gate.log());
    assert!(gate.log().contains("payment notification refused"));
    assert_books_agree(&gate, &sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_notification_lost_polling_alone_opens_the_exit() {
    let sim = common::start_sim().await;
    sim.drop_notifications(true);
    let (gate, qr, before) = qr_on_screen(&sim, 120, 250, true).await;
    assert!(pay(&sim, &qr.qr_content));
    let row = gate
        .sale_until(Duration::from_secs(5), |r| r.state == OpState::Succeeded)
        .await;
    assert_eq!(row.gate_opened, Some(true));
    assert_eq!(
        sim.mpm_entry(&row.partner_reference_no)
            .expect("qr")
            .notification,
        NotifyState::Dropped
    );
    assert_eq!(balance(&sim), before - FARE);
    assert_books_agree(&gate, &sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_the_qr_expired_is_refunded_once_and_the_gate_stays_shut() {
    let sim = common::start_sim().await;
    sim.accept_late_payments(true);
    let (gate, qr, before) = qr_on_screen(&sim, 30, 500, true).await;
    // The gate gives up when the QR expires: it will not open for it.
    let withdrawn = gate
        .sale_until(Duration::from_secs(40), |r| r.gate_opened == Some(false))
        .await;
    assert_eq!(
        withdrawn.state,
        OpState::Unknown,
        "not final: a late payment may come"
    );
    assert!(
        pay(&sim, &qr.qr_content),
        "the simulator takes the late payment"
    );
    let row = gate
        .sale_until(Duration::from_secs(10), |r| r.state == OpState::Refunded)
        .await;
    assert_eq!(row.gate_opened, Some(false));
    // More reconciler passes and a notification later: still one refund.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let qr = sim.mpm_entry(&row.partner_reference_no).expect("qr");
    assert!(qr.payment.as_ref().is_some_and(|p| p.late));
    assert_eq!(qr.refunds.len(), 1);
    assert_eq!(balance(&sim), before, "the passenger has the fare back");
    assert_eq!(sim.stats().mpm.refunds_made, 1);
    assert_books_agree(&gate, &sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_paid_after_the_passenger_cancelled_is_refunded_once() {
    let sim = common::start_sim().await;
    let (gate, qr, before) = qr_on_screen(&sim, 120, 250, false).await;
    gate.cancel().await;
    gate.sale_until(Duration::from_secs(5), |r| r.gate_opened == Some(false))
        .await;
    // The QR is still valid at the aggregator: the wallet can pay it; the gate must not open.
    assert!(pay(&sim, &qr.qr_content));
    let row = gate
        .sale_until(Duration::from_secs(10), |r| r.state == OpState::Refunded)
        .await;
    assert_eq!(row.gate_opened, Some(false));
    assert_eq!(balance(&sim), before);
    assert_books_agree(&gate, &sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_between_generate_and_payment_is_reconciled_without_a_double_charge() {
    let sim = common::start_sim().await;
    let (mut gate, qr, before) = qr_on_screen(&sim, 120, 250, true).await;
    gate.kill();
    // The passenger pays the QR still on a dead screen (notification undeliverable).
    assert!(pay(&sim, &qr.qr_content));
    assert_eq!(balance(&sim), before - FARE);
    // The next process takes the sale over at once: the gate never opened for it.
    common::reconcile(&gate.cfg);
    let row = gate
        .sale_until(Duration::from_secs(1), |r| r.state == OpState::Refunded)
        .await;
    assert_eq!(row.gate_opened, Some(false));
    assert_eq!(balance(&sim), before, "refunded in full");
    // A second reconcile, and a daemon started again, refund nothing more.
    common::reconcile(&gate.cfg);
    gate.start().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sim.stats().mpm.refunds_made, 1);
    assert_eq!(sim.stats().mpm.payments_made, 1);
    assert_books_agree(&gate, &sim);
}
