//! The relay's I/O: [`GpioRelay`] holds the line request and a worker thread that carries out
//! [`GateDrive`]'s decisions, fed by a channel so [`Relay::open`] never blocks; [`pulse_once`]
//! is the technician's one-shot pulse.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gpiocdev::line::Value;
use gpiocdev::request::Request;

use super::drive::{DriveInput, DriveTiming, GateDrive};
use super::line::{gpio_error, output_config, request_output, resolve, LineRef, ResolvedLine};
use super::spec::{in_range, GpioRelaySpec, RelayMode, PULSE_MS};
use crate::relay::{Relay, RelayError};

enum Cmd {
    Input(DriveInput),
    Reconfigure {
        active_low: bool,
        timing: DriveTiming,
        reply: Sender<Result<(), RelayError>>,
    },
    Stop,
}

/// A gate relay on one GPIO line.
///
/// The line request is made in [`GpioRelay::new`] and held until the relay is dropped; a
/// dedicated thread drives it, so [`Relay::open`] only queues a command. On drop the line is
/// driven inactive, then released (after which its level is undefined: see the module docs).
pub struct GpioRelay {
    tx: Mutex<Sender<Cmd>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    fault: Arc<Mutex<Option<String>>>,
    line: ResolvedLine,
    line_ref: LineRef,
    describe: Mutex<String>,
}

impl std::fmt::Debug for GpioRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpioRelay")
            .field("line", &self.line)
            .finish()
    }
}

fn describe(line: &ResolvedLine, spec: &GpioRelaySpec) -> String {
    let polarity = if spec.active_low {
        "active-low"
    } else {
        "active-high"
    };
    match spec.mode {
        RelayMode::Pulse => format!("{line} {polarity} pulse {} ms", spec.pulse_ms),
        RelayMode::HoldUntilPassage => format!(
            "{line} {polarity} hold until passage (max {} ms)",
            spec.hold_timeout_ms
        ),
    }
}

impl GpioRelay {
    /// Requests the line (inactive: gate closed) and starts the relay's worker thread.
    pub fn new(spec: &GpioRelaySpec) -> Result<Self, RelayError> {
        spec.validate()?;
        let line_ref = spec.line_ref()?;
        let line = resolve(&line_ref)?;
        let req = request_output(&line, spec.active_low)?;
        let (tx, rx) = mpsc::channel();
        let fault = Arc::new(Mutex::new(None));
        let worker = Worker {
            req,
            line: line.clone(),
            active_low: spec.active_low,
            drive: GateDrive::new(spec.timing()),
            rx,
            fault: Arc::clone(&fault),
        };
        let handle = std::thread::Builder::new()
            .name(format!("relay {line}"))
            .spawn(move || worker.run())
            .map_err(|e| RelayError::Io(format!("starting the relay thread for {line}: {e}")))?;
        tracing::info!(relay = %describe(&line, spec), "relay line requested");
        Ok(GpioRelay {
            tx: Mutex::new(tx),
            worker: Mutex::new(Some(handle)),
            fault,
            describe: Mutex::new(describe(&line, spec)),
            line,
            line_ref,
        })
    }

    /// The line this relay drives.
    pub fn line(&self) -> &ResolvedLine {
        &self.line
    }

    /// Applies a changed spec (active-low, mode, timings) to the held request, without
    /// releasing the line. Changing which line is driven needs a new relay (a restart).
    pub fn reconfigure(&self, spec: &GpioRelaySpec) -> Result<(), RelayError> {
        spec.validate()?;
        if spec.line_ref()? != self.line_ref {
            return Err(RelayError::Config(
                "the relay line changed; restart tapgate to request the new line".into(),
            ));
        }
        let (reply, answer) = mpsc::channel();
        self.send(Cmd::Reconfigure {
            active_low: spec.active_low,
            timing: spec.timing(),
            reply,
        })?;
        answer
            .recv()
            .map_err(|_| RelayError::Stopped(self.fault_text()))??;
        *lock(&self.describe) = describe(&self.line, spec);
        Ok(())
    }

    /// `Ok` while the worker has reported no GPIO failure.
    pub fn health(&self) -> Result<(), RelayError> {
        match lock(&self.fault).as_ref() {
            Some(f) => Err(RelayError::Stopped(f.clone())),
            None => Ok(()),
        }
    }

    fn fault_text(&self) -> String {
        lock(&self.fault)
            .clone()
            .unwrap_or_else(|| "the worker thread exited".into())
    }

