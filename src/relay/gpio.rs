//! The gate relay on a Linux GPIO line, through the GPIO character device (uAPI v2, via
//! `gpiocdev`).
//!
//! Shape: [`GateDrive`] is the pure state machine that decides when the line is active (pulse,
//! hold until passage, free exit, queued opens); [`GpioRelay`] owns the line request and a
//! worker thread that carries those decisions out, fed by a channel so [`Relay::open`] never
//! blocks. [`pulse_once`] is the technician's one-shot pulse for `tapgate relay pulse`.
//!
//! Hardware truths this module depends on:
//! - An output's value is only guaranteed while its line request is held. Once the request is
//!   released (the [`GpioRelay`] is dropped, or the process exits or crashes) the kernel makes no
//!   promise about the level: many drivers keep the last value, some return the pin to its
//!   default. So tapgate drives the line inactive before releasing it, and the gate must be
//!   wired so that a line stuck either way cannot hold the barrier open (hardware-notes.md).
//! - Reading back an output's value is not trustworthy on every controller; the worker keeps
//!   what it last set instead of asking the hardware.
//! - A line is requested once for the life of the relay; changes (active-low, timings) go
//!   through `reconfigure` on the same request, because releasing and re-requesting would leave
//!   the level undefined in between and let another process grab the line.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gpiocdev::chip::Chip;
use gpiocdev::line::{Offset, Value};
use gpiocdev::request::{Config, Request};
use serde::Deserialize;

use super::{Relay, RelayError};

/// The consumer label on every line tapgate requests, so `gpioinfo` shows who owns it.
pub const CONSUMER: &str = "tapgate";

/// Opens queued behind the current one before further opens are dropped (and logged). Far
/// beyond what a real lane sees: it only bounds memory if something upstream runs away.
pub const MAX_QUEUED_OPENS: u32 = 8;

const PULSE_MS: std::ops::RangeInclusive<u64> = 20..=5_000;
const GAP_MS: std::ops::RangeInclusive<u64> = 20..=2_000;
const HOLD_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 500..=60_000;

/// How a relay opens the gate for one paid passenger.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    /// Drive the line active for `pulse_ms`, then inactive. For gate controllers that take a
    /// "one passage" pulse on a dry contact and run the barrier themselves (most turnstiles
    /// and flap gates).
    #[default]
    Pulse,
    /// Hold the line active until the lane's passage sensor reports a passage, or
    /// `hold_timeout_ms` passes. For barriers that stay open as long as the contact is closed.
    HoldUntilPassage,
}

/// Where a line is: by the name the device tree gives it, or by chip and offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineRef {
    /// A line found by name (`gpio-line-names`), on `chip` if given, else on any chip; the name
    /// must then be unique across chips.
    Named {
        /// The line name, e.g. `GATE1_RELAY`.
        name: String,
        /// Restrict the search to this chip.
        chip: Option<PathBuf>,
    },
    /// A line by chip and offset.
    Offset {
        /// The chip's character device, e.g. `/dev/gpiochip0`.
        chip: PathBuf,
        /// The line's offset on the chip.
        offset: Offset,
    },
}

impl LineRef {
    /// Builds a line reference from the config keys `line`, `chip` and `offset`: either a name
    /// (optionally with a chip), or a chip and an offset.
    pub fn from_keys(
        line: Option<&str>,
        chip: Option<&str>,
        offset: Option<Offset>,
    ) -> Result<Self, RelayError> {
        let chip = chip.map(chip_path);
        match (line, chip, offset) {
            (Some(name), chip, None) if !name.is_empty() => Ok(LineRef::Named {
                name: name.to_string(),
                chip,
            }),
            (None, Some(chip), Some(offset)) => Ok(LineRef::Offset { chip, offset }),
            (Some(_), _, Some(_)) => Err(RelayError::Config(
                "give either `line` (a name) or `chip` + `offset`, not both".into(),
            )),
            (None, None, Some(_)) => Err(RelayError::Config(
                "`offset` needs `chip` (e.g. chip = \"gpiochip0\")".into(),
            )),
            _ => Err(RelayError::Config(
                "no line: set `line` to the line's name, or `chip` and `offset`".into(),
            )),
        }
    }
}

