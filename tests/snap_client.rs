//! SnapClient over real HTTP on loopback, against the strict server in `snap_common`.

mod snap_common;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use snap_common::*;
use tapgate::snap::{RawOutcome, SnapError};

fn code(o: &RawOutcome) -> String {
    match o {
        RawOutcome::Answered(a) => a.code.to_string(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn body() -> serde_json::Value {
    json!({"partnerReferenceNo": "BLM03-20261122-000123", "qrContent": "hQVDUFYwMWEa",
           "amount": {"value": "14000.00", "currency": "IDR"}, "merchantId": MERCHANT_ID})
}

#[tokio::test]
async fn signed_call_carries_every_header_and_the_signed_bytes() {
    let server = Server::start().await;
    let client = server.client();
    let out = client.post(PAY_PATH, &body()).await;
    assert_eq!(code(&out), "2006000");
    assert_eq!(server.state.violations(), Vec::<String>::new());

    let token_req = &server.state.seen(TOKEN_PATH)[0];
    assert_eq!(token_req.header("x-client-key"), CLIENT_ID);
    assert_eq!(token_req.header("x-timestamp"), "2026-11-22T09:15:02+07:00");
    assert_eq!(
        token_req.raw_body,
        br#"{"grantType":"client_credentials"}"#.to_vec()
    );

    let pay = &server.state.seen(PAY_PATH)[0];
    assert_eq!(pay.header("x-timestamp"), "2026-11-22T09:15:02+07:00");
    assert!(pay.header("authorization").starts_with("Bearer tok-1-"));
    assert_eq!(pay.header("x-partner-id"), PARTNER_ID);
    assert_eq!(pay.header("channel-id"), CHANNEL_ID);
    assert_eq!(pay.header("origin"), "https://gate-origin.example");
    assert_eq!(pay.header("x-ip-address"), DEVICE_IP);
    assert_eq!(pay.header("x-device-id"), DEVICE_ID);
    assert_eq!(pay.header("x-latitude"), "-6.244167");
    assert_eq!(pay.header("x-longitude"), "106.800833");
    assert_eq!(pay.header("content-type"), "application/json");
    let ext = pay.header("x-external-id");
    assert!(
        ext.len() == 32 && ext.bytes().all(|b| b.is_ascii_digit()),
        "{ext}"
    );
    // Minified, and the very bytes that were signed (the server checked the HMAC over them).
    assert_eq!(pay.raw_body, serde_json::to_vec(&body()).unwrap());
}

#[tokio::test]
async fn the_strict_server_rejects_a_wrong_secret() {
    // Control for the test above: the HMAC check really runs.
    let server = Server::start().await;
    let client = server.client_with(server.config(), "not-the-secret");
    let out = client.post(PAY_PATH, &body()).await;
    assert_eq!(code(&out), "4010000");
    let v = server.state.violations();
    assert!(v.iter().any(|m| m.contains("x-signature")), "{v:?}");
}

#[tokio::test]
async fn the_strict_server_rejects_a_wrong_client_id() {
    // Control for the RSA check: a signature over another client id does not verify.
    let server = Server::start().await;
    let mut cfg = server.config();
    cfg.client_id = "SOMEONE-ELSE".into();
    let client = server.client_with(cfg, SECRET);
    let err = client.ensure_token().await.unwrap_err();
    assert_eq!(err.response_code(), Some("4017300"));
    assert!(matches!(err, SnapError::TokenRefused { .. }), "{err:?}");
    assert!(!err.is_transient());
    let v = server.state.violations();
    assert!(v.iter().any(|m| m.contains("does not verify")), "{v:?}");
}

#[tokio::test]
async fn origin_defaults_to_the_base_url_origin() {
    let server = Server::start().await;
    server.state.expect_origin(&server.base_url());
    let mut cfg = server.config();
    cfg.origin = None;
    let out = server
        .client_with(cfg, SECRET)
        .post(PAY_PATH, &body())
        .await;
    assert_eq!(code(&out), "2006000");
    assert_eq!(server.state.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn external_ids_are_fresh_for_every_attempt_and_connections_are_pooled() {
    let server = Server::start().await;
    let client = server.client();
    for _ in 0..10 {
        assert_eq!(
            code(&client.post(QUERY_PATH, &json!({"x": 1})).await),
            "4046101"
        );
    }
    // A second client (a restarted daemon) never repeats the first one's ids.
    let again = server.client();
    for _ in 0..3 {
        assert_eq!(
            code(&again.post(QUERY_PATH, &json!({"x": 1})).await),
            "4046101"
        );
    }
    assert_eq!(server.state.violations(), Vec::<String>::new());
    let ids: HashSet<String> = server
        .state
        .seen(QUERY_PATH)
        .iter()
        .map(|s| s.header("x-external-id").to_string())
        .collect();
    assert_eq!(ids.len(), 13);
    assert_eq!(server.state.count(TOKEN_PATH), 2, "one token per client");
    assert_eq!(
        server.state.connections(),
        2,
        "one kept-alive connection per client"
    );
}

#[tokio::test]
async fn concurrent_calls_share_one_token_request() {
    let server = Server::start().await;
    server.state.set_token_delay(Duration::from_millis(200));
    let client = server.client();
    let calls = (0..8).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.post(PAY_PATH, &body()).await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(code(&call.await.unwrap()), "2006000");
    }
    assert_eq!(server.state.count(TOKEN_PATH), 1);
    assert_eq!(server.state.count(PAY_PATH), 8);
    assert_eq!(server.state.violations(), Vec::<String>::new());
}

async fn refresh_schedule(expires_in: serde_json::Value) {
    let server = Server::start().await;
    server.state.set_expires_in(expires_in);
    let client = server.client();
    let clock = &server.state.clock;
    client.ensure_token().await.unwrap();
    assert_eq!(server.state.count(TOKEN_PATH), 1);

    // 900 s token, refreshed from 60 s before expiry.
    clock.advance_ms(830_000);
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "2006000");
    assert_eq!(server.state.count(TOKEN_PATH), 1, "not yet due");

    clock.advance_ms(20_000); // 850 s: due, still valid: used while a refresh runs
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "2006000");
    client.ensure_token().await.unwrap(); // waits for the background refresh
    assert_eq!(server.state.count(TOKEN_PATH), 2);

    clock.advance_ms(100_000); // 950 s: the first token has expired
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "2006000");
    let tokens: Vec<String> = server
        .state
        .seen(PAY_PATH)
        .iter()
        .map(|s| s.header("authorization").to_string())
        .collect();
    assert!(tokens[0].starts_with("Bearer tok-1-") && tokens[1].starts_with("Bearer tok-1-"));
    assert!(tokens[2].starts_with("Bearer tok-2-"), "{tokens:?}");
    assert_eq!(server.state.count(TOKEN_PATH), 2);
    assert_eq!(server.state.count(PAY_PATH), 3, "no 401 round trips");
    assert_eq!(server.state.expired_token_uses(), 0);
    assert_eq!(server.state.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn token_refreshed_ahead_of_expiry_with_expires_in_as_string() {
    refresh_schedule(json!("900")).await;
}

#[tokio::test]
async fn token_refreshed_ahead_of_expiry_with_expires_in_as_number() {
    refresh_schedule(json!(900)).await;
}

#[tokio::test]
async fn a_short_lived_token_is_replaced_before_use_once_expired() {
    let server = Server::start().await;
    server.state.set_expires_in(json!("120"));
    let client = server.client();
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "2006000");
    server.state.clock.advance_ms(121_000);
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "2006000");
    assert_eq!(server.state.count(TOKEN_PATH), 2);
    assert_eq!(server.state.count(PAY_PATH), 2);
    assert_eq!(server.state.expired_token_uses(), 0);
}

#[tokio::test]
async fn a_rejected_token_is_renewed_and_the_call_retried_once() {
    let server = Server::start().await;
    server.state.script(
        PAY_PATH,
        [Reply::Json(
            401,
            json!({"responseCode": "4016001", "responseMessage": "Invalid Token (B2B)"}),
        )],
    );
    let client = server.client();
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "2006000");
    let pays = server.state.seen(PAY_PATH);
    assert_eq!(pays.len(), 2);
    assert_eq!(server.state.count(TOKEN_PATH), 2);
    assert!(pays[1].header("authorization").starts_with("Bearer tok-2-"));
    assert_ne!(
        pays[0].header("x-external-id"),
        pays[1].header("x-external-id")
    );
    assert_eq!(
        pays[0].raw_body, pays[1].raw_body,
        "the same bytes, re-signed"
    );
    assert_eq!(server.state.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_token_rejected_twice_is_given_up_after_one_retry() {
    let server = Server::start().await;
    let rejected = Reply::Json(401, json!({"responseCode": "4016003"}));
    server
        .state
        .script(PAY_PATH, [rejected.clone(), rejected.clone(), rejected]);
    let client = server.client();
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "4016003");
    assert_eq!(server.state.count(PAY_PATH), 2);
    assert_eq!(server.state.count(TOKEN_PATH), 2);
}

#[tokio::test]
async fn a_reused_external_id_answer_is_retried_once_with_a_new_id() {
    let server = Server::start().await;
    let conflict = Reply::Json(
        409,
        json!({"responseCode": "4096000", "responseMessage": "Conflict"}),
    );
    server.state.script(PAY_PATH, [conflict.clone()]);
    let client = server.client();
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "2006000");
    server.state.script(PAY_PATH, [conflict.clone(), conflict]);
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "4096000");
    assert_eq!(server.state.count(PAY_PATH), 4);
    assert_eq!(server.state.count(TOKEN_PATH), 1);
    assert_eq!(server.state.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn token_endpoint_failures_say_what_to_do() {
    let server = Server::start().await;
    server.state.script(
        TOKEN_PATH,
        [
            Reply::Json(
                500,
                json!({"responseCode": "5007300", "responseMessage": "General Error"}),
            ),
            Reply::Raw(200, b"<html>maintenance</html>".to_vec()),
            Reply::Json(
                200,
                json!({"responseCode": "2007300", "tokenType": "Bearer"}),
            ),
            Reply::Json(
                400,
                json!({"responseCode": "4007301", "responseMessage": "Invalid Field Format"}),
            ),
        ],
    );
    let client = server.client();
    for _ in 0..3 {
        let err = client.ensure_token().await.unwrap_err();
        assert!(
            matches!(err, SnapError::TokenUnavailable(_)) && err.is_transient(),
            "{err:?}"
        );
    }
    match client.post(PAY_PATH, &body()).await {
        RawOutcome::Unsent(SnapError::TokenRefused { response_code, .. }) => {
            assert_eq!(response_code.as_deref(), Some("4007301"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.state.count(PAY_PATH),
        0,
        "no payment without a token"
    );
    // The script is used up: the next attempt gets a token.
    client.ensure_token().await.unwrap();
}

#[tokio::test]
async fn an_unparseable_expires_in_falls_back_to_a_short_lifetime() {
    let server = Server::start().await;
    server.state.set_expires_in(json!("fifteen minutes"));
    let client = server.client();
    client.ensure_token().await.unwrap();
    server.state.clock.advance_ms(200_000);
    client.ensure_token().await.unwrap();
    assert_eq!(server.state.count(TOKEN_PATH), 1);
    server.state.clock.advance_ms(100_000); // 300 s: past the assumed lifetime
    client.ensure_token().await.unwrap();
    assert_eq!(server.state.count(TOKEN_PATH), 2);
}

#[tokio::test]
async fn a_refused_connection_means_nothing_was_sent() {
    let base = dead_address().await;
    let server = Server::start().await;
    let client = server.client_with(config_for(&base), SECRET);
    match client.ensure_token().await {
        Err(SnapError::Unreachable(_)) => {}
        other => panic!("{other:?}"),
    }
    match client.post(PAY_PATH, &body()).await {
        RawOutcome::Unsent(e @ SnapError::Unreachable(_)) => assert!(e.is_transient()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn silence_past_the_timeout_is_no_answer() {
    let server = Server::start().await;
    let mut cfg = server.config();
    cfg.request_timeout_ms = 1000;
    let client = server.client_with(cfg, SECRET);
    client.ensure_token().await.unwrap();
    server.state.script(PAY_PATH, [Reply::Hang]);
    match client.post(PAY_PATH, &body()).await {
        RawOutcome::NoAnswer { reason } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.state.count(PAY_PATH), 1);
}

#[tokio::test]
async fn a_connection_closed_after_the_request_is_no_answer() {
    let server = Server::start().await;
    server.state.script(PAY_PATH, [Reply::CloseAfterRead]);
    let client = server.client();
    match client.post(PAY_PATH, &body()).await {
        RawOutcome::NoAnswer { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(server.state.count(PAY_PATH), 1, "never re-sent");
}

#[tokio::test]
async fn bodies_past_the_bound_are_garbled_declared_or_streamed() {
    let server = Server::start().await;
    server.state.script(
        PAY_PATH,
        [
            Reply::OversizeDeclared(5000),
            Reply::EndlessChunked,
            Reply::OversizeDeclared(4096),
        ],
    );
    let client = server.client();
    for _ in 0..2 {
        match client.post(PAY_PATH, &body()).await {
            RawOutcome::Garbled { reason, .. } => {
                assert!(reason.contains("larger than 4096"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Exactly at the bound is fine.
    assert_eq!(code(&client.post(PAY_PATH, &body()).await), "2006000");
}

#[tokio::test]
async fn garbage_answers_are_garbled() {
    let server = Server::start().await;
    server.state.script(
        PAY_PATH,
        [
            Reply::Raw(200, b"<html>502 Bad Gateway</html>".to_vec()),
            Reply::Raw(202, Vec::new()),
            Reply::Json(200, json!({"responseMessage": "no code"})),
            Reply::Json(200, json!({"responseCode": "20060"})),
            Reply::Json(500, json!({"responseCode": "2006000"})),
        ],
    );
    let client = server.client();
    for _ in 0..5 {
        match client.post(PAY_PATH, &body()).await {
            RawOutcome::Garbled { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.state.count(PAY_PATH), 5);
}

#[tokio::test]
async fn construction_rejects_config_that_cannot_work() {
    let server = Server::start().await;
    let make = |cfg, device| {
        tapgate::snap::SnapClient::new(
            &cfg,
            SECRET.into(),
            tapgate::snap::sign::RsaSigner::from_pem(DOC_KEY).unwrap(),
            device,
            std::sync::Arc::new(server.state.clock.clone()),
        )
    };
    let mut with_path = server.config();
    with_path.base_url = format!("{}/snap", server.base_url());
    let mut bad_path = server.config();
    bad_path.payment_path = "v1.0/qr/qr-cpm-payment".into();
    let mut ftp = server.config();
    ftp.base_url = "ftp://example.com".into();
    let mut bad_header = server.config();
    bad_header.partner_id = "line\nbreak".into();
    let mut nowhere = device();
    nowhere.latitude = 123.0;
    for (cfg, dev) in [
        (with_path, device()),
        (bad_path, device()),
        (ftp, device()),
        (bad_header, device()),
        (server.config(), nowhere),
    ] {
        match make(cfg, dev) {
            Err(SnapError::Config(msg)) => assert!(!msg.is_empty()),
            other => panic!("{other:?}"),
        }
    }
    assert!(make(server.config(), device()).is_ok());
}
