//! Amounts, fare operation states, tariff and lane policy, and the station's tariff and policy
//! settings they read: pure code, no I/O.

use std::fmt;

pub mod fast_open;
pub mod policy;
pub mod settings;
pub mod tariff;

pub use settings::{
    AntiPassback, FastOpenConfig, PolicyConfig, StaleJourney, TariffConfig, TariffError,
    UnknownAtExit, UnreachableAtExit, MAX_FARE,
};

/// An amount in whole Indonesian rupiah. IDR has no minor unit in practice; the wire carries
/// it as a string with two zero decimals (`"14000.00"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rupiah(pub u64);

impl Rupiah {
    /// The SNAP wire form: `"14000.00"`.
    pub fn to_wire(self) -> String {
        format!("{}.00", self.0)
    }

    /// Parses the SNAP wire form. Accepts `"14000"`, `"14000.0"` and `"14000.00"`; rejects a
    /// non-zero fraction (IDR has none), signs, blanks and anything else.
    pub fn parse_wire(s: &str) -> Option<Rupiah> {
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        if whole.is_empty() || whole.len() > 15 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if frac.len() > 2 || !frac.bytes().all(|b| b == b'0') {
            return None;
        }
        whole.parse().ok().map(Rupiah)
    }
}

impl fmt::Display for Rupiah {
    /// `Rp14,000`, as printed on gates and receipts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        write!(f, "Rp{out}")
    }
}

/// Which way a lane lets passengers through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Entry: the payment holds the maximum fare.
    In,
    /// Exit: the payment settles the real fare.
    Out,
}

impl Direction {
    /// `"in"` or `"out"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// The state of one fare operation (one `qr-cpm-payment` call and what follows it).
///
/// ```text
/// PENDING ──success──> SUCCEEDED ──(gate not opened)──> REFUND_PENDING ──> REFUNDED
///    ├──definite decline──> DECLINED
///    └──timeout / 5xx / 202 / lost reply──> UNKNOWN ──query──> SUCCEEDED | DECLINED
/// any non-terminal state, too many attempts or too old ──> ATTENTION
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpState {
    /// Journaled, request not yet answered. Found at startup: the process died mid-call.
    Pending,
    /// Money may have moved: resolved by query, never by re-sending.
    Unknown,
    /// The aggregator confirmed the payment.
    Succeeded,
    /// Definitely not paid: declined, failed or not found.
    Declined,
    /// Paid but the gate did not open: a refund is owed.
    RefundPending,
    /// The refund is confirmed.
    Refunded,
    /// A person must look: reason in the journal, logs and metrics.
    Attention,
}

impl OpState {
    /// Every state, in the order of the lifecycle.
    pub const ALL: [OpState; 7] = [
        OpState::Pending,
        OpState::Unknown,
        OpState::Succeeded,
        OpState::Declined,
        OpState::RefundPending,
        OpState::Refunded,
        OpState::Attention,
    ];

    /// The journal's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "PENDING",
            OpState::Unknown => "UNKNOWN",
            OpState::Succeeded => "SUCCEEDED",
            OpState::Declined => "DECLINED",
            OpState::RefundPending => "REFUND_PENDING",
            OpState::Refunded => "REFUNDED",
            OpState::Attention => "ATTENTION",
        }
    }

    /// Parses the journal's spelling.
    pub fn parse(s: &str) -> Option<OpState> {
        Some(match s {
            "PENDING" => OpState::Pending,
            "UNKNOWN" => OpState::Unknown,
            "SUCCEEDED" => OpState::Succeeded,
            "DECLINED" => OpState::Declined,
            "REFUND_PENDING" => OpState::RefundPending,
            "REFUNDED" => OpState::Refunded,
            "ATTENTION" => OpState::Attention,
            _ => return None,
        })
    }

    /// Whether the reconciler has nothing more to do for an operation in this state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OpState::Succeeded | OpState::Declined | OpState::Refunded | OpState::Attention
        )
    }
}

impl fmt::Display for OpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rupiah_wire_round_trip() {
        assert_eq!(Rupiah(14000).to_wire(), "14000.00");
        assert_eq!(Rupiah::parse_wire("14000.00"), Some(Rupiah(14000)));
        assert_eq!(Rupiah::parse_wire("3500"), Some(Rupiah(3500)));
        for bad in [
            "",
            ".00",
            "14000.50",
            "-1.00",
            "1e3",
            "14000.000",
            " 1",
            "1,000.00",
        ] {
            assert_eq!(Rupiah::parse_wire(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rupiah_display_groups_thousands() {
        assert_eq!(Rupiah(0).to_string(), "Rp0");
        assert_eq!(Rupiah(999).to_string(), "Rp999");
        assert_eq!(Rupiah(3000).to_string(), "Rp3,000");
        assert_eq!(Rupiah(1234567).to_string(), "Rp1,234,567");
    }

    #[test]
    fn op_state_spelling_round_trips() {
        for s in OpState::ALL {
            assert_eq!(OpState::parse(s.as_str()), Some(s));
        }
    }
}
