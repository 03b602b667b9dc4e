//! The Finpay QRIS TAP aggregator, as the lane and the reconciler see it: pay, query,
//! refund, each returning an outcome that says what happened to the money.
//!
//! The field choices we inferred live in [`profile`]; the HTTP mechanics in
//! [`crate::snap`]; keeping the connection open and the token fresh between taps in
//! [`warm`]. This module maps answers to outcomes:
//!
//! | answer | payment | query | refund |
//! |---|---|---|---|
//! | `200xx00` | `Success` | `Status` | `Refunded` |
//! | `403xx**`, passenger-side `404xx**` | `Declined` | `Refused` | `Refused` |
//! | `404xx18` | `Declined` | `Refused` | `Refunded` |
//! | `404xx01` | `Declined` | `NotFound` | `Refused` |
//! | `400`, `401` (after one token renewal), merchant `404`, `405`, `409xx00` twice | `Refused` | `Refused` | `Refused` |
//! | `429` | `Refused` (throttled) | `Unavailable` | `Unavailable` |
//! | `409xx01` | `Unknown` (query it) | `Refused` | checked by query |
//! | `202`, `5xx`, `504`, other codes, timeout, lost connection, garbage, oversize | `Unknown` | `Unavailable` | `Unavailable` |
//! | TCP/TLS connect failed, no token | `Refused` (nothing sent) | `Unavailable` | `Unavailable` |
//!
//! A connect failure is not `Unknown`: when the TCP (or TLS) connection cannot be opened, no
//! byte of the payment left the gate, so no money can have moved. Everything after the
//! connection is open — a timeout, a reset, a cut or unreadable answer — may have moved money.

pub mod mpm;
pub mod profile;
pub mod warm;

use serde_json::Value;

pub use crate::flow::outcome::{AmountMismatch, PayOutcome, RefusedWhy};
pub use crate::flow::{TapInRef, TapPayment};
pub use profile::refund_no_for;
use profile::Merchant;
pub use warm::{keep_warm, keep_warm_reference, WarmCall};

use crate::config::AggregatorConfig;
use crate::fare::Rupiah;
use crate::snap::codes::{
    classify_payment, classify_query, classify_refund, PaymentClass, QueryClass, RefundClass,
};
pub use crate::snap::wire::Amount;
use crate::snap::wire::{PaymentResponse, QueryResponse, RefundResponse};
use crate::snap::{Answer, RawOutcome, SnapClient, SnapError};

/// The aggregator: a [`SnapClient`] and the merchant identity. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Aggregator {
    client: SnapClient,
    merchant: Merchant,
    payment_path: String,
    query_path: String,
    refund_path: String,
    mpm: MpmPaths,
}

/// The paths of the QRIS MPM endpoints (`[aggregator] mpm_*_path`).
#[derive(Clone, Debug)]
struct MpmPaths {
    generate: String,
    query: String,
    refund: String,
}

/// Compares the amount an answer reports with the one asked for. No amount in the answer is
/// nothing to compare; a different value, a fraction, or another currency is a mismatch.
pub fn check_amount(asked: Rupiah, reported: Option<&Amount>) -> Option<AmountMismatch> {
    let reported = reported?;
    if reported.rupiah() == Some(asked) {
        return None;
    }
    let shown: String = format!("{} {}", reported.value, reported.currency)
        .chars()
        .filter(|c| !c.is_control())
        .take(40)
        .collect();
    Some(AmountMismatch {
        asked,
        reported: shown,
    })
}

/// `latestTransactionStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxStatus {
    /// `00`.
    Success,
    /// `01`.
    Initiated,
    /// `02`.
    Paying,
    /// `03`.
    Pending,
    /// `04`.
    Refunded,
    /// `05`.
    Cancelled,
    /// `06`.
    Failed,
    /// `07`.
    NotFound,
}

impl TxStatus {
    /// Parses the two-digit wire form.
    pub fn parse(s: &str) -> Option<TxStatus> {
        Some(match s {
            "00" => TxStatus::Success,
            "01" => TxStatus::Initiated,
            "02" => TxStatus::Paying,
            "03" => TxStatus::Pending,
            "04" => TxStatus::Refunded,
            "05" => TxStatus::Cancelled,
            "06" => TxStatus::Failed,
            "07" => TxStatus::NotFound,
            _ => return None,
        })
    }