/// `gpiochip0` means `/dev/gpiochip0`; anything with a slash is taken as a path.
fn chip_path(chip: &str) -> PathBuf {
    if chip.contains('/') {
        PathBuf::from(chip)
    } else {
        PathBuf::from("/dev").join(chip)
    }
}

/// A line found on the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedLine {
    /// The chip's character device.
    pub chip: PathBuf,
    /// The offset on that chip.
    pub offset: Offset,
    /// The line's name (empty when the device tree gives none).
    pub name: String,
}

impl std::fmt::Display for ResolvedLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chip = self
            .chip
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.chip.display().to_string());
        if self.name.is_empty() {
            write!(f, "{chip}:{}", self.offset)
        } else {
            write!(f, "{chip}:{} ({})", self.offset, self.name)
        }
    }
}

/// Maps a `gpiocdev` failure to what the caller should do about it.
pub(crate) fn gpio_error(what: &str, err: gpiocdev::Error) -> RelayError {
    match &err {
        gpiocdev::Error::Os(errno) if errno.0 == libc::EACCES || errno.0 == libc::EPERM => {
            RelayError::Permission(what.to_string())
        }
        gpiocdev::Error::Os(errno) if errno.0 == libc::ENOENT => {
            RelayError::Config(format!("{what}: no such GPIO chip"))
        }
        gpiocdev::Error::GpioChip(..) | gpiocdev::Error::NonuniqueLineName(_) => {
            RelayError::Config(format!("{what}: {err}"))
        }
        _ => RelayError::Io(format!("{what}: {err}")),
    }
}

/// Finds the chip and offset of a line, and checks that it exists.
pub fn resolve(line: &LineRef) -> Result<ResolvedLine, RelayError> {
    match line {
        LineRef::Named { name, chip: None } => {
            let names = [name.as_str()];
            let found = gpiocdev::find_named_lines(&names, true).map_err(|e| match e {
                gpiocdev::Error::NonuniqueLineName(_) => RelayError::Config(format!(
                    "line name {name:?} is on more than one chip; add `chip`"
                )),
                e => gpio_error("listing GPIO lines", e),
            })?;
            let found = found.get(name.as_str()).ok_or_else(|| {
                RelayError::Config(format!(
                    "no GPIO line named {name:?} on any chip this user can open"
                ))
            })?;
            Ok(ResolvedLine {
                chip: found.chip.clone(),
                offset: found.info.offset,
                name: name.clone(),
            })
        }
        LineRef::Named {
            name,
            chip: Some(chip),
        } => {
            let c = open_chip(chip)?;
            let info = c.find_line_info(name).ok_or_else(|| {
                RelayError::Config(format!("no line named {name:?} on {}", chip.display()))
            })?;
            Ok(ResolvedLine {
                chip: chip.clone(),
                offset: info.offset,
                name: name.clone(),
            })
        }
        LineRef::Offset { chip, offset } => {
            let c = open_chip(chip)?;
            let info = c.line_info(*offset).map_err(|e| match e {
                gpiocdev::Error::Uapi(..) => {
                    RelayError::Config(format!("{} has no line at offset {offset}", chip.display()))
                }
                e => gpio_error(&chip.display().to_string(), e),
            })?;
            Ok(ResolvedLine {
                chip: chip.clone(),
                offset: *offset,
                name: info.name,
            })
        }
    }
}

fn open_chip(chip: &std::path::Path) -> Result<Chip, RelayError> {
    Chip::from_path(chip).map_err(|e| gpio_error(&chip.display().to_string(), e))
}