    fn send(&self, cmd: Cmd) -> Result<(), RelayError> {
        self.health()?;
        lock(&self.tx)
            .send(cmd)
            .map_err(|_| RelayError::Stopped(self.fault_text()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning means another thread panicked mid-update of a plain value; the value is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay for GpioRelay {
    fn open(&self) -> Result<(), RelayError> {
        self.send(Cmd::Input(DriveInput::Open))
    }

    fn set_free_exit(&self, on: bool) -> Result<(), RelayError> {
        self.send(Cmd::Input(DriveInput::FreeExit(on)))
    }

    fn passage(&self) -> Result<(), RelayError> {
        self.send(Cmd::Input(DriveInput::Passage))
    }

    fn describe(&self) -> String {
        lock(&self.describe).clone()
    }
}

impl Drop for GpioRelay {
    fn drop(&mut self) {
        let _ = lock(&self.tx).send(Cmd::Stop);
        if let Some(h) = lock(&self.worker).take() {
            let _ = h.join();
        }
    }
}

struct Worker {
    req: Request,
    line: ResolvedLine,
    active_low: bool,
    drive: GateDrive,
    rx: Receiver<Cmd>,
    fault: Arc<Mutex<Option<String>>>,
}

impl Worker {
    fn run(mut self) {
        // What the worker last set; reading an output back is not trustworthy on all hardware.
        let mut driven = false;
        let mut wake: Option<Instant> = None;
        loop {
            let cmd = match wake {
                Some(at) => {
                    let now = Instant::now();
                    if at <= now {
                        None
                    } else {
                        match self.rx.recv_timeout(at - now) {
                            Ok(c) => Some(c),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => Some(Cmd::Stop),
                        }
                    }
                }
                None => Some(self.rx.recv().unwrap_or(Cmd::Stop)),
            };
            let now = Instant::now();
            let step = match cmd {
                None => self.drive.tick(now),
                Some(Cmd::Input(input)) => {
                    let before = self.drive.dropped();
                    let step = self.drive.input(input, now);
                    if self.drive.dropped() != before {
                        tracing::warn!(line = %self.line, "open dropped: too many opens queued");
                    }
                    step
                }
                Some(Cmd::Reconfigure {
                    active_low,
                    timing,
                    reply,
                }) => {
                    let value = if driven {
                        Value::Active
                    } else {
                        Value::Inactive
                    };
                    let cfg = output_config(&self.line.chip, self.line.offset, active_low, value);
                    let result = self
                        .req
                        .reconfigure(&cfg)
                        .map_err(|e| gpio_error(&format!("reconfiguring {}", self.line), e));
                    if result.is_ok() {
                        self.active_low = active_low;
                        self.drive.set_timing(timing);
                    }
                    let _ = reply.send(result);
                    self.drive.tick(now)
                }
                Some(Cmd::Stop) => {
                    if let Err(e) = self.req.set_lone_value(Value::Inactive) {
                        tracing::error!(line = %self.line, error = %e, "could not close the gate before releasing the line");
                    }
                    return;
                }
            };
            if step.active != driven {
                let value = if step.active {
                    Value::Active
                } else {
                    Value::Inactive
                };
                if let Err(e) = self.req.set_lone_value(value) {
                    let text = format!("setting {} {:?}: {e}", self.line, value);
                    tracing::error!(line = %self.line, error = %e, "relay line failed; lane cannot open its gate");
                    *lock(&self.fault) = Some(text);
                    let _ = self.req.set_lone_value(Value::Inactive);
                    return;
                }
                driven = step.active;
                tracing::debug!(line = %self.line, active = driven, active_low = self.active_low, "relay");
            }
            wake = step.wake_at;
        }
    }
}

/// The technician's one-shot pulse (`tapgate relay pulse`): requests the line, drives it
/// active for `ms` milliseconds, drives it inactive and releases it. Blocks for the pulse.
///
/// Fails with [`RelayError::Busy`] when the daemon (or anything else) holds the line.
pub fn pulse_once(spec: &GpioRelaySpec, ms: u64) -> Result<(), RelayError> {
    in_range("pulse length (ms)", ms, PULSE_MS)?;
    let line = resolve(&spec.line_ref()?)?;
    let req = request_output(&line, spec.active_low)?;
    req.set_lone_value(Value::Active)
        .map_err(|e| gpio_error(&format!("driving {line} active"), e))?;
    std::thread::sleep(Duration::from_millis(ms));
    req.set_lone_value(Value::Inactive)
        .map_err(|e| gpio_error(&format!("driving {line} inactive"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_chip_is_a_config_error_not_a_panic() {
        let spec = GpioRelaySpec {
            chip: Some("/nonexistent/gpiochip9".into()),
            offset: Some(0),
            line: None,
            ..GpioRelaySpec::named("x")
        };
        let err = GpioRelay::new(&spec).expect_err("no such chip");
        assert!(err.is_config(), "{err:?}");
        let err = pulse_once(&spec, 100).expect_err("no such chip");
        assert!(err.is_config(), "{err:?}");
    }
}
