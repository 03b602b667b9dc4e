//! Behaviour controls: the faults the simulator can inject, as a one-shot queue per service
//! and as a seeded random mode, then the issuers' latency ([`crate::IssuerModel`]). Pure: the
//! plan only decides which fault the next call gets.

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use crate::issuer::{IssuerDraws, IssuerModel};

/// One SNAP service of the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// B2B access token (service code 73).
    Token,
    /// `qr-cpm-payment` (service code 60).
    Payment,
    /// `qr-cpm-query` (service code 61).
    Query,
    /// `qr-cpm-refund` (service code 80).
    Refund,
}

impl Service {
    /// The two-digit SNAP service code that sits in the middle of every `responseCode`.
    pub fn code(self) -> &'static str {
        match self {
            Service::Token => "73",
            Service::Payment => "60",
            Service::Query => "61",
            Service::Refund => "80",
        }
    }

    /// Lower-case name, as used in notes and the `/sim/*` API.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Token => "token",
            Service::Payment => "payment",
            Service::Query => "query",
            Service::Refund => "refund",
        }
    }
}

/// A misbehaviour applied to one call.
///
/// `applied` says whether the simulator really processes the request (the payment or refund
/// lands in the ledger) before misbehaving: `true` is the case a client must resolve by query,
/// `false` the case where nothing happened although the client cannot know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Wait `ms` milliseconds after reading the request, then process and answer normally.
    /// The request is processed even if the client gave up meanwhile.
    Delay {
        /// How long to wait.
        ms: u64,
    },
    /// HTTP 500, `500xx01` Internal Server Error.
    ServerError {
        /// Whether the request was processed anyway.
        applied: bool,
    },
    /// HTTP 504, `504xx00` Timeout.
    GatewayTimeout {
        /// Whether the request was processed anyway.
        applied: bool,
    },
    /// HTTP 202, `202xx00` Request In Progress. A payment that reaches the ledger stays
    /// pending (query answers `03`) for the configured `pending_ms`, then takes its real
    /// outcome. A token or refund call is processed and answered with the 202 instead; a
    /// call that records nothing (a query, a rejected request) gets its normal answer.
    Accepted,
    /// Read the whole request, then close the connection without a byte of answer.
    Drop {
        /// Whether the request was processed before the connection was closed.
        applied: bool,
    },
    /// Answer HTTP 200 with a body cut in the middle (not parseable JSON).
    Garbage {
        /// Whether the request was processed (the cut body is then the real answer's start).
        applied: bool,
    },
    /// HTTP 401, `401xx00` Unauthorized, without processing the request.
    Unauthorized,
    /// HTTP 429, `429xx00` Too Many Requests, without processing the request.
    Throttled,
    /// Process the request normally, but report this `amount.value` (whole rupiah) in the
    /// answer instead of the real one (payment and query answers carry an amount).
    WrongAmount {
        /// The amount reported.
        rupiah: u64,
    },
}

impl Fault {
    /// A short name for ledger marks and stats: `drop`, `garbage`, `server_error`, ...
    pub fn name(self) -> &'static str {
        match self {
            Fault::Delay { .. } => "delay",
            Fault::ServerError { .. } => "server_error",
            Fault::GatewayTimeout { .. } => "gateway_timeout",
            Fault::Accepted => "accepted",
            Fault::Drop { .. } => "drop",
            Fault::Garbage { .. } => "garbage",
            Fault::Unauthorized => "unauthorized",
            Fault::Throttled => "throttled",
            Fault::WrongAmount { .. } => "wrong_amount",
        }
    }
}

/// One entry of a random mix: `fault` is drawn with `probability` (0.0–1.0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedFault {
    /// The fault.
    pub fault: Fault,
    /// Its probability per call; the probabilities of a mix should sum to at most 1.
    pub probability: f64,
}

