//! The simulated issuers under load: how long a payment takes (a latency distribution fitted
//! to three quantiles), how often it is never answered, how often it is declined. Seeded and
//! pure: the engine asks for one draw per payment.
//!
//! The latency is log-normal-like: `ln(ms)` is a piecewise-linear function of a standard
//! normal draw `z`, through `(0, ln p50)`, `(z95, ln p95)` and `(z99, ln p99)`, extended past
//! both ends with the nearest segment's slope. One log-normal has two parameters and cannot
//! hit three quantiles at once (fitted to p50 and p95 it gives p99 ≈ 1.9 s for p50 400 ms /
//! p95 1.2 s, not 2.5 s); this fits all three exactly and keeps a log-normal's shape between
//! them. The tail past p99 is capped at `max_ms`.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use crate::faults::Fault;

/// The standard normal's 95th percentile.
const Z95: f64 = 1.644_853_626_951_472_2;
/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874_040_841;

/// A payment's answer time, by three of its quantiles (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: u64,
    /// 95th percentile.
    pub p95_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// No draw is longer than this (the tail past p99 grows fast).
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
}

fn default_max_ms() -> u64 {
    30_000
}

impl Latency {
    /// Quantiles `p50 < p95 < p99` (all above zero), tail capped at 30 s.
    pub fn new(p50_ms: u64, p95_ms: u64, p99_ms: u64) -> Result<Latency, String> {
        let l = Latency {
            p50_ms,
            p95_ms,
            p99_ms,
            max_ms: default_max_ms(),
        };
        l.check()?;
        Ok(l)
    }

    /// Checks `0 < p50 < p95 < p99 <= max`.
    pub fn check(&self) -> Result<(), String> {
        if self.p50_ms == 0
            || self.p50_ms >= self.p95_ms
            || self.p95_ms >= self.p99_ms
            || self.p99_ms > self.max_ms
        {
            return Err(format!(
                "latency quantiles must satisfy 0 < p50 < p95 < p99 <= max, got {} / {} / {} / {} ms",
                self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
            ));
        }
        Ok(())
    }

    /// The answer time (ms, not rounded) at standard-normal deviate `z`: monotone in `z`, so
    /// the distribution's quantile `p` is this at the normal's quantile `p`.
    pub fn at(&self, z: f64) -> f64 {
        let l50 = (self.p50_ms as f64).ln();
        let l95 = (self.p95_ms as f64).ln();
        let l99 = (self.p99_ms as f64).ln();
        let low = (l95 - l50) / Z95;
        let high = (l99 - l95) / (Z99 - Z95);
        let ln_ms = if z <= Z95 {
            l50 + z * low
        } else {
            l95 + (z - Z95) * high
        };
        ln_ms.exp().min(self.max_ms as f64)
    }

    /// One draw, whole milliseconds.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> u64 {
        self.at(standard_normal(rng)).round() as u64
    }
}

/// A standard normal deviate (Box–Muller; `rand` alone has no normal distribution).
fn standard_normal(rng: &mut impl rand::Rng) -> f64 {
    // 1 - [0, 1) is (0, 1]: the logarithm stays finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// How the simulated issuers answer payments: each payment waits a draw from `latency`,
/// or, with probability `no_answer`, `no_answer_ms` (past the client's request timeout: the
/// client gets no answer, the payment lands when the wait is over, a query finds it then);
/// a payment that would succeed is declined with `decline_code` with probability
/// `decline_rate`. Queued one-shot faults and a random [`crate::FaultMix`] go first: a call
/// that gets one of those gets no latency draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssuerModel {
    /// Answer time of a payment; answered at once when `None`.
    #[serde(default)]
    pub latency: Option<Latency>,
    /// Probability (0–1) that a payment is not answered in time at all.
    #[serde(default)]
    pub no_answer: f64,
    /// How long an unanswered payment is held before it is processed and answered, ms.
    #[serde(default = "default_no_answer_ms")]
    pub no_answer_ms: u64,
    /// Probability (0–1) that a payment that would succeed is declined.
    #[serde(default)]
    pub decline_rate: f64,
    /// The decline's `responseCode`.
    #[serde(default = "default_decline_code")]
    pub decline_code: String,
    /// Seed of the draws: the same seed and the same order of payments give the same draws.
    #[serde(default)]
    pub seed: u64,
}

fn default_no_answer_ms() -> u64 {
    10_000
}

fn default_decline_code() -> String {
    // Insufficient funds: the commonest issuer decline at a gate.
    "4036014".into()
}

impl Default for IssuerModel {
    /// Instant answers, no silence, no declines.
    fn default() -> Self {
        IssuerModel {
            latency: None,
            no_answer: 0.0,
            no_answer_ms: default_no_answer_ms(),
            decline_rate: 0.0,
            decline_code: default_decline_code(),
            seed: 0,
        }
    }
}

impl IssuerModel {
    /// A rush hour as measured on QRIS TAP: p50 400 ms, p95 1.2 s, p99 2.5 s, 1 % never
    /// answered (held 10 s), 2 % declined (insufficient funds).
    pub fn rush_hour(seed: u64) -> IssuerModel {
        IssuerModel {
            latency: Some(Latency {
                p50_ms: 400,
                p95_ms: 1200,
                p99_ms: 2500,
                max_ms: default_max_ms(),
            }),
            no_answer: 0.01,
            decline_rate: 0.02,
            seed,
            ..IssuerModel::default()
        }
    }

