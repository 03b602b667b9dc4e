//! Gate inputs on GPIO lines: passage sensors, the emergency (fire alarm) input, door and fault
//! contacts.
//!
//! [`watch`] requests the lines with kernel debounce and edge detection, and a blocking reader
//! thread per chip turns kernel edge events into typed [`InputEvent`]s on a tokio channel.
//! [`GateMonitor`] is the pure part: it takes those events, the gate opens the lanes report and
//! the time, and says what follows: enter or leave free-exit mode, a paid gate nobody walked
//! through, a passage nobody paid for.
//!
//! Hardware truths:
//! - Debounce is done by the kernel (`debounce_period` in the line request): an edge is only
//!   reported once the line has been stable for the period, so contact bounce shorter than it
//!   never reaches tapgate. Controllers without hardware debounce get gpiolib's software
//!   debounce, which needs the line to have an interrupt.
//! - Event timestamps are taken by the kernel at the interrupt, on `CLOCK_MONOTONIC`; they
//!   order events correctly even when tapgate reads them late. [`monotonic_now`] reads the
//!   same clock.
//! - Requesting a line with a bias (pull-up/down) changes the pin's pull; with `as_is` the
//!   pull set by the device tree or the board stays.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, EventClock, Offset, Value};
use gpiocdev::request::{Config, Request};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::gpio::{check_free, gpio_error, resolve, LineRef, ResolvedLine, CONSUMER};
use super::RelayError;

/// What a gate input tells.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum InputRole {
    /// A lane's passage sensor (light barrier, turnstile arm switch): active while someone
    /// is in the beam; each activation is one passage.
    Passage,
    /// The fire alarm / emergency release signal for the station: active while the alarm is on.
    Emergency,
    /// A cabinet or maintenance door contact: active while open.
    Door,
    /// The gate controller's fault output: active while the gate reports a fault.
    Fault,
}

/// Pull resistor setting requested for an input line.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputBias {
    /// Leave the pull as the board or device tree set it.
    #[default]
    AsIs,
    /// Enable the internal pull-up (for contacts that close to ground).
    PullUp,
    /// Enable the internal pull-down.
    PullDown,
    /// No pull: the line is driven by an external circuit.
    Disabled,
}

fn default_debounce_ms() -> u64 {
    20
}

/// One gate input, as the station config gives it (`[[inputs]]`).
///
/// ```toml
/// [[inputs]]
/// role = "emergency"
/// line = "FIRE_ALARM"
/// active_low = true
/// debounce_ms = 50
///
/// [[inputs]]
/// role = "passage"
/// lane = "G1"
/// chip = "gpiochip0"
/// offset = 22
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpioInputSpec {
    /// What the input tells.
    pub role: InputRole,
    /// The lane a passage sensor belongs to (required for `passage`; optional for `fault`
    /// and `door`, which may be per lane or per station).
    #[serde(default)]
    pub lane: Option<String>,
    /// The line's name as the device tree labels it. Leave out when using `offset`.
    #[serde(default)]
    pub line: Option<String>,
    /// The chip: `gpiochip0` or a path such as `/dev/gpiochip0`.
    #[serde(default)]
    pub chip: Option<String>,
    /// The line's offset on `chip`.
    #[serde(default)]
    pub offset: Option<Offset>,
    /// The input is active when the pin is low (contacts that close to ground with a pull-up).
    #[serde(default)]
    pub active_low: bool,
    /// Kernel debounce period, milliseconds (0..=1000; default 20). Edges that do not stay
    /// stable this long are not reported.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Pull resistor to request (default: leave as is).
    #[serde(default)]
    pub bias: InputBias,
}

impl GpioInputSpec {
    /// An input for the line named `name`, active-high, default debounce, no lane.
    pub fn named(role: InputRole, name: &str) -> Self {
        GpioInputSpec {
            role,
            lane: None,
            line: Some(name.to_string()),
            chip: None,
            offset: None,
            active_low: false,
            debounce_ms: default_debounce_ms(),
            bias: InputBias::AsIs,
        }
    }

