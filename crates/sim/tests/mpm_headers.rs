//! What the simulated aggregator's Linkage API refuses: every documented header missing, one
//! test each; bad signatures and tokens; malformed fields; wrong merchant, QR or amount.
//! Each refused call is then shown to pass with the header back, so the header was the reason.

mod mpm_common;

use mpm_common::{outcome, setup, Setup};
use serde_json::{json, Value};
use tapgate_sim::mpm_qr;
use tapgate_sim::wallet::{SignedCall, Tokens, Wallet, WalletPaths};

/// A fresh QR for Rp 5,000 and a signed payment of it with every header.
async fn ready() -> (Setup, SignedCall, Tokens, String) {
    let s = setup().await;
    let qr = s.merchant.qr("GATE-H", 5000, json!({})).await;
    let tokens = s.wallet.tokens().await.unwrap();
    let call = s.wallet.payment_call(&qr, &tokens).unwrap();
    (s, call, tokens, qr)
}

async fn refused_without(header: &str) {
    let (s, call, _, _) = ready().await;
    let a = s.wallet.send(&call.clone().without(header)).await.unwrap();
    assert_eq!(
        outcome(&a),
        (400, "4005002".into()),
        "{header}: {:?}",
        a.body
    );
    let message = a.body["responseMessage"].as_str().unwrap();
    assert!(message.contains(&header.to_ascii_uppercase()), "{message}");
    assert_eq!(s.merchant.status("GATE-H").await, "03");
    // The very same call with the header pays: the header was the only problem.
    let a = s.wallet.send(&call).await.unwrap();
    assert_eq!(outcome(&a), (200, "2005000".into()), "{:?}", a.body);
    assert_eq!(s.merchant.status("GATE-H").await, "00");
    assert_eq!(s.sim.stats().header_failures, 1);
}

macro_rules! missing_header {
    ($($test:ident => $header:literal),* $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            refused_without($header).await;
        }
    )*};
}

missing_header! {
    payment_without_content_type_is_refused => "Content-Type",
    payment_without_authorization_is_refused => "Authorization",
    payment_without_authorization_customer_is_refused => "Authorization-Customer",
    payment_without_x_timestamp_is_refused => "X-TIMESTAMP",
    payment_without_x_partner_id_is_refused => "X-PARTNER-ID",
    payment_without_x_signature_is_refused => "X-SIGNATURE",
    payment_without_x_external_id_is_refused => "X-EXTERNAL-ID",
    payment_without_channel_id_is_refused => "CHANNEL-ID",
    payment_without_origin_is_refused => "ORIGIN",
    payment_without_x_ip_address_is_refused => "X-IP-ADDRESS",
    payment_without_x_device_id_is_refused => "X-DEVICE-ID",
    payment_without_x_latitude_is_refused => "X-LATITUDE",
    payment_without_x_longitude_is_refused => "X-LONGITUDE",
}

#[tokio::test]
async fn a_body_changed_after_signing_is_refused_as_a_bad_signature() {
    let (s, mut call, _, _) = ready().await;
    let mut body: Value = serde_json::from_slice(&call.body).unwrap();
    body["partnerReferenceNo"] = json!("SOMEONE-ELSES");
    call.body = serde_json::to_vec(&body).unwrap();
    let a = s.wallet.send(&call).await.unwrap();
    assert_eq!(outcome(&a), (401, "4015000".into()), "{:?}", a.body);
    let forged = call.with_header("X-SIGNATURE", "AAAA");
    let a = s.wallet.send(&forged).await.unwrap();
    assert_eq!(outcome(&a), (401, "4015000".into()), "{:?}", a.body);
    assert_eq!(s.sim.stats().signature_failures, 2);
    assert_eq!(s.merchant.status("GATE-H").await, "03");
}

