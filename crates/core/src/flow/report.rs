//! What one tap did: the report `tapgate tap` prints and every tap logs once.

use serde::Serialize;

use crate::fare::policy::TapOutcome;
use crate::fare::Direction;

/// Time spent in each stage of a tap, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    /// APDU exchange with the phone.
    pub read_us: u64,
    /// Payload decoding and policy.
    pub decode_us: u64,
    /// The line's lookup (0 without a line).
    pub line_us: u64,
    /// Journal write before the payment (durable).
    pub journal_us: u64,
    /// The aggregator call, up to the decision.
    pub aggregator_us: u64,
    /// The relay command.
    pub relay_us: u64,
    /// Journal write after the decision.
    pub settle_us: u64,
    /// From the decoded payload to the gate's decision (open or not), before the relay.
    pub decision_us: u64,
    /// From the decoded payload to the decision.
    pub total_us: u64,
}

/// What happened to one tap: printed by `tapgate tap`, logged once per tap.
#[derive(Clone, Debug, Serialize)]
pub struct TapReport {
    /// Lane name.
    pub lane: String,
    /// `in` or `out`.
    pub direction: Direction,
    /// Whether the gate was opened.
    pub opened: bool,
    /// What the passenger experienced.
    pub outcome: TapOutcome,
    /// The payment's reference, when one was made.
    #[serde(rename = "partnerReferenceNo", skip_serializing_if = "Option::is_none")]
    pub partner_reference_no: Option<String>,
    /// The aggregator's reference, on success.
    #[serde(rename = "referenceNo", skip_serializing_if = "Option::is_none")]
    pub reference_no: Option<String>,
    /// Amount held or settled, whole rupiah.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// How a tap-out fare was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fare_rule: Option<&'static str>,
    /// Issuer id (first 8 PAN digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nns: Option<String>,
    /// Issuer name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<&'static str>,
    /// First 8 and last 4 PAN digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pan_masked: Option<String>,
    /// The aggregator's responseCode, when one came.
    #[serde(rename = "responseCode", skip_serializing_if = "Option::is_none")]
    pub response_code: Option<String>,
    /// Human explanation for the technician.
    pub message: String,
    /// The gate opened before the aggregator answered (`[policy.fast_open]`): the payment
    /// goes on after the passenger has passed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fast_open: bool,
    /// Stage timings.
    pub timings: Timings,
}

impl TapReport {
    /// A tap that ended before any money moved: gate shut, nothing but the reason.
    pub fn refused(
        lane: &str,
        direction: Direction,
        outcome: TapOutcome,
        message: impl Into<String>,
    ) -> TapReport {
        TapReport {
            lane: lane.to_string(),
            direction,
            opened: false,
            outcome,
            partner_reference_no: None,
            reference_no: None,
            amount: None,
            fare_rule: None,
            nns: None,
            issuer: None,
            pan_masked: None,
            response_code: None,
            message: message.into(),
            fast_open: false,
            timings: Timings::default(),
        }
    }
}
