//! SNAP JSON bodies as serde types.
//!
//! Requests serialize to the ASPI field names, omitting absent optional fields. Responses are
//! read leniently: unknown fields are ignored, a field of an unexpected type reads as absent
//! instead of failing the whole body, numbers are accepted where strings are specified
//! (`expiresIn` is `"900"` at Finpay and `900` elsewhere), and the aggregator's documented
//! spellings `originalPartnerReferanceNo` and `FeeAmount` are read alongside the correct ones.
//! Which fields a response must carry is decided by the caller, not here.
//!
//! Request types deliberately do not implement `Debug`: the payment request holds the
//! passenger's `qrContent`, which must never reach a log.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::fare::Rupiah;

/// `{"value": "14000.00", "currency": "IDR"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Amount {
    /// Decimal string with two decimals.
    pub value: String,
    /// ISO 4217 code; always `IDR` from tapgate.
    pub currency: String,
}

impl Amount {
    /// An IDR amount in the wire form.
    pub fn idr(amount: Rupiah) -> Amount {
        Amount {
            value: amount.to_wire(),
            currency: "IDR".into(),
        }
    }

    /// The amount in rupiah, when the currency is IDR and the value is whole.
    pub fn rupiah(&self) -> Option<Rupiah> {
        (self.currency.eq_ignore_ascii_case("IDR"))
            .then(|| Rupiah::parse_wire(&self.value))
            .flatten()
    }

    fn from_value(v: &Value) -> Option<Amount> {
        let obj = v.as_object()?;
        let value = obj.get("value").and_then(scalar_string)?;
        let currency = obj
            .get("currency")
            .and_then(scalar_string)
            .unwrap_or_default();
        Some(Amount { value, currency })
    }
}

/// `scannerInfo` of the payment request: the device that read the payload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScannerInfo<'a> {
    /// The reader's device id.
    pub device_id: &'a str,
    /// The gate's IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_ip: Option<&'a str>,
    /// Software version of the scanner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_version: Option<&'a str>,
    /// Device model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_model: Option<&'a str>,
}

/// `qr-cpm-payment` (service 60) request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest<'a> {
    /// Our reference, journaled before sending; ≤ 64 characters.
    pub partner_reference_no: &'a str,
    /// The NFC text exactly as read; ≤ 512 characters. Never logged.
    pub qr_content: &'a str,
    /// The amount to pay or hold.
    pub amount: Amount,
    /// `merchantId`.
    pub merchant_id: &'a str,
    /// `subMerchantId`, when assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_merchant_id: Option<&'a str>,
    /// `terminalId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<&'a str>,
    /// The reading device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner_info: Option<ScannerInfo<'a>>,
    /// Aggregator-specific fields (the aggregator profile decides them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_info: Option<Value>,
}

/// `qr-cpm-query` (service 61) request body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRequest<'a> {
    /// The payment's `partnerReferenceNo`.
    pub original_partner_reference_no: &'a str,
    /// The aggregator's `referenceNo`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_reference_no: Option<&'a str>,
    /// `serviceCode` of the queried transaction, when the aggregator wants it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_code: Option<&'a str>,
    /// `merchantId`.
    pub merchant_id: &'a str,
    /// `subMerchantId`, when assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_merchant_id: Option<&'a str>,
}

/// `qr-cpm-refund` (service 80) request body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest<'a> {
    /// `merchantId`.
    pub merchant_id: &'a str,
    /// `subMerchantId`, when assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_merchant_id: Option<&'a str>,
    /// The payment's `partnerReferenceNo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_partner_reference_no: Option<&'a str>,
    /// The payment's `referenceNo` (from its success answer or a query).
    pub original_reference_no: &'a str,
    /// Our refund reference; the same for every retry of this refund.
    pub partner_refund_no: &'a str,
    /// Amount to refund.
    pub refund_amount: Amount,
    /// Free text for the aggregator's records.
    pub reason: &'a str,
}

/// B2B access-token request body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest<'a> {
    /// Always `client_credentials`.
    pub grant_type: &'a str,
}

/// B2B access-token response.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// `responseCode`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub response_code: Option<String>,
    /// `responseMessage`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub response_message: Option<String>,
    /// The bearer token.
    #[serde(default, deserialize_with = "lenient_string")]
    pub access_token: Option<String>,
    /// `Bearer`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub token_type: Option<String>,
    /// Lifetime in seconds, from a string or a number.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
}

/// `feeAmount`, which the aggregator also spells `FeeAmount`: read under either.
#[derive(Clone, Debug, Default, Deserialize)]
struct FeeSpellings {
    #[serde(default, rename = "feeAmount", deserialize_with = "lenient_amount")]
    lower: Option<Amount>,
    #[serde(default, rename = "FeeAmount", deserialize_with = "lenient_amount")]
    upper: Option<Amount>,
}

impl FeeSpellings {
    fn get(&self) -> Option<&Amount> {
        self.lower.as_ref().or(self.upper.as_ref())
    }
}

