//! Gate inputs on GPIO lines: passage sensors, the emergency (fire alarm) input, door and fault
//! contacts. This file is the model: what an input is ([`GpioInputSpec`]), what an edge on it
//! means ([`classify`]) and the events the daemon receives ([`InputEvent`]).
//!
//! [`watch`] (in `inputs/watch.rs`) requests the lines with kernel debounce and edge detection,
//! and a blocking reader thread per chip turns kernel edge events into [`InputEvent`]s on a
//! tokio channel. What the events mean for the gates (free-exit mode, passages matched to paid
//! opens) is decided by [`crate::relay::monitor::GateMonitor`], which does no I/O.
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

use std::time::Duration;

use gpiocdev::line::Offset;
use serde::Deserialize;

use super::gpio::LineRef;
use super::RelayError;

mod watch;

/// The monitor's old path, kept for the callers that still name it here.
pub use super::monitor::{GateMonitor, Notice};
pub use watch::{watch, InputWatcher};

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

#[cfg(test)]
mod tests {
    use super::*;

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