    /// The two-digit wire form.
    pub fn as_wire(self) -> &'static str {
        match self {
            TxStatus::Success => "00",
            TxStatus::Initiated => "01",
            TxStatus::Paying => "02",
            TxStatus::Pending => "03",
            TxStatus::Refunded => "04",
            TxStatus::Cancelled => "05",
            TxStatus::Failed => "06",
            TxStatus::NotFound => "07",
        }
    }

    /// Terminal statuses (`00`, `04`–`07`); the others are polled again with backoff.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            TxStatus::Initiated | TxStatus::Paying | TxStatus::Pending
        )
    }
}

/// What a query learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryOutcome {
    /// The aggregator knows the payment and says where it is.
    Status {
        /// `latestTransactionStatus`.
        status: TxStatus,
        /// `originalReferenceNo`, when given.
        reference_no: Option<String>,
        /// `200xx00`.
        response_code: String,
        /// `amount`, when given: compare it with the journaled one ([`check_amount`]).
        amount: Option<Amount>,
    },
    /// `404xx01`: the aggregator has no such payment (so none was made).
    NotFound {
        /// The `responseCode`.
        response_code: String,
    },
    /// No usable answer (connect failure, timeout, `5xx`, `429`, garbage): try again later.
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// A definitive refusal (`4xx`: auth, bad request, merchant): asking again will not help;
    /// a person must look at the configuration or the clock.
    Refused {
        /// The `responseCode`, when there was one.
        response_code: Option<String>,
        /// What went wrong.
        message: String,
    },
}

impl QueryOutcome {
    /// The `responseCode`, when there was one.
    pub fn code(&self) -> Option<&str> {
        match self {
            QueryOutcome::Status { response_code, .. }
            | QueryOutcome::NotFound { response_code } => Some(response_code),
            QueryOutcome::Unavailable { .. } => None,
            QueryOutcome::Refused { response_code, .. } => response_code.as_deref(),
        }
    }

    /// A one-line explanation for logs.
    pub fn reason(&self) -> String {
        match self {
            QueryOutcome::Status { status, .. } => format!("status {}", status.as_wire()),
            QueryOutcome::NotFound { .. } => "no such payment".into(),
            QueryOutcome::Unavailable { reason } => format!("unavailable: {reason}"),
            QueryOutcome::Refused { message, .. } => format!("refused: {message}"),
        }
    }
}

/// What became of a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money went back (including `404xx18`, and a `409xx01` whose payment now queries as
    /// refunded).
    Refunded {
        /// The aggregator's `refundNo`, when given.
        refund_no: Option<String>,
        /// The `responseCode`.
        response_code: String,
    },
    /// No usable answer: try again later with the same `partnerRefundNo`.
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// Definitively refused: a person must look.
    Refused {
        /// The `responseCode`, when there was one.
        response_code: Option<String>,
        /// What went wrong.
        message: String,
    },
}

impl RefundOutcome {
    /// The `responseCode`, when there was one.
    pub fn code(&self) -> Option<&str> {
        match self {
            RefundOutcome::Refunded { response_code, .. } => Some(response_code),
            RefundOutcome::Unavailable { .. } => None,
            RefundOutcome::Refused { response_code, .. } => response_code.as_deref(),
        }
    }

    /// A one-line explanation for logs.
    pub fn reason(&self) -> String {
        match self {
            RefundOutcome::Refunded { refund_no, .. } => match refund_no {
                Some(r) => format!("refunded, refundNo {r}"),
                None => "refunded".into(),
            },
            RefundOutcome::Unavailable { reason } => format!("unavailable: {reason}"),
            RefundOutcome::Refused { message, .. } => format!("refused: {message}"),
        }
    }
}

