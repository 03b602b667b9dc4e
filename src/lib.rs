//! tapgate: the software on a QRIS TAP fare gate's controller. This crate is the daemon and
//! its command line: the adapters (PC/SC, SNAP over HTTP, SQLite, GPIO), the run loop and the
//! commands. What a tap decides is pure code in the `tapgate-core` crate (re-exported here
//! under its usual module names); the acquirer simulator is the `tapgate-sim` crate (the
//! default `sim` feature). `docs/architecture.md` follows one tap through the files.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the per-station TOML: typed, strict, with errors naming file, line and key |
//! | [`cpm`] | (core) EMV QR CPM payload decoding and the QRIS profile checks |
//! | [`nfc`] | (core) the QRIS TAP APDU exchange and card events; the PC/SC reader service and the `CardSource` port |
//! | [`snap`] | BI SNAP client mechanics: headers, token cache, wire types; (core) codes and signatures |
//! | [`aggregator`] | the Finpay QRIS TAP profile: the one place holding field choices we inferred |
//! | [`fare`] | (core) amounts, fare states, tariff and lane policy |
//! | [`flow`] | (core) one tap as a flow of effects, and how a result becomes journal transitions |
//! | [`ports`] | the traits a tap and the reconciler work through, their real adapters and fakes |
//! | [`journal`] | the SQLite journal of fare operations and journeys; (core) its rules |
//! | [`line`] | line-wide journeys shared by every station, in PostgreSQL |
//! | [`relay`] | gate relay backends (recording; GPIO) and the gate inputs |
//! | [`daemon`] | the station, the lanes (the flow's executor), the reconciler, the run loop |
//! | [`display`] | the passenger's screen: pages for a kiosk browser, live by server-sent events; one presentation of a tap for the screen and the reader |
//! | [`qr`] | QRIS MPM at the gate: a QR on the screen for phones that cannot tap, journaled, paid, opened or refunded; the payment notification |
//! | `sim` | (feature `sim`) the acquirer simulator used by `tapgate demo`, `tapgate sim` and the tests |
//! | [`cmd`] | the CLI's commands |
//! | [`clock`] | (core) the clock port |
//! | [`escape`] | (core) outside text made safe for one line of a log or a terminal |

// Functions stay short enough to read at once; tests may tell a longer story.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub use tapgate_core::{clock, cpm, escape, fare, flow};
#[cfg(feature = "sim")]
pub use tapgate_sim as sim;

pub mod aggregator;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod display;
pub mod failpoint;
pub mod journal;
pub mod line;
pub mod nfc;
pub mod ports;
pub mod qr;
pub mod relay;
pub mod snap;