/// `originalPartnerReferenceNo`, which the aggregator's docs also misspell
/// `originalPartnerReferanceNo`: read under either.
#[derive(Clone, Debug, Default, Deserialize)]
struct OriginalRefSpellings {
    #[serde(
        default,
        rename = "originalPartnerReferenceNo",
        deserialize_with = "lenient_string"
    )]
    right: Option<String>,
    #[serde(
        default,
        rename = "originalPartnerReferanceNo",
        deserialize_with = "lenient_string"
    )]
    misspelt: Option<String>,
}

impl OriginalRefSpellings {
    fn get(&self) -> Option<&str> {
        self.right.as_deref().or(self.misspelt.as_deref())
    }
}

/// `qr-cpm-payment` response.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResponse {
    /// `responseCode`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub response_code: Option<String>,
    /// `responseMessage`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub response_message: Option<String>,
    /// The aggregator's reference (present on success).
    #[serde(default, deserialize_with = "lenient_string")]
    pub reference_no: Option<String>,
    /// Our reference, echoed.
    #[serde(default, deserialize_with = "lenient_string")]
    pub partner_reference_no: Option<String>,
    /// `transactionDate`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub transaction_date: Option<String>,
    /// `amount`: what the aggregator says was paid or held, when it says.
    #[serde(default, deserialize_with = "lenient_amount")]
    pub amount: Option<Amount>,
    #[serde(flatten)]
    fee: FeeSpellings,
}

impl PaymentResponse {
    /// `feeAmount`, under either of the aggregator's spellings.
    pub fn fee_amount(&self) -> Option<&Amount> {
        self.fee.get()
    }
}

/// `qr-cpm-query` response.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResponse {
    /// `responseCode`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub response_code: Option<String>,
    /// `responseMessage`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub response_message: Option<String>,
    /// The aggregator's reference of the queried payment.
    #[serde(default, deserialize_with = "lenient_string")]
    pub original_reference_no: Option<String>,
    #[serde(flatten)]
    original_partner_ref: OriginalRefSpellings,
    /// `originalExternalId`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub original_external_id: Option<String>,
    /// `latestTransactionStatus`: `00`..`07`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub latest_transaction_status: Option<String>,
    /// `transactionStatusDesc`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub transaction_status_desc: Option<String>,
    /// `paidTime`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub paid_time: Option<String>,
    /// `amount`.
    #[serde(default, deserialize_with = "lenient_amount")]
    pub amount: Option<Amount>,
    #[serde(flatten)]
    fee: FeeSpellings,
}

impl QueryResponse {
    /// `originalPartnerReferenceNo`, under either spelling.
    pub fn original_partner_reference_no(&self) -> Option<&str> {
        self.original_partner_ref.get()
    }

    /// `feeAmount`, under either spelling.
    pub fn fee_amount(&self) -> Option<&Amount> {
        self.fee.get()
    }
}

/// `qr-cpm-refund` response.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundResponse {
    /// `responseCode`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub response_code: Option<String>,
    /// `responseMessage`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub response_message: Option<String>,
    /// The aggregator's refund reference.
    #[serde(default, deserialize_with = "lenient_string")]
    pub refund_no: Option<String>,
    /// Our refund reference, echoed.
    #[serde(default, deserialize_with = "lenient_string")]
    pub partner_refund_no: Option<String>,
    /// `originalReferenceNo`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub original_reference_no: Option<String>,
    #[serde(flatten)]
    original_partner_ref: OriginalRefSpellings,
    /// `refundAmount`.
    #[serde(default, deserialize_with = "lenient_amount")]
    pub refund_amount: Option<Amount>,
    /// `refundTime`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub refund_time: Option<String>,
}

impl RefundResponse {
    /// `originalPartnerReferenceNo`, under either spelling.
    pub fn original_partner_reference_no(&self) -> Option<&str> {
        self.original_partner_ref.get()
    }
}

/// A string, or a number written as text; anything else reads as absent.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .as_ref()
        .and_then(scalar_string))
}

fn lenient_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Amount>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .as_ref()
        .and_then(Amount::from_value))
}