fn message_of(body: &Value) -> String {
    body.get("responseMessage")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The outcome for a call that was never processed (see [`RawOutcome::Unsent`]).
fn refused_unsent(e: &SnapError) -> PayOutcome {
    let why = match e {
        SnapError::Unreachable(_) => RefusedWhy::Unreachable,
        SnapError::TokenUnavailable(_) => RefusedWhy::TokenUnavailable,
        SnapError::TokenRefused { .. } => RefusedWhy::Auth,
        SnapError::Config(_) => RefusedWhy::Misconfigured,
    };
    PayOutcome::Refused {
        response_code: e.response_code().map(str::to_string),
        message: e.to_string(),
        why,
    }
}

impl Aggregator {
    /// The aggregator over `client`, with the merchant identity and paths from `cfg`.
    /// `terminalId` defaults to the client's device id.
    pub fn new(client: SnapClient, cfg: &AggregatorConfig) -> Aggregator {
        let device_id = client.device().device_id.clone();
        Aggregator {
            merchant: Merchant {
                merchant_id: cfg.merchant_id.clone(),
                sub_merchant_id: cfg.sub_merchant_id.clone().filter(|s| !s.is_empty()),
                terminal_id: cfg
                    .terminal_id
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| device_id.clone()),
                device_id,
                device_ip: cfg.device_ip.clone(),
            },
            client,
            payment_path: cfg.payment_path.clone(),
            query_path: cfg.query_path.clone(),
            refund_path: cfg.refund_path.clone(),
            mpm: MpmPaths {
                generate: cfg.mpm_generate_path.clone(),
                query: cfg.mpm_query_path.clone(),
                refund: cfg.mpm_refund_path.clone(),
            },
        }
    }

    /// What the aggregator's payment notifications are checked with ([`crate::qr::notify`]).
    pub fn notify_keys(&self, partner_id: &str) -> crate::qr::NotifyKeys {
        self.client.notify_keys(partner_id)
    }

    /// Gets a token if none is cached: for `doctor`, and for a periodic tick so taps never
    /// wait for one.
    pub async fn ensure_token(&self) -> Result<(), SnapError> {
        self.client.ensure_token().await
    }

    /// Sends one payment. Call it once per `partnerReferenceNo`, after journaling it; an
    /// `Unknown` outcome is resolved by [`Aggregator::query`], never by calling this again.
    ///
    /// The call lasts at most the token fetch plus two attempts (token or external-id
    /// retry), each bounded by `request_timeout_ms`. A lane that gives up earlier (its
    /// decision deadline) and drops this future must treat the payment as `Unknown`.
    pub async fn pay(&self, p: &TapPayment) -> PayOutcome {
        let body = match profile::payment_body(&self.merchant, p) {
            Ok(b) => b,
            Err(e) => {
                return PayOutcome::Refused {
                    response_code: None,
                    message: format!("not sent: {e}"),
                    why: RefusedWhy::BadRequest,
                }
            }
        };
        let raw = self.client.post(&self.payment_path, &body).await;
        let outcome = pay_outcome(raw, &p.partner_reference_no, p.amount);
        tracing::info!(
            partner_reference_no = p.partner_reference_no,
            direction = p.direction.as_str(),
            amount = p.amount.0,
            outcome = outcome.kind(),
            code = outcome.code().unwrap_or(""),
            reason = %outcome.reason(),
            "payment"
        );
        outcome
    }

    /// Asks where the payment `partner_reference_no` stands.
    pub async fn query(&self, partner_reference_no: &str) -> QueryOutcome {
        let body = match profile::query_body(&self.merchant, partner_reference_no) {
            Ok(b) => b,
            Err(e) => {
                return QueryOutcome::Refused {
                    response_code: None,
                    message: format!("not sent: {e}"),
                }
            }
        };
        let raw = self.client.post(&self.query_path, &body).await;
        let outcome = query_outcome(raw, partner_reference_no);
        tracing::info!(
            partner_reference_no,
            code = outcome.code().unwrap_or(""),
            reason = %outcome.reason(),
            "query"
        );
        outcome
    }

    /// Refunds a successful payment in full. Safe to call again after `Unavailable`: the
    /// `partnerRefundNo` is [`refund_no_for`] the payment, the same every time.
    pub async fn refund(
        &self,
        original_partner_reference_no: &str,
        original_reference_no: &str,
        amount: Rupiah,
        reason: &str,
    ) -> RefundOutcome {
        let body = match profile::refund_body(
            &self.merchant,
            original_partner_reference_no,
            original_reference_no,
            amount,
            reason,
        ) {
            Ok(b) => b,
            Err(e) => {
                return RefundOutcome::Refused {
                    response_code: None,
                    message: format!("not sent: {e}"),
                }
            }
        };
        let raw = self.client.post(&self.refund_path, &body).await;
        let outcome = match refund_outcome(raw, &refund_no_for(original_partner_reference_no)) {
            RefundStep::Done(o) => o,
            // A duplicate partnerRefundNo: an earlier attempt may have gone through; the
            // payment's own status tells.
            RefundStep::VerifyByQuery { response_code } => verified_by_query(
                response_code,
                self.query(original_partner_reference_no).await,
            ),
        };
        tracing::info!(
            partner_reference_no = original_partner_reference_no,
            amount = amount.0,
            code = outcome.code().unwrap_or(""),
            reason = %outcome.reason(),
            "refund"
        );
        outcome
    }
}