    /// Checks the latency quantiles, the probabilities (0–1) and the decline code (`403xx..`
    /// style: seven digits).
    pub fn check(&self) -> Result<(), String> {
        if let Some(l) = &self.latency {
            l.check()?;
        }
        for (name, p) in [
            ("no_answer", self.no_answer),
            ("decline_rate", self.decline_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a probability from 0 to 1, got {p}"));
            }
        }
        let code = &self.decline_code;
        if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with('2') {
            return Err(format!(
                "decline_code must be a seven-digit non-2xx responseCode, got {code:?}"
            ));
        }
        Ok(())
    }
}

/// The draws of one [`IssuerModel`]: latency and declines from separate generators, so that
/// a change of the decline rate leaves the latencies of a seed as they were.
#[derive(Debug)]
pub(crate) struct IssuerDraws {
    model: IssuerModel,
    latency_rng: StdRng,
    decline_rng: StdRng,
}

impl IssuerDraws {
    pub(crate) fn new(model: IssuerModel) -> IssuerDraws {
        let seed = model.seed;
        IssuerDraws {
            latency_rng: StdRng::seed_from_u64(seed),
            decline_rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            model,
        }
    }

    /// The wait of one payment, as a delay fault (`None`: answer at once).
    pub(crate) fn payment_delay(&mut self) -> Option<Fault> {
        let m = &self.model;
        if m.no_answer > 0.0 && self.latency_rng.random::<f64>() < m.no_answer {
            return Some(Fault::Delay { ms: m.no_answer_ms });
        }
        let ms = m.latency.as_ref()?.sample(&mut self.latency_rng);
        Some(Fault::Delay { ms })
    }

    /// Whether a payment that would succeed is declined, and with which code.
    pub(crate) fn decline(&mut self) -> Option<String> {
        let m = &self.model;
        (m.decline_rate > 0.0 && self.decline_rng.random::<f64>() < m.decline_rate)
            .then(|| m.decline_code.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantile(sorted: &[u64], p: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
    }

    fn within(got: f64, want: f64, tolerance: f64) -> bool {
        (got - want).abs() <= want * tolerance
    }

    #[test]
    fn the_distribution_hits_its_three_quantiles() {
        let l = Latency::new(400, 1200, 2500).unwrap();
        // Exact by construction...
        assert!((l.at(0.0) - 400.0).abs() < 1e-6);
        assert!((l.at(Z95) - 1200.0).abs() < 1e-6);
        assert!((l.at(Z99) - 2500.0).abs() < 1e-6);
        // ...and sampled: 100 000 draws. The sample p99's standard error is about 1.3 %
        // (sqrt(p(1-p)/n) / φ(z99) ≈ 0.012 in z, times the upper slope 1.08), p50's and p95's
        // under 1 %: 3 % is more than two standard errors for each.
        let mut rng = StdRng::seed_from_u64(12);
        let mut v: Vec<u64> = (0..100_000).map(|_| l.sample(&mut rng)).collect();
        v.sort_unstable();
        for (p, want) in [(0.50, 400.0), (0.95, 1200.0), (0.99, 2500.0)] {
            let got = quantile(&v, p);
            assert!(within(got, want, 0.03), "p{p}: {got} ms, want {want}");
        }
        // A log-normal shape below the median: p5 = p50 / (p95 / p50).
        assert!(within(quantile(&v, 0.05), 400.0 / 3.0, 0.05));
        assert!(*v.last().unwrap() <= 30_000);
    }

    #[test]
    fn quantiles_are_checked() {
        assert!(Latency::new(0, 10, 20).is_err());
        assert!(Latency::new(400, 400, 2500).is_err());
        assert!(Latency::new(400, 1200, 1000).is_err());
        assert!(IssuerModel::rush_hour(1).check().is_ok());
        let bad = |f: &dyn Fn(&mut IssuerModel)| {
            let mut m = IssuerModel::rush_hour(1);
            f(&mut m);
            m.check().is_err()
        };
        assert!(bad(&|m| m.no_answer = 1.5));
        assert!(bad(&|m| m.decline_rate = -0.1));
        assert!(bad(&|m| m.decline_rate = f64::NAN));
        assert!(bad(&|m| m.decline_code = "2006000".into()));
        assert!(bad(&|m| m.decline_code = "40360".into()));
    }

    #[test]
    fn declines_and_silences_come_at_their_rates_reproducibly() {
        let run = |seed| {
            let mut d = IssuerDraws::new(IssuerModel::rush_hour(seed));
            (0..100_000)
                .map(|_| (d.payment_delay(), d.decline()))
                .collect::<Vec<_>>()
        };
        let a = run(3);
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        let declines = a.iter().filter(|(_, d)| d.is_some()).count();
        // 2 % of 100 000: standard deviation 44; ±300 is about seven of them.
        assert!((1_700..=2_300).contains(&declines), "{declines}");
        assert!(a
            .iter()
            .filter_map(|(_, d)| d.as_deref())
            .all(|c| c == "4036014"));
        let silent = a
            .iter()
            .filter(|(f, _)| *f == Some(Fault::Delay { ms: 10_000 }))
            .count();
        // 1 %: standard deviation 31.
        assert!((800..=1_200).contains(&silent), "{silent}");
    }

    #[test]
    fn a_model_without_latency_answers_at_once_and_declines_nothing() {
        let mut d = IssuerDraws::new(IssuerModel::default());
        assert!((0..1000).all(|_| d.payment_delay().is_none() && d.decline().is_none()));
    }

    #[test]
    fn the_model_has_a_readable_json_form() {
        let m: IssuerModel = serde_json::from_str(
            r#"{"latency":{"p50_ms":400,"p95_ms":1200,"p99_ms":2500},"no_answer":0.01,"decline_rate":0.02,"seed":7}"#,
        )
        .unwrap();
        assert_eq!(m, IssuerModel::rush_hour(7));
    }
}
