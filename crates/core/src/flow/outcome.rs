//! What became of a payment, as the aggregator port reports it: the classes the flow decides
//! on. The mapping from SNAP answers to these lives with the aggregator client.

use std::fmt;

use crate::fare::Rupiah;

/// Why a payment was refused on our side. In every case no money moved and the gate stays
/// shut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedWhy {
    /// The TCP/TLS connection to the aggregator could not be opened: nothing was sent.
    Unreachable,
    /// The token endpoint gave no usable answer (timeout, `5xx`, garbage): the payment was
    /// never sent.
    TokenUnavailable,
    /// Token refused, or `401` (still, after one renewal): client id, key, secret or clock.
    Auth,
    /// `400xx**`, or a request tapgate itself found invalid before sending: our bug.
    BadRequest,
    /// Merchant, partner, terminal or routing unknown (`404xx02/05/08/16/17`), `405`, or an
    /// unusable client configuration.
    Misconfigured,
    /// `409xx00` twice: `X-EXTERNAL-ID` reported as reused even with a fresh one.
    Conflict,
    /// `429`: the aggregator asks us to slow down.
    Throttled,
}

impl RefusedWhy {
    /// Whether the same tap may work in a moment without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            RefusedWhy::Unreachable | RefusedWhy::TokenUnavailable | RefusedWhy::Throttled
        )
    }

    /// Short name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedWhy::Unreachable => "unreachable",
            RefusedWhy::TokenUnavailable => "token_unavailable",
            RefusedWhy::Auth => "auth",
            RefusedWhy::BadRequest => "bad_request",
            RefusedWhy::Misconfigured => "misconfigured",
            RefusedWhy::Conflict => "conflict",
            RefusedWhy::Throttled => "throttled",
        }
    }
}

/// What became of a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid (tap-out) or held (tap-in). Journal `reference_no`: refunds need it. It is
    /// `None` only when the aggregator left it out; a query supplies it.
    Success {
        /// The aggregator's `referenceNo`.
        reference_no: Option<String>,
        /// `200xx00`.
        response_code: String,
        /// The answer named another amount than the one asked for: still a success (the
        /// protocol's verdict stands), but a person must look.
        amount_mismatch: Option<AmountMismatch>,
    },
    /// The issuer or aggregator said no on the passenger's side: no money moved.
    Declined {
        /// The `responseCode`.
        response_code: String,
        /// The aggregator's `responseMessage`.
        message: String,
    },
    /// Refused on our side (see [`RefusedWhy`]): no money moved; alert; the gate stays shut.
    Refused {
        /// The `responseCode`, when the aggregator answered (none for connect failures and
        /// requests stopped before sending).
        response_code: Option<String>,
        /// What went wrong, for the technician.
        message: String,
        /// The cause.
        why: RefusedWhy,
    },
    /// Money MAY have moved: resolve by query (never by re-sending the payment).
    Unknown {
        /// The `responseCode`, when an answer carried one (`202xx00`, `5xx`, `409xx01`...).
        response_code: Option<String>,
        /// What happened.
        reason: String,
    },
}

impl PayOutcome {
    /// The `responseCode`, when there was one.
    pub fn code(&self) -> Option<&str> {
        match self {
            PayOutcome::Success { response_code, .. }
            | PayOutcome::Declined { response_code, .. } => Some(response_code),
            PayOutcome::Refused { response_code, .. }
            | PayOutcome::Unknown { response_code, .. } => response_code.as_deref(),
        }
    }

    /// A one-line explanation for logs.
    pub fn reason(&self) -> String {
        match self {
            PayOutcome::Success { reference_no, .. } => match reference_no {
                Some(r) => format!("paid, referenceNo {r}"),
                None => "paid, no referenceNo given".into(),
            },
            PayOutcome::Declined { message, .. } => format!("declined: {message}"),
            PayOutcome::Refused { message, why, .. } => {
                format!("refused ({}): {message}", why.as_str())
            }
            PayOutcome::Unknown { reason, .. } => format!("outcome unknown: {reason}"),
        }
    }

    /// Short name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            PayOutcome::Success { .. } => "success",
            PayOutcome::Declined { .. } => "declined",
            PayOutcome::Refused { .. } => "refused",
            PayOutcome::Unknown { .. } => "unknown",
        }
    }

    /// Whether money may have moved and a query must settle it.
    pub fn needs_query(&self) -> bool {
        matches!(self, PayOutcome::Unknown { .. })
    }
}

/// An answer that names another amount than the payment's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmountMismatch {
    /// What tapgate asked for (and journaled).
    pub asked: Rupiah,
    /// What the aggregator reported, as on the wire (`value currency`).
    pub reported: String,
}

impl fmt::Display for AmountMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "amount mismatch: asked {} ({}), the aggregator reported {}",
            self.asked,
            self.asked.to_wire(),
            self.reported
        )
    }
}