fn pay_outcome(raw: RawOutcome, partner_reference_no: &str, asked: Rupiah) -> PayOutcome {
    let answer: Answer = match raw {
        RawOutcome::Unsent(e) => return refused_unsent(&e),
        RawOutcome::NoAnswer { reason } | RawOutcome::Garbled { reason, .. } => {
            return PayOutcome::Unknown {
                response_code: None,
                reason,
            }
        }
        RawOutcome::Answered(a) => a,
    };
    let response_code = answer.code.to_string();
    let message = message_of(&answer.body);
    let refused = |why: RefusedWhy| PayOutcome::Refused {
        response_code: Some(response_code.clone()),
        message: message.clone(),
        why,
    };
    match classify_payment(answer.code) {
        PaymentClass::Success => {
            let parsed: PaymentResponse = serde_json::from_value(answer.body).unwrap_or_default();
            if let Some(echo) = parsed.partner_reference_no.as_deref() {
                if echo != partner_reference_no {
                    return PayOutcome::Unknown {
                        response_code: Some(response_code),
                        reason: format!(
                            "success names another partnerReferenceNo ({echo}); query ours"
                        ),
                    };
                }
            }
            PayOutcome::Success {
                amount_mismatch: check_amount(asked, parsed.amount.as_ref()),
                reference_no: parsed.reference_no.filter(|r| !r.is_empty()),
                response_code,
            }
        }
        PaymentClass::Declined => PayOutcome::Declined {
            response_code,
            message,
        },
        PaymentClass::Misconfigured => refused(RefusedWhy::Misconfigured),
        PaymentClass::BadRequest => refused(RefusedWhy::BadRequest),
        PaymentClass::TokenInvalid | PaymentClass::Unauthorized => refused(RefusedWhy::Auth),
        PaymentClass::ExternalIdConflict => refused(RefusedWhy::Conflict),
        PaymentClass::Throttled => refused(RefusedWhy::Throttled),
        PaymentClass::AlreadyProcessed => PayOutcome::Unknown {
            response_code: Some(response_code),
            reason: format!("already processed ({message}); query for the outcome"),
        },
        PaymentClass::Uncertain => PayOutcome::Unknown {
            response_code: Some(response_code),
            reason: if message.is_empty() {
                "no verdict in the answer".into()
            } else {
                message
            },
        },
    }
}

fn query_outcome(raw: RawOutcome, partner_reference_no: &str) -> QueryOutcome {
    let answer = match raw {
        RawOutcome::Unsent(e) if e.is_transient() => {
            return QueryOutcome::Unavailable {
                reason: e.to_string(),
            }
        }
        RawOutcome::Unsent(e) => {
            return QueryOutcome::Refused {
                response_code: e.response_code().map(str::to_string),
                message: e.to_string(),
            }
        }
        RawOutcome::NoAnswer { reason } | RawOutcome::Garbled { reason, .. } => {
            return QueryOutcome::Unavailable { reason }
        }
        RawOutcome::Answered(a) => a,
    };
    let response_code = answer.code.to_string();
    let message = message_of(&answer.body);
    match classify_query(answer.code) {
        QueryClass::Found => {
            let parsed: QueryResponse = serde_json::from_value(answer.body).unwrap_or_default();
            if let Some(echo) = parsed.original_partner_reference_no() {
                if echo != partner_reference_no {
                    return QueryOutcome::Unavailable {
                        reason: format!("answer is about another payment ({echo})"),
                    };
                }
            }
            let Some(raw_status) = parsed.latest_transaction_status.as_deref() else {
                return QueryOutcome::Unavailable {
                    reason: format!("{response_code} without latestTransactionStatus"),
                };
            };
            match TxStatus::parse(raw_status) {
                Some(status) => QueryOutcome::Status {
                    status,
                    reference_no: parsed.original_reference_no.filter(|r| !r.is_empty()),
                    response_code,
                    amount: parsed.amount,
                },
                None => QueryOutcome::Unavailable {
                    reason: format!("unknown latestTransactionStatus {raw_status:?}"),
                },
            }
        }
        QueryClass::NotFound => QueryOutcome::NotFound { response_code },
        QueryClass::Unavailable => QueryOutcome::Unavailable {
            reason: format!("{response_code}: {message}"),
        },
        QueryClass::TokenInvalid | QueryClass::ExternalIdConflict | QueryClass::Refused => {
            QueryOutcome::Refused {
                response_code: Some(response_code),
                message,
            }
        }
    }
}