    /// Where the line is, from `line`, `chip` and `offset`.
    pub fn line_ref(&self) -> Result<LineRef, RelayError> {
        LineRef::from_keys(self.line.as_deref(), self.chip.as_deref(), self.offset)
    }

    /// Checks the keys without touching hardware.
    pub fn validate(&self) -> Result<(), RelayError> {
        self.line_ref()?;
        if self.debounce_ms > 1000 {
            return Err(RelayError::Config(format!(
                "debounce_ms = {} is outside 0..=1000",
                self.debounce_ms
            )));
        }
        if self.role == InputRole::Passage && self.lane.is_none() {
            return Err(RelayError::Config(
                "a passage input needs `lane` (the lane whose sensor it is)".into(),
            ));
        }
        Ok(())
    }

    /// A label for logs: the line name, or `chip:offset`.
    pub fn label(&self) -> String {
        match (&self.line, &self.chip, self.offset) {
            (Some(n), _, _) => n.clone(),
            (None, Some(c), Some(o)) => format!("{c}:{o}"),
            _ => "?".into(),
        }
    }
}

/// What an input reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputEventKind {
    /// Someone passed through a lane.
    Passage,
    /// The emergency input became active (or was already active when watching started).
    EmergencyOn,
    /// The emergency input cleared.
    EmergencyOff,
    /// A door contact opened.
    DoorOpened,
    /// A door contact closed.
    DoorClosed,
    /// A fault output became active.
    FaultOn,
    /// A fault output cleared.
    FaultOff,
    /// The reader thread for this input stopped on an error it logged: the input is no longer
    /// observed. Raise an alert; restart to re-request.
    WatchStopped,
}

/// A logical edge, after active-low inversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// Inactive to active.
    Activated,
    /// Active to inactive.
    Deactivated,
}

/// What an edge on an input of `role` means; `None` when it means nothing by itself (the end
/// of a passage).
pub fn classify(role: InputRole, edge: Edge) -> Option<InputEventKind> {
    use InputEventKind::*;
    match (role, edge) {
        (InputRole::Passage, Edge::Activated) => Some(Passage),
        (InputRole::Passage, Edge::Deactivated) => None,
        (InputRole::Emergency, Edge::Activated) => Some(EmergencyOn),
        (InputRole::Emergency, Edge::Deactivated) => Some(EmergencyOff),
        (InputRole::Door, Edge::Activated) => Some(DoorOpened),
        (InputRole::Door, Edge::Deactivated) => Some(DoorClosed),
        (InputRole::Fault, Edge::Activated) => Some(FaultOn),
        (InputRole::Fault, Edge::Deactivated) => Some(FaultOff),
    }
}

/// One event from a gate input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputEvent {
    /// The input's role.
    pub role: InputRole,
    /// The lane it belongs to, if any.
    pub lane: Option<String>,
    /// The input's label (line name or `chip:offset`).
    pub input: String,
    /// What happened.
    pub kind: InputEventKind,
    /// When, on `CLOCK_MONOTONIC`: the kernel's timestamp for edges, the read time for the
    /// initial state.
    pub at: Duration,
    /// True for the state read when watching started, not an edge.
    pub initial: bool,
}

/// Now on `CLOCK_MONOTONIC`, the clock of edge event timestamps.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer we pass; CLOCK_MONOTONIC
    // always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

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