/// The seeded random mode: for each call to one of `services`, draw at most one fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultMix {
    /// The faults and their probabilities; the rest of the probability mass is "no fault".
    pub faults: Vec<WeightedFault>,
    /// Which services the mix applies to (payments only when left empty in JSON).
    #[serde(default = "payments_only")]
    pub services: Vec<Service>,
}

fn payments_only() -> Vec<Service> {
    vec![Service::Payment]
}

impl FaultMix {
    /// Every fault kind, payments only, in equal shares summing to `total` (clamped to 0–1);
    /// delays last `delay_ms`. A ready-made mix for crash and fault harnesses.
    pub fn chaos(total: f64, delay_ms: u64) -> FaultMix {
        let kinds = [
            Fault::Delay { ms: delay_ms },
            Fault::ServerError { applied: true },
            Fault::ServerError { applied: false },
            Fault::GatewayTimeout { applied: true },
            Fault::GatewayTimeout { applied: false },
            Fault::Accepted,
            Fault::Drop { applied: true },
            Fault::Drop { applied: false },
            Fault::Garbage { applied: true },
            Fault::Garbage { applied: false },
        ];
        let share = total.clamp(0.0, 1.0) / kinds.len() as f64;
        FaultMix {
            faults: kinds
                .into_iter()
                .map(|fault| WeightedFault {
                    fault,
                    probability: share,
                })
                .collect(),
            services: payments_only(),
        }
    }
}

/// Which fault the next call gets: queued one-shot faults first, then the random mode, then
/// (payments only) the issuers' latency.
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    queued: HashMap<Service, VecDeque<Fault>>,
    random: Option<(StdRng, FaultMix)>,
    issuer: Option<IssuerDraws>,
}

impl FaultPlan {
    /// Queues `fault` for the next call to `service` (after those already queued).
    pub(crate) fn push(&mut self, service: Service, fault: Fault) {
        self.queued.entry(service).or_default().push_back(fault);
    }

    /// Turns the random mode on (replacing any previous mix) with a deterministic seed.
    pub(crate) fn set_random(&mut self, seed: u64, mix: FaultMix) {
        self.random = Some((StdRng::seed_from_u64(seed), mix));
    }

    /// Sets (reseeding its draws) or removes the issuers' behaviour.
    pub(crate) fn set_issuer(&mut self, model: Option<IssuerModel>) {
        self.issuer = model.map(IssuerDraws::new);
    }

    /// Whether a payment that would succeed is declined by the issuer model, and its code.
    pub(crate) fn issuer_decline(&mut self) -> Option<String> {
        self.issuer.as_mut()?.decline()
    }

    /// Forgets queued faults and turns the random mode off (the issuer model stays: it is a
    /// setting, not a fault).
    pub(crate) fn clear(&mut self) {
        self.queued.clear();
        self.random = None;
    }

    /// How many one-shot faults are still waiting, all services together.
    pub(crate) fn queued_len(&self) -> usize {
        self.queued.values().map(VecDeque::len).sum()
    }

    /// Draws the fault for one call to `service`.
    pub(crate) fn next(&mut self, service: Service) -> Option<Fault> {
        if let Some(f) = self.queued.get_mut(&service).and_then(VecDeque::pop_front) {
            return Some(f);
        }
        if let Some(f) = self.next_random(service) {
            return Some(f);
        }
        match service {
            Service::Payment => self.issuer.as_mut()?.payment_delay(),
            _ => None,
        }
    }