/// What a refund answered "duplicate refund reference" (`409xx01`) came to, by the payment's
/// own status: refunded when the query says `04`. An earlier attempt may have gone through.
/// Pure.
fn verified_by_query(response_code: String, q: QueryOutcome) -> RefundOutcome {
    match q {
        QueryOutcome::Status {
            status: TxStatus::Refunded,
            ..
        } => RefundOutcome::Refunded {
            refund_no: None,
            response_code,
        },
        QueryOutcome::Unavailable { reason } => RefundOutcome::Unavailable {
            reason: format!("duplicate refund reference, query unavailable: {reason}"),
        },
        other => RefundOutcome::Refused {
            response_code: Some(response_code),
            message: format!(
                "duplicate refund reference, but the payment is not refunded ({})",
                other.reason()
            ),
        },
    }
}

/// A refund answer, or the need to look at the payment to know.
#[derive(Debug, PartialEq, Eq)]
enum RefundStep {
    Done(RefundOutcome),
    VerifyByQuery { response_code: String },
}

fn refund_outcome(raw: RawOutcome, partner_refund_no: &str) -> RefundStep {
    RefundStep::Done(match refund_answer(raw, partner_refund_no) {
        Ok(done) => done,
        Err(response_code) => return RefundStep::VerifyByQuery { response_code },
    })
}

