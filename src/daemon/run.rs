//! `tapgate run`: the daemon. Starts the lanes (reader → pipeline → relay), the reconciler,
//! the token keeper and the metrics endpoint; talks to systemd (READY, STATUS, WATCHDOG,
//! STOPPING); shuts down as a protocol: readers stop taking taps, every tap in progress ends
//! journaled, late replies are recorded, the reconciler stops between operations.
//!
//! Observability never slows a tap: `/metrics` and the watchdog read the journal's counts
//! through [`JournalGauges`], a read-only connection of their own, never through the writer's
//! lock that the lanes wait for.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{CardSourceConfig, Config, LaneConfig};
use crate::daemon::lane::Lane;
use crate::daemon::metrics::Metrics;
use crate::daemon::reconcile::Reconciler;
use crate::daemon::Station;
use crate::fare::policy::TapOutcome;
use crate::journal::{JournalError, JournalReader};
use crate::nfc::pcsc::{PcscSource, ReaderOptions, ReaderPattern};
use crate::nfc::source::{CardSource, SourceControl};
use crate::nfc::CardEvent;
use crate::relay::inputs::InputWatcher;
use crate::relay::Relay;

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
    crate::daemon::join_line(&station).await?;
    recover_pending(&station).await?;
    let gauges = Arc::new(
        JournalGauges::open(&cfg.journal.path, station.metrics.clone())
            .context("opening the journal's reader for metrics")?,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    // Before the lanes: their first tap is shown.
    let _display = crate::display::start(&cfg, &station.core(), &stop_rx).await?;
    let lanes = start_lanes(&cfg, &station)?;
    let qr = start_qr(&cfg, &station, &lanes.relays);
    let _inputs = start_inputs(&cfg, &station, &lanes.relays, &stop_rx)?;
    let background = Background::start(&station, &stop_rx);
    start_metrics(&cfg, &gauges, &stop_rx).await?;

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!(
            "ready: station {} with {} lane(s)",
            cfg.station.id,
            cfg.lanes.len()
        )),
    ]);
    tracing::info!(station = %cfg.station.id, lanes = cfg.lanes.len(), "tapgate ready");
    wait_for_signal(&station, &gauges, &lanes.sources).await?;
    if let Some(desk) = qr {
        desk.shut_down().await;
    }
    shut_down(lanes, &station, stop_tx, background).await;
    Ok(())
}

/// The QR desk of `[qr]`, attached to the station (its display must be up): from now on the
/// offered lanes' screens sell QRs.
fn start_qr(
    cfg: &Config,
    station: &Arc<Station>,
    relays: &HashMap<String, Arc<dyn Relay>>,
) -> Option<Arc<crate::qr::QrDesk>> {
    let q = cfg.qr.as_ref()?;
    let hub = station.display()?.clone();
    let desk = crate::qr::QrDesk::new(
        station.core(),
        hub,
        q.clone(),
        station.aggregator.notify_keys(&cfg.aggregator.partner_id),
        relays.clone(),
    );
    station.attach_qr(desk.clone());
    let mut offers: Vec<String> = desk
        .offers()
        .iter()
        .map(|(lane, (fare, direction))| format!("{lane} ({}) {fare}", direction.as_str()))
        .collect();
    offers.sort();
    tracing::info!(target: "tapgate::qr", lanes = %offers.join(", "),
        validity_seconds = q.validity_seconds, poll_ms = q.poll_ms,
        notify_path = %q.notify_path, "QR sales open");
    Some(desk)
}

/// Marks payments left PENDING by a previous process UNKNOWN, for the reconciler to query.
async fn recover_pending(station: &Arc<Station>) -> anyhow::Result<()> {
    let recovered = Reconciler::new(station.clone()).recover_pending().await?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "payments found PENDING at start (the process stopped mid-payment) are now UNKNOWN and will be resolved by query"
        );
    }
    Ok(())
}

