//! Reading the gate inputs: one line request per chip (consumer `tapgate`, both edges, kernel
//! debounce, monotonic timestamps) and one blocking reader thread per request, sending
//! [`InputEvent`]s to the daemon.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, EventClock, Offset, Value};
use gpiocdev::request::{Config, Request};
use tokio::sync::mpsc;

use super::{
    classify, monotonic_now, Edge, GpioInputSpec, InputBias, InputEvent, InputEventKind, InputRole,
};
use crate::relay::gpio::{check_free, gpio_error, resolve, ResolvedLine, CONSUMER};
use crate::relay::RelayError;

/// The running reader threads of [`watch`]. Dropping it stops them (within ~100 ms) and
/// releases the lines.
#[derive(Debug)]
pub struct InputWatcher {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    lines: Vec<ResolvedLine>,
}

impl InputWatcher {
    /// The lines watched, in request order.
    pub fn lines(&self) -> &[ResolvedLine] {
        &self.lines
    }

    /// Stops the reader threads and releases the lines.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for InputWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Watched {
    spec: GpioInputSpec,
    offset: Offset,
}

/// Requests the input lines (one request per chip, consumer `tapgate`, both edges, kernel
/// debounce, monotonic timestamps) and starts a reader thread per chip that sends
/// [`InputEvent`]s to `tx`. Emergency, door and fault inputs that are already active are
/// reported first, marked `initial`, so a daemon started during a fire alarm enters free-exit
/// mode at once.
///
/// The threads end when the watcher is dropped or `tx`'s receiver is closed.
pub fn watch(
    specs: &[GpioInputSpec],
    tx: mpsc::Sender<InputEvent>,
) -> Result<InputWatcher, RelayError> {
    let mut by_chip: BTreeMap<PathBuf, Vec<(ResolvedLine, GpioInputSpec)>> = BTreeMap::new();
    for spec in specs {
        spec.validate()?;
        let line = resolve(&spec.line_ref()?)?;
        let dup = by_chip
            .get(&line.chip)
            .is_some_and(|ls| ls.iter().any(|(l, _)| l.offset == line.offset));
        if dup {
            return Err(RelayError::Config(format!(
                "{line} is configured as more than one input"
            )));
        }
        check_free(&line)?;
        by_chip
            .entry(line.chip.clone())
            .or_default()
            .push((line, spec.clone()));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut watcher = InputWatcher {
        stop: Arc::clone(&stop),
        threads: Vec::new(),
        lines: Vec::new(),
    };
    for (chip, lines) in by_chip {
        let mut cfg = Config::default();
        cfg.on_chip(&chip);
        for (line, spec) in &lines {
            cfg.with_line(line.offset)
                .as_input()
                .with_edge_detection(EdgeDetection::BothEdges)
                .with_event_clock(EventClock::Monotonic)
                .with_debounce_period(Duration::from_millis(spec.debounce_ms));
            if spec.active_low {
                cfg.as_active_low();
            } else {
                cfg.as_active_high();
            }
            cfg.with_bias(match spec.bias {
                InputBias::AsIs => None,
                InputBias::PullUp => Some(Bias::PullUp),
                InputBias::PullDown => Some(Bias::PullDown),
                InputBias::Disabled => Some(Bias::Disabled),
            });
        }
        let req = Request::from_config(cfg)
            .with_consumer(CONSUMER)
            .request()
            .map_err(|e| gpio_error(&format!("requesting inputs on {}", chip.display()), e))?;
        let watched: Vec<Watched> = lines
            .iter()
            .map(|(l, s)| Watched {
                spec: s.clone(),
                offset: l.offset,
            })
            .collect();
        let initial = initial_events(&req, &watched)?;
        watcher.lines.extend(lines.into_iter().map(|(l, _)| l));
        let stop = Arc::clone(&stop);
        let tx = tx.clone();
        let name = format!("inputs {}", chip.display());
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || read_events(req, watched, initial, tx, stop))
            .map_err(|e| RelayError::Io(format!("starting the input reader thread: {e}")))?;
        watcher.threads.push(handle);
    }
    Ok(watcher)
}

fn initial_events(req: &Request, watched: &[Watched]) -> Result<Vec<InputEvent>, RelayError> {
    let mut out = Vec::new();
    for w in watched {
        if w.spec.role == InputRole::Passage {
            continue;
        }
        let v = req
            .value(w.offset)
            .map_err(|e| gpio_error(&format!("reading {}", w.spec.label()), e))?;
        if v == Value::Active {
            if let Some(kind) = classify(w.spec.role, Edge::Activated) {
                out.push(event(&w.spec, kind, monotonic_now(), true));
            }
        }
    }
    Ok(out)
}

fn event(spec: &GpioInputSpec, kind: InputEventKind, at: Duration, initial: bool) -> InputEvent {
    InputEvent {
        role: spec.role,
        lane: spec.lane.clone(),
        input: spec.label(),
        kind,
        at,
        initial,
    }
}

fn read_events(
    req: Request,
    watched: Vec<Watched>,
    initial: Vec<InputEvent>,
    tx: mpsc::Sender<InputEvent>,
    stop: Arc<AtomicBool>,
) {
    for ev in initial {
        if tx.blocking_send(ev).is_err() {
            return;
        }
    }
    // The wait is bounded so a dropped watcher is noticed; events are queued by the kernel
    // meanwhile, with their own timestamps, so the bound costs no accuracy.
    let poll = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        match req.wait_edge_event(poll) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                fail(&watched, &tx, &format!("waiting for edge events: {e}"));
                return;
            }
        }
        let ev = match req.read_edge_event() {
            Ok(ev) => ev,
            Err(e) => {
                fail(&watched, &tx, &format!("reading an edge event: {e}"));
                return;
            }
        };
        let Some(w) = watched.iter().find(|w| w.offset == ev.offset) else {
            continue;
        };
        let edge = match ev.kind {
            EdgeKind::Rising => Edge::Activated,
            EdgeKind::Falling => Edge::Deactivated,
        };
        let Some(kind) = classify(w.spec.role, edge) else {
            continue;
        };
        let at = Duration::from_nanos(ev.timestamp_ns);
        tracing::debug!(input = %w.spec.label(), ?kind, seqno = ev.line_seqno, "gate input");
        if tx.blocking_send(event(&w.spec, kind, at, false)).is_err() {
            return;
        }
    }
}

fn fail(watched: &[Watched], tx: &mpsc::Sender<InputEvent>, why: &str) {
    tracing::error!(
        error = why,
        "gate input reader stopped; inputs are no longer observed"
    );
    for w in watched {
        let _ = tx.blocking_send(event(
            &w.spec,
            InputEventKind::WatchStopped,
            monotonic_now(),
            false,
        ));
    }
}
