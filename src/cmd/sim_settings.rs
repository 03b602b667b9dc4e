//! The simulator's settings for the partner a gate's aggregator config describes, and the
//! `tapgate sim` flags of its issuer model (latency, silence, declines).
//!
//! The conversion lives on the gate's side: the simulator takes its own plain settings
//! ([`SimConfig`], [`SimPaths`], [`IssuerModel`]) and never reads the gate's config types.

use crate::config::AggregatorConfig;
use crate::sim::{IssuerModel, Latency, SimConfig, SimPaths};

/// `tapgate sim` flags for how the simulated issuers answer payments. None given: every
/// payment is answered at once and only `/sim/decline`d PANs are declined.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct IssuerArgs {
    /// Start from a measured rush hour: latency p50 400 ms, p95 1.2 s, p99 2.5 s, 1 % never
    /// answered in time, 2 % declined. The flags below override its parts.
    #[arg(long)]
    pub rush_hour: bool,
    /// Payment answer time by its quantiles, ms: P50,P95,P99 (e.g. 400,1200,2500).
    #[arg(long, value_name = "P50,P95,P99")]
    pub latency: Option<String>,
    /// Longest answer time drawn, ms (default 30000).
    #[arg(long, value_name = "MS")]
    pub latency_max_ms: Option<u64>,
    /// Share of payments (0-1) not answered in time: held --no-answer-ms, then processed.
    #[arg(long, value_name = "RATE")]
    pub no_answer: Option<f64>,
    /// How long an unanswered payment is held, ms (default 10000: past the client's timeout).
    #[arg(long, value_name = "MS")]
    pub no_answer_ms: Option<u64>,
    /// Share of payments (0-1) that would succeed but are declined.
    #[arg(long, value_name = "RATE")]
    pub decline_rate: Option<f64>,
    /// The decline's responseCode (default 4036014, insufficient funds).
    #[arg(long, value_name = "CODE")]
    pub decline_code: Option<String>,
    /// Seed of the draws (default 1): the same seed and order of payments, the same draws.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl IssuerArgs {
    /// The issuer model these flags describe (`None` when no flag is given), checked.
    pub fn model(&self) -> Result<Option<IssuerModel>, String> {
        let any = self.rush_hour
            || self.latency.is_some()
            || self.latency_max_ms.is_some()
            || self.no_answer.is_some()
            || self.no_answer_ms.is_some()
            || self.decline_rate.is_some()
            || self.decline_code.is_some()
            || self.seed.is_some();
        if !any {
            return Ok(None);
        }
        let seed = self.seed.unwrap_or(1);
        let mut m = if self.rush_hour {
            IssuerModel::rush_hour(seed)
        } else {
            IssuerModel {
                seed,
                ..IssuerModel::default()
            }
        };
        if let Some(text) = &self.latency {
            m.latency = Some(parse_latency(text)?);
        }
        if let Some(max) = self.latency_max_ms {
            let l = m
                .latency
                .as_mut()
                .ok_or("--latency-max-ms needs --latency or --rush-hour")?;
            l.max_ms = max;
        }
        m.no_answer = self.no_answer.unwrap_or(m.no_answer);
        m.no_answer_ms = self.no_answer_ms.unwrap_or(m.no_answer_ms);
        m.decline_rate = self.decline_rate.unwrap_or(m.decline_rate);
        if let Some(c) = &self.decline_code {
            m.decline_code = c.clone();
        }
        m.check()?;
        Ok(Some(m))
    }
}

/// `P50,P95,P99` in milliseconds.
fn parse_latency(text: &str) -> Result<Latency, String> {
    let ms: Vec<u64> = text
        .split(',')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--latency {text:?}: want P50,P95,P99 in whole milliseconds"))?;
    let [p50, p95, p99] = ms[..] else {
        return Err(format!(
            "--latency {text:?}: want three values P50,P95,P99, got {}",
            ms.len()
        ));
    };
    Latency::new(p50, p95, p99).map_err(|e| format!("--latency {text:?}: {e}"))
}