/// The running lanes: each lane's relay (the gate inputs drive them too), the daemon's hold on
/// each card source, and each lane's event loop.
struct Lanes {
    relays: HashMap<String, Arc<dyn Relay>>,
    sources: Vec<Box<dyn SourceControl>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Builds every lane's relay and card source and starts its event loop.
fn start_lanes(cfg: &Config, station: &Arc<Station>) -> anyhow::Result<Lanes> {
    let mut lanes = Lanes {
        relays: HashMap::new(),
        sources: Vec::new(),
        tasks: Vec::new(),
    };
    for lane_cfg in &cfg.lanes {
        let relay = crate::daemon::relay_from_config(lane_cfg)?;
        if matches!(lane_cfg.relay, crate::config::RelayConfig::Recording) {
            tracing::warn!(
                lane = %lane_cfg.name,
                "BENCH RIG: this lane takes fares and drives NO gate (recording relay, station.bench = true)"
            );
        }
        lanes.relays.insert(lane_cfg.name.clone(), relay.clone());
        let lane = Arc::new(Lane::new(lane_cfg.clone(), station.clone(), relay));
        let Some((source, control)) = card_source(lane_cfg)? else {
            tracing::info!(lane = %lane_cfg.name, "lane has no reader (card_source none)");
            continue;
        };
        lanes.sources.push(control);
        lanes
            .tasks
            .push(tokio::spawn(lane_loop(lane, source, station.clone())));
    }
    Ok(lanes)
}

/// A running card source: the lane's events, and the daemon's control over them.
type StartedSource = (Box<dyn CardSource>, Box<dyn SourceControl>);

/// The card source a lane's config asks for, with the daemon's control over it; `None` for a
/// lane without a reader. The one place the daemon names a kind of reader.
fn card_source(lane_cfg: &LaneConfig) -> anyhow::Result<Option<StartedSource>> {
    match &lane_cfg.card_source {
        CardSourceConfig::None => Ok(None),
        CardSourceConfig::Pcsc {
            reader,
            tap_deadline_ms,
            feedback,
        } => {
            let opts = ReaderOptions {
                tap_deadline: Duration::from_millis(*tap_deadline_ms),
                ..ReaderOptions::default()
            };
            let (source, handle) = PcscSource::start(
                &lane_cfg.name,
                ReaderPattern::new(reader),
                opts,
                feedback.model(),
            )
            .with_context(|| format!("starting the reader thread of lane {}", lane_cfg.name))?;
            Ok(Some((Box::new(source), Box::new(handle))))
        }
    }
}

/// Watches the gate inputs, when the config has any, feeding the gate monitor task.
fn start_inputs(
    cfg: &Config,
    station: &Arc<Station>,
    relays: &HashMap<String, Arc<dyn Relay>>,
    stop_rx: &watch::Receiver<bool>,
) -> anyhow::Result<Option<InputWatcher>> {
    if cfg.inputs.is_empty() {
        return Ok(None);
    }
    let (tx, rx) = mpsc::channel(64);
    let watcher = crate::relay::inputs::watch(&cfg.inputs, tx)
        .map_err(|e| anyhow::anyhow!("gate inputs: {e}"))?;
    tokio::spawn(crate::daemon::gate::run(
        station.clone(),
        relays.clone(),
        rx,
        stop_rx.clone(),
    ));
    Ok(Some(watcher))
}

/// The tasks that run beside the lanes until the stop signal: reconciler, token keeper,
/// journal retention.
struct Background {
    reconciler: JoinHandle<()>,
    token_keeper: JoinHandle<()>,
    retention: JoinHandle<()>,
    replicator: Option<JoinHandle<()>>,
}

impl Background {
    fn start(station: &Arc<Station>, stop_rx: &watch::Receiver<bool>) -> Self {
        Background {
            reconciler: tokio::spawn(Reconciler::new(station.clone()).run(stop_rx.clone())),
            token_keeper: tokio::spawn(crate::aggregator::keep_warm(
                station.aggregator.clone(),
                stop_rx.clone(),
            )),
            retention: tokio::spawn(crate::daemon::retention::run(
                station.clone(),
                stop_rx.clone(),
            )),
            replicator: station.line.clone().map(|l| {
                tokio::spawn(l.run(station.core(), station.journal.clone(), stop_rx.clone()))
            }),
        }
    }

