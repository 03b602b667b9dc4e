//! The Finpay QRIS TAP field choices (docs/protocol.md §4): the ONE place holding what we inferred
//! about the request bodies. Pure: builds JSON values, sends nothing.
//!
//! When the aggregator publishes its final field list, this file is what changes:
//!
//! - tap-in and tap-out are both `qr-cpm-payment`; `additionalInfo.tapType` is `IN` or `OUT`,
//!   with `stationId` and `gateId`; a tap-out adds `tapInPartnerReferenceNo` and
//!   `tapInReferenceNo` when the journal knows them;
//! - `terminalId` is the configured one, else the gate controller's device id;
//! - `scannerInfo` names the device, its IP, tapgate's version and model `tapgate`;
//! - the query sends `originalPartnerReferenceNo` + `merchantId` (+ `subMerchantId`);
//! - the refund sends `merchantId`, `originalReferenceNo`, `originalPartnerReferenceNo`,
//!   `partnerRefundNo`, `refundAmount` and `reason`;
//! - `partnerRefundNo` is derived from the payment reference ([`refund_no_for`]).

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::TapPayment;
use crate::fare::{Direction, Rupiah};
use crate::snap::wire::{Amount, PaymentRequest, QueryRequest, RefundRequest, ScannerInfo};

/// Longest `partnerReferenceNo` / `partnerRefundNo` SNAP accepts.
pub const MAX_REFERENCE_CHARS: usize = 64;
/// Longest `qrContent` SNAP accepts.
pub const MAX_QR_CONTENT_CHARS: usize = 512;
/// Longest refund `reason` sent; longer reasons are cut (it is free text).
pub const MAX_REASON_CHARS: usize = 256;

/// The merchant-side identity that goes into every body.
#[derive(Clone, Debug)]
pub struct Merchant {
    /// `merchantId`.
    pub merchant_id: String,
    /// `subMerchantId`, when assigned.
    pub sub_merchant_id: Option<String>,
    /// `terminalId`.
    pub terminal_id: String,
    /// `scannerInfo.deviceId`.
    pub device_id: String,
    /// `scannerInfo.deviceIp`.
    pub device_ip: String,
}

/// Why a request was not built: tapgate's own bug, caught before anything is sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn check_len(what: &str, s: &str, max: usize) -> Result<(), InvalidRequest> {
    let n = s.chars().count();
    if n == 0 || n > max {
        return Err(InvalidRequest(format!(
            "{what} must be 1 to {max} characters, got {n}"
        )));
    }
    Ok(())
}

/// `partnerRefundNo` for the refund of the payment `partner_reference_no`: deterministic,
/// so a retried refund carries the same number and cannot refund twice; at most 64
/// characters; never equal to a payment reference in form (`R` prefix).
pub fn refund_no_for(partner_reference_no: &str) -> String {
    if partner_reference_no.chars().count() < MAX_REFERENCE_CHARS {
        return format!("R{partner_reference_no}");
    }
    let digest = hex::encode(Sha256::digest(partner_reference_no.as_bytes()));
    format!("R{}", &digest[..MAX_REFERENCE_CHARS - 1])
}

/// The `additionalInfo` that marks tap-in and tap-out.
pub fn tap_additional_info(p: &TapPayment) -> Value {
    let mut info = Map::new();
    let tap_type = match p.direction {
        Direction::In => "IN",
        Direction::Out => "OUT",
    };
    info.insert("tapType".into(), json!(tap_type));
    info.insert("stationId".into(), json!(p.station_id));
    info.insert("gateId".into(), json!(p.gate_id));
    if let (Direction::Out, Some(tap_in)) = (p.direction, &p.tap_in) {
        info.insert(
            "tapInPartnerReferenceNo".into(),
            json!(tap_in.partner_reference_no),
        );
        if let Some(r) = &tap_in.reference_no {
            info.insert("tapInReferenceNo".into(), json!(r));
        }
    }
    Value::Object(info)
}

/// The `qr-cpm-payment` body, after checking what SNAP bounds.
pub fn payment_body(m: &Merchant, p: &TapPayment) -> Result<Value, InvalidRequest> {
    check_len(
        "partnerReferenceNo",
        &p.partner_reference_no,
        MAX_REFERENCE_CHARS,
    )?;
    check_len("qrContent", &p.qr_content, MAX_QR_CONTENT_CHARS)?;
    if p.amount == Rupiah(0) {
        return Err(InvalidRequest(
            "amount is zero: a free passage needs no payment".into(),
        ));
    }
    if let Some(t) = &p.tap_in {
        check_len(
            "tap-in partnerReferenceNo",
            &t.partner_reference_no,
            MAX_REFERENCE_CHARS,
        )?;
    }
    let req = PaymentRequest {
        partner_reference_no: &p.partner_reference_no,
        qr_content: &p.qr_content,
        amount: Amount::idr(p.amount),
        merchant_id: &m.merchant_id,
        sub_merchant_id: m.sub_merchant_id.as_deref(),
        terminal_id: Some(&m.terminal_id),
        scanner_info: Some(ScannerInfo {
            device_id: &m.device_id,
            device_ip: Some(&m.device_ip),
            device_version: Some(env!("CARGO_PKG_VERSION")),
            device_model: Some("tapgate"),
        }),
        additional_info: Some(tap_additional_info(p)),
    };
    serde_json::to_value(&req).map_err(|e| InvalidRequest(format!("payment body: {e}")))
}

