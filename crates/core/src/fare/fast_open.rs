//! Fast open's station-wide limits: the unconfirmed exposure under its cap, and the
//! aggregator's health. Pure state, shared by the lanes of one station behind a lock; the
//! clock comes with each call.

use std::collections::HashMap;
use std::fmt;

use super::settings::FastOpenConfig;
use super::Rupiah;

/// Why a gate did not fast-open a tap whose answer had not come within `wait_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastOpenRefusal {
    /// Opening would take the station's unconfirmed exposure above its cap.
    ExposureCap {
        /// The exposure now, before this tap.
        exposure: Rupiah,
        /// The cap.
        cap: Rupiah,
    },
    /// The aggregator has not answered for longer than `degraded_after_ms`.
    Degraded {
        /// How long it has not answered, ms.
        silent_ms: i64,
    },
}

impl FastOpenRefusal {
    /// Short name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FastOpenRefusal::ExposureCap { .. } => "exposure_cap",
            FastOpenRefusal::Degraded { .. } => "degraded",
        }
    }
}

impl fmt::Display for FastOpenRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FastOpenRefusal::ExposureCap { exposure, cap } => write!(
                f,
                "fast open refused: unconfirmed exposure {exposure} would pass the cap {cap}"
            ),
            FastOpenRefusal::Degraded { silent_ms } => write!(
                f,
                "fast open refused: the aggregator has not answered for {silent_ms} ms"
            ),
        }
    }
}

/// A change of the aggregator's health as fast open sees it, to log once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No answer for longer than `degraded_after_ms`: fast open is off.
    Degraded {
        /// How long it has not answered, ms.
        silent_ms: i64,
    },
    /// An answer came: fast open is back on.
    Recovered,
}

/// The station's fast-open ledger: the payments opened for and not yet confirmed, and
/// whether the aggregator is answering.
#[derive(Debug)]
pub struct Exposure {
    cap: Rupiah,
    degraded_after_ms: i64,
    open: HashMap<String, Rupiah>,
    total: Rupiah,
    peak: Rupiah,
    /// The first payment sent since the last answer, if it is still unanswered.
    waiting_since_ms: Option<i64>,
    degraded: bool,
}

impl Exposure {
    /// An empty ledger with the station's limits.
    pub fn new(cfg: &FastOpenConfig) -> Exposure {
        Exposure {
            cap: Rupiah(cfg.exposure_cap),
            degraded_after_ms: i64::try_from(cfg.degraded_after_ms).unwrap_or(i64::MAX),
            open: HashMap::new(),
            total: Rupiah(0),
            peak: Rupiah(0),
            waiting_since_ms: None,
            degraded: false,
        }
    }

    /// Takes `amount` for `partner_ref` when the cap and the aggregator's health allow it.
    /// Nothing changes on a refusal; a reference already held is not counted twice.
    pub fn admit(
        &mut self,
        partner_ref: &str,
        amount: Rupiah,
        now_ms: i64,
    ) -> Result<(), FastOpenRefusal> {
        let silent_ms = self
            .waiting_since_ms
            .map_or(0, |t| now_ms.saturating_sub(t));
        if self.degraded || silent_ms > self.degraded_after_ms {
            return Err(FastOpenRefusal::Degraded { silent_ms });
        }
        if self.open.contains_key(partner_ref) {
            return Ok(());
        }
        let after = self.total.0.saturating_add(amount.0);
        if after > self.cap.0 {
            return Err(FastOpenRefusal::ExposureCap {
                exposure: self.total,
                cap: self.cap,
            });
        }
        self.open.insert(partner_ref.to_string(), amount);
        self.total = Rupiah(after);
        self.peak = self.peak.max(self.total);
        Ok(())
    }

    /// Counts a payment opened for before this process started (from the journal), cap or
    /// not: it is exposure all the same.
    pub fn restore(&mut self, partner_ref: &str, amount: Rupiah) {
        if self.open.insert(partner_ref.to_string(), amount).is_none() {
            self.total = Rupiah(self.total.0.saturating_add(amount.0));
            self.peak = self.peak.max(self.total);
        }
    }

