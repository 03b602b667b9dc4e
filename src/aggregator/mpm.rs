//! QRIS MPM as the gate's merchant side sees it: `qr-mpm-generate` (a dynamic QR for one
//! fare), `qr-mpm-query` (has it been paid?) and `qr-mpm-refund`, each returning an outcome
//! that says what happened to the money. The same SNAP client, token and merchant identity as
//! the CPM calls; the paths are `[aggregator] mpm_*_path`.
//!
//! | answer | generate | query | refund |
//! |---|---|---|---|
//! | `200xx00` | `Generated` (with `referenceNo` and `qrContent`) | `Status` | `Refunded` |
//! | `4xx` (after one token renewal), connect failure, no token | `Refused` (no QR exists) | `Refused` / `Unavailable` | `Refused` / `Unavailable` |
//! | `5xx`, timeout, lost connection, garbage, a success without a QR | `Unknown` (a QR may exist: query) | `Unavailable` | `Unavailable` |
//!
//! A generated QR that nobody saw cannot be paid, so an `Unknown` generate is harmless: the
//! reconciler's query finds it pending until its validity ends, then failed.

use serde_json::{json, Map, Value};

use super::{message_of, query_outcome, refund_no_for, Aggregator, QueryOutcome, RefundOutcome};
use super::{verified_by_query, RefundStep};
use crate::fare::Rupiah;
use crate::snap::codes::{classify_payment, classify_refund, PaymentClass, RefundClass};
use crate::snap::wire::Amount;
use crate::snap::{Answer, RawOutcome};

/// Longest `qrContent` accepted from generate (an EMV MPM payload is a few hundred
/// characters).
pub const MAX_MPM_QR_CHARS: usize = 512;

/// One QR to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrRequest {
    /// `partnerReferenceNo`, journaled before the call.
    pub partner_reference_no: String,
    /// The fare.
    pub amount: Rupiah,
    /// When the QR stops being payable: `validityPeriod`, ISO 8601 with the station's offset.
    pub valid_until: jiff::Zoned,
    /// `additionalInfo.note`: the station and lane, for the merchant's reports.
    pub note: String,
    /// `additionalInfo.callback_payment`, when the gate names where the aggregator notifies.
    pub callback_url: Option<String>,
}

/// What became of a generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerateOutcome {
    /// A QR exists and may be shown.
    Generated {
        /// The aggregator's `referenceNo` of the QR (the query's and refund's
        /// `originalReferenceNo`).
        reference_no: String,
        /// The EMV MPM payload to draw. Never journaled or logged.
        qr_content: String,
        /// `200xx00`.
        response_code: String,
    },
    /// No QR was made: the aggregator refused, or nothing was sent.
    Refused {
        /// The `responseCode`, when there was one.
        response_code: Option<String>,
        /// What went wrong.
        message: String,
    },
    /// No usable answer: a QR may exist, unseen; the reconciler's query settles it.
    Unknown {
        /// The `responseCode`, when there was one.
        response_code: Option<String>,
        /// What happened.
        reason: String,
    },
}

impl GenerateOutcome {
    /// The `responseCode`, when there was one.
    pub fn code(&self) -> Option<&str> {
        match self {
            GenerateOutcome::Generated { response_code, .. } => Some(response_code),
            GenerateOutcome::Refused { response_code, .. }
            | GenerateOutcome::Unknown { response_code, .. } => response_code.as_deref(),
        }
    }

    /// A one-line explanation for logs (never the QR content).
    pub fn reason(&self) -> String {
        match self {
            GenerateOutcome::Generated { reference_no, .. } => {
                format!("QR generated, referenceNo {reference_no}")
            }
            GenerateOutcome::Refused { message, .. } => format!("refused: {message}"),
            GenerateOutcome::Unknown { reason, .. } => format!("unknown: {reason}"),
        }
    }
}

impl Aggregator {
    fn mpm_merchant(&self, body: &mut Map<String, Value>) {
        body.insert("merchantId".into(), json!(self.merchant.merchant_id));
        if let Some(sub) = &self.merchant.sub_merchant_id {
            body.insert("subMerchantId".into(), json!(sub));
        }
    }

    /// One `qr-mpm-generate`. Call it once per `partnerReferenceNo`, after journaling it.
    pub async fn generate_qr(&self, q: &QrRequest) -> GenerateOutcome {
        let mut body = Map::new();
        body.insert("partnerReferenceNo".into(), json!(q.partner_reference_no));
        body.insert("amount".into(), json!(Amount::idr(q.amount)));
        body.insert("feeAmount".into(), json!(Amount::idr(Rupiah(0))));
        self.mpm_merchant(&mut body);
        body.insert("terminalId".into(), json!(self.merchant.terminal_id));
        body.insert(
            "validityPeriod".into(),
            json!(crate::snap::sign::timestamp(&q.valid_until)),
        );
        let mut info = Map::new();
        info.insert("note".into(), json!(q.note));
        info.insert("qr_type".into(), json!("DYNAMIC"));
        if let Some(url) = &q.callback_url {
            info.insert("callback_payment".into(), json!(url));
        }
        body.insert("additionalInfo".into(), Value::Object(info));
        let raw = self
            .client
            .post(&self.mpm.generate, &Value::Object(body))
            .await;
        let outcome = generate_outcome(raw, &q.partner_reference_no);
        tracing::info!(
            partner_reference_no = q.partner_reference_no,
            amount = q.amount.0,
            code = outcome.code().unwrap_or(""),
            reason = %outcome.reason(),
            "qr generate"
        );
        outcome
    }

