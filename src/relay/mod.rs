//! Gate relay backends. tapgate is never the safety device: the barrier opens on power loss
//! and fire alarm by wiring (see hardware-notes.md); tapgate only pulses it open for a paid
//! passenger and observes the gate's inputs.

use std::sync::{Arc, Mutex};
use std::time::Instant;

pub mod gpio;
pub mod inputs;
pub mod monitor;

/// Why a relay or gate-input command failed, shaped by what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The line could not be driven or read; the text names the chip, line and call. The lane
    /// cannot open its gate: stop accepting taps on it and raise an alert.
    #[error("relay failure: {0}")]
    Io(String),
    /// The configuration names a line that does not exist, is ambiguous, or sets a value out of
    /// range. Fix the config; retrying will not help.
    #[error("relay configuration: {0}")]
    Config(String),
    /// The service user may not open the GPIO chip: the udev rule or group membership is
    /// missing (see hardware-notes.md). Fix the installation; retrying will not help.
    #[error("no permission on {0}: is the service user in the gpio group (udev rule)?")]
    Permission(String),
    /// Another consumer holds the line, e.g. the running daemon when a technician pulses by
    /// hand. Stop that consumer, or ask it instead.
    #[error("{line} is in use by {consumer:?}")]
    Busy {
        /// The line, as `chip:offset (name)`.
        line: String,
        /// The consumer label the kernel reports for the holder.
        consumer: String,
    },
    /// The relay's worker thread has stopped after a GPIO failure it logged. The lane must stop
    /// opening the gate; restarting the daemon re-requests the line.
    #[error("relay worker stopped: {0}")]
    Stopped(String),
}

impl RelayError {
    /// True when a person must change the configuration or installation before anything can
    /// work (as opposed to a hardware or runtime failure).
    pub fn is_config(&self) -> bool {
        matches!(self, RelayError::Config(_) | RelayError::Permission(_))
    }
}

/// A gate's barrier relay.
pub trait Relay: Send + Sync + 'static {
    /// Opens the gate for one passenger (a pulse, or until the passage sensor reports).
    /// Returns once the open command is issued; never blocks for the pulse.
    fn open(&self) -> Result<(), RelayError>;
    /// Holds the gate open (free-exit mode) or returns it to normal.
    fn set_free_exit(&self, on: bool) -> Result<(), RelayError>;
    /// Tells the relay that the lane's passage sensor saw a passenger. Relays that hold the gate
    /// open until a passage (see [`gpio::RelayMode::HoldUntilPassage`]) close on it; the
    /// default does nothing.
    fn passage(&self) -> Result<(), RelayError> {
        Ok(())
    }
    /// A short description for logs and `doctor` (`recording`, `gpiochip0:GATE1 active-low`).
    fn describe(&self) -> String;
}

/// One command a [`RecordingRelay`] received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayCommand {
    /// `open()`.
    Open,
    /// `set_free_exit(true)`.
    FreeExitOn,
    /// `set_free_exit(false)`.
    FreeExitOff,
}

/// A relay that records what it was told: for the demo, `tapgate tap` and tests.
#[derive(Clone, Debug, Default)]
pub struct RecordingRelay {
    log: Arc<Mutex<Vec<(Instant, RelayCommand)>>>,
    /// The lane it stands in for, when built from a config: every open is then a warning
    /// (a fare was taken and no gate was driven).
    loud_lane: Option<String>,
}

impl RecordingRelay {
    /// An empty recording relay.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recording relay standing in for `lane`'s gate on a bench rig (`station.bench`):
    /// each open is logged as a warning, so that nobody mistakes it for a working gate.
    pub fn bench(lane: &str) -> Self {
        RecordingRelay {
            loud_lane: Some(lane.to_string()),
            ..Self::default()
        }
    }

    /// Everything recorded so far, oldest first.
    pub fn commands(&self) -> Vec<RelayCommand> {
        self.lock().iter().map(|(_, c)| *c).collect()
    }

    /// How many times the gate was opened.
    pub fn opens(&self) -> usize {
        self.lock()
            .iter()
            .filter(|(_, c)| *c == RelayCommand::Open)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, RelayCommand)>> {
        // A poisoned log only means a test thread panicked while pushing; the data is intact.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Relay for RecordingRelay {
    fn open(&self) -> Result<(), RelayError> {
        if let Some(lane) = &self.loud_lane {
            tracing::warn!(
                lane = %lane,
                "recording relay: the gate was NOT opened (bench rig, station.bench = true)"
            );
        }
        self.lock().push((Instant::now(), RelayCommand::Open));
        Ok(())
    }

    fn set_free_exit(&self, on: bool) -> Result<(), RelayError> {
        let c = if on {
            RelayCommand::FreeExitOn
        } else {
            RelayCommand::FreeExitOff
        };
        self.lock().push((Instant::now(), c));
        Ok(())
    }

    fn describe(&self) -> String {
        "recording".into()
    }
}
