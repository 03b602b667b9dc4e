//! The NFC side: the QRIS TAP APDU exchange and the card events (pure, from the core crate's
//! `nfc`, re-exported here), the card-event stream a lane consumes (the
//! [`source::CardSource`] port, with a PC/SC and a scripted adapter).
//!
//! Real readers: [`pcsc`] (reader service on pcscd), [`feedback`] (reader LED/buzzer bytes);
//! `vphone` (a virtual phone for vsmartcard's vpcd, for tests and bench checks) comes from
//! the simulator crate.

pub use tapgate_core::nfc::*;

pub mod feedback;
pub mod pcsc;
pub mod source;

#[cfg(feature = "sim")]
pub use tapgate_sim::vphone;