    /// Asks whether the QR `partner_reference_no` (aggregator's `reference_no`, when known)
    /// has been paid.
    pub async fn query_qr(
        &self,
        partner_reference_no: &str,
        reference_no: Option<&str>,
    ) -> QueryOutcome {
        let mut body = Map::new();
        body.insert(
            "originalPartnerReferenceNo".into(),
            json!(partner_reference_no),
        );
        if let Some(r) = reference_no {
            body.insert("originalReferenceNo".into(), json!(r));
        }
        body.insert("serviceCode".into(), json!("47"));
        self.mpm_merchant(&mut body);
        let mut info = Map::new();
        self.mpm_merchant(&mut info);
        body.insert("additionalInfo".into(), Value::Object(info));
        let raw = self
            .client
            .post(&self.mpm.query, &Value::Object(body))
            .await;
        let outcome = query_outcome(raw, partner_reference_no);
        tracing::debug!(
            partner_reference_no,
            code = outcome.code().unwrap_or(""),
            reason = %outcome.reason(),
            "qr query"
        );
        outcome
    }

    /// Refunds a paid QR in full. Safe to repeat: the refund's `partnerReferenceNo` is
    /// [`refund_no_for`] the QR's, the same every time.
    pub async fn refund_qr(
        &self,
        partner_reference_no: &str,
        reference_no: &str,
        amount: Rupiah,
        reason: &str,
    ) -> RefundOutcome {
        let refund_no = refund_no_for(partner_reference_no);
        let mut body = Map::new();
        body.insert("partnerReferenceNo".into(), json!(refund_no));
        body.insert(
            "originalPartnerReferenceNo".into(),
            json!(partner_reference_no),
        );
        if !reference_no.is_empty() {
            body.insert("originalReferenceNo".into(), json!(reference_no));
        }
        self.mpm_merchant(&mut body);
        body.insert("amount".into(), json!(Amount::idr(amount)));
        let reason: String = reason
            .chars()
            .take(super::profile::MAX_REASON_CHARS)
            .collect();
        body.insert("reason".into(), json!(reason));
        let raw = self
            .client
            .post(&self.mpm.refund, &Value::Object(body))
            .await;
        let outcome = match mpm_refund_outcome(raw, &refund_no) {
            RefundStep::Done(o) => o,
            RefundStep::VerifyByQuery { response_code } => {
                let r = (!reference_no.is_empty()).then_some(reference_no);
                verified_by_query(response_code, self.query_qr(partner_reference_no, r).await)
            }
        };
        tracing::info!(
            partner_reference_no,
            amount = amount.0,
            code = outcome.code().unwrap_or(""),
            reason = %outcome.reason(),
            "qr refund"
        );
        outcome
    }
}

/// Reads a generate answer. Pure.
pub fn generate_outcome(raw: RawOutcome, partner_reference_no: &str) -> GenerateOutcome {
    let answer: Answer = match raw {
        RawOutcome::Unsent(e) => {
            return GenerateOutcome::Refused {
                response_code: e.response_code().map(str::to_string),
                message: format!("not sent: {e}"),
            }
        }
        RawOutcome::NoAnswer { reason } | RawOutcome::Garbled { reason, .. } => {
            return GenerateOutcome::Unknown {
                response_code: None,
                reason,
            }
        }
        RawOutcome::Answered(a) => a,
    };
    let response_code = answer.code.to_string();
    let message = message_of(&answer.body);
    let unknown = |reason: String| GenerateOutcome::Unknown {
        response_code: Some(response_code.clone()),
        reason,
    };
    match classify_payment(answer.code) {
        PaymentClass::Success => {
            let text = |k: &str| {
                answer
                    .body
                    .get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .filter(|s| !s.is_empty())
            };
            if let Some(echo) = text("partnerReferenceNo") {
                if echo != partner_reference_no {
                    return unknown(format!("success names another partnerReferenceNo ({echo})"));
                }
            }
            let Some(reference_no) = text("referenceNo") else {
                return unknown("success without referenceNo".into());
            };
            let Some(qr_content) = text("qrContent") else {
                return unknown("success without qrContent".into());
            };
            if qr_content.chars().count() > MAX_MPM_QR_CHARS
                || !qr_content.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            {
                return unknown("qrContent is not a QRIS payload".into());
            }
            GenerateOutcome::Generated {
                reference_no,
                qr_content,
                response_code,
            }
        }
        PaymentClass::AlreadyProcessed | PaymentClass::Uncertain => {
            unknown(if message.is_empty() {
                "no verdict in the answer".into()
            } else {
                message
            })
        }
        PaymentClass::Declined
        | PaymentClass::Misconfigured
        | PaymentClass::BadRequest
        | PaymentClass::TokenInvalid
        | PaymentClass::Unauthorized
        | PaymentClass::ExternalIdConflict
        | PaymentClass::Throttled => GenerateOutcome::Refused {
            response_code: Some(response_code),
            message,
        },
    }
}

