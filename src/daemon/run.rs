//! `tapgate run`: the daemon. Starts the lanes (reader → pipeline → relay), the reconciler,
//! the token keeper and the metrics endpoint; talks to systemd (READY, STATUS, WATCHDOG,
//! STOPPING); shuts down as a protocol: readers stop taking taps, every tap in progress ends
//! journaled, late replies are recorded, the reconciler stops between operations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use crate::config::{CardSourceConfig, Config};
use crate::daemon::lane::Lane;
use crate::daemon::reconcile::Reconciler;
use crate::daemon::Station;
use crate::fare::policy::TapOutcome;
use crate::nfc::feedback::{FeedbackModel, Signal};
use crate::nfc::pcsc::{self, ReaderOptions, ReaderPattern};
use crate::nfc::CardEvent;

/// Sends one systemd notification; a missing `NOTIFY_SOCKET` (not under systemd) is fine.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config_path)?;
    notify(&[sd_notify::NotifyState::Status(
        "starting: journal and aggregator client",
    )]);
    let station = crate::daemon::station_from_config(cfg.clone(), config_path)?;
    let recovered = Reconciler::new(station.clone()).recover_pending().await?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "payments found PENDING at start (the process stopped mid-payment) are now UNKNOWN and will be resolved by query"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut readers = Vec::new();
    let mut lane_tasks = Vec::new();
    let mut relays = std::collections::HashMap::new();
    for lane_cfg in &cfg.lanes {
        let relay = crate::daemon::relay_from_config(lane_cfg)?;
        if matches!(lane_cfg.relay, crate::config::RelayConfig::Recording) {
            tracing::warn!(
                lane = %lane_cfg.name,
                "BENCH RIG: this lane takes fares and drives NO gate (recording relay, station.bench = true)"
            );
        }
        relays.insert(lane_cfg.name.clone(), relay.clone());
        let lane = Arc::new(Lane::new(lane_cfg.clone(), station.clone(), relay));
        match &lane_cfg.card_source {
            CardSourceConfig::None => {
                tracing::info!(lane = %lane_cfg.name, "lane has no reader (card_source none)");
            }
            CardSourceConfig::Pcsc {
                reader,
                tap_deadline_ms,
                feedback,
            } => {
                let (tx, rx) = mpsc::channel(16);
                let opts = ReaderOptions {
                    tap_deadline: Duration::from_millis(*tap_deadline_ms),
                    ..ReaderOptions::default()
                };
                let handle = pcsc::spawn_reader(ReaderPattern::new(reader), tx, opts)
                    .with_context(|| {
                        format!("starting the reader thread of lane {}", lane_cfg.name)
                    })?;
                readers.push(handle);
                lane_tasks.push(tokio::spawn(lane_loop(
                    lane.clone(),
                    rx,
                    feedback.model(),
                    station.clone(),
                )));
            }
        }
    }

    let _inputs = if cfg.inputs.is_empty() {
        None
    } else {
        let (tx, rx) = mpsc::channel(64);
        let watcher = crate::relay::inputs::watch(&cfg.inputs, tx)
            .map_err(|e| anyhow::anyhow!("gate inputs: {e}"))?;
        tokio::spawn(crate::daemon::gate::run(
            station.clone(),
            relays.clone(),
            rx,
            stop_rx.clone(),
        ));
        Some(watcher)
    };
    let reconciler = tokio::spawn(Reconciler::new(station.clone()).run(stop_rx.clone()));
    let token_keeper = tokio::spawn(keep_token(station.clone(), stop_rx.clone()));
    let retention = tokio::spawn(crate::daemon::retention::run(
        station.clone(),
        stop_rx.clone(),
    ));
    if let Some(listen) = &cfg.metrics.listen {
        let addr: std::net::SocketAddr = listen
            .parse()
            .with_context(|| format!("metrics.listen {listen:?} is not host:port"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics endpoint {addr}"))?;
        tokio::spawn(serve_metrics(listener, station.clone(), stop_rx.clone()));
        tracing::info!(%addr, "metrics endpoint listening");
    }

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!(
            "ready: station {} with {} lane(s)",
            cfg.station.id,
            cfg.lanes.len()
        )),
    ]);
    tracing::info!(station = %cfg.station.id, lanes = cfg.lanes.len(), "tapgate ready");

    let watchdog = watchdog_interval();
    let mut ticker = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if watchdog.is_some() && alive(&station, &readers).await {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }

    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: finishing taps in progress"),
    ]);
    tracing::info!("stopping: readers off, finishing taps in progress");
    for r in readers {
        // Blocking: joins the reader thread after cancelling its PC/SC wait.
        let _ = tokio::task::spawn_blocking(move || r.stop()).await;
    }
    for t in lane_tasks {
        let _ = t.await;
    }
    station.drain().await;
    let _ = stop_tx.send(true);
    let _ = reconciler.await;
    let _ = token_keeper.await;
    let _ = retention.await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The watchdog ping interval: half of systemd's `WatchdogSec`, when set.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// Whether the daemon's parts are alive: the journal answers and every reader thread runs.