/// `Err(code)` for a duplicate `partnerRefundNo`.
fn refund_answer(raw: RawOutcome, partner_refund_no: &str) -> Result<RefundOutcome, String> {
    let answer = match raw {
        RawOutcome::Unsent(e) if e.is_transient() => {
            return Ok(RefundOutcome::Unavailable {
                reason: e.to_string(),
            })
        }
        RawOutcome::Unsent(e) => {
            return Ok(RefundOutcome::Refused {
                response_code: e.response_code().map(str::to_string),
                message: e.to_string(),
            })
        }
        RawOutcome::NoAnswer { reason } | RawOutcome::Garbled { reason, .. } => {
            return Ok(RefundOutcome::Unavailable { reason })
        }
        RawOutcome::Answered(a) => a,
    };
    let response_code = answer.code.to_string();
    let message = message_of(&answer.body);
    Ok(match classify_refund(answer.code) {
        RefundClass::Refunded => {
            let parsed: RefundResponse = serde_json::from_value(answer.body).unwrap_or_default();
            if let Some(echo) = parsed.partner_refund_no.as_deref() {
                if echo != partner_refund_no {
                    return Ok(RefundOutcome::Unavailable {
                        reason: format!("answer is about another refund ({echo})"),
                    });
                }
            }
            RefundOutcome::Refunded {
                refund_no: parsed.refund_no.filter(|r| !r.is_empty()),
                response_code,
            }
        }
        RefundClass::Unavailable => RefundOutcome::Unavailable {
            reason: format!("{response_code}: {message}"),
        },
        RefundClass::AlreadyProcessed => return Err(response_code),
        RefundClass::TokenInvalid | RefundClass::ExternalIdConflict | RefundClass::Refused => {
            RefundOutcome::Refused {
                response_code: Some(response_code),
                message,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snap::codes::ResponseCode;
    use serde_json::json;

    /// The payment mapping for a payment of Rp9,000.
    fn pay_outcome(raw: RawOutcome, partner_reference_no: &str) -> PayOutcome {
        super::pay_outcome(raw, partner_reference_no, Rupiah(9000))
    }

    fn answered(code: &str, body: Value) -> RawOutcome {
        let mut body = body;
        body["responseCode"] = json!(code);
        RawOutcome::Answered(Answer {
            http_status: code[..3].parse().unwrap(),
            code: ResponseCode::parse(code).unwrap(),
            body,
            external_id: "1".into(),
        })
    }

    #[test]
    fn payment_mapping() {
        let ok = pay_outcome(
            answered(
                "2006000",
                json!({"referenceNo": "FP1", "partnerReferenceNo": "P1"}),
            ),
            "P1",
        );
        assert_eq!(
            ok,
            PayOutcome::Success {
                reference_no: Some("FP1".into()),
                response_code: "2006000".into(),
                amount_mismatch: None,
            }
        );
        // Amounts: the one asked for, or none, is no mismatch; any other is, success still.
        let amount = |v: &str, cur: &str| {
            pay_outcome(
                answered(
                    "2006000",
                    json!({"referenceNo": "FP1", "amount": {"value": v, "currency": cur}}),
                ),
                "P1",
            )
        };
        for (v, cur) in [("9000.00", "IDR"), ("9000", "idr")] {
            assert!(
                matches!(
                    amount(v, cur),
                    PayOutcome::Success {
                        amount_mismatch: None,
                        ..
                    }
                ),
                "{v} {cur}"
            );
        }
        for (v, cur) in [
            ("999999.00", "IDR"),
            ("9000.50", "IDR"),
            ("9000.00", "USD"),
            ("x", "IDR"),
        ] {
            match amount(v, cur) {
                PayOutcome::Success {
                    amount_mismatch: Some(m),
                    reference_no: Some(_),
                    ..
                } => {
                    assert_eq!(m.asked, Rupiah(9000));
                    let shown = m.to_string();
                    assert!(shown.contains("9000.00") && shown.contains(v), "{shown}");
                }
                o => panic!("{v} {cur}: {o:?}"),
            }
        }
        let other = pay_outcome(
            answered(
                "2006000",
                json!({"referenceNo": "FP1", "partnerReferenceNo": "P2"}),
            ),
            "P1",
        );
        assert!(other.needs_query(), "{other:?}");
        let declined = pay_outcome(
            answered("4036014", json!({"responseMessage": "Insufficient Funds"})),
            "P1",
        );
        assert_eq!(declined.kind(), "declined");
        assert_eq!(declined.code(), Some("4036014"));
        assert_eq!(declined.reason(), "declined: Insufficient Funds");
        for (code, why) in [
            ("4006001", RefusedWhy::BadRequest),
            ("4016000", RefusedWhy::Auth),
            ("4016001", RefusedWhy::Auth),
            ("4046008", RefusedWhy::Misconfigured),
            ("4096000", RefusedWhy::Conflict),
            ("4296000", RefusedWhy::Throttled),
        ] {
            match pay_outcome(answered(code, json!({})), "P1") {
                PayOutcome::Refused { why: got, .. } => assert_eq!(got, why, "{code}"),
                o => panic!("{code}: {o:?}"),
            }
        }
        for code in ["2026000", "5006000", "5046000", "4096001", "2006001"] {
            let o = pay_outcome(answered(code, json!({})), "P1");
            assert!(o.needs_query(), "{code}: {o:?}");
            assert_eq!(o.code(), Some(code));
        }
        let unreachable = pay_outcome(RawOutcome::Unsent(SnapError::Unreachable("x".into())), "P1");
        assert!(matches!(
            unreachable,
            PayOutcome::Refused {
                why: RefusedWhy::Unreachable,
                response_code: None,
                ..
            }
        ));
        let lost = pay_outcome(
            RawOutcome::NoAnswer {
                reason: "timed out".into(),
            },
            "P1",
        );
        assert_eq!(
            lost,
            PayOutcome::Unknown {
                response_code: None,
                reason: "timed out".into()
            }
        );
    }

    #[test]
    fn query_mapping() {
        for (wire, status) in [
            ("00", TxStatus::Success),
            ("01", TxStatus::Initiated),
            ("02", TxStatus::Paying),
            ("03", TxStatus::Pending),
            ("04", TxStatus::Refunded),
            ("05", TxStatus::Cancelled),
            ("06", TxStatus::Failed),
            ("07", TxStatus::NotFound),
        ] {
            assert_eq!(TxStatus::parse(wire), Some(status));
            assert_eq!(status.as_wire(), wire);
            let o = query_outcome(
                answered(
                    "2006100",
                    json!({"latestTransactionStatus": wire, "originalReferenceNo": "FP1",
                           "originalPartnerReferanceNo": "P1"}),
                ),
                "P1",
            );
            assert_eq!(
                o,
                QueryOutcome::Status {
                    status,
                    reference_no: Some("FP1".into()),
                    response_code: "2006100".into(),
                    amount: None,
                }
            );
        }
        assert!(!TxStatus::Pending.is_final());
        assert!(TxStatus::Refunded.is_final());
        assert_eq!(TxStatus::parse("08"), None);
        let missing = query_outcome(answered("2006100", json!({})), "P1");
        assert!(
            matches!(missing, QueryOutcome::Unavailable { .. }),
            "{missing:?}"
        );
        let odd = query_outcome(
            answered("2006100", json!({"latestTransactionStatus": "99"})),
            "P1",
        );
        assert!(matches!(odd, QueryOutcome::Unavailable { .. }), "{odd:?}");
        let other = query_outcome(
            answered(
                "2006100",
                json!({"latestTransactionStatus": "00", "originalPartnerReferenceNo": "P2"}),
            ),
            "P1",
        );
        assert!(
            matches!(other, QueryOutcome::Unavailable { .. }),
            "{other:?}"
        );
        assert_eq!(
            query_outcome(answered("4046101", json!({})), "P1"),
            QueryOutcome::NotFound {
                response_code: "4046101".into()
            }
        );
        assert!(matches!(
            query_outcome(answered("5006100", json!({})), "P1"),
            QueryOutcome::Unavailable { .. }
        ));
        assert!(matches!(
            query_outcome(answered("4016100", json!({})), "P1"),
            QueryOutcome::Refused { .. }
        ));
        assert!(matches!(
            query_outcome(RawOutcome::Unsent(SnapError::Unreachable("x".into())), "P1"),
            QueryOutcome::Unavailable { .. }
        ));
        assert!(matches!(
            query_outcome(RawOutcome::Unsent(SnapError::Config("x".into())), "P1"),
            QueryOutcome::Refused { .. }
        ));
    }

    #[test]
    fn refund_mapping() {
        let done = |raw| match refund_outcome(raw, "RP1") {
            RefundStep::Done(o) => o,
            step => panic!("{step:?}"),
        };
        let ok = done(answered(
            "2008000",
            json!({"refundNo": "RF1", "partnerRefundNo": "RP1"}),
        ));
        assert_eq!(
            ok,
            RefundOutcome::Refunded {
                refund_no: Some("RF1".into()),
                response_code: "2008000".into()
            }
        );
        let inconsistent = done(answered("4048018", json!({})));
        assert_eq!(inconsistent.code(), Some("4048018"));
        assert!(matches!(
            inconsistent,
            RefundOutcome::Refunded {
                refund_no: None,
                ..
            }
        ));
        let other = done(answered("2008000", json!({"partnerRefundNo": "RP2"})));
        assert!(matches!(other, RefundOutcome::Unavailable { .. }));
        for code in ["5008000", "2028000", "4298000", "5048000"] {
            assert!(
                matches!(
                    done(answered(code, json!({}))),
                    RefundOutcome::Unavailable { .. }
                ),
                "{code}"
            );
        }
        assert_eq!(
            refund_outcome(answered("4098001", json!({})), "RP1"),
            RefundStep::VerifyByQuery {
                response_code: "4098001".into()
            }
        );
        for code in [
            "4038014", "4008001", "4048001", "4018000", "4018001", "4098000",
        ] {
            assert!(
                matches!(
                    done(answered(code, json!({}))),
                    RefundOutcome::Refused { .. }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            done(RawOutcome::Garbled {
                http_status: 200,
                reason: "x".into()
            }),
            RefundOutcome::Unavailable { .. }
        ));
    }

    #[test]
    fn tap_payment_debug_hides_qr_content() {
        let p = TapPayment {
            partner_reference_no: "P1".into(),
            qr_content: "hQVDUFYwMQSECRET".into(),
            amount: Rupiah(3000),
            direction: crate::fare::Direction::In,
            station_id: "LBB".into(),
            gate_id: "G1".into(),
            tap_in: None,
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("hQVDUFY"), "{shown}");
        assert!(shown.contains("P1"));
    }
}
