//! The gate relay on a Linux GPIO line, through the GPIO character device (uAPI v2, via
//! `gpiocdev`).
//!
//! Shape: [`GateDrive`] is the pure state machine that decides when the line is active (pulse,
//! hold until passage, free exit, queued opens); [`GpioRelay`] owns the line request and a
//! worker thread that carries those decisions out, fed by a channel so [`Relay::open`](super::Relay::open) never
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
//!
//! Where things are: `gpio/line.rs` finds and requests lines, `gpio/spec.rs` is the config,
//! `gpio/drive.rs` the pure [`GateDrive`], `gpio/worker.rs` the [`GpioRelay`] and its thread.

mod drive;
mod line;
mod spec;
mod worker;

pub use drive::{DriveInput, DriveTiming, GateDrive, Step, MAX_QUEUED_OPENS};
pub(crate) use line::{check_free, gpio_error};
pub use line::{resolve, LineRef, ResolvedLine, CONSUMER};
pub use spec::{GpioRelaySpec, RelayMode};
pub use worker::{pulse_once, GpioRelay};