/// The `qr-cpm-query` body.
pub fn query_body(m: &Merchant, partner_reference_no: &str) -> Result<Value, InvalidRequest> {
    check_len(
        "originalPartnerReferenceNo",
        partner_reference_no,
        MAX_REFERENCE_CHARS,
    )?;
    let req = QueryRequest {
        original_partner_reference_no: partner_reference_no,
        original_reference_no: None,
        service_code: None,
        merchant_id: &m.merchant_id,
        sub_merchant_id: m.sub_merchant_id.as_deref(),
    };
    serde_json::to_value(&req).map_err(|e| InvalidRequest(format!("query body: {e}")))
}

/// The `qr-cpm-refund` body for a full refund of one payment.
pub fn refund_body(
    m: &Merchant,
    original_partner_reference_no: &str,
    original_reference_no: &str,
    amount: Rupiah,
    reason: &str,
) -> Result<Value, InvalidRequest> {
    check_len(
        "originalPartnerReferenceNo",
        original_partner_reference_no,
        MAX_REFERENCE_CHARS,
    )?;
    check_len(
        "originalReferenceNo",
        original_reference_no,
        MAX_REFERENCE_CHARS,
    )?;
    if amount == Rupiah(0) {
        return Err(InvalidRequest("refund amount is zero".into()));
    }
    let reason: String = if reason.trim().is_empty() {
        "fare gate did not open".into()
    } else {
        reason.chars().take(MAX_REASON_CHARS).collect()
    };
    let refund_no = refund_no_for(original_partner_reference_no);
    let req = RefundRequest {
        merchant_id: &m.merchant_id,
        sub_merchant_id: m.sub_merchant_id.as_deref(),
        original_partner_reference_no: Some(original_partner_reference_no),
        original_reference_no,
        partner_refund_no: &refund_no,
        refund_amount: Amount::idr(amount),
        reason: &reason,
    };
    serde_json::to_value(&req).map_err(|e| InvalidRequest(format!("refund body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::TapInRef;
    use super::*;

    fn merchant(sub: Option<&str>) -> Merchant {
        Merchant {
            merchant_id: "FP-MRTJ-0001".into(),
            sub_merchant_id: sub.map(str::to_string),
            terminal_id: "BLM-G03".into(),
            device_id: "BLM-G03".into(),
            device_ip: "10.20.3.13".into(),
        }
    }

    fn tap(direction: Direction, tap_in: Option<TapInRef>) -> TapPayment {
        TapPayment {
            partner_reference_no: "BLM03-20261122-000123".into(),
            qr_content: "hQVDUFYwMWEaTwegAAAGAiAgUAdRUklTQ1BN".into(),
            amount: Rupiah(14000),
            direction,
            station_id: "BLM".into(),
            gate_id: "G03".into(),
            tap_in,
        }
    }

    #[test]
    fn tap_in_body() {
        let body = payment_body(&merchant(None), &tap(Direction::In, None)).unwrap();
        assert_eq!(
            body,
            json!({
                "partnerReferenceNo": "BLM03-20261122-000123",
                "qrContent": "hQVDUFYwMWEaTwegAAAGAiAgUAdRUklTQ1BN",
                "amount": {"value": "14000.00", "currency": "IDR"},
                "merchantId": "FP-MRTJ-0001",
                "terminalId": "BLM-G03",
                "scannerInfo": {"deviceId": "BLM-G03", "deviceIp": "10.20.3.13",
                                "deviceVersion": env!("CARGO_PKG_VERSION"), "deviceModel": "tapgate"},
                "additionalInfo": {"tapType": "IN", "stationId": "BLM", "gateId": "G03"}
            })
        );
    }

    #[test]
    fn tap_out_body_references_the_tap_in() {
        let with_ref = tap(
            Direction::Out,
            Some(TapInRef {
                partner_reference_no: "LBB01-20261122-000042".into(),
                reference_no: Some("FP20261122000042".into()),
            }),
        );
        let body = payment_body(&merchant(Some("SUB-7")), &with_ref).unwrap();
        assert_eq!(body["subMerchantId"], "SUB-7");
        assert_eq!(
            body["additionalInfo"],
            json!({"tapType": "OUT", "stationId": "BLM", "gateId": "G03",
                   "tapInPartnerReferenceNo": "LBB01-20261122-000042",
                   "tapInReferenceNo": "FP20261122000042"})
        );
        let without_aggregator_ref = tap(
            Direction::Out,
            Some(TapInRef {
                partner_reference_no: "LBB01-20261122-000042".into(),
                reference_no: None,
            }),
        );
        let body = payment_body(&merchant(None), &without_aggregator_ref).unwrap();
        assert_eq!(
            body["additionalInfo"],
            json!({"tapType": "OUT", "stationId": "BLM", "gateId": "G03",
                   "tapInPartnerReferenceNo": "LBB01-20261122-000042"})
        );
        let unknown_entry = payment_body(&merchant(None), &tap(Direction::Out, None)).unwrap();
        assert_eq!(
            unknown_entry["additionalInfo"],
            json!({"tapType": "OUT", "stationId": "BLM", "gateId": "G03"})
        );
        // A tap-in never carries tap-in references, even if handed some.
        let odd = tap(
            Direction::In,
            Some(TapInRef {
                partner_reference_no: "X".into(),
                reference_no: None,
            }),
        );
        let body = payment_body(&merchant(None), &odd).unwrap();
        assert!(body["additionalInfo"]
            .get("tapInPartnerReferenceNo")
            .is_none());
    }

    #[test]
    fn payment_bounds_are_checked_before_sending() {
        let m = merchant(None);
        let long_ref = "P".repeat(65);
        let mut p = tap(Direction::In, None);
        p.partner_reference_no = long_ref.clone();
        assert!(payment_body(&m, &p).is_err());
        let mut p = tap(Direction::In, None);
        p.partner_reference_no = String::new();
        assert!(payment_body(&m, &p).is_err());
        let long_qr = "h".repeat(513);
        let mut p = tap(Direction::In, None);
        p.qr_content = long_qr.clone();
        assert!(payment_body(&m, &p).is_err());
        let max_qr = "h".repeat(512);
        p.qr_content = max_qr.clone();
        assert!(payment_body(&m, &p).is_ok());
        let mut p = tap(Direction::In, None);
        p.amount = Rupiah(0);
        let err = payment_body(&m, &p).unwrap_err();
        assert!(err.0.contains("zero"), "{err}");
    }

    #[test]
    fn query_and_refund_bodies() {
        let m = merchant(None);
        assert_eq!(
            query_body(&m, "BLM03-20261122-000123").unwrap(),
            json!({"originalPartnerReferenceNo": "BLM03-20261122-000123",
                   "merchantId": "FP-MRTJ-0001"})
        );
        assert!(query_body(&m, "").is_err());
        assert_eq!(
            refund_body(
                &m,
                "BLM03-20261122-000123",
                "FP1",
                Rupiah(14000),
                "deadline missed"
            )
            .unwrap(),
            json!({"merchantId": "FP-MRTJ-0001",
                   "originalPartnerReferenceNo": "BLM03-20261122-000123",
                   "originalReferenceNo": "FP1",
                   "partnerRefundNo": "RBLM03-20261122-000123",
                   "refundAmount": {"value": "14000.00", "currency": "IDR"},
                   "reason": "deadline missed"})
        );
        let long_reason = "x".repeat(300);
        let body = refund_body(&m, "P1", "FP1", Rupiah(1), &long_reason).unwrap();
        assert_eq!(
            body["reason"].as_str().map(str::len),
            Some(MAX_REASON_CHARS)
        );
        let body = refund_body(&m, "P1", "FP1", Rupiah(1), "  ").unwrap();
        assert_eq!(body["reason"], "fare gate did not open");
        assert!(refund_body(&m, "P1", "", Rupiah(1), "r").is_err());
        assert!(refund_body(&m, "P1", "FP1", Rupiah(0), "r").is_err());
    }

    #[test]
    fn refund_numbers_are_deterministic_bounded_and_distinct() {
        assert_eq!(refund_no_for("P1"), "RP1");
        assert_eq!(refund_no_for("P1"), refund_no_for("P1"));
        assert_ne!(refund_no_for("P1"), refund_no_for("P2"));
        let r63 = "a".repeat(63);
        assert_eq!(refund_no_for(&r63), format!("R{r63}"));
        assert_eq!(refund_no_for(&r63).len(), 64);
        let a = "a".repeat(64);
        let b = format!("{}b", "a".repeat(63));
        assert_eq!(refund_no_for(&a).len(), 64);
        assert_eq!(refund_no_for(&a), refund_no_for(&a));
        assert_ne!(refund_no_for(&a), refund_no_for(&b));
        assert!(refund_no_for(&"é".repeat(100)).chars().count() <= 64);
    }
}