#[tokio::test]
async fn bad_customer_tokens_are_refused_with_401_50_xx() {
    let (s, call, _, _) = ready().await;
    for (value, code, ext) in [
        ("Bearer no-such-token", "4015004", "1001"),
        ("Basic dXNlcjpwYXNz", "4015002", "1002"),
    ] {
        // New external id each time: a refused token spends it (checked after the B2B part).
        let c = call
            .clone()
            .with_header("Authorization-Customer", value)
            .with_header("X-EXTERNAL-ID", ext);
        let a = s.wallet.send(&c).await.unwrap();
        assert_eq!(outcome(&a), (401, code.into()), "{value}: {:?}", a.body);
    }
    assert_eq!(s.sim.stats().token_failures, 2);
    assert_eq!(s.merchant.status("GATE-H").await, "03");
}

#[tokio::test]
async fn an_expired_customer_token_is_refused_while_the_b2b_token_is_fresh() {
    let (s, _, old, qr) = ready().await;
    s.clock.advance_ms(901_000);
    let fresh = Tokens {
        b2b: s.wallet.b2b_token().await.unwrap(),
        customer: old.customer.clone(),
    };
    let a = s
        .wallet
        .send(&s.wallet.payment_call(&qr, &fresh).unwrap())
        .await
        .unwrap();
    assert_eq!(outcome(&a), (401, "4015002".into()), "{:?}", a.body);
    // The QR itself expired meanwhile (default validity 300 s), unpaid.
    let e = s.sim.mpm_entry("GATE-H").unwrap();
    assert_eq!(e.status, tapgate_sim::MpmStatus::Expired);
}

#[tokio::test]
async fn a_bad_b2b_token_is_refused_with_401_50_01() {
    let (s, call, _, _) = ready().await;
    let a = s
        .wallet
        .send(&call.with_header("Authorization", "Bearer not-issued"))
        .await
        .unwrap();
    assert_eq!(outcome(&a), (401, "4015001".into()), "{:?}", a.body);
}

/// Sends a payment whose body is the wallet's for the QR, changed by `edit`.
async fn pay_edited(
    s: &Setup,
    tokens: &Tokens,
    qr: &str,
    edit: impl FnOnce(&mut Value),
) -> (u16, String) {
    let mut body = Wallet::payment_body(&mpm_qr::parse(qr).unwrap(), "WALLET-1").unwrap();
    edit(&mut body);
    let call = s
        .wallet
        .transaction_call(&WalletPaths::default().payment, tokens, &body);
    outcome(&s.wallet.send(&call).await.unwrap())
}

#[tokio::test]
async fn amounts_need_two_decimals() {
    let (s, _, tokens, qr) = ready().await;
    for bad in ["5000", "5000.0", "5000.5", "5,000.00"] {
        let got = pay_edited(&s, &tokens, &qr, |b| b["amount"]["value"] = json!(bad)).await;
        assert_eq!(got, (400, "4005001".into()), "{bad}");
    }
    let fee = pay_edited(&s, &tokens, &qr, |b| b["feeAmount"]["value"] = json!("0")).await;
    assert_eq!(fee, (400, "4005001".into()));
    let usd = pay_edited(&s, &tokens, &qr, |b| b["amount"]["currency"] = json!("USD")).await;
    assert_eq!(usd, (400, "4005001".into()));
    assert_eq!(s.merchant.status("GATE-H").await, "03");
}

#[tokio::test]
async fn mandatory_body_fields_are_named_when_missing() {
    let (s, _, tokens, qr) = ready().await;
    for field in [
        "partnerReferenceNo",
        "merchantId",
        "amount",
        "verificationId",
        "additionalInfo",
    ] {
        let got = pay_edited(&s, &tokens, &qr, |b| {
            b.as_object_mut().unwrap().remove(field);
        })
        .await;
        assert_eq!(got, (400, "4005002".into()), "{field}");
    }
    let got = pay_edited(&s, &tokens, &qr, |b| b["additionalInfo"] = json!({})).await;
    assert_eq!(got, (400, "4005002".into()), "reffFlag");
    assert_eq!(s.sim.stats().body_failures, 6);
}