    async fn join(self) {
        let _ = self.reconciler.await;
        let _ = self.token_keeper.await;
        let _ = self.retention.await;
        if let Some(r) = self.replicator {
            let _ = r.await;
        }
    }
}

/// Binds and serves the metrics endpoint, when `metrics.listen` is set.
async fn start_metrics(
    cfg: &Config,
    gauges: &Arc<JournalGauges>,
    stop_rx: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(listen) = &cfg.metrics.listen else {
        return Ok(());
    };
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("metrics.listen {listen:?} is not host:port"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    tokio::spawn(serve_metrics(listener, gauges.clone(), stop_rx.clone()));
    tracing::info!(%addr, "metrics endpoint listening");
    Ok(())
}

/// Pings the systemd watchdog while the daemon is alive, until SIGTERM or SIGINT.
async fn wait_for_signal(
    station: &Station,
    gauges: &JournalGauges,
    sources: &[Box<dyn SourceControl>],
) -> anyhow::Result<()> {
    let watchdog = watchdog_interval();
    let mut ticker = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if watchdog.is_some() && alive(station, gauges, sources).await {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Shutdown as a protocol: the card sources stop taking taps, every lane finishes the taps it
/// has (journaled, late replies recorded), then the background tasks stop between operations.
async fn shut_down(
    lanes: Lanes,
    station: &Station,
    stop_tx: watch::Sender<bool>,
    background: Background,
) {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: finishing taps in progress"),
    ]);
    tracing::info!("stopping: readers off, finishing taps in progress");
    for source in lanes.sources {
        // Blocking: a reader joins its thread after cancelling its wait.
        let _ = tokio::task::spawn_blocking(move || source.stop()).await;
    }
    for t in lanes.tasks {
        let _ = t.await;
    }
    station.drain().await;
    let _ = stop_tx.send(true);
    background.join().await;
    tracing::info!("stopped cleanly");
}

/// The watchdog ping interval: half of systemd's `WatchdogSec`, when set.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// Whether the daemon's parts are alive: the journal answers and every card source runs.
///
/// "The journal answers" is asked of the writer's own connection, through its lock, as the
/// lanes use it: a writer stuck (say, in an fsync that never returns) withholds the ping. The
/// question is one row's read, so the lock is held for microseconds; the counts by state
/// come from the gauges' reader, off that lock.
async fn alive(
    station: &Station,
    gauges: &JournalGauges,
    sources: &[Box<dyn SourceControl>],
) -> bool {
    if sources.iter().any(|s| !s.is_running()) {
        tracing::error!("a reader thread has stopped: withholding the watchdog ping");
        return false;
    }
    if let Err(e) = station.journal.run(|j| j.answers()).await {
        tracing::error!(error = %e, "journal does not answer: withholding the watchdog ping");
        return false;
    }
    if let Err(e) = gauges.refresh().await {
        // Metrics only: taps do not use the reader, so this is no reason for a restart.
        tracing::warn!(error = %e, "journal counts unavailable for the metrics");
    }
    true
}

/// `tapgate_journal_operations{state}` (ATTENTION above all), read beside the writer: from a
/// read-only connection on a thread of its own ([`JournalReader`]), whose counts are kept
/// from the journal's events, so neither `/metrics` nor the watchdog takes the writer's lock
/// or scans the journal, at any scrape rate.
pub struct JournalGauges {
    reader: JournalReader,
    metrics: Arc<Metrics>,
}

impl JournalGauges {
    /// Opens the journal at `path` for reading (the writer must have opened it first) and
    /// sets the gauges in `metrics`.
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<JournalGauges, JournalError> {
        Ok(JournalGauges {
            reader: JournalReader::open(path)?,
            metrics,
        })
    }

    /// Sets `tapgate_journal_operations{state}` from a read that begins after this call.
    pub async fn refresh(&self) -> Result<(), JournalError> {
        for (state, n) in self.reader.counts_by_state().await? {
            self.metrics.set(
                "tapgate_journal_operations",
                &[("state", state.as_str())],
                n as f64,
            );
        }
        Ok(())
    }

    /// What `GET /metrics` answers: the gauges refreshed, then every metric in the
    /// Prometheus text format. The last counts stand when the journal cannot be read.
    pub async fn scrape(&self) -> String {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "journal counts unavailable for /metrics");
        }
        self.metrics.render()
    }
}

/// One lane: taps are handled one at a time, in order, until its card source ends.
async fn lane_loop(lane: Arc<Lane>, mut source: Box<dyn CardSource>, station: Arc<Station>) {
    let name = lane.name().to_owned();
    consume_events(&name, source.as_mut(), &station.metrics, |ev| {
        let lane = Arc::clone(&lane);
        async move { lane.handle_event(ev).await.map(|report| report.outcome) }
    })
    .await;
}