/// What [`GateMonitor`] concluded; the daemon acts on it (relays, logs, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Enter free-exit mode: hold every lane's gate open, stop validating taps, log loudly.
    EnterFreeExit {
        /// The emergency input that triggered it.
        input: String,
    },
    /// Every emergency input cleared: close the gates and resume validation.
    LeaveFreeExit,
    /// A passage matched to a paid open (or any passage in free-exit mode): count it.
    Passage {
        /// The lane.
        lane: String,
        /// True when the gate was open for free exit, not for a paid tap.
        free_exit: bool,
    },
    /// A passage with no paid open waiting: tailgating, or someone forced the gate. Log it.
    UnpaidPassage {
        /// The lane.
        lane: String,
        /// When the sensor fired.
        at: Duration,
    },
    /// A gate opened for a paid tap and nobody passed within the window: log it, so the
    /// fare can be looked at (the passenger may have walked away, or the sensor is broken).
    NobodyPassed {
        /// The lane.
        lane: String,
        /// When the gate was opened.
        opened_at: Duration,
    },
    /// A door or fault input changed; `active` is its new state.
    Status {
        /// Door or fault.
        role: InputRole,
        /// The input's label.
        input: String,
        /// The lane, when the input belongs to one.
        lane: Option<String>,
        /// The new state.
        active: bool,
    },
    /// An input is no longer observed (its reader stopped). Alert: while the emergency input
    /// is unobserved, tapgate cannot follow the fire alarm (the wiring still does).
    InputLost {
        /// The input's label.
        input: String,
    },
}

/// Gate-input logic without I/O: free-exit mode from the emergency inputs, passages matched to
/// paid opens per lane, and "opened but nobody passed" after `passage_window`.
///
/// Times are `CLOCK_MONOTONIC` durations ([`monotonic_now`], [`InputEvent::at`]).
#[derive(Clone, Debug)]
pub struct GateMonitor {
    passage_window: Duration,
    emergencies: BTreeSet<String>,
    waiting: BTreeMap<String, VecDeque<Duration>>,
    passages: BTreeMap<String, u64>,
}

impl GateMonitor {
    /// A monitor that expects a passage within `passage_window` of each paid open.
    pub fn new(passage_window: Duration) -> Self {
        GateMonitor {
            passage_window,
            emergencies: BTreeSet::new(),
            waiting: BTreeMap::new(),
            passages: BTreeMap::new(),
        }
    }

    /// True while any emergency input is active.
    pub fn free_exit(&self) -> bool {
        !self.emergencies.is_empty()
    }

    /// Passages counted on `lane` so far.
    pub fn passages(&self, lane: &str) -> u64 {
        self.passages.get(lane).copied().unwrap_or(0)
    }

    /// Paid opens on `lane` still waiting for their passenger.
    pub fn waiting(&self, lane: &str) -> usize {
        self.waiting.get(lane).map_or(0, VecDeque::len)
    }

    /// The lane opened its gate for a paid tap at `at`.
    pub fn gate_opened(&mut self, lane: &str, at: Duration) {
        if self.free_exit() {
            return;
        }
        self.waiting
            .entry(lane.to_string())
            .or_default()
            .push_back(at);
    }