    /// The payment of `partner_ref` is no longer unconfirmed (paid, unpaid, or the gate did
    /// not open after all). Returns its amount when it was held.
    pub fn release(&mut self, partner_ref: &str) -> Option<Rupiah> {
        let amount = self.open.remove(partner_ref)?;
        self.total = Rupiah(self.total.0.saturating_sub(amount.0));
        Some(amount)
    }

    /// A payment was sent at `now_ms`.
    pub fn sent(&mut self, now_ms: i64) {
        self.waiting_since_ms.get_or_insert(now_ms);
    }

    /// The aggregator answered (any answer, even a decline or a `5xx`: it is reachable).
    /// Returns [`Health::Recovered`] when that ends a degraded spell.
    pub fn answered(&mut self) -> Option<Health> {
        self.waiting_since_ms = None;
        std::mem::replace(&mut self.degraded, false).then_some(Health::Recovered)
    }

    /// Returns [`Health::Degraded`] when, at `now_ms`, the aggregator has just been silent for
    /// longer than the limit (once per spell).
    pub fn health(&mut self, now_ms: i64) -> Option<Health> {
        let since = self.waiting_since_ms?;
        let silent_ms = now_ms.saturating_sub(since);
        if !self.degraded && silent_ms > self.degraded_after_ms {
            self.degraded = true;
            return Some(Health::Degraded { silent_ms });
        }
        None
    }

    /// Whether fast open is off for the aggregator's silence.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// The unconfirmed exposure now.
    pub fn total(&self) -> Rupiah {
        self.total
    }

    /// The highest exposure since this ledger was made.
    pub fn peak(&self) -> Rupiah {
        self.peak
    }

    /// How many payments are unconfirmed.
    pub fn count(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(cap: u64) -> Exposure {
        Exposure::new(&FastOpenConfig {
            enabled: true,
            exposure_cap: cap,
            degraded_after_ms: 5_000,
            ..FastOpenConfig::default()
        })
    }

    #[test]
    fn the_cap_is_never_passed_and_a_release_makes_room() {
        let mut e = ledger(10_000);
        assert_eq!(e.admit("a", Rupiah(4_000), 0), Ok(()));
        assert_eq!(e.admit("b", Rupiah(6_000), 0), Ok(()));
        assert_eq!(
            e.admit("c", Rupiah(1), 0),
            Err(FastOpenRefusal::ExposureCap {
                exposure: Rupiah(10_000),
                cap: Rupiah(10_000)
            })
        );
        // Admitting the same reference again counts nothing twice.
        assert_eq!(e.admit("a", Rupiah(4_000), 0), Ok(()));
        assert_eq!(e.total(), Rupiah(10_000));
        assert_eq!(e.release("a"), Some(Rupiah(4_000)));
        assert_eq!(e.release("a"), None);
        assert_eq!(e.admit("c", Rupiah(4_000), 0), Ok(()));
        assert_eq!(
            (e.total(), e.peak(), e.count()),
            (Rupiah(10_000), Rupiah(10_000), 2)
        );
    }

    #[test]
    fn silence_past_the_limit_turns_fast_open_off_until_an_answer() {
        let mut e = ledger(100_000);
        e.sent(1_000);
        e.sent(3_000); // still the first unanswered send that counts
        assert_eq!(e.health(6_000), None);
        assert_eq!(e.admit("a", Rupiah(1), 6_000), Ok(()));
        assert_eq!(
            e.admit("b", Rupiah(1), 6_001),
            Err(FastOpenRefusal::Degraded { silent_ms: 5_001 })
        );
        assert!(!e.is_degraded(), "admit only reads");
        assert_eq!(e.health(6_001), Some(Health::Degraded { silent_ms: 5_001 }));
        assert!(e.is_degraded());
        assert_eq!(e.health(9_000), None, "logged once per spell");
        assert_eq!(e.answered(), Some(Health::Recovered));
        assert_eq!(e.answered(), None);
        assert_eq!(e.admit("b", Rupiah(1), 9_000), Ok(()));
        // A quiet gate is not a silent aggregator: nothing was sent.
        assert_eq!(e.health(100_000), None);
    }

    #[test]
    fn restored_exposure_counts_even_above_the_cap() {
        let mut e = ledger(5_000);
        e.restore("a", Rupiah(14_000));
        e.restore("a", Rupiah(14_000));
        assert_eq!(e.total(), Rupiah(14_000));
        assert!(e.admit("b", Rupiah(1), 0).is_err());
    }
}