/// A lane's event loop, apart from the lane itself: reader changes go to the log and the
/// `tapgate_reader_up` gauge; each tap goes to `handle_tap`, one at a time and in order, and
/// the outcome it returns (none when the tap was not handled, e.g. a debounced repeat) is
/// shown to the passenger through the source. Returns when the source ends.
async fn consume_events<F, Fut>(
    lane: &str,
    source: &mut dyn CardSource,
    metrics: &Metrics,
    mut handle_tap: F,
) where
    F: FnMut(CardEvent) -> Fut,
    Fut: Future<Output = Option<TapOutcome>>,
{
    while let Some(ev) = source.next_event().await {
        let reader = match &ev {
            CardEvent::ReaderUp { reader } => {
                metrics.set("tapgate_reader_up", &[("lane", lane)], 1.0);
                tracing::info!(lane, reader = %reader, "reader present");
                continue;
            }
            CardEvent::ReaderDown { reader, why } => {
                metrics.set("tapgate_reader_up", &[("lane", lane)], 0.0);
                tracing::warn!(lane, reader = %reader, why = %why, "reader missing: lane out of service");
                continue;
            }
            CardEvent::Payload { reader, .. } | CardEvent::ReadFailed { reader, .. } => {
                reader.clone()
            }
        };
        if let Some(outcome) = handle_tap(ev).await {
            // The one mapping the passenger's screen uses too.
            source.show(&reader, crate::display::signal_for(outcome));
        }
    }
}

