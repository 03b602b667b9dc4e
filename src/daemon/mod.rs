//! The daemon: the station context, lanes (the pipeline of one tap), the reconciler, and
//! assembly from a config file.

pub mod fast_open;
pub mod gate;
pub mod lane;
pub mod line;
pub mod logging;
pub mod metrics;
pub mod reconcile;
pub mod retention;
pub mod run;
pub mod station;

use std::path::Path;
use std::sync::Arc;

use crate::aggregator::Aggregator;
use crate::clock::{Clock, SystemClock};
use crate::config::{resolve_secret_path, Config, LaneConfig, RelayConfig};
use crate::journal::Journal;
use crate::relay::{RecordingRelay, Relay};
use crate::snap::client::{DeviceContext, SnapClient};
use crate::snap::sign::RsaSigner;

pub use station::{PassengerKey, StartupError, Station};

/// Builds the aggregator client from the config, reading the secrets from their files.
pub fn aggregator_from_config(
    cfg: &Config,
    config_path: &Path,
    clock: Arc<dyn Clock>,
) -> Result<Aggregator, StartupError> {
    let base = config_path.parent().unwrap_or_else(|| Path::new("."));
    let a = &cfg.aggregator;
    let secret_path = resolve_secret_path(&a.client_secret_file, base);
    let secret = station::read_secret("aggregator client secret", &secret_path)?;
    let key_path = resolve_secret_path(&a.private_key_file, base);
    let pem = station::read_secret("aggregator private key", &key_path)?;
    let signer = RsaSigner::from_pem(&pem).map_err(|cause| StartupError::Key {
        what: "aggregator private key",
        path: key_path,
        cause,
    })?;
    aggregator_with_secrets(cfg, secret, signer, clock)
}

/// Builds the aggregator client from secrets already in memory (the demo's built-in ones).
pub fn aggregator_with_secrets(
    cfg: &Config,
    secret: String,
    signer: RsaSigner,
    clock: Arc<dyn Clock>,
) -> Result<Aggregator, StartupError> {
    let device = DeviceContext {
        device_id: cfg
            .lanes
            .first()
            .map(|l| l.device_id(&cfg.station))
            .unwrap_or_else(|| cfg.station.id.clone()),
        latitude: cfg.station.latitude,
        longitude: cfg.station.longitude,
    };
    let client = SnapClient::new(&cfg.aggregator, secret, signer, device, clock)
        .map_err(|e| StartupError::Client(e.to_string()))?;
    Ok(Aggregator::new(client, &cfg.aggregator))
}

/// Opens the journal and the passenger key named by the config.
pub fn open_storage(cfg: &Config) -> Result<(Journal, PassengerKey), StartupError> {
    let path = &cfg.journal.path;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    let journal = Journal::open(path).map_err(|cause| StartupError::Journal {
        path: path.clone(),
        cause,
    })?;
    let key_path = cfg.journal.passenger_key_path();
    let load = if cfg.passenger_key_must_exist() {
        PassengerKey::load
    } else {
        PassengerKey::load_or_create
    };
    let key = load(&key_path).map_err(|cause| StartupError::Secret {
        what: "passenger key",
        path: key_path,
        cause,
    })?;
    Ok((journal, key))
}

/// Builds a whole station from a config file.
pub fn station_from_config(cfg: Config, config_path: &Path) -> Result<Arc<Station>, StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(cfg.time_zone()));
    let aggregator = aggregator_from_config(&cfg, config_path, clock.clone())?;
    let (mut journal, key) = open_storage(&cfg)?;
    let line = match cfg.journeys.line_settings(&cfg.station.id) {
        None => None,
        Some(settings) => {
            let store = crate::line::LineStore::connect(&settings)
                .map_err(|e| StartupError::Line(e.to_string()))?;
            journal.set_line_station(Some(cfg.station.id.clone()));
            let minutes = |m: u64| i64::try_from(m.saturating_mul(60_000)).unwrap_or(i64::MAX);
            let tasks = crate::daemon::line::LineTasks {
                replicate_every: std::time::Duration::from_millis(
                    cfg.journeys.replicate_interval_ms,
                ),
                converge_ms: minutes(cfg.journeys.converge_hours.saturating_mul(60)),
                max_trip_ms: minutes(cfg.policy.max_trip_minutes),
                retain_ms: cfg
                    .journeys
                    .retain_days
                    .map(|d| minutes(u64::from(d).saturating_mul(24 * 60))),
            };
            Some(Arc::new(crate::daemon::line::LineLink::new(
                store,
                cfg.station.id.clone(),
                key.fingerprint(),
                tasks,
            )))
        }
    };
    Ok(Station::new(
        Arc::new(cfg),
        journal,
        aggregator,
        clock,
        key,
        line,
    ))
}

/// Joins the station's line, if it has one: the schema brought up to date and the passenger
/// key checked. A key that is not the line's (or any other fault retrying cannot fix) stops
/// the start; a line database that is away only degrades the station (exits use what the
/// station knows) until the replicator reaches it.
pub async fn join_line(station: &Station) -> Result<(), StartupError> {
    let Some(line) = &station.line else {
        return Ok(());
    };
    match line.join().await {
        Ok(()) => Ok(()),
        Err(e) if e.class() == crate::line::ErrorClass::Fatal => {
            Err(StartupError::Line(e.to_string()))
        }
        Err(e) => {
            tracing::warn!(target: "tapgate::line", error = %e,
                "line database not reachable: taps use what this station knows until it is");
            Ok(())
        }
    }
}

/// The relay a lane's config asks for.
pub fn relay_from_config(lane: &LaneConfig) -> Result<Arc<dyn Relay>, StartupError> {
    match &lane.relay {
        RelayConfig::Recording => Ok(Arc::new(RecordingRelay::bench(&lane.name))),
        RelayConfig::Gpio(spec) => crate::relay::gpio::GpioRelay::new(spec)
            .map(|r| Arc::new(r) as Arc<dyn Relay>)
            .map_err(|e| StartupError::Relay(e.to_string())),
    }
}