/// Fails with [`RelayError::Busy`] when another consumer already holds the line, so the
/// technician reads "in use by tapgate" instead of a bare EBUSY.
pub(crate) fn check_free(line: &ResolvedLine) -> Result<(), RelayError> {
    let chip = open_chip(&line.chip)?;
    let info = chip
        .line_info(line.offset)
        .map_err(|e| gpio_error(&line.to_string(), e))?;
    if info.used {
        return Err(RelayError::Busy {
            line: line.to_string(),
            consumer: info.consumer,
        });
    }
    Ok(())
}

fn default_pulse_ms() -> u64 {
    300
}
fn default_gap_ms() -> u64 {
    200
}
fn default_hold_timeout_ms() -> u64 {
    8_000
}

/// One lane's barrier relay, as the lane config gives it (`[lanes.NAME.relay]`).
///
/// ```toml
/// line = "GATE1_RELAY"      # or: chip = "gpiochip0", offset = 17
/// active_low = true          # relay boards that energise on a low pin
/// mode = "pulse"             # or "hold_until_passage"
/// pulse_ms = 300
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpioRelaySpec {
    /// The line's name as the device tree labels it (`gpio-line-names`, shown by `gpioinfo`).
    /// Searched on every chip unless `chip` is also set. Leave out when using `offset`.
    #[serde(default)]
    pub line: Option<String>,
    /// The chip: `gpiochip0` or a path such as `/dev/gpiochip0`.
    #[serde(default)]
    pub chip: Option<String>,
    /// The line's offset on `chip`, for boards whose device tree does not name the line.
    #[serde(default)]
    pub offset: Option<Offset>,
    /// The relay energises when the pin is low (most opto-isolated relay boards). The gate is
    /// "open" when the line is active, whatever the electrical level.
    #[serde(default)]
    pub active_low: bool,
    /// How one paid passenger opens the gate.
    #[serde(default)]
    pub mode: RelayMode,
    /// Pulse length in `pulse` mode, milliseconds (20..=5000; default 300). Match the gate
    /// controller's minimum input pulse.
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: u64,
    /// Minimum time the line stays inactive between two opens, milliseconds (20..=2000;
    /// default 200), so a controller that counts pulses sees two passengers, not one long pulse.
    #[serde(default = "default_gap_ms")]
    pub gap_ms: u64,
    /// In `hold_until_passage` mode, how long the gate stays open when nobody passes,
    /// milliseconds (500..=60000; default 8000).
    #[serde(default = "default_hold_timeout_ms")]
    pub hold_timeout_ms: u64,
}

impl GpioRelaySpec {
    /// A pulse-mode spec for the line named `name`, other keys at their defaults.
    pub fn named(name: &str) -> Self {
        GpioRelaySpec {
            line: Some(name.to_string()),
            chip: None,
            offset: None,
            active_low: false,
            mode: RelayMode::Pulse,
            pulse_ms: default_pulse_ms(),
            gap_ms: default_gap_ms(),
            hold_timeout_ms: default_hold_timeout_ms(),
        }
    }

    /// Where the line is, from `line`, `chip` and `offset`.
    pub fn line_ref(&self) -> Result<LineRef, RelayError> {
        LineRef::from_keys(self.line.as_deref(), self.chip.as_deref(), self.offset)
    }

    /// Checks the keys without touching hardware (for `check-config`).
    pub fn validate(&self) -> Result<(), RelayError> {
        self.line_ref()?;
        in_range("pulse_ms", self.pulse_ms, PULSE_MS)?;
        in_range("gap_ms", self.gap_ms, GAP_MS)?;
        in_range("hold_timeout_ms", self.hold_timeout_ms, HOLD_TIMEOUT_MS)?;
        Ok(())
    }

    /// The timings this spec asks for.
    pub fn timing(&self) -> DriveTiming {
        DriveTiming {
            mode: self.mode,
            pulse: Duration::from_millis(self.pulse_ms),
            gap: Duration::from_millis(self.gap_ms),
            hold_timeout: Duration::from_millis(self.hold_timeout_ms),
        }
    }
}