/// Serves `GET /metrics` in the Prometheus text format until `stop` changes.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    gauges: Arc<JournalGauges>,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let gauges = gauges.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    gauges.scrape().await,
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::nfc::feedback::Signal;
    use crate::nfc::scripted::{Fault, ScriptedPhone};
    use crate::nfc::source::{tap_event, ScriptedSource};
    use crate::nfc::TapReadError;

    fn reader_up(metrics: &Metrics) -> Option<f64> {
        metrics.gauge("tapgate_reader_up", &[("lane", "G1")])
    }

    /// A tap as the handler saw it: the payload, or the read error.
    fn summary(ev: &CardEvent) -> String {
        match ev {
            CardEvent::Payload { qr_content, .. } => format!("payload {qr_content}"),
            CardEvent::ReadFailed { error, .. } => format!("failed {error}"),
            other => format!("not a tap: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_lane_loop_reports_the_reader_hands_taps_over_in_order_and_shows_each_verdict() {
        let phone = |p: &str| ScriptedPhone::new(p, &[4]);
        let mut source = ScriptedSource::new([
            CardEvent::ReaderDown {
                reader: "ACR*".into(),
                why: "no reader matches".into(),
            },
            CardEvent::ReaderUp {
                reader: "R1".into(),
            },
            tap_event("R1", &mut phone("AAAAAA")),
            tap_event("R1", &mut phone("BBBBBB").with_fault(Fault::WalletNotReady)),
            tap_event("R1", &mut phone("CCCCCC")),
            tap_event("R1", &mut phone("DDDDDD")),
            CardEvent::ReaderDown {
                reader: "R1".into(),
                why: "reader removed".into(),
            },
        ]);
        let shown = source.shown();
        let metrics = Metrics::new();
        let seen = Mutex::new(Vec::new());
        let mut outcomes = vec![
            Some(TapOutcome::Approved),
            Some(TapOutcome::WalletNotReady),
            Some(TapOutcome::Declined),
            None,
        ]
        .into_iter();
        consume_events("G1", &mut source, &metrics, |ev| {
            seen.lock()
                .unwrap()
                .push((summary(&ev), reader_up(&metrics)));
            std::future::ready(outcomes.next().flatten())
        })
        .await;

        let up = Some(1.0);
        assert_eq!(
            seen.into_inner().unwrap(),
            vec![
                ("payload AAAAAA".to_owned(), up),
                (
                    format!("failed {}", TapReadError::WalletNotReady { sw: 0 }),
                    up
                ),
                ("payload CCCCCC".to_owned(), up),
                ("payload DDDDDD".to_owned(), up),
            ],
            "only taps reach the lane, in order, with the reader reported up"
        );
        assert_eq!(reader_up(&metrics), Some(0.0), "the reader went away last");
        assert_eq!(
            shown.get(),
            vec![
                ("R1".to_owned(), Signal::Approved),
                ("R1".to_owned(), Signal::WalletNotReady),
                ("R1".to_owned(), Signal::Declined),
            ],
            "one verdict per handled tap, on the reader that read it; none for an unhandled tap"
        );
    }

    #[tokio::test]
    async fn the_lane_loop_ends_when_its_source_is_stopped() {
        let mut source = ScriptedSource::new([
            CardEvent::ReaderUp {
                reader: "R1".into(),
            },
            tap_event("R1", &mut ScriptedPhone::new("AAAA", &[])),
        ]);
        let control: Box<dyn SourceControl> = Box::new(source.control());
        assert!(control.is_running());
        control.stop();
        let mut taps = 0;
        consume_events("G1", &mut source, &Metrics::new(), |_| {
            taps += 1;
            std::future::ready(Some(TapOutcome::Approved))
        })
        .await;
        assert_eq!(taps, 0, "a stopped source delivers nothing more");
        assert!(source.shown().get().is_empty());
    }

    /// The scrape path has no way to the writer: with the writer's lock held in a long
    /// write transaction (as a slow fsync or a retention batch would hold it), `/metrics`
    /// still answers at once, with what was committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_answers_while_the_writer_is_held_in_a_long_transaction() {
        use crate::daemon::station::JournalHandle;
        use crate::journal::{Journal, NewOp, OpKind};

        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("j.db");
        let mut j = Journal::open(&path).expect("journal");
        j.begin(&NewOp {
            partner_reference_no: "TG-1".into(),
            kind: OpKind::Hold,
            lane: "in-1".into(),
            direction: crate::fare::Direction::In,
            station_id: "LBB".into(),
            amount: crate::fare::Rupiah(14_000),
            pan_key: format!("{:064x}", 1),
            pan_masked: "93600914*******1234".into(),
            nns: "93600914".into(),
            journey_id: None,
            next_attempt_at_ms: 5_000,
            created_at_ms: 1_000,
        })
        .expect("begin");
        let writer = JournalHandle::new(j);
        let gauges = JournalGauges::open(&path, Arc::new(Metrics::new())).expect("gauges");

        const HELD: Duration = Duration::from_secs(3);
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let file = path.clone();
        let held_writer = writer.clone();
        let busy = tokio::spawn(async move {
            held_writer
                .run(move |_journal| {
                    // The writer's lock is held from here; inside it, a write transaction on the
                    // file that commits nothing for a long time.
                    let c = rusqlite::Connection::open(&file).expect("second connection");
                    c.execute_batch(
                        "BEGIN IMMEDIATE; \
                 INSERT INTO fare_ops (partner_reference_no, kind, lane, direction, station_id, \
                 amount, pan_key, pan_masked, nns, state, created_at_ms, updated_at_ms) \
                 VALUES ('TG-2', 'hold', 'in-1', 'in', 'LBB', 14000, 'k', 'm', '93600914', \
                 'ATTENTION', 2000, 2000);",
                    )
                    .expect("long transaction");
                    let _ = held_tx.send(());
                    std::thread::sleep(HELD);
                    c.execute_batch("ROLLBACK").expect("rollback");
                    Ok(())
                })
                .await
        });
        held_rx.await.expect("the writer is held");

        let started = std::time::Instant::now();
        let body = tokio::time::timeout(Duration::from_secs(1), gauges.scrape())
            .await
            .expect("the scrape waited for the writer");
        let took = started.elapsed();
        assert!(
            !busy.is_finished(),
            "the writer was released before the scrape answered"
        );
        assert!(
            body.contains("tapgate_journal_operations{state=\"PENDING\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("tapgate_journal_operations{state=\"ATTENTION\"} 0"),
            "uncommitted rows are not counted: {body}"
        );
        eprintln!("scrape answered in {took:?} with the writer held");
        busy.await.expect("join").expect("the writer's call");
    }

    #[test]
    fn each_outcome_shows_the_signal_its_gate_decision_means() {
        use TapOutcome::*;
        for (outcome, signal) in [
            (Approved, Signal::Approved),
            (Released, Signal::Approved),
            (UnpaidExit, Signal::Approved),
            (FreeExit, Signal::Approved),
            (WalletNotReady, Signal::WalletNotReady),
            (Declined, Signal::Declined),
            (Refused, Signal::Declined),
            (TryAgain, Signal::Declined),
            (ReadFailed, Signal::Declined),
            (InvalidPayload, Signal::Declined),
            (Duplicate, Signal::Declined),
            (Passback, Signal::Declined),
            (JournalUnavailable, Signal::Declined),
            (Unpaid, Signal::Declined),
        ] {
            assert_eq!(crate::display::signal_for(outcome), signal, "{outcome:?}");
        }
    }
}