/// The endpoint paths an aggregator config points at.
pub fn sim_paths(cfg: &AggregatorConfig) -> SimPaths {
    SimPaths {
        token: cfg.token_path.clone(),
        payment: cfg.payment_path.clone(),
        query: cfg.query_path.clone(),
        refund: cfg.refund_path.clone(),
        mpm_generate: cfg.mpm_generate_path.clone(),
        mpm_query: cfg.mpm_query_path.clone(),
        mpm_refund: cfg.mpm_refund_path.clone(),
        // The wallet's (Linkage) paths are the simulator's: the gate never calls them.
        ..SimPaths::default()
    }
}

/// A simulator configuration for the partner `cfg` describes (the caller reads the secret and
/// the public key from their files); other settings as [`SimConfig::demo`].
pub fn sim_config(
    cfg: &AggregatorConfig,
    client_secret: String,
    partner_public_key_der: Vec<u8>,
) -> SimConfig {
    SimConfig {
        client_id: cfg.client_id.clone(),
        client_secret,
        partner_public_key_der,
        partner_id: cfg.partner_id.clone(),
        merchant_id: cfg.merchant_id.clone(),
        channel_id: Some(cfg.channel_id.clone()),
        paths: sim_paths(cfg),
        ..SimConfig::demo()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn demo_aggregator() -> AggregatorConfig {
        let text = include_str!("../../config/demo.toml");
        Config::parse(text, Path::new("config/demo.toml"))
            .unwrap()
            .aggregator
    }

    #[test]
    fn the_simulators_default_paths_are_the_configs_defaults() {
        assert_eq!(sim_paths(&demo_aggregator()), SimPaths::default());
    }

    #[test]
    fn demo_config_describes_the_demo_partner() {
        let demo = SimConfig::demo();
        let cfg = sim_config(
            &demo_aggregator(),
            demo.client_secret.clone(),
            demo.partner_public_key_der.clone(),
        );
        assert_eq!(
            (
                &cfg.client_id,
                &cfg.partner_id,
                &cfg.merchant_id,
                &cfg.channel_id
            ),
            (
                &demo.client_id,
                &demo.partner_id,
                &demo.merchant_id,
                &demo.channel_id
            )
        );
        assert_eq!(cfg.paths, demo.paths);
    }

    fn flags(args: &[&str]) -> Result<Option<IssuerModel>, String> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            issuer: IssuerArgs,
        }
        let cli = Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.issuer.model()
    }

    #[test]
    fn issuer_flags_make_the_model() {
        assert_eq!(flags(&[]), Ok(None));
        assert_eq!(flags(&["--rush-hour"]), Ok(Some(IssuerModel::rush_hour(1))));
        let m = flags(&[
            "--rush-hour",
            "--latency",
            "100, 300,900",
            "--latency-max-ms",
            "5000",
            "--no-answer",
            "0",
            "--decline-rate",
            "0.1",
            "--decline-code",
            "4036005",
            "--seed",
            "9",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            m.latency,
            Some(Latency {
                p50_ms: 100,
                p95_ms: 300,
                p99_ms: 900,
                max_ms: 5000
            })
        );
        assert_eq!(
            (
                m.no_answer,
                m.no_answer_ms,
                m.decline_rate,
                m.decline_code.as_str(),
                m.seed
            ),
            (0.0, 10_000, 0.1, "4036005", 9)
        );
        // A decline rate alone: instant answers, some declines.
        let m = flags(&["--decline-rate", "0.02"]).unwrap().unwrap();
        assert_eq!((m.latency, m.decline_rate, m.seed), (None, 0.02, 1));
    }

    #[test]
    fn bad_issuer_flags_are_refused_with_the_flag_named() {
        for (args, needle) in [
            (&["--latency", "400,1200"][..], "three values"),
            (&["--latency", "400,1200,x"][..], "whole milliseconds"),
            (&["--latency", "400,300,2500"][..], "p50 < p95"),
            (&["--latency-max-ms", "9"][..], "--latency-max-ms needs"),
            (&["--rush-hour", "--latency-max-ms", "9"][..], "<= max"),
            (&["--decline-rate", "1.5"][..], "decline_rate"),
            (&["--no-answer=-0.5"][..], "no_answer"),
            (&["--decline-code", "ok"][..], "decline_code"),
        ] {
            let e = flags(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