#[tokio::test]
async fn merchant_qr_reference_amount_and_duplicates_are_checked() {
    let (s, _, tokens, qr) = ready().await;
    let merchant = pay_edited(&s, &tokens, &qr, |b| b["merchantId"] = json!("OTHER")).await;
    assert_eq!(merchant, (404, "4045008".into()));
    let reference = pay_edited(&s, &tokens, &qr, |b| {
        b["additionalInfo"]["reffFlag"] = json!("SIMMPM9999999999")
    })
    .await;
    assert_eq!(reference, (404, "4045001".into()));
    let amount = pay_edited(&s, &tokens, &qr, |b| {
        b["amount"]["value"] = json!("4000.00")
    })
    .await;
    assert_eq!(amount, (404, "4045013".into()));
    assert_eq!(
        pay_edited(&s, &tokens, &qr, |_| {}).await,
        (200, "2005000".into())
    );
    let again = pay_edited(&s, &tokens, &qr, |_| {}).await;
    assert_eq!(again, (409, "4095001".into()));
}

#[tokio::test]
async fn malformed_context_headers_are_refused_as_bad_format() {
    let (s, call, _, _) = ready().await;
    for (header, value) in [
        ("X-EXTERNAL-ID", "1".repeat(37)),
        ("X-TIMESTAMP", "2026-11-22T02:15:02Z".to_string()),
        ("X-IP-ADDRESS", "not-an-ip".to_string()),
        ("X-LATITUDE", "north".to_string()),
        ("X-LONGITUDE", "181".to_string()),
    ] {
        let a = s
            .wallet
            .send(&call.clone().with_header(header, &value))
            .await
            .unwrap();
        assert_eq!(
            outcome(&a),
            (400, "4005001".into()),
            "{header}: {:?}",
            a.body
        );
    }
    let channel = call.clone().with_header("CHANNEL-ID", "99999");
    let a = s.wallet.send(&channel).await.unwrap();
    assert_eq!(outcome(&a), (401, "4015000".into()), "{:?}", a.body);
}

#[tokio::test]
async fn the_wallets_query_checks_its_headers_and_service_code() {
    let (s, call, tokens, _) = ready().await;
    let paid = s.wallet.send(&call).await.unwrap();
    assert_eq!(paid.code(), "2005000");
    let body = |code: &str| {
        json!({ "originalReferenceNo": paid.body["referenceNo"], "serviceCode": code,
                "merchantId": "MRT-JKT-DEMO" })
    };
    let path = WalletPaths::default().query;
    let q = s.wallet.transaction_call(&path, &tokens, &body("54"));
    let a = s
        .wallet
        .send(&q.clone().without("Authorization-Customer"))
        .await
        .unwrap();
    assert_eq!(outcome(&a), (400, "4005102".into()), "{:?}", a.body);
    let a = s
        .wallet
        .send(&q.clone().without("X-DEVICE-ID"))
        .await
        .unwrap();
    assert_eq!(outcome(&a), (400, "4005102".into()), "{:?}", a.body);
    let a = s.wallet.send(&q).await.unwrap();
    assert_eq!(a.code(), "2005100", "{:?}", a.body);
    assert_eq!(a.body["latestTransactionStatus"], "00");
    let wrong = s.wallet.transaction_call(&path, &tokens, &body("47"));
    let a = s.wallet.send(&wrong).await.unwrap();
    assert_eq!(outcome(&a), (400, "4005101".into()), "{:?}", a.body);
}

#[tokio::test]
async fn customer_tokens_need_a_linked_customers_auth_code_and_the_partners_signature() {
    let s = setup().await;
    let creds = tapgate_sim::wallet::WalletCredentials {
        auth_code: "never-issued".into(),
        ..tapgate_sim::wallet::WalletCredentials::demo()
    };
    let w = mpm_common::wallet_for(&s.sim, &s.clock, creds);
    let e = w.customer_token().await.unwrap_err().to_string();
    assert!(e.contains("4017400"), "{e}");
    assert!(s.wallet.customer_token().await.is_ok());
    assert_eq!(s.sim.stats().mpm.customer_tokens_issued, 1);
}