fn in_range(key: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<(), RelayError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(RelayError::Config(format!(
            "{key} = {value} is outside {}..={}",
            range.start(),
            range.end()
        )))
    }
}

/// The relay timings [`GateDrive`] works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriveTiming {
    /// Pulse or hold.
    pub mode: RelayMode,
    /// Active time of one pulse.
    pub pulse: Duration,
    /// Minimum inactive time between two opens.
    pub gap: Duration,
    /// Longest hold in [`RelayMode::HoldUntilPassage`].
    pub hold_timeout: Duration,
}

/// What happened to the relay, as far as [`GateDrive`] is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveInput {
    /// A paid passenger: open once.
    Open,
    /// The lane's passage sensor saw someone pass.
    Passage,
    /// Free-exit mode on (hold open, forget queued opens) or off (close).
    FreeExit(bool),
}

/// What the line should be now, and when to call [`GateDrive::tick`] next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Drive the line active (gate open).
    pub active: bool,
    /// Call `tick` at this time (or on the next input, whichever is first).
    pub wake_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Open { until: Instant },
    Gap { until: Instant },
    FreeExit,
}

/// The relay's decisions, without I/O: given opens, passages, free-exit changes and the time,
/// says whether the line is active and when to look again.
#[derive(Clone, Debug)]
pub struct GateDrive {
    timing: DriveTiming,
    phase: Phase,
    queued: u32,
    dropped: u64,
}

impl GateDrive {
    /// A closed gate with these timings.
    pub fn new(timing: DriveTiming) -> Self {
        GateDrive {
            timing,
            phase: Phase::Idle,
            queued: 0,
            dropped: 0,
        }
    }

    /// Changes the timings; an open in progress keeps its deadline.
    pub fn set_timing(&mut self, timing: DriveTiming) {
        self.timing = timing;
    }

    /// Opens waiting behind the current one.
    pub fn queued(&self) -> u32 {
        self.queued
    }

    /// Opens dropped because [`MAX_QUEUED_OPENS`] were already waiting.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Applies one input at `now` (after any deadline that already passed).
    pub fn input(&mut self, input: DriveInput, now: Instant) -> Step {
        self.advance(now);
        match input {
            DriveInput::Open => match self.phase {
                Phase::FreeExit => {}
                Phase::Idle => self.start_open(now),
                Phase::Open { .. } | Phase::Gap { .. } => {
                    if self.queued < MAX_QUEUED_OPENS {
                        self.queued += 1;
                    } else {
                        self.dropped += 1;
                    }
                }
            },
            DriveInput::Passage => {
                if let (RelayMode::HoldUntilPassage, Phase::Open { .. }) =
                    (self.timing.mode, self.phase)
                {
                    if self.queued > 0 {
                        // The next paid passenger walks through the gate that is already open.
                        self.queued -= 1;
                        self.start_open(now);
                    } else {
                        self.end_open(now);
                    }
                }
            }
            DriveInput::FreeExit(true) => {
                self.phase = Phase::FreeExit;
                self.queued = 0;
            }
            DriveInput::FreeExit(false) => {
                if self.phase == Phase::FreeExit {
                    self.phase = Phase::Gap {
                        until: now + self.timing.gap,
                    };
                }
            }
        }
        self.step()
    }

    /// Moves past any deadline at or before `now`.
    pub fn tick(&mut self, now: Instant) -> Step {
        self.advance(now);
        self.step()
    }

    fn advance(&mut self, now: Instant) {
        loop {
            match self.phase {
                Phase::Open { until } if now >= until => {
                    if self.timing.mode == RelayMode::HoldUntilPassage {
                        // Nobody came: the passengers queued behind lost their chance too.
                        self.queued = 0;
                    }
                    self.end_open(now);
                }
                Phase::Gap { until } if now >= until => {
                    if self.queued > 0 {
                        self.queued -= 1;
                        self.start_open(now);
                    } else {
                        self.phase = Phase::Idle;
                    }
                }
                _ => return,
            }
        }
    }