    /// When [`GateMonitor::tick`] next has something to report.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.waiting
            .values()
            .filter_map(|q| q.front())
            .min()
            .map(|t| *t + self.passage_window)
    }

    /// Reports paid opens whose window ended by `now` with nobody passing.
    pub fn tick(&mut self, now: Duration) -> Vec<Notice> {
        let mut out = Vec::new();
        for (lane, q) in &mut self.waiting {
            while let Some(&opened_at) = q.front() {
                if opened_at + self.passage_window > now {
                    break;
                }
                q.pop_front();
                out.push(Notice::NobodyPassed {
                    lane: lane.clone(),
                    opened_at,
                });
            }
        }
        out
    }

    /// Takes one input event.
    pub fn on_event(&mut self, ev: &InputEvent) -> Vec<Notice> {
        let mut out = self.tick(ev.at);
        match ev.kind {
            InputEventKind::EmergencyOn => {
                let was = self.free_exit();
                self.emergencies.insert(ev.input.clone());
                if !was {
                    // Paid opens in flight can no longer be told apart from free exits.
                    self.waiting.clear();
                    out.push(Notice::EnterFreeExit {
                        input: ev.input.clone(),
                    });
                }
            }
            InputEventKind::EmergencyOff => {
                if self.emergencies.remove(&ev.input) && !self.free_exit() {
                    out.push(Notice::LeaveFreeExit);
                }
            }
            InputEventKind::Passage => {
                let lane = ev.lane.clone().unwrap_or_default();
                if self.free_exit() {
                    *self.passages.entry(lane.clone()).or_default() += 1;
                    out.push(Notice::Passage {
                        lane,
                        free_exit: true,
                    });
                } else if self
                    .waiting
                    .get_mut(&lane)
                    .and_then(VecDeque::pop_front)
                    .is_some()
                {
                    *self.passages.entry(lane.clone()).or_default() += 1;
                    out.push(Notice::Passage {
                        lane,
                        free_exit: false,
                    });
                } else {
                    out.push(Notice::UnpaidPassage { lane, at: ev.at });
                }
            }
            InputEventKind::DoorOpened | InputEventKind::FaultOn => out.push(Notice::Status {
                role: ev.role,
                input: ev.input.clone(),
                lane: ev.lane.clone(),
                active: true,
            }),
            InputEventKind::DoorClosed | InputEventKind::FaultOff => out.push(Notice::Status {
                role: ev.role,
                input: ev.input.clone(),
                lane: ev.lane.clone(),
                active: false,
            }),
            InputEventKind::WatchStopped => out.push(Notice::InputLost {
                input: ev.input.clone(),
            }),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ev(
        role: InputRole,
        input: &str,
        lane: Option<&str>,
        kind: InputEventKind,
        at: u64,
    ) -> InputEvent {
        InputEvent {
            role,
            lane: lane.map(str::to_string),
            input: input.into(),
            kind,
            at: s(at),
            initial: false,
        }
    }

    fn passage(lane: &str, at: u64) -> InputEvent {
        ev(
            InputRole::Passage,
            &format!("PASS_{lane}"),
            Some(lane),
            InputEventKind::Passage,
            at,
        )
    }

    fn alarm(input: &str, on: bool, at: u64) -> InputEvent {
        let kind = if on {
            InputEventKind::EmergencyOn
        } else {
            InputEventKind::EmergencyOff
        };
        ev(InputRole::Emergency, input, None, kind, at)
    }

    #[test]
    fn edges_classify_by_role() {
        assert_eq!(
            classify(InputRole::Passage, Edge::Activated),
            Some(InputEventKind::Passage)
        );
        assert_eq!(classify(InputRole::Passage, Edge::Deactivated), None);
        assert_eq!(
            classify(InputRole::Emergency, Edge::Deactivated),
            Some(InputEventKind::EmergencyOff)
        );
        assert_eq!(
            classify(InputRole::Door, Edge::Activated),
            Some(InputEventKind::DoorOpened)
        );
        assert_eq!(
            classify(InputRole::Fault, Edge::Deactivated),
            Some(InputEventKind::FaultOff)
        );
    }

    #[test]
    fn emergency_enters_free_exit_once_and_leaves_when_every_input_clears() {
        let mut m = GateMonitor::new(s(5000));
        assert_eq!(
            m.on_event(&alarm("FIRE_A", true, 10)),
            vec![Notice::EnterFreeExit {
                input: "FIRE_A".into()
            }]
        );
        assert!(m.free_exit());
        assert_eq!(m.on_event(&alarm("FIRE_B", true, 20)), vec![]);
        assert_eq!(m.on_event(&alarm("FIRE_A", true, 25)), vec![], "repeat");
        assert_eq!(m.on_event(&alarm("FIRE_A", false, 30)), vec![]);
        assert!(m.free_exit(), "FIRE_B still active");
        assert_eq!(
            m.on_event(&alarm("FIRE_B", false, 40)),
            vec![Notice::LeaveFreeExit]
        );
        assert!(!m.free_exit());
        assert_eq!(
            m.on_event(&alarm("FIRE_B", false, 50)),
            vec![],
            "repeat off"
        );
    }

    #[test]
    fn a_paid_open_is_matched_by_one_passage() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        assert_eq!(m.next_deadline(), Some(s(6000)));
        assert_eq!(
            m.on_event(&passage("G1", 2000)),
            vec![Notice::Passage {
                lane: "G1".into(),
                free_exit: false
            }]
        );
        assert_eq!(m.passages("G1"), 1);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.tick(s(100_000)), vec![]);
    }

    #[test]
    fn a_second_person_behind_a_paid_one_is_unpaid() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        m.on_event(&passage("G1", 2000));
        assert_eq!(
            m.on_event(&passage("G1", 2400)),
            vec![Notice::UnpaidPassage {
                lane: "G1".into(),
                at: s(2400)
            }]
        );
        assert_eq!(m.passages("G1"), 1);
    }

    #[test]
    fn an_open_nobody_used_is_reported_after_the_window() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        m.gate_opened("G2", s(1500));
        assert_eq!(m.tick(s(5999)), vec![]);
        assert_eq!(
            m.tick(s(6000)),
            vec![Notice::NobodyPassed {
                lane: "G1".into(),
                opened_at: s(1000)
            }]
        );
        // A passage after the window does not pay for the lapsed open.
        let out = m.on_event(&passage("G1", 6100));
        assert_eq!(
            out,
            vec![Notice::UnpaidPassage {
                lane: "G1".into(),
                at: s(6100)
            }]
        );
        assert_eq!(m.waiting("G2"), 1);
    }

    #[test]
    fn an_event_after_the_deadline_reports_the_lapse_first() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        let out = m.on_event(&passage("G1", 7000));
        assert_eq!(
            out,
            vec![
                Notice::NobodyPassed {
                    lane: "G1".into(),
                    opened_at: s(1000)
                },
                Notice::UnpaidPassage {
                    lane: "G1".into(),
                    at: s(7000)
                }
            ]
        );
    }

    #[test]
    fn free_exit_counts_passages_and_forgets_paid_opens() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        m.on_event(&alarm("FIRE", true, 1100));
        assert_eq!(m.waiting("G1"), 0);
        m.gate_opened("G1", s(1200));
        assert_eq!(m.waiting("G1"), 0, "no paid opens in free exit");
        assert_eq!(
            m.on_event(&passage("G1", 1300)),
            vec![Notice::Passage {
                lane: "G1".into(),
                free_exit: true
            }]
        );
        assert_eq!(m.tick(s(100_000)), vec![], "nothing reported as unused");
    }

    #[test]
    fn a_lost_input_and_status_changes_are_reported() {
        let mut m = GateMonitor::new(s(5000));
        let out = m.on_event(&ev(
            InputRole::Door,
            "CABINET",
            None,
            InputEventKind::DoorOpened,
            5,
        ));
        assert_eq!(
            out,
            vec![Notice::Status {
                role: InputRole::Door,
                input: "CABINET".into(),
                lane: None,
                active: true
            }]
        );
        let out = m.on_event(&ev(
            InputRole::Emergency,
            "FIRE",
            None,
            InputEventKind::WatchStopped,
            6,
        ));
        assert_eq!(
            out,
            vec![Notice::InputLost {
                input: "FIRE".into()
            }]
        );
    }

    #[test]
    fn input_spec_parses_strictly_and_checks_lane() {
        let spec: GpioInputSpec = toml::from_str(
            "role = \"emergency\"\nline = \"FIRE_ALARM\"\nactive_low = true\ndebounce_ms = 50\n",
        )
        .expect("parses");
        assert_eq!(spec.role, InputRole::Emergency);
        assert!(spec.validate().is_ok());
        let spec: GpioInputSpec =
            toml::from_str("role = \"passage\"\nchip = \"gpiochip0\"\noffset = 22\n")
                .expect("parses");
        assert!(matches!(spec.validate(), Err(RelayError::Config(m)) if m.contains("lane")));
        assert!(toml::from_str::<GpioInputSpec>(
            "role = \"passage\"\nlane = \"G1\"\nline = \"P\"\npull = \"up\"\n"
        )
        .is_err());
        assert!(toml::from_str::<GpioInputSpec>("role = \"smoke\"\nline = \"P\"\n").is_err());
    }

    #[test]
    fn monotonic_now_moves_forward() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(a > Duration::ZERO);
        assert!(b >= a);
    }
}
