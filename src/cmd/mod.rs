//! The commands behind the `tapgate` binary. Each returns the process exit code; errors are
//! printed by `main` with their whole cause chain.

#[cfg(feature = "sim")]
pub mod audit;
#[cfg(feature = "sim")]
pub mod demo;
pub mod doctor;
pub mod journal;
pub mod journeys;
#[cfg(feature = "sim")]
pub mod sim_settings;

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;
use crate::daemon::lane::Lane;
use crate::daemon::reconcile::Reconciler;

pub use crate::daemon::logging::LogFormat;

/// Reads a payload argument: the text itself, or `-` for stdin. Surrounding whitespace is
/// dropped (a shell's trailing newline is not part of the payload).
fn payload_arg(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the payload from stdin")?;
        Ok(s.trim().to_string())
    } else {
        Ok(arg.trim().to_string())
    }
}

/// `tapgate decode`.
pub fn decode(arg: &str, json: bool) -> anyhow::Result<ExitCode> {
    let text = payload_arg(arg)?;
    let report = crate::cpm::decode_report(&text);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `tapgate check-config`.
pub fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(file) {
        Ok(cfg) => {
            println!(
                "{}: ok (station {} {:?}, {} lane(s))",
                file.display(),
                cfg.station.id,
                cfg.station.name,
                cfg.lanes.len()
            );
            // Resolved paths, so a technician sees which files `run` will use.
            println!("  journal {}", cfg.journal.path.display());
            println!(
                "  passenger key {}",
                cfg.journal.passenger_key_path().display()
            );
            match cfg.journeys.line_settings(&cfg.station.id) {
                None => println!("  journeys local (this station only)"),
                Some(s) => {
                    println!("  journeys line database {}", s.url);
                    if let Some(p) = &s.password_file {
                        println!("  line database password {}", p.display());
                    }
                    if let Some(p) = &s.ca_file {
                        println!("  line database CA {}", p.display());
                    }
                }
            }
            if cfg.station.bench {
                println!("  bench rig: lanes with the recording relay drive no gate");
            }
            // The aggregator client exactly as `run` builds it: a key that does not parse is
            // refused here too. A secret not installed yet (or only handed over by systemd's
            // LoadCredential= at start) is a warning: the config itself is right.
            let clock: std::sync::Arc<dyn crate::clock::Clock> =
                std::sync::Arc::new(crate::clock::SystemClock::new(cfg.time_zone()));
            match crate::daemon::aggregator_from_config(&cfg, file, clock) {
                Ok(_) => println!("  aggregator secrets readable, client ok"),
                Err(crate::daemon::StartupError::Secret { what, path, cause }) => eprintln!(
                    "{}: warning: cannot read the {what} {} ({cause}): `run` will not start \
                     until it can (under systemd: LoadCredential=)",
                    file.display(),
                    path.display()
                ),
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return Ok(ExitCode::from(1));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `tapgate tap`: one tap through the whole pipeline, printed as one JSON object.
pub async fn tap(config: &Path, lane_name: &str, arg: &str) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let lane_cfg = cfg
        .lane(lane_name)
        .cloned()
        .with_context(|| format!("no lane named {lane_name:?} in {}", config.display()))?;
    let text = payload_arg(arg)?;
    let station = match crate::daemon::station_from_config(cfg, config) {
        Ok(s) => s,
        Err(crate::daemon::StartupError::Journal { cause, .. }) if cause.is_storage_fault() => {
            // No money may move without a record: the decision is still a decision.
            let r = crate::daemon::lane::TapReport::refused(
                &lane_cfg.name,
                lane_cfg.direction,
                crate::fare::policy::TapOutcome::JournalUnavailable,
                format!("journal unavailable, tap refused: {cause}"),
            );
            println!("{}", serde_json::to_string(&r)?);
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    Reconciler::new(station.clone()).recover_pending().await?;
    let relay = crate::daemon::relay_from_config(&lane_cfg)?;
    let lane = Lane::new(lane_cfg, station.clone(), relay);
    let report = lane.handle_payload(&text, 0).await;
    println!("{}", serde_json::to_string(&report)?);
    // A reply still on its way after the deadline is journaled before exiting.
    station.drain().await;
    Ok(ExitCode::SUCCESS)
}

/// `tapgate reconcile`.
pub async fn reconcile(config: &Path, max_seconds: u64) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let station = crate::daemon::station_from_config(cfg, config)?;
    let rec = Reconciler::new(station);
    let recovered = rec.recover_pending().await?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "operations found PENDING at start are now UNKNOWN"
        );
    }
    let left = rec
        .run_until_settled(Duration::from_secs(max_seconds))
        .await?;
    println!("{{\"not_final\":{left}}}");
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `tapgate sim`.
#[cfg(feature = "sim")]
pub async fn sim(
    listen: &str,
    public_key: Option<std::path::PathBuf>,
    client_id: Option<String>,
    client_secret_file: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let mut cfg = crate::sim::SimConfig::demo();
    if let Some(p) = public_key {
        let pem =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        cfg.partner_public_key_der = crate::snap::sign::rsa_public_key_from_pem(&pem)
            .with_context(|| format!("public key {}", p.display()))?;
    }
    if let Some(id) = client_id {
        cfg.client_id = id;
    }
    if let Some(p) = client_secret_file {
        cfg.client_secret = crate::daemon::station::read_secret("client secret", &p)?;
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not host:port"))?;
    tracing::info!(%addr, "acquirer simulator listening");
    crate::sim::serve_forever(cfg, addr).await?;
    Ok(ExitCode::SUCCESS)
}

/// `tapgate readers`: lists readers; with `--watch PATTERN`, prints each tap's decoded, masked
/// view until interrupted. Moves no money.
pub async fn readers(watch: Option<String>) -> anyhow::Result<ExitCode> {
    let names = tokio::task::spawn_blocking(crate::nfc::pcsc::list_readers)
        .await?
        .map_err(|e| {
            anyhow::anyhow!("cannot list readers through pcscd: {e} (is pcscd running?)")
        })?;
    if names.is_empty() {
        println!("no readers");
    }
    for n in &names {
        println!("{n}");
    }
    let Some(pattern) = watch else {
        return Ok(ExitCode::SUCCESS);
    };
    use crate::nfc::source::CardSource as _;
    // The lanes' own card source, with the reader's LED and buzzer left alone.
    let (mut source, handle) = crate::nfc::pcsc::PcscSource::start(
        "watch",
        crate::nfc::pcsc::ReaderPattern::new(&pattern),
        crate::nfc::pcsc::ReaderOptions::default(),
        crate::nfc::feedback::FeedbackModel::Off,
    )?;
    println!("watching {pattern:?}: tap a phone (Ctrl-C to stop)");
    loop {
        tokio::select! {
            ev = source.next_event() => match ev {
                Some(ev) => println!("{}", ev.watch_line()),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tokio::task::spawn_blocking(move || handle.stop()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `tapgate relay-pulse`: one pulse on a lane's GPIO relay, for the technician at the cabinet.
pub async fn relay_pulse(config: &Path, lane: &str, ms: Option<u64>) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let lane_cfg = cfg
        .lane(lane)
        .with_context(|| format!("no lane named {lane:?} in {}", config.display()))?;
    let crate::config::RelayConfig::Gpio(spec) = lane_cfg.relay.clone() else {
        anyhow::bail!("lane {lane:?} has no GPIO relay (relay kind is not \"gpio\")");
    };
    let ms = ms.unwrap_or(spec.pulse_ms);
    tokio::task::spawn_blocking(move || crate::relay::gpio::pulse_once(&spec, ms)).await??;
    println!("pulsed lane {lane} for {ms} ms");
    Ok(ExitCode::SUCCESS)
}

/// `tapgate gpio-watch`: prints gate input events until Ctrl-C.
pub async fn gpio_watch(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    if cfg.inputs.is_empty() {
        println!("no [[input]] configured");
        return Ok(ExitCode::SUCCESS);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let watcher = crate::relay::inputs::watch(&cfg.inputs, tx)?;
    println!("watching {} input(s) (Ctrl-C to stop)", cfg.inputs.len());
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => println!(
                    "{:>10.3}s {:<10} {:<20} {:?}{}",
                    ev.at.as_secs_f64(),
                    format!("{:?}", ev.role),
                    ev.input,
                    ev.kind,
                    if ev.initial { " (state at start)" } else { "" }
                ),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(watcher);
    Ok(ExitCode::SUCCESS)
}
