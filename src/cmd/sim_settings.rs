//! The simulator's settings for the partner a gate's aggregator config describes.
//!
//! The conversion lives on the gate's side: the simulator takes its own plain settings
//! ([`SimConfig`], [`SimPaths`]) and never reads the gate's config types.

use crate::config::AggregatorConfig;
use crate::sim::{SimConfig, SimPaths};

/// The endpoint paths an aggregator config points at.
pub fn sim_paths(cfg: &AggregatorConfig) -> SimPaths {
    SimPaths {
        token: cfg.token_path.clone(),
        payment: cfg.payment_path.clone(),
        query: cfg.query_path.clone(),
        refund: cfg.refund_path.clone(),
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
}