    fn start_open(&mut self, now: Instant) {
        let len = match self.timing.mode {
            RelayMode::Pulse => self.timing.pulse,
            RelayMode::HoldUntilPassage => self.timing.hold_timeout,
        };
        self.phase = Phase::Open { until: now + len };
    }

    fn end_open(&mut self, now: Instant) {
        self.phase = Phase::Gap {
            until: now + self.timing.gap,
        };
    }

    fn step(&self) -> Step {
        match self.phase {
            Phase::Idle => Step {
                active: false,
                wake_at: None,
            },
            Phase::Open { until } => Step {
                active: true,
                wake_at: Some(until),
            },
            Phase::Gap { until } => Step {
                active: false,
                wake_at: Some(until),
            },
            Phase::FreeExit => Step {
                active: true,
                wake_at: None,
            },
        }
    }
}

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

fn output_config(chip: &std::path::Path, offset: Offset, active_low: bool, value: Value) -> Config {
    let mut cfg = Config::default();
    cfg.on_chip(chip).with_line(offset).as_output(value);
    if active_low {
        cfg.as_active_low();
    } else {
        cfg.as_active_high();
    }
    cfg
}

fn request_output(line: &ResolvedLine, active_low: bool) -> Result<Request, RelayError> {
    check_free(line)?;
    let cfg = output_config(&line.chip, line.offset, active_low, Value::Inactive);
    Request::from_config(cfg)
        .with_consumer(CONSUMER)
        .request()
        .map_err(|e| gpio_error(&format!("requesting {line}"), e))
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing(mode: RelayMode) -> DriveTiming {
        DriveTiming {
            mode,
            pulse: ms(300),
            gap: ms(200),
            hold_timeout: ms(8000),
        }
    }

    #[test]
    fn a_pulse_is_active_for_its_length_then_closes() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        let s = d.input(DriveInput::Open, t0);
        assert_eq!(
            s,
            Step {
                active: true,
                wake_at: Some(t0 + ms(300))
            }
        );
        assert!(d.tick(t0 + ms(299)).active);
        let s = d.tick(t0 + ms(300));
        assert!(!s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(500)));
        assert_eq!(
            d.tick(t0 + ms(500)),
            Step {
                active: false,
                wake_at: None
            }
        );
    }

    #[test]
    fn a_second_open_during_a_pulse_becomes_a_second_pulse_after_the_gap() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        let s = d.input(DriveInput::Open, t0 + ms(100));
        assert!(s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(300)), "the pulse is not stretched");
        assert_eq!(d.queued(), 1);
        assert!(!d.tick(t0 + ms(300)).active);
        assert!(!d.tick(t0 + ms(499)).active);
        let s = d.tick(t0 + ms(500));
        assert!(s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(800)));
        assert!(!d.tick(t0 + ms(800)).active);
        assert_eq!(d.tick(t0 + ms(1000)).wake_at, None);
    }

    #[test]
    fn a_late_tick_still_gives_the_queued_pulse() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        d.input(DriveInput::Open, t0 + ms(10));
        // The worker woke up very late: the first pulse ends now, the gap starts now.
        let s = d.tick(t0 + ms(2000));
        assert!(!s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(2200)));
        assert!(d.tick(t0 + ms(2200)).active);
    }

    #[test]
    fn queued_opens_are_capped() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        for _ in 0..(MAX_QUEUED_OPENS + 3) {
            d.input(DriveInput::Open, t0);
        }
        assert_eq!(d.queued(), MAX_QUEUED_OPENS);
        assert_eq!(d.dropped(), 2);
    }

    #[test]
    fn passage_does_not_cut_a_pulse_short() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        assert!(d.input(DriveInput::Passage, t0 + ms(50)).active);
    }

    #[test]
    fn hold_mode_closes_on_passage() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::HoldUntilPassage));
        let s = d.input(DriveInput::Open, t0);
        assert_eq!(s.wake_at, Some(t0 + ms(8000)));
        assert!(d.tick(t0 + ms(5000)).active);
        let s = d.input(DriveInput::Passage, t0 + ms(5000));
        assert!(!s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(5200)));
    }

    #[test]
    fn hold_mode_closes_on_timeout_and_forgets_queued_opens() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::HoldUntilPassage));
        d.input(DriveInput::Open, t0);
        d.input(DriveInput::Open, t0 + ms(10));
        let s = d.tick(t0 + ms(8000));
        assert!(!s.active);
        assert_eq!(d.queued(), 0);
        assert_eq!(d.tick(t0 + ms(8200)).wake_at, None);
    }

    #[test]
    fn hold_mode_keeps_open_for_the_next_paid_passenger() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::HoldUntilPassage));
        d.input(DriveInput::Open, t0);
        d.input(DriveInput::Open, t0 + ms(10));
        let s = d.input(DriveInput::Passage, t0 + ms(1000));
        assert!(s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(9000)), "a fresh timeout");
        assert!(!d.input(DriveInput::Passage, t0 + ms(2000)).active);
    }

    #[test]
    fn free_exit_holds_open_and_drops_queued_opens() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        d.input(DriveInput::Open, t0);
        let s = d.input(DriveInput::FreeExit(true), t0 + ms(10));
        assert_eq!(
            s,
            Step {
                active: true,
                wake_at: None
            }
        );
        assert!(d.input(DriveInput::Open, t0 + ms(20)).active);
        assert!(d.tick(t0 + ms(60_000)).active, "free exit has no timeout");
        let s = d.input(DriveInput::FreeExit(false), t0 + ms(60_000));
        assert!(!s.active);
        assert_eq!(
            d.tick(t0 + ms(60_200)).wake_at,
            None,
            "no queued pulse left"
        );
    }

    #[test]
    fn free_exit_off_when_not_on_changes_nothing() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        let s = d.input(DriveInput::FreeExit(false), t0 + ms(10));
        assert!(s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(300)));
    }

    #[test]
    fn spec_parses_strictly_with_defaults() {
        let spec: GpioRelaySpec =
            toml::from_str("line = \"GATE1\"\nactive_low = true\n").expect("parses");
        assert_eq!(spec.pulse_ms, 300);
        assert_eq!(spec.mode, RelayMode::Pulse);
        assert!(spec.active_low);
        assert!(spec.validate().is_ok());
        let err = toml::from_str::<GpioRelaySpec>("line = \"GATE1\"\npulse = 300\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field"), "{err}");
        let spec: GpioRelaySpec =
            toml::from_str("chip = \"gpiochip2\"\noffset = 17\nmode = \"hold_until_passage\"\n")
                .expect("parses");
        assert_eq!(
            spec.line_ref().expect("valid"),
            LineRef::Offset {
                chip: PathBuf::from("/dev/gpiochip2"),
                offset: 17
            }
        );
        assert_eq!(spec.mode, RelayMode::HoldUntilPassage);
    }

    #[test]
    fn spec_rejects_incomplete_or_out_of_range_keys() {
        let mut spec = GpioRelaySpec::named("GATE1");
        spec.offset = Some(3);
        assert!(matches!(spec.validate(), Err(RelayError::Config(_))));
        spec.line = None;
        assert!(matches!(spec.validate(), Err(RelayError::Config(_))));
        spec.chip = Some("/dev/gpiochip0".into());
        assert!(spec.validate().is_ok());
        spec.pulse_ms = 5;
        let err = spec.validate().expect_err("too short");
        assert!(err.is_config());
        assert!(err.to_string().contains("pulse_ms"), "{err}");
    }

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

    #[test]
    fn display_names_chip_offset_and_name() {
        let l = ResolvedLine {
            chip: PathBuf::from("/dev/gpiochip0"),
            offset: 17,
            name: "GATE1".into(),
        };
        assert_eq!(l.to_string(), "gpiochip0:17 (GATE1)");
    }
}