/// Reads an MPM refund answer: the refund's own reference is `partnerReferenceNo` there.
fn mpm_refund_outcome(raw: RawOutcome, refund_no: &str) -> RefundStep {
    let answer = match raw {
        RawOutcome::Answered(a) => a,
        other => return super::refund_outcome(other, refund_no),
    };
    let response_code = answer.code.to_string();
    RefundStep::Done(match classify_refund(answer.code) {
        RefundClass::Refunded => {
            let echo = answer
                .body
                .get("partnerReferenceNo")
                .and_then(Value::as_str);
            if echo.is_some_and(|e| e != refund_no) {
                RefundOutcome::Unavailable {
                    reason: format!("answer is about another refund ({})", echo.unwrap_or("")),
                }
            } else {
                RefundOutcome::Refunded {
                    refund_no: answer
                        .body
                        .get("referenceNo")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                    response_code,
                }
            }
        }
        _ => return super::refund_outcome(RawOutcome::Answered(answer), refund_no),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snap::codes::ResponseCode;

    fn answered(code: &str, body: Value) -> RawOutcome {
        let mut body = body;
        body["responseCode"] = json!(code);
        RawOutcome::Answered(Answer {
            http_status: code[..3].parse().unwrap_or(0),
            code: ResponseCode::parse(code).expect("code"),
            body,
            external_id: "1".into(),
        })
    }

    #[test]
    fn a_generated_qr_needs_its_reference_and_content_and_our_partner_reference() {
        let ok = json!({"partnerReferenceNo": "TQ1", "referenceNo": "R1", "qrContent": "000201"});
        assert!(matches!(
            generate_outcome(answered("2004700", ok), "TQ1"),
            GenerateOutcome::Generated { ref reference_no, ref qr_content, .. }
                if reference_no == "R1" && qr_content == "000201"
        ));
        for body in [
            json!({"partnerReferenceNo": "TQ2", "referenceNo": "R1", "qrContent": "000201"}),
            json!({"partnerReferenceNo": "TQ1", "qrContent": "000201"}),
            json!({"partnerReferenceNo": "TQ1", "referenceNo": "R1"}),
            json!({"partnerReferenceNo": "TQ1", "referenceNo": "R1", "qrContent": "0002\n01"}),
        ] {
            assert!(
                matches!(
                    generate_outcome(answered("2004700", body.clone()), "TQ1"),
                    GenerateOutcome::Unknown { .. }
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn a_refusal_makes_no_qr_and_a_server_error_may_have() {
        for code in [
            "4004701", "4014700", "4034702", "4044708", "4094700", "4294700",
        ] {
            assert!(
                matches!(
                    generate_outcome(answered(code, json!({})), "TQ1"),
                    GenerateOutcome::Refused { .. }
                ),
                "{code}"
            );
        }
        for code in ["5004700", "5044700", "2024700", "4094701"] {
            assert!(
                matches!(
                    generate_outcome(answered(code, json!({})), "TQ1"),
                    GenerateOutcome::Unknown { .. }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            generate_outcome(
                RawOutcome::NoAnswer {
                    reason: "timeout".into()
                },
                "TQ1"
            ),
            GenerateOutcome::Unknown { .. }
        ));
    }

    #[test]
    fn a_refund_answer_is_read_with_the_refund_reference_in_partner_reference_no() {
        let ok = json!({"partnerReferenceNo": "RTQ1", "referenceNo": "SIMMRF1"});
        assert_eq!(
            mpm_refund_outcome(answered("2007800", ok), "RTQ1"),
            RefundStep::Done(RefundOutcome::Refunded {
                refund_no: Some("SIMMRF1".into()),
                response_code: "2007800".into()
            })
        );
        let other = json!({"partnerReferenceNo": "RTQ9", "referenceNo": "SIMMRF1"});
        assert!(matches!(
            mpm_refund_outcome(answered("2007800", other), "RTQ1"),
            RefundStep::Done(RefundOutcome::Unavailable { .. })
        ));
        assert!(matches!(
            mpm_refund_outcome(answered("4097801", json!({})), "RTQ1"),
            RefundStep::VerifyByQuery { .. }
        ));
    }
}
