//! QRIS MPM end to end on loopback: the gate's generate, a simulated wallet paying over the
//! Linkage API, the gate's query, the notification, expiry, late payments and refunds.

mod mpm_common;

use mpm_common::{outcome, setup, setup_with, wallet_for, Receiver};
use serde_json::{json, Value};
use tapgate_core::snap::sign;
use tapgate_sim::mpm_qr;
use tapgate_sim::wallet::{WalletCredentials, WalletPaths};
use tapgate_sim::{MpmStatus, NotifyState, DEMO_CLIENT_SECRET};

#[tokio::test]
async fn generate_then_the_wallet_pays_then_query_and_notification_agree() {
    let s = setup().await;
    let mut merchant_endpoint = Receiver::start().await;
    let a = s
        .merchant
        .generate(
            "GATE-MPM-1",
            14000,
            json!({ "validityPeriod": "120",
                    "additionalInfo": { "callback_payment": merchant_endpoint.url } }),
        )
        .await;
    assert_eq!(outcome(&a), (200, "2004700".into()), "{:?}", a.body);
    let qr_content = a.body["qrContent"].as_str().unwrap().to_string();
    let reference = a.body["referenceNo"].as_str().unwrap().to_string();
    // The QR is a QRIS MPM string for the fare, naming the reference the query will use.
    let qr = mpm_qr::parse(&qr_content).unwrap();
    assert_eq!(
        (qr.amount, qr.reference(), qr.merchant_id(), qr.dynamic),
        (
            Some(14000),
            Some(reference.as_str()),
            Some("MRT-JKT-DEMO"),
            true
        )
    );
    assert_eq!(s.merchant.status("GATE-MPM-1").await, "03");

    let paid = s.wallet.pay(&qr_content).await.unwrap();
    assert_eq!(
        (paid.amount, paid.qr_reference_no.as_str()),
        (14000, reference.as_str())
    );
    assert_eq!(s.merchant.status("GATE-MPM-1").await, "00");
    let q = s.merchant.query("GATE-MPM-1").await;
    assert_eq!(q.body["transactionStatus"], "00");
    assert_eq!(q.body["amount"]["value"], "14000.00");
    assert_eq!(
        q.body["additionalInfo"]["paymentReferenceNo"],
        paid.reference_no.as_str()
    );
    assert_eq!(
        s.wallet
            .query(&paid)
            .await
            .unwrap()
            .latest_transaction_status,
        "00"
    );

    // The notification: signed with the client secret over the standard string-to-sign,
    // the token taken from its Authorization header.
    let n = merchant_endpoint.next(5000).await.expect("notification");
    let h = |k: &str| n.headers[k].to_str().unwrap().to_string();
    let token = h("authorization")
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    let expected = sign::transaction_signature(
        DEMO_CLIENT_SECRET,
        "POST",
        "/merchant/qr-mpm-notify",
        &token,
        &n.body,
        &h("x-timestamp"),
    );
    assert!(sign::signatures_equal(&expected, &h("x-signature")));
    assert_eq!(h("x-partner-id"), "TAPGATE-DEMO");
    assert!(h("x-external-id").len() <= 32);
    let body: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(body["originalPartnerReferenceNo"], "GATE-MPM-1");
    assert_eq!(body["originalReferenceNo"], reference.as_str());
    assert_eq!(body["latestTransactionStatus"], "00");
    assert_eq!(body["amount"]["value"], "14000.00");

    // The ledger says the same, in process and over /sim/ledger/mpm.
    let mut delivered = false;
    for _ in 0..50 {
        let e = s.sim.mpm_entry("GATE-MPM-1").unwrap();
        if matches!(
            e.notification,
            NotifyState::Delivered {
                http_status: 200,
                ..
            }
        ) {
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(delivered, "{:?}", s.sim.mpm_entry("GATE-MPM-1"));
    let e = s.sim.mpm_entry("GATE-MPM-1").unwrap();
    assert_eq!((e.status, e.net_charged()), (MpmStatus::Paid, 14000));
    let over_http: Value = get_json(&s.sim.base_url(), "/sim/ledger/mpm").await;
    assert_eq!(over_http["qrs"][0]["status"], "PAID");
    assert_eq!(
        over_http["payments"][0]["reference_no"],
        paid.reference_no.as_str()
    );
    assert_eq!(
        s.sim.customer("CUST-DEMO-1").unwrap().balance,
        1_000_000 - 14000
    );
    let stats = s.sim.stats();
    assert_eq!(stats.protocol_violations(), 0, "{:?}", stats.recent);
    assert_eq!(
        (
            stats.mpm.qrs_generated,
            stats.mpm.payments_made,
            stats.mpm.notifications_delivered
        ),
        (1, 1, 1)
    );
}

/// GETs one of the simulator's own JSON paths.
async fn get_json(base: &str, path: &str) -> Value {
    let text = raw_http(base, "GET", path, None).await;
    serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap()
}

/// Sends one raw HTTP/1.0 request, with a JSON body if any, to the simulator at `base`
/// (`http://host:port`) and returns the whole answer: its control paths need no HTTP client.
async fn raw_http(base: &str, method: &str, path: &str, body: Option<&Value>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = base.strip_prefix("http://").unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    if let Some(body) = body {
        let body = body.to_string();
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    } else {
        req += "\r\n";
    }
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn with_notifications_lost_query_alone_learns_the_payment() {
    let s = setup().await;
    let mut merchant_endpoint = Receiver::start().await;
    s.sim.drop_notifications(true);
    let qr = s
        .merchant
        .qr(
            "GATE-MPM-2",
            5000,
            json!({ "additionalInfo": { "callback_payment": merchant_endpoint.url } }),
        )
        .await;
    s.wallet.pay(&qr).await.unwrap();
    assert_eq!(s.merchant.status("GATE-MPM-2").await, "00");
    assert!(merchant_endpoint.next(300).await.is_none());
    let e = s.sim.mpm_entry("GATE-MPM-2").unwrap();
    assert_eq!(e.notification, NotifyState::Dropped);
    assert_eq!(s.sim.stats().mpm.notifications_dropped, 1);
}

#[tokio::test]
async fn a_qr_expires_unpaid_and_a_payment_after_that_is_refused_as_failed() {
    let s = setup().await;
    let qr = s
        .merchant
        .qr("GATE-MPM-3", 5000, json!({ "validityPeriod": "60" }))
        .await;
    s.clock.advance_ms(59_000);
    assert_eq!(s.merchant.status("GATE-MPM-3").await, "03");
    s.clock.advance_ms(1_000);
    assert_eq!(s.merchant.status("GATE-MPM-3").await, "06");

    let tokens = s.wallet.tokens().await.unwrap();
    let call = s.wallet.payment_call(&qr, &tokens).unwrap();
    let a = s.wallet.send(&call).await.unwrap();
    assert_eq!(outcome(&a), (403, "4035000".into()), "{:?}", a.body);
    // The wallet's query reports the refused payment as failed.
    let sent: Value = serde_json::from_slice(&call.body).unwrap();
    let q = s
        .wallet
        .send(&s.wallet.transaction_call(
            &WalletPaths::default().query,
            &tokens,
            &json!({ "originalPartnerReferenceNo": sent["partnerReferenceNo"],
                     "serviceCode": "54", "merchantId": "MRT-JKT-DEMO" }),
        ))
        .await
        .unwrap();
    assert_eq!(q.code(), "2005100", "{:?}", q.body);
    assert_eq!(q.body["latestTransactionStatus"], "06");
    assert_eq!(q.body["latestTransactionStatusCode"], "4035000");
    assert_eq!(s.sim.customer("CUST-DEMO-1").unwrap().balance, 1_000_000);
    assert_eq!(s.merchant.status("GATE-MPM-3").await, "06");
    // An absolute validityPeriod is honoured too; one in the past is refused.
    let end = sign::timestamp(&s_now_plus(&s, 30));
    let ok = s
        .merchant
        .generate("GATE-MPM-3b", 5000, json!({ "validityPeriod": end }))
        .await;
    assert_eq!(ok.body["additionalInfo"]["validityPeriod"], end.as_str());
    let past = sign::timestamp(&s_now_plus(&s, -1));
    let bad = s
        .merchant
        .generate("GATE-MPM-3c", 5000, json!({ "validityPeriod": past }))
        .await;
    assert_eq!(outcome(&bad), (400, "4004701".into()), "{:?}", bad.body);
}

fn s_now_plus(s: &mpm_common::Setup, secs: i64) -> jiff::Zoned {
    use tapgate_core::clock::Clock as _;
    s.clock
        .now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap()
}

#[tokio::test]
async fn a_late_payment_the_knob_lets_through_is_refunded_once() {
    let s = setup().await;
    let qr = s
        .merchant
        .qr("GATE-MPM-4", 7000, json!({ "validityPeriod": "30" }))
        .await;
    s.clock.advance_ms(31_000);
    s.sim.accept_late_payments(true);
    let paid = s.wallet.pay(&qr).await.unwrap();
    let q = s.merchant.query("GATE-MPM-4").await;
    assert_eq!(q.body["latestTransactionStatus"], "00");
    assert_eq!(q.body["additionalInfo"]["late"], true);
    assert!(s.sim.mpm_entry("GATE-MPM-4").unwrap().payment.unwrap().late);
    assert_eq!(
        s.sim.customer("CUST-DEMO-1").unwrap().balance,
        1_000_000 - 7000
    );

    let r1 = s.merchant.refund("GATE-MPM-4-RF", "GATE-MPM-4", 7000).await;
    assert_eq!(outcome(&r1), (200, "2007800".into()), "{:?}", r1.body);
    // The same refund again: the same answer, no second refund.
    let r2 = s.merchant.refund("GATE-MPM-4-RF", "GATE-MPM-4", 7000).await;
    assert_eq!(r2.body, r1.body);
    let e = s.sim.mpm_entry("GATE-MPM-4").unwrap();
    assert_eq!(
        (e.status, e.refunds.len(), e.net_charged()),
        (MpmStatus::Refunded, 1, 0)
    );
    assert_eq!(s.sim.customer("CUST-DEMO-1").unwrap().balance, 1_000_000);
    assert_eq!(s.merchant.status("GATE-MPM-4").await, "04");
    assert_eq!(
        s.wallet
            .query(&paid)
            .await
            .unwrap()
            .latest_transaction_status,
        "04"
    );
    let stats = s.sim.stats().mpm;
    assert_eq!(
        (
            stats.late_payments,
            stats.refunds_made,
            stats.refund_replays
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn the_late_payment_knob_works_over_the_control_api_too() {
    let s = setup().await;
    let qr = s
        .merchant
        .qr("GATE-MPM-5", 3000, json!({ "validityPeriod": "10" }))
        .await;
    s.clock.advance_ms(11_000);
    assert!(s.wallet.pay(&qr).await.is_err());
    control(
        &s.sim.base_url(),
        "/sim/mpm/late",
        json!({ "accept": true }),
    )
    .await;
    // The same QR: the refusal recorded a failed payment, it did not use the QR up.
    s.wallet.pay(&qr).await.unwrap();
    assert_eq!(s.merchant.status("GATE-MPM-5").await, "00");
}

/// POSTs a control body; expects 204.
async fn control(base: &str, path: &str, body: Value) {
    let text = raw_http(base, "POST", path, Some(&body)).await;
    assert!(
        text.starts_with("HTTP/1.0 204") || text.starts_with("HTTP/1.1 204"),
        "{text}"
    );
}

#[tokio::test]
async fn a_qr_is_paid_once_a_second_payment_is_refused() {
    let s = setup().await;
    let qr = s.merchant.qr("GATE-MPM-6", 4000, json!({})).await;
    s.wallet.pay(&qr).await.unwrap();
    // Another customer scans the same QR.
    let other = s.sim.link_customer(50_000);
    let creds = WalletCredentials {
        auth_code: other.auth_code.clone(),
        ..WalletCredentials::demo()
    };
    let second = wallet_for(&s.sim, &s.clock, creds);
    let e = second.pay(&qr).await.unwrap_err().to_string();
    assert!(e.contains("4045014"), "{e}");
    let ledger = s.sim.mpm_ledger();
    assert_eq!(ledger.payments.len(), 2);
    assert_eq!(ledger.payments[1].refusal_code.as_deref(), Some("4045014"));
    assert_eq!(s.sim.customer(&other.customer_id).unwrap().balance, 50_000);
    assert_eq!(
        s.sim.customer("CUST-DEMO-1").unwrap().balance,
        1_000_000 - 4000
    );
}

#[tokio::test]
async fn refunds_are_idempotent_bounded_and_only_of_paid_qrs() {
    let s = setup().await;
    let qr = s.merchant.qr("GATE-MPM-7", 10_000, json!({})).await;
    let unpaid = s.merchant.refund("RF-0", "GATE-MPM-7", 10_000).await;
    assert_eq!(
        outcome(&unpaid),
        (403, "4037815".into()),
        "{:?}",
        unpaid.body
    );
    s.wallet.pay(&qr).await.unwrap();
    let part = s.merchant.refund("RF-1", "GATE-MPM-7", 4000).await;
    assert_eq!(part.code(), "2007800");
    assert_eq!(s.merchant.status("GATE-MPM-7").await, "00");
    // The same reference for another amount is a conflict, not a second refund.
    let conflict = s.merchant.refund("RF-1", "GATE-MPM-7", 1000).await;
    assert_eq!(outcome(&conflict), (409, "4097801".into()));
    let over = s.merchant.refund("RF-2", "GATE-MPM-7", 6001).await;
    assert_eq!(outcome(&over), (404, "4047813".into()));
    let unknown = s.merchant.refund("RF-3", "NO-SUCH-QR", 1).await;
    assert_eq!(outcome(&unknown), (404, "4047801".into()));
    let rest = s.merchant.refund("RF-4", "GATE-MPM-7", 6000).await;
    assert_eq!(rest.code(), "2007800");
    let e = s.sim.mpm_entry("GATE-MPM-7").unwrap();
    assert_eq!((e.refunded, e.status), (10_000, MpmStatus::Refunded));
}

#[tokio::test]
async fn generate_checks_its_fields_merchant_and_reference() {
    let s = setup().await;
    let dup = s.merchant.qr("GATE-MPM-8", 1000, json!({})).await;
    assert!(!dup.is_empty());
    let again = s.merchant.generate("GATE-MPM-8", 1000, json!({})).await;
    assert_eq!(outcome(&again), (409, "4094701".into()));
    let other = s
        .merchant
        .generate("GATE-MPM-9", 1000, json!({ "merchantId": "SOMEONE-ELSE" }))
        .await;
    assert_eq!(outcome(&other), (404, "4044708".into()));
    let cents = s
        .merchant
        .generate(
            "GATE-MPM-10",
            0,
            json!({ "amount": { "value": "1000", "currency": "IDR" } }),
        )
        .await;
    assert_eq!(outcome(&cents), (400, "4004701".into()));
    let zero = s.merchant.generate("GATE-MPM-11", 0, json!({})).await;
    assert_eq!(outcome(&zero), (404, "4044713".into()));
    let callback = s
        .merchant
        .generate(
            "GATE-MPM-12",
            1000,
            json!({ "additionalInfo": { "callback_payment": "ftp://x" } }),
        )
        .await;
    assert_eq!(outcome(&callback), (400, "4004701".into()));
    assert_eq!(s.sim.stats().mpm.qrs_generated, 1);
}

#[tokio::test]
async fn a_customer_without_the_balance_is_refused_and_the_qr_stays_payable() {
    let s = setup().await;
    let qr = s.merchant.qr("GATE-MPM-13", 5000, json!({})).await;
    let poor = s.sim.link_customer(4999);
    let creds = WalletCredentials {
        auth_code: poor.auth_code,
        ..WalletCredentials::demo()
    };
    let e = wallet_for(&s.sim, &s.clock, creds)
        .pay(&qr)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("4035014"), "{e}");
    assert_eq!(s.merchant.status("GATE-MPM-13").await, "03");
    s.wallet.pay(&qr).await.unwrap();
    assert_eq!(s.merchant.status("GATE-MPM-13").await, "00");
}

#[tokio::test]
async fn a_notification_to_a_merchant_that_is_not_there_is_recorded_as_failed() {
    let s = setup_with(|c| c.mpm.notify_timeout_ms = 500).await;
    // A port nobody listens on: bind, learn it, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let qr = s
        .merchant
        .qr(
            "GATE-MPM-14",
            2000,
            json!({ "additionalInfo": { "callback_payment": format!("http://{addr}/n") } }),
        )
        .await;
    s.wallet.pay(&qr).await.unwrap();
    let mut state = NotifyState::None;
    for _ in 0..100 {
        state = s.sim.mpm_entry("GATE-MPM-14").unwrap().notification;
        if matches!(state, NotifyState::Failed { .. }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(matches!(state, NotifyState::Failed { .. }), "{state:?}");
    assert_eq!(s.merchant.status("GATE-MPM-14").await, "00");
}

#[tokio::test]
async fn every_path_may_sit_under_a_provider_prefix() {
    // As a real aggregator's base puts them (Finpay: /pg/payment/card/v1.0/qr/...).
    let s = mpm_common::setup_at("/pg/payment/card", |_| {}).await;
    let qr = s.merchant.qr("GATE-MPM-15", 3000, json!({})).await;
    let paid = s.wallet.pay(&qr).await.unwrap();
    assert_eq!(
        s.wallet
            .query(&paid)
            .await
            .unwrap()
            .latest_transaction_status,
        "00"
    );
    assert_eq!(s.merchant.status("GATE-MPM-15").await, "00");
}

#[tokio::test]
async fn the_merchants_calls_pass_the_same_caller_checks_as_cpm() {
    let s = setup().await;
    let tokens = s.wallet.tokens().await.unwrap();
    let body = json!({ "partnerReferenceNo": "GATE-MPM-16", "merchantId": "MRT-JKT-DEMO",
                       "amount": { "value": "1000.00", "currency": "IDR" } });
    let path = tapgate_sim::SimPaths::default().mpm_generate;
    let call = s
        .wallet
        .transaction_call(&path, &tokens, &body)
        .without("Authorization-Customer");
    for (bad, status, code) in [
        (call.clone().without("X-DEVICE-ID"), 400, "4004702"),
        (
            call.clone().with_header("X-SIGNATURE", "AAAA"),
            401,
            "4014700",
        ),
        (
            call.clone().with_header("Authorization", "Bearer stale"),
            401,
            "4014701",
        ),
    ] {
        let a = s.wallet.send(&bad).await.unwrap();
        assert_eq!(outcome(&a), (status, code.into()), "{:?}", a.body);
    }
    assert_eq!(s.wallet.send(&call).await.unwrap().code(), "2004700");
    // The same external id twice in a day is a conflict.
    let a = s.wallet.send(&call).await.unwrap();
    assert_eq!(outcome(&a), (409, "4094700".into()), "{:?}", a.body);
    let q = s
        .merchant
        .call(
            &tapgate_sim::SimPaths::default().mpm_query,
            json!({ "originalPartnerReferenceNo": "GATE-MPM-16", "merchantId": "OTHER" }),
        )
        .await;
    assert_eq!(outcome(&q), (404, "4045108".into()), "{:?}", q.body);
    let unknown = s.merchant.query("NO-SUCH-QR").await;
    assert_eq!(outcome(&unknown), (404, "4045101".into()));
}
