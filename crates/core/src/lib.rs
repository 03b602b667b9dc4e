//! tapgate's pure core: everything a tap decides, with no I/O. The daemon (`tapgate`) carries
//! the effects out through its ports; the simulator (`tapgate-sim`) uses only this crate.
//!
//! | module | owns |
//! |---|---|
//! | [`cpm`] | EMV QR CPM payload decoding (BER-TLV) and the QRIS profile checks |
//! | [`nfc`] | the QRIS TAP APDU exchange over an [`nfc::ApduChannel`], card events, the scripted phone |
//! | [`fare`] | amounts, fare states, tariff, lane policy and their settings |
//! | [`flow`] | one tap as a flow of effects, and how a result becomes journal transitions |
//! | [`journal`] | the journal's rows and its state machine |
//! | [`snap`] | BI SNAP response codes and signatures |
//! | [`clock`] | the clock port |
//! | [`escape`] | outside text made safe for one line of a log or a terminal |

// Functions stay short enough to read at once; tests may tell a longer story.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod clock;
pub mod cpm;
pub mod escape;
pub mod fare;
pub mod flow;
pub mod journal;
pub mod nfc;
pub mod snap;
