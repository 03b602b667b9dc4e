//! Gate relay backends. tapgate is never the safety device: the barrier opens on power loss
//! and fire alarm by wiring (see hardware-notes.md); tapgate only pulses it open for a paid
//! passenger and observes the gate's inputs.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a relay command failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The line could not be driven; the text names the chip, line and call.
    #[error("relay failure: {0}")]
    Io(String),
}

/// A gate's barrier relay.
pub trait Relay: Send + Sync + 'static {
    /// Opens the gate for one passenger (a pulse, or until the passage sensor reports).
    /// Returns once the open command is issued; never blocks for the pulse.
    fn open(&self) -> Result<(), RelayError>;
    /// Holds the gate open (free-exit mode) or returns it to normal.
    fn set_free_exit(&self, on: bool) -> Result<(), RelayError>;
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
}

impl RecordingRelay {
    /// An empty recording relay.
    pub fn new() -> Self {
        Self::default()
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
