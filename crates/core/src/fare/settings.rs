//! What a station chooses for its fares and gates: the `[tariff]` and `[policy]` settings,
//! as the config file writes them (serde shapes, defaults in code). The core owns these types;
//! the config file composes them, and [`super::tariff`] and [`super::policy`] read them.

use serde::Deserialize;

/// `[tariff]`: how fares are computed. Checked by [`TariffConfig::check`] before use.
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

/// The largest fare, whole rupiah: one QRIS transaction is capped at Rp10,000,000, and a
/// larger number is a typo (an extra zero, or cents where rupiah were meant).
pub const MAX_FARE: u64 = 10_000_000;

/// A tariff the fare rules cannot use: the key under `[tariff]` (`fares[2]`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TariffError {
    /// Key path relative to the `[tariff]` table.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl TariffError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        TariffError {
            key: key.into(),
            message: message.into(),
        }
    }
}

fn fare_ok(fare: u64) -> bool {
    (1..=MAX_FARE).contains(&fare)
}

fn fare_message() -> String {
    format!("fares are whole rupiah, 1..={MAX_FARE}")
}

impl TariffConfig {
    /// Checks what [`super::tariff::Tariff`] relies on, for a gate at `station`: every fare in
    /// 1..=[`MAX_FARE`]; a matrix's station codes 1-16 letters or digits, each listed once,
    /// `station` among them, and one row and one column per station. Returns the first problem.
    pub fn check(&self, station: &str) -> Result<(), TariffError> {
        match self {
            TariffConfig::Flat { fare } if !fare_ok(*fare) => {
                Err(TariffError::new("fare", fare_message()))
            }
            TariffConfig::Flat { .. } => Ok(()),
            TariffConfig::Matrix { stations, fares } => {
                check_stations(stations, station)?;
                check_matrix(stations.len(), fares)
            }
        }
    }
}

/// A matrix's station codes, and that the gate's own station is among them.
fn check_stations(stations: &[String], station: &str) -> Result<(), TariffError> {
    for (i, code) in stations.iter().enumerate() {
        if code.is_empty() || code.len() > 16 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TariffError::new(
                format!("stations[{i}]"),
                "station codes are 1-16 letters or digits",
            ));
        }
        if stations[..i].contains(code) {
            return Err(TariffError::new(
                format!("stations[{i}]"),
                format!("{code:?} is listed twice"),
            ));
        }
    }
    if !stations.iter().any(|s| s == station) {
        return Err(TariffError::new(
            "stations",
            format!("does not list this station ({station})"),
        ));
    }
    Ok(())
}

/// The fares of an `n`-station matrix: square, every fare in range.
fn check_matrix(n: usize, fares: &[Vec<u64>]) -> Result<(), TariffError> {
    let square = format!("must be a {n}x{n} matrix (one row and column per station)");
    if fares.len() != n {
        return Err(TariffError::new("fares", square));
    }
    for (i, row) in fares.iter().enumerate() {
        if row.len() != n {
            return Err(TariffError::new(format!("fares[{i}]"), square));
        }
        if !row.iter().all(|f| fare_ok(*f)) {
            return Err(TariffError::new(format!("fares[{i}]"), fare_message()));
        }
    }
    Ok(())
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

/// `[policy]`: the decision deadline, debounce, anti-passback and what exit gates do when the
/// payment's outcome is unknown or the aggregator cannot be used.
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
    /// `[policy.fast_open]`: open before the aggregator answers, within limits.
    #[serde(default)]
    pub fast_open: FastOpenConfig,
}

/// `[policy.fast_open]`: when the aggregator has not answered within `wait_ms`, open the gate
/// anyway if the passenger owes nothing, the issuer is allowed, the station's unconfirmed
/// exposure stays within `exposure_cap` and the aggregator has been answering. The payment
/// goes on and is reconciled as any other; one that ends unpaid puts the passenger on the
/// unpaid list. Off by default: strict mode waits for the answer.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FastOpenConfig {
    /// Turn fast open on.
    #[serde(default)]
    pub enabled: bool,
    /// How long to wait for the answer before opening without it. Milliseconds.
    #[serde(default = "default_fast_open_wait_ms")]
    pub wait_ms: u64,
    /// The most the station may have opened for without confirmation, whole rupiah.
    #[serde(default = "default_exposure_cap")]
    pub exposure_cap: u64,
    /// The issuers (NNS, 8 digits) whose passengers may be fast-opened; empty: every issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// No answer from the aggregator for this long turns fast open off until it answers
    /// again. Milliseconds.
    #[serde(default = "default_degraded_after_ms")]
    pub degraded_after_ms: u64,
}

impl Default for FastOpenConfig {
    fn default() -> Self {
        FastOpenConfig {
            enabled: false,
            wait_ms: default_fast_open_wait_ms(),
            exposure_cap: default_exposure_cap(),
            issuers: Vec::new(),
            degraded_after_ms: default_degraded_after_ms(),
        }
    }
}

impl FastOpenConfig {
    /// Whether a passenger of issuer `nns` may be fast-opened at all (before the exposure and
    /// the aggregator's health are looked at).
    pub fn covers(&self, nns: &str) -> bool {
        self.enabled && (self.issuers.is_empty() || self.issuers.iter().any(|i| i == nns))
    }
}

fn default_fast_open_wait_ms() -> u64 {
    100
}
fn default_exposure_cap() -> u64 {
    100_000
}
fn default_degraded_after_ms() -> u64 {
    5_000
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
            fast_open: FastOpenConfig::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(stations: &[&str], fares: &[&[u64]]) -> TariffConfig {
        TariffConfig::Matrix {
            stations: stations.iter().map(|s| s.to_string()).collect(),
            fares: fares.iter().map(|r| r.to_vec()).collect(),
        }
    }

    fn refused_at(t: &TariffConfig, station: &str) -> String {
        match t.check(station) {
            Ok(()) => "accepted".into(),
            Err(e) => e.key,
        }
    }

    #[test]
    fn flat_fares_are_whole_rupiah_up_to_the_qris_cap() {
        for ok in [1, 3500, MAX_FARE] {
            assert_eq!(TariffConfig::Flat { fare: ok }.check("BLM"), Ok(()), "{ok}");
        }
        for bad in [0, MAX_FARE + 1] {
            let e = TariffConfig::Flat { fare: bad }
                .check("BLM")
                .expect_err("refused");
            assert_eq!(e.key, "fare");
            assert!(e.message.contains(&MAX_FARE.to_string()), "{}", e.message);
        }
    }

    #[test]
    fn a_matrix_is_square_lists_the_station_once_and_holds_fares_in_range() {
        let ok = matrix(&["A", "B"], &[&[3000, 4000], &[4000, 3000]]);
        assert_eq!(ok.check("A"), Ok(()));
        assert_eq!(refused_at(&ok, "C"), "stations");
        let cases: [(TariffConfig, &str); 6] = [
            (matrix(&["A", "A"], &[&[1, 1], &[1, 1]]), "stations[1]"),
            (matrix(&["A", "B-1"], &[&[1, 1], &[1, 1]]), "stations[1]"),
            (matrix(&["", "A"], &[&[1, 1], &[1, 1]]), "stations[0]"),
            (matrix(&["A", "B"], &[&[1, 1]]), "fares"),
            (matrix(&["A", "B"], &[&[1, 1], &[1]]), "fares[1]"),
            (matrix(&["A", "B"], &[&[0, 1], &[1, 1]]), "fares[0]"),
        ];
        for (t, key) in cases {
            assert_eq!(refused_at(&t, "A"), key, "{t:?}");
        }
    }
}