    fn next_random(&mut self, service: Service) -> Option<Fault> {
        let (rng, mix) = self.random.as_mut()?;
        if !mix.services.contains(&service) {
            return None;
        }
        let roll: f64 = rng.random();
        let mut acc = 0.0;
        for w in &mix.faults {
            acc += w.probability.max(0.0);
            if roll < acc {
                return Some(w.fault);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_per_service_and_one_shot() {
        let mut plan = FaultPlan::default();
        plan.push(Service::Payment, Fault::Accepted);
        plan.push(Service::Payment, Fault::Drop { applied: true });
        plan.push(Service::Refund, Fault::Garbage { applied: false });
        assert_eq!(plan.queued_len(), 3);
        assert_eq!(plan.next(Service::Query), None);
        assert_eq!(plan.next(Service::Payment), Some(Fault::Accepted));
        assert_eq!(
            plan.next(Service::Payment),
            Some(Fault::Drop { applied: true })
        );
        assert_eq!(plan.next(Service::Payment), None);
        assert_eq!(
            plan.next(Service::Refund),
            Some(Fault::Garbage { applied: false })
        );
        assert_eq!(plan.queued_len(), 0);
    }

    #[test]
    fn random_mode_is_reproducible_and_respects_probabilities() {
        let draw = |seed| {
            let mut plan = FaultPlan::default();
            plan.set_random(seed, FaultMix::chaos(0.5, 10));
            (0..2000)
                .map(|_| plan.next(Service::Payment))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let faulty = a.iter().filter(|f| f.is_some()).count();
        // 2000 draws at p = 0.5: far outside these bounds only with odds of about 1e-40.
        assert!((800..1200).contains(&faulty), "{faulty}");
        let drops = a
            .iter()
            .filter(|f| matches!(f, Some(Fault::Drop { .. })))
            .count();
        assert!(drops > 100, "{drops}");
    }

    #[test]
    fn random_mode_skips_other_services_and_queue_goes_first() {
        let mut plan = FaultPlan::default();
        plan.set_random(1, FaultMix::chaos(1.0, 0));
        assert_eq!(plan.next(Service::Query), None);
        assert!(plan.next(Service::Payment).is_some());
        plan.push(Service::Payment, Fault::Delay { ms: 5 });
        assert_eq!(plan.next(Service::Payment), Some(Fault::Delay { ms: 5 }));
        plan.clear();
        assert_eq!(plan.next(Service::Payment), None);
    }

    #[test]
    fn the_issuer_model_comes_after_queue_and_mix_and_delays_payments_only() {
        let mut plan = FaultPlan::default();
        plan.set_issuer(Some(IssuerModel {
            no_answer: 1.0,
            no_answer_ms: 777,
            decline_rate: 1.0,
            ..IssuerModel::default()
        }));
        assert_eq!(plan.next(Service::Query), None);
        assert_eq!(plan.next(Service::Payment), Some(Fault::Delay { ms: 777 }));
        plan.push(Service::Payment, Fault::Accepted);
        assert_eq!(plan.next(Service::Payment), Some(Fault::Accepted));
        plan.set_random(1, FaultMix::chaos(1.0, 0));
        assert!(!matches!(
            plan.next(Service::Payment),
            Some(Fault::Delay { ms: 777 })
        ));
        // Clearing faults keeps the model; removing it stops the delays and declines.
        plan.clear();
        assert_eq!(plan.next(Service::Payment), Some(Fault::Delay { ms: 777 }));
        assert_eq!(plan.issuer_decline().as_deref(), Some("4036014"));
        plan.set_issuer(None);
        assert_eq!(plan.next(Service::Payment), None);
        assert_eq!(plan.issuer_decline(), None);
    }

    #[test]
    fn faults_have_a_readable_json_form() {
        let f: Fault = serde_json::from_str(r#"{"kind":"drop","applied":true}"#).unwrap();
        assert_eq!(f, Fault::Drop { applied: true });
        let mix: FaultMix =
            serde_json::from_str(r#"{"faults":[{"fault":{"kind":"accepted"},"probability":0.2}]}"#)
                .unwrap();
        assert_eq!(mix.services, vec![Service::Payment]);
        assert_eq!(
            serde_json::to_string(&Fault::Delay { ms: 3 }).unwrap(),
            r#"{"kind":"delay","ms":3}"#
        );
    }
}
