//! The real card source: a lane's reader through pcscd, on its own OS thread.
//!
//! One thread per reader service owns one PC/SC context at a time and blocks in
//! `SCardGetStatusChange`; [`ReaderHandle`] stops it with `SCardCancel`. Events go to the lane
//! as [`CardEvent`](super::CardEvent)s over a tokio channel.
//!
//! The decisions are pure and tested without pcscd: which reader a [`ReaderPattern`] picks,
//! the tap state machine ([`TapMachine`]: a phone left on the reader is one tap), what a PC/SC
//! error means ([`classify`]), the reconnect schedule ([`Backoff`]) and when the health of the
//! link changed ([`HealthTracker`], so each change is logged once, never once per retry).
//!
//! Hardware truths this module relies on:
//! * a PC/SC context does not survive a pcscd restart: after `NoService`, `ServiceStopped`,
//!   `CommError` or `InvalidHandle` it is dropped and a new one established, with backoff;
//! * pcscd reports readers appearing and disappearing through the `\\?PnP?\Notification`
//!   pseudo-reader; the wait also times out every [`ReaderOptions::relist_every`] and the
//!   reader list is read again, for drivers and setups where PnP events do not arrive;
//! * a single `SCardTransmit` cannot be interrupted: its bound is the reader's own ISO-DEP
//!   frame waiting time. The per-APDU and per-tap deadlines here are checked around each
//!   command, and an answer that arrives late is discarded as a timeout.
//!
//! Where things are: `pcsc/machine.rs` holds the pure decisions, `pcsc/service.rs` the thread
//! that carries them out against pcscd, `pcsc/channel.rs` the APDU transport with the tap's
//! deadlines, `pcsc/feedback_send.rs` the passenger feedback sent to the reader, and
//! `pcsc/source.rs` the [`PcscSource`] adapter of the [`crate::nfc::source::CardSource`] port.

mod channel;
mod feedback_send;
mod machine;
mod service;
mod source;

pub use channel::PcscChannel;
pub use feedback_send::{show_feedback, FeedbackSendError};
pub use machine::{
    classify, Act, Backoff, Health, HealthTracker, ReaderOptions, ReaderPattern, Recovery, Seen,
    TapMachine, TapState,
};
pub use service::{list_readers, spawn_reader, ReaderHandle};
pub use source::PcscSource;