async fn alive(station: &Station, readers: &[pcsc::ReaderHandle]) -> bool {
    if readers.iter().any(|r| !r.is_running()) {
        tracing::error!("a reader thread has stopped: withholding the watchdog ping");
        return false;
    }
    match refresh_journal_gauges(station).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "journal does not answer: withholding the watchdog ping");
            false
        }
    }
}

/// Sets `tapgate_journal_operations{state}` from the journal (ATTENTION above all).
async fn refresh_journal_gauges(station: &Station) -> Result<(), crate::journal::JournalError> {
    for (state, n) in station.journal.run(|j| j.counts_by_state()).await? {
        station.metrics.set(
            "tapgate_journal_operations",
            &[("state", state.as_str())],
            n as f64,
        );
    }
    Ok(())
}

/// One lane: taps are handled one at a time, in order, until the reader stops.
async fn lane_loop(
    lane: Arc<Lane>,
    mut rx: mpsc::Receiver<CardEvent>,
    feedback: FeedbackModel,
    station: Arc<Station>,
) {
    while let Some(ev) = rx.recv().await {
        let reader = match &ev {
            CardEvent::ReaderUp { reader } => {
                station
                    .metrics
                    .set("tapgate_reader_up", &[("lane", lane.name())], 1.0);
                tracing::info!(lane = lane.name(), reader = %reader, "reader present");
                continue;
            }
            CardEvent::ReaderDown { reader, why } => {
                station
                    .metrics
                    .set("tapgate_reader_up", &[("lane", lane.name())], 0.0);
                tracing::warn!(lane = lane.name(), reader = %reader, why = %why, "reader missing: lane out of service");
                continue;
            }
            CardEvent::Payload { reader, .. } | CardEvent::ReadFailed { reader, .. } => {
                reader.clone()
            }
        };
        let Some(report) = lane.handle_event(ev).await else {
            continue;
        };
        if feedback != FeedbackModel::Off {
            let signal = match report.outcome {
                TapOutcome::Approved
                | TapOutcome::Released
                | TapOutcome::UnpaidExit
                | TapOutcome::FreeExit => Signal::Approved,
                TapOutcome::WalletNotReady => Signal::WalletNotReady,
                _ => Signal::Declined,
            };
            let lane_name = lane.name().to_string();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = pcsc::show_feedback(&reader, feedback, signal) {
                    tracing::debug!(lane = %lane_name, error = %e, "reader feedback not shown");
                }
            });
        }
    }
}

/// Keeps an access token ready so a tap never waits for one; logs only changes.
async fn keep_token(station: Arc<Station>, mut stop: watch::Receiver<bool>) {
    let mut healthy: Option<bool> = None;
    loop {
        let ok = match station.aggregator.ensure_token().await {
            Ok(()) => true,
            Err(e) => {
                if healthy != Some(false) {
                    tracing::warn!(error = %e, "cannot obtain an aggregator access token (check clock, keys, network)");
                }
                false
            }
        };
        if ok && healthy == Some(false) {
            tracing::info!("aggregator access token obtained again");
        }
        healthy = Some(ok);
        let wait = if ok {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(5)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Serves `GET /metrics` in the Prometheus text format.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    station: Arc<Station>,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let st = station.clone();
            async move {
                if let Err(e) = refresh_journal_gauges(&st).await {
                    tracing::warn!(error = %e, "journal counts unavailable for /metrics");
                }
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    st.metrics.render(),
                )
            }
        }),
    );
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}
