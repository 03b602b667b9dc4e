//! The aggregator profile over real HTTP on loopback: what each answer means for the money.

mod snap_common;

use serde_json::json;
use snap_common::*;
use tapgate::aggregator::{
    refund_no_for, Aggregator, PayOutcome, QueryOutcome, RefundOutcome, RefusedWhy, TapInRef,
    TapPayment, TxStatus,
};
use tapgate::fare::{Direction, Rupiah};

const QR: &str = "hQVDUFYwMWEaTwegAAAGAiAgUAdRUklTQ1BNWgqTYACRVVUEMhIfXyAJREFOREkgUC4=";

fn tap_in(reference: &str) -> TapPayment {
    TapPayment {
        partner_reference_no: reference.into(),
        qr_content: QR.into(),
        amount: Rupiah(14000),
        direction: Direction::In,
        station_id: "BLM".into(),
        gate_id: "G03".into(),
        tap_in: None,
    }
}

fn aggregator(server: &Server) -> Aggregator {
    Aggregator::new(server.client(), &server.config())
}

#[tokio::test]
async fn tap_in_holds_the_maximum_fare_with_the_profile_fields() {
    let server = Server::start().await;
    let agg = aggregator(&server);
    let out = agg.pay(&tap_in("BLM03-20261122-000123")).await;
    assert_eq!(
        out,
        PayOutcome::Success {
            reference_no: Some("FPBLM03-20261122-000123".into()),
            response_code: "2006000".into(),
            amount_mismatch: None,
        }
    );
    assert_eq!(out.code(), Some("2006000"));
    let seen = &server.state.seen(PAY_PATH)[0];
    assert_eq!(
        seen.body,
        json!({
            "partnerReferenceNo": "BLM03-20261122-000123",
            "qrContent": QR,
            "amount": {"value": "14000.00", "currency": "IDR"},
            "merchantId": MERCHANT_ID,
            "terminalId": DEVICE_ID,
            "scannerInfo": {"deviceId": DEVICE_ID, "deviceIp": DEVICE_IP,
                            "deviceVersion": env!("CARGO_PKG_VERSION"), "deviceModel": "tapgate"},
            "additionalInfo": {"tapType": "IN", "stationId": "BLM", "gateId": "G03"}
        })
    );
    assert_eq!(server.state.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn tap_out_settles_the_fare_and_names_its_tap_in() {
    let server = Server::start().await;
    let mut cfg = server.config();
    cfg.sub_merchant_id = Some("MRTJ-BLM".into());
    cfg.terminal_id = Some("TERM-BLM-03".into());
    let agg = Aggregator::new(server.client(), &cfg);
    let p = TapPayment {
        partner_reference_no: "BLM03-20261122-000124".into(),
        qr_content: QR.into(),
        amount: Rupiah(7000),
        direction: Direction::Out,
        station_id: "BLM".into(),
        gate_id: "G03".into(),
        tap_in: Some(TapInRef {
            partner_reference_no: "LBB01-20261122-000042".into(),
            reference_no: Some("FPLBB01-20261122-000042".into()),
        }),
    };
    assert!(matches!(agg.pay(&p).await, PayOutcome::Success { .. }));
    let seen = &server.state.seen(PAY_PATH)[0];
    assert_eq!(
        seen.body["amount"],
        json!({"value": "7000.00", "currency": "IDR"})
    );
    assert_eq!(seen.body["subMerchantId"], "MRTJ-BLM");
    assert_eq!(seen.body["terminalId"], "TERM-BLM-03");
    assert_eq!(
        seen.body["additionalInfo"],
        json!({"tapType": "OUT", "stationId": "BLM", "gateId": "G03",
               "tapInPartnerReferenceNo": "LBB01-20261122-000042",
               "tapInReferenceNo": "FPLBB01-20261122-000042"})
    );
}

#[tokio::test]
async fn a_decline_moves_no_money_and_says_why() {
    let server = Server::start().await;
    server.state.script(
        PAY_PATH,
        [Reply::Json(
            403,
            json!({"responseCode": "4036014", "responseMessage": "Insufficient Funds"}),
        )],
    );
    let out = aggregator(&server).pay(&tap_in("P-DECLINE")).await;
    assert_eq!(
        out,
        PayOutcome::Declined {
            response_code: "4036014".into(),
            message: "Insufficient Funds".into()
        }
    );
    assert!(!out.needs_query());
}

#[tokio::test]
async fn anything_after_sending_without_a_verdict_is_unknown_and_never_resent() {
    let cases: Vec<(&str, Reply, Option<&str>)> = vec![
        (
            "5xx",
            Reply::Json(
                500,
                json!({"responseCode": "5006000", "responseMessage": "General Error"}),
            ),
            Some("5006000"),
        ),
        (
            "504",
            Reply::Json(
                504,
                json!({"responseCode": "5046000", "responseMessage": "Timeout"}),
            ),
            Some("5046000"),
        ),
        (
            "202",
            Reply::Json(
                202,
                json!({"responseCode": "2026000", "responseMessage": "Request In Progress"}),
            ),
            Some("2026000"),
        ),
        ("202 empty", Reply::Raw(202, Vec::new()), None),
        (
            "409xx01",
            Reply::Json(
                409,
                json!({"responseCode": "4096001", "responseMessage": "Duplicate partnerReferenceNo"}),
            ),
            Some("4096001"),
        ),
        (
            "garbage",
            Reply::Raw(200, b"{\"responseCode\":\"2006".to_vec()),
            None,
        ),
        ("oversize", Reply::OversizeDeclared(10_000), None),
        ("endless", Reply::EndlessChunked, None),
        ("closed", Reply::CloseAfterRead, None),
    ];
    for (name, reply, want_code) in cases {
        let server = Server::start().await;
        server.state.script(PAY_PATH, [reply]);
        let out = aggregator(&server).pay(&tap_in("P-UNKNOWN")).await;
        assert!(out.needs_query(), "{name}: {out:?}");
        assert_eq!(out.code(), want_code, "{name}");
        assert_eq!(server.state.count(PAY_PATH), 1, "{name}: sent exactly once");
    }
}

#[tokio::test]
async fn a_timeout_is_unknown() {
    let server = Server::start().await;
    let mut cfg = server.config();
    cfg.request_timeout_ms = 1000;
    let agg = Aggregator::new(server.client_with(cfg.clone(), SECRET), &cfg);
    agg.ensure_token().await.unwrap();
    server.state.script(PAY_PATH, [Reply::Hang]);
    match agg.pay(&tap_in("P-SLOW")).await {
        PayOutcome::Unknown {
            response_code: None,
            reason,
        } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.state.count(PAY_PATH), 1);
}

#[tokio::test]
async fn a_connect_failure_is_refused_because_nothing_left_the_gate() {
    // Nothing listens: the TCP connect fails, so no payment byte was sent and no money can
    // have moved. That is a refusal (gate stays shut, passenger may tap again), not Unknown.
    let base = dead_address().await;
    let server = Server::start().await;
    let cfg = config_for(&base);
    let agg = Aggregator::new(server.client_with(cfg.clone(), SECRET), &cfg);
    match agg.pay(&tap_in("P-OFFLINE")).await {
        PayOutcome::Refused {
            response_code: None,
            why: RefusedWhy::Unreachable,
            message,
        } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(RefusedWhy::Unreachable.is_transient());
    assert!(matches!(
        agg.query("P-OFFLINE").await,
        QueryOutcome::Unavailable { .. }
    ));
    assert!(matches!(
        agg.refund("P-OFFLINE", "FP1", Rupiah(14000), "gate did not open")
            .await,
        RefundOutcome::Unavailable { .. }
    ));
}

#[tokio::test]
async fn our_side_refusals_name_their_cause() {
    let cases = [
        (
            Reply::Json(
                400,
                json!({"responseCode": "4006002", "responseMessage": "Invalid Mandatory Field merchantId"}),
            ),
            RefusedWhy::BadRequest,
        ),
        (
            Reply::Json(
                401,
                json!({"responseCode": "4016000", "responseMessage": "Unauthorized. Signature"}),
            ),
            RefusedWhy::Auth,
        ),
        (
            Reply::Json(
                404,
                json!({"responseCode": "4046008", "responseMessage": "Invalid Merchant"}),
            ),
            RefusedWhy::Misconfigured,
        ),
        (
            Reply::Json(
                429,
                json!({"responseCode": "4296000", "responseMessage": "Too Many Requests"}),
            ),
            RefusedWhy::Throttled,
        ),
    ];
    for (reply, want) in cases {
        let server = Server::start().await;
        server.state.script(PAY_PATH, [reply]);
        match aggregator(&server).pay(&tap_in("P-REFUSED")).await {
            PayOutcome::Refused {
                why, response_code, ..
            } => {
                assert_eq!(why, want);
                assert!(response_code.is_some());
            }
            other => panic!("{want:?}: {other:?}"),
        }
        assert_eq!(server.state.count(PAY_PATH), 1);
    }
    // A token rejected twice: renewed once, retried once, then refused as auth.
    let server = Server::start().await;
    let rejected = Reply::Json(401, json!({"responseCode": "4016001"}));
    server.state.script(PAY_PATH, [rejected.clone(), rejected]);
    match aggregator(&server).pay(&tap_in("P-AUTH")).await {
        PayOutcome::Refused {
            why: RefusedWhy::Auth,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(server.state.count(PAY_PATH), 2);
    // The token endpoint is down: the payment is never sent.
    let server = Server::start().await;
    server.state.script(
        TOKEN_PATH,
        [Reply::Json(503, json!({"responseCode": "5037300"}))],
    );
    match aggregator(&server).pay(&tap_in("P-NOTOKEN")).await {
        PayOutcome::Refused {
            why: RefusedWhy::TokenUnavailable,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(server.state.count(PAY_PATH), 0);
}

#[tokio::test]
async fn an_invalid_payment_is_stopped_before_any_traffic() {
    let server = Server::start().await;
    let long = "h".repeat(513);
    let mut p = tap_in("P-LONG");
    p.qr_content = long.clone();
    match aggregator(&server).pay(&p).await {
        PayOutcome::Refused {
            why: RefusedWhy::BadRequest,
            response_code: None,
            message,
        } => {
            assert!(message.contains("qrContent"), "{message}");
            assert!(
                !message.contains("hhhh"),
                "payload text stays out of messages"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.state.count(TOKEN_PATH) + server.state.count(PAY_PATH),
        0
    );
}

#[tokio::test]
async fn query_reads_the_status_under_either_spelling() {
    let server = Server::start().await;
    server.state.script(
        QUERY_PATH,
        [
            Reply::Json(
                200,
                json!({"responseCode": "2006100", "responseMessage": "Successful",
                "originalReferenceNo": "FP777", "originalPartnerReferanceNo": "P-Q",
                "latestTransactionStatus": "00", "transactionStatusDesc": "Success",
                "FeeAmount": {"value": "0.00", "currency": "IDR"}}),
            ),
            Reply::Json(
                200,
                json!({"responseCode": "2006100",
                "originalPartnerReferenceNo": "P-Q", "latestTransactionStatus": "03"}),
            ),
            Reply::Json(
                404,
                json!({"responseCode": "4046101", "responseMessage": "Transaction Not Found"}),
            ),
            Reply::Json(
                500,
                json!({"responseCode": "5006100", "responseMessage": "General Error"}),
            ),
            Reply::Raw(200, b"not json".to_vec()),
            Reply::Json(
                403,
                json!({"responseCode": "4036105", "responseMessage": "Do Not Honor"}),
            ),
        ],
    );
    let agg = aggregator(&server);
    assert_eq!(
        agg.query("P-Q").await,
        QueryOutcome::Status {
            status: TxStatus::Success,
            reference_no: Some("FP777".into()),
            response_code: "2006100".into(),
            amount: None,
        }
    );
    match agg.query("P-Q").await {
        QueryOutcome::Status {
            status,
            reference_no: None,
            ..
        } => {
            assert_eq!(status, TxStatus::Pending);
            assert!(!status.is_final());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        agg.query("P-Q").await,
        QueryOutcome::NotFound {
            response_code: "4046101".into()
        }
    );
    assert!(matches!(
        agg.query("P-Q").await,
        QueryOutcome::Unavailable { .. }
    ));
    assert!(matches!(
        agg.query("P-Q").await,
        QueryOutcome::Unavailable { .. }
    ));
    let refused = agg.query("P-Q").await;
    assert!(
        matches!(refused, QueryOutcome::Refused { .. }),
        "{refused:?}"
    );
    assert_eq!(refused.code(), Some("4036105"));
    for seen in server.state.seen(QUERY_PATH) {
        assert_eq!(
            seen.body,
            json!({"originalPartnerReferenceNo": "P-Q", "merchantId": MERCHANT_ID})
        );
    }
    assert_eq!(server.state.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn refund_is_safe_to_retry_and_reads_inconsistent_as_done() {
    let server = Server::start().await;
    server.state.script(
        REFUND_PATH,
        [
            Reply::Json(
                500,
                json!({"responseCode": "5008000", "responseMessage": "General Error"}),
            ),
            Reply::Hang,
            Reply::Json(
                404,
                json!({"responseCode": "4048018", "responseMessage": "Inconsistent Request"}),
            ),
        ],
    );
    let mut cfg = server.config();
    cfg.request_timeout_ms = 1000;
    let agg = Aggregator::new(server.client_with(cfg.clone(), SECRET), &cfg);
    let refund = || {
        agg.refund(
            "P-LATE",
            "FPP-LATE",
            Rupiah(14000),
            "decision deadline missed",
        )
    };
    assert!(matches!(refund().await, RefundOutcome::Unavailable { .. }));
    assert!(matches!(refund().await, RefundOutcome::Unavailable { .. }));
    let done = refund().await;
    assert_eq!(
        done,
        RefundOutcome::Refunded {
            refund_no: None,
            response_code: "4048018".into()
        }
    );
    let seen = server.state.seen(REFUND_PATH);
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(
            s.body,
            json!({"merchantId": MERCHANT_ID, "originalPartnerReferenceNo": "P-LATE",
                   "originalReferenceNo": "FPP-LATE", "partnerRefundNo": refund_no_for("P-LATE"),
                   "refundAmount": {"value": "14000.00", "currency": "IDR"},
                   "reason": "decision deadline missed"})
        );
    }
    let ids: std::collections::HashSet<&str> =
        seen.iter().map(|s| s.header("x-external-id")).collect();
    assert_eq!(ids.len(), 3, "same refund number, fresh external ids");
}

#[tokio::test]
async fn refund_success_refusal_and_duplicates() {
    let server = Server::start().await;
    let agg = aggregator(&server);
    assert_eq!(
        agg.refund("P-R1", "FP-R1", Rupiah(3000), "gate did not open")
            .await,
        RefundOutcome::Refunded {
            refund_no: Some("FPR-1".into()),
            response_code: "2008000".into()
        }
    );
    server.state.script(
        REFUND_PATH,
        [Reply::Json(
            403,
            json!({"responseCode": "4038015", "responseMessage": "Transaction Not Permitted"}),
        )],
    );
    let refused = agg
        .refund("P-R2", "FP-R2", Rupiah(3000), "gate did not open")
        .await;
    assert!(
        matches!(refused, RefundOutcome::Refused { .. }),
        "{refused:?}"
    );
    assert_eq!(refused.code(), Some("4038015"));

    // Duplicate partnerRefundNo: the payment's status decides.
    let duplicate = Reply::Json(
        409,
        json!({"responseCode": "4098001", "responseMessage": "Duplicate"}),
    );
    server
        .state
        .script(REFUND_PATH, [duplicate.clone(), duplicate]);
    server.state.script(
        QUERY_PATH,
        [
            Reply::Json(
                200,
                json!({"responseCode": "2006100", "latestTransactionStatus": "04"}),
            ),
            Reply::Json(
                200,
                json!({"responseCode": "2006100", "latestTransactionStatus": "00"}),
            ),
        ],
    );
    assert_eq!(
        agg.refund("P-R3", "FP-R3", Rupiah(3000), "gate did not open")
            .await,
        RefundOutcome::Refunded {
            refund_no: None,
            response_code: "4098001".into()
        }
    );
    let not_refunded = agg
        .refund("P-R3", "FP-R3", Rupiah(3000), "gate did not open")
        .await;
    assert!(
        matches!(not_refunded, RefundOutcome::Refused { .. }),
        "{not_refunded:?}"
    );
    assert_eq!(server.state.count(QUERY_PATH), 2);
    assert_eq!(server.state.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn ensure_token_reports_reachability_for_doctor() {
    let server = Server::start().await;
    let agg = aggregator(&server);
    agg.ensure_token().await.unwrap();
    agg.ensure_token().await.unwrap();
    assert_eq!(server.state.count(TOKEN_PATH), 1);
    let base = dead_address().await;
    let cfg = config_for(&base);
    let offline = Aggregator::new(server.client_with(cfg.clone(), SECRET), &cfg);
    let err = offline.ensure_token().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}