/// Whole seconds from `"900"`, `900` or `900.0`; anything else (negative, fractional, text)
/// reads as absent.
fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payment_request_is_minified_camel_case_without_absent_fields() {
        let req = PaymentRequest {
            partner_reference_no: "P1",
            qr_content: "hQVDUFYwMQ==",
            amount: Amount::idr(Rupiah(14000)),
            merchant_id: "M1",
            sub_merchant_id: None,
            terminal_id: Some("T1"),
            scanner_info: Some(ScannerInfo {
                device_id: "D1",
                device_ip: None,
                device_version: None,
                device_model: None,
            }),
            additional_info: Some(json!({"tapType": "IN"})),
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"partnerReferenceNo":"P1","qrContent":"hQVDUFYwMQ==","amount":{"value":"14000.00","currency":"IDR"},"merchantId":"M1","terminalId":"T1","scannerInfo":{"deviceId":"D1"},"additionalInfo":{"tapType":"IN"}}"#
        );
    }

    #[test]
    fn refund_and_query_requests() {
        let q = QueryRequest {
            original_partner_reference_no: "P1",
            original_reference_no: None,
            service_code: None,
            merchant_id: "M1",
            sub_merchant_id: None,
        };
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            json!({"originalPartnerReferenceNo": "P1", "merchantId": "M1"})
        );
        let r = RefundRequest {
            merchant_id: "M1",
            sub_merchant_id: Some("S1"),
            original_partner_reference_no: Some("P1"),
            original_reference_no: "R1",
            partner_refund_no: "RF1",
            refund_amount: Amount::idr(Rupiah(3000)),
            reason: "gate did not open",
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"merchantId": "M1", "subMerchantId": "S1", "originalPartnerReferenceNo": "P1",
                   "originalReferenceNo": "R1", "partnerRefundNo": "RF1",
                   "refundAmount": {"value": "3000.00", "currency": "IDR"},
                   "reason": "gate did not open"})
        );
    }

    #[test]
    fn expires_in_as_string_or_number() {
        for (body, want) in [
            (json!({"expiresIn": "900"}), Some(900)),
            (json!({"expiresIn": 900}), Some(900)),
            (json!({"expiresIn": 900.0}), Some(900)),
            (json!({"expiresIn": " 900 "}), Some(900)),
            (json!({"expiresIn": "15 minutes"}), None),
            (json!({"expiresIn": -5}), None),
            (json!({"expiresIn": 1.5}), None),
            (json!({"expiresIn": null}), None),
            (json!({"expiresIn": {"s": 1}}), None),
            (json!({}), None),
        ] {
            let t: TokenResponse = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(t.expires_in, want, "{body}");
        }
    }

    #[test]
    fn token_response_reads_the_fields() {
        let t: TokenResponse = serde_json::from_str(
            r#"{"responseCode":"2007300","responseMessage":"Successful","accessToken":"abc","tokenType":"Bearer","expiresIn":"900","additionalInfo":{}}"#,
        )
        .unwrap();
        assert_eq!(t.response_code.as_deref(), Some("2007300"));
        assert_eq!(t.access_token.as_deref(), Some("abc"));
        assert_eq!(t.token_type.as_deref(), Some("Bearer"));
    }

    #[test]
    fn misspellings_and_casing_are_tolerated() {
        let q: QueryResponse = serde_json::from_value(json!({
            "responseCode": "2006100",
            "originalPartnerReferanceNo": "P1",
            "latestTransactionStatus": "00",
            "FeeAmount": {"value": "0.00", "currency": "IDR"},
            "somethingNew": [1, 2, 3]
        }))
        .unwrap();
        assert_eq!(q.original_partner_reference_no(), Some("P1"));
        assert_eq!(q.fee_amount().and_then(Amount::rupiah), Some(Rupiah(0)));
        // Both spellings at once is not an error; the correct one wins.
        let q: QueryResponse = serde_json::from_value(json!({
            "originalPartnerReferenceNo": "RIGHT",
            "originalPartnerReferanceNo": "WRONG",
            "feeAmount": {"value": "1.00", "currency": "IDR"},
            "FeeAmount": {"value": "2.00", "currency": "IDR"}
        }))
        .unwrap();
        assert_eq!(q.original_partner_reference_no(), Some("RIGHT"));
        assert_eq!(q.fee_amount().map(|a| a.value.as_str()), Some("1.00"));
        let p: PaymentResponse =
            serde_json::from_value(json!({"FeeAmount": {"value": "500.00", "currency": "IDR"}}))
                .unwrap();
        assert_eq!(p.fee_amount().and_then(Amount::rupiah), Some(Rupiah(500)));
        let r: RefundResponse =
            serde_json::from_value(json!({"originalPartnerReferanceNo": "P9", "refundNo": 77}))
                .unwrap();
        assert_eq!(r.original_partner_reference_no(), Some("P9"));
        assert_eq!(r.refund_no.as_deref(), Some("77"));
    }

    #[test]
    fn wrong_types_read_as_absent_instead_of_failing() {
        let p: PaymentResponse = serde_json::from_value(json!({
            "responseCode": 2006000,
            "referenceNo": {"nested": true},
            "partnerReferenceNo": ["x"],
            "transactionDate": false,
            "feeAmount": "100"
        }))
        .unwrap();
        assert_eq!(p.response_code.as_deref(), Some("2006000"));
        assert_eq!(p.reference_no, None);
        assert_eq!(p.partner_reference_no, None);
        assert_eq!(p.transaction_date, None);
        assert_eq!(p.fee_amount(), None);
        // A scalar is still an error. (serde also reads arrays as structs by position, so
        // callers check for a JSON object first; the client does.)
        assert!(serde_json::from_value::<PaymentResponse>(json!("x")).is_err());
    }

    #[test]
    fn amount_conversion() {
        let a = Amount {
            value: "14000.00".into(),
            currency: "idr".into(),
        };
        assert_eq!(a.rupiah(), Some(Rupiah(14000)));
        let a = Amount {
            value: "14000.50".into(),
            currency: "IDR".into(),
        };
        assert_eq!(a.rupiah(), None);
        let a = Amount {
            value: "14000.00".into(),
            currency: "USD".into(),
        };
        assert_eq!(a.rupiah(), None);
    }
}
