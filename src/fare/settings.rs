//! What a station chooses for its fares and gates: the `[tariff]` and `[policy]` settings,
//! as the config file writes them (serde shapes, defaults in code). The core owns these types;
//! the config file composes them, and [`super::tariff`] and [`super::policy`] read them.

use serde::Deserialize;

/// `[tariff]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum TariffConfig {
    /// One fare for every trip (bus rapid transit).
    Flat {
        /// The fare, whole rupiah.
        fare: u64,
    },
    /// Station-to-station matrix: `fares[i][j]` is the fare from `stations[i]` to `stations[j]`.
    Matrix {
        /// Station codes in matrix order; must include this station's id.
        stations: Vec<String>,
        /// Square matrix of whole-rupiah fares; the diagonal is the same-station exit fare.
        fares: Vec<Vec<u64>>,
    },
}

/// What to do with a tap-in while the passenger already has an open journey.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AntiPassback {
    /// Refuse the tap-in; staff resolve it.
    #[default]
    Refuse,
    /// Close the old journey at the maximum fare (its hold stands), then accept the tap-in.
    CloseAtMaxFare,
}

/// What an exit gate does when the payment's outcome is unknown at the deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownAtExit {
    /// Let the passenger out; the reconciler settles the money later.
    #[default]
    Open,
    /// Keep the gate shut; the passenger taps again.
    KeepClosed,
}

/// What an exit gate does when the aggregator cannot be used at all: no connection, TLS
/// failure, no token (token endpoint down, refused or slow), or the payment refused on our
/// side (`401`, `429`, merchant or request refused). No money moved in any of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreachableAtExit {
    /// Let the passenger out unpaid: the exit is journaled as unpaid with its reason and
    /// counted in `tapgate_exits_unpaid_total`.
    #[default]
    Open,
    /// Keep the gate shut; the passenger must find staff.
    KeepClosed,
}

/// What the reconciler does with a tap-in that never saw a tap-out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleJourney {
    /// Close it at the maximum fare (the hold is kept).
    #[default]
    MaxFare,
    /// Close it as RELEASED without a refund call: the hold is left to the aggregator's
    /// expiry (the journal never refunds an operation whose gate opened).
    Release,
}

/// `[policy]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// How long the gate waits for the aggregator before telling the passenger to try again;
    /// a success arriving later is refunded (tap-in). Milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub decision_deadline_ms: u64,
    /// The same passenger at the same lane within this window is the same tap. Milliseconds.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Tap-in while a journey is open.
    #[serde(default)]
    pub anti_passback: AntiPassback,
    /// Exit gate behaviour when the outcome is unknown at the deadline.
    #[serde(default)]
    pub unknown_at_exit: UnknownAtExit,
    /// Exit gate behaviour when the aggregator cannot be used (no money moved).
    #[serde(default)]
    pub unreachable_at_exit: UnreachableAtExit,
    /// A journey open longer than this is stale. Minutes.
    #[serde(default = "default_max_trip_minutes")]
    pub max_trip_minutes: u64,
    /// What happens to a stale journey.
    #[serde(default)]
    pub stale_journey: StaleJourney,
    /// A paid open with no passage reported within this window is logged ("nobody passed").
    /// Milliseconds; only meaningful with a passage input.
    #[serde(default = "default_passage_window_ms")]
    pub passage_window_ms: u64,
}

fn default_passage_window_ms() -> u64 {
    8000
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            decision_deadline_ms: default_deadline_ms(),
            debounce_ms: default_debounce_ms(),
            anti_passback: AntiPassback::default(),
            unknown_at_exit: UnknownAtExit::default(),
            unreachable_at_exit: UnreachableAtExit::default(),
            max_trip_minutes: default_max_trip_minutes(),
            stale_journey: StaleJourney::default(),
            passage_window_ms: default_passage_window_ms(),
        }
    }
}

fn default_deadline_ms() -> u64 {
    1500
}
fn default_debounce_ms() -> u64 {
    3000
}
fn default_max_trip_minutes() -> u64 {
    240
}
