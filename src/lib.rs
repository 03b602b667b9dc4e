//! tapgate: the software on a QRIS TAP fare gate's controller.
//!
//! The modules follow the path of one tap:
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the per-station TOML: typed, strict, with errors naming file, line and key |
//! | [`cpm`] | EMV QR CPM payload decoding (BER-TLV) and the QRIS profile checks (pure) |
//! | [`nfc`] | the QRIS TAP APDU exchange over an [`nfc::ApduChannel`] (pure), and the scripted phone |
//! | [`snap`] | BI SNAP client mechanics: signatures, headers, token cache, response classification |
//! | [`aggregator`] | the Finpay QRIS TAP profile: the one place holding field choices we inferred |
//! | [`fare`] | amounts, fare states, tariff and lane policy (pure) |
//! | [`flow`] | one tap as a pure flow of effects, and how a result becomes journal transitions |
//! | [`ports`] | the traits a tap and the reconciler work through, their real adapters and fakes |
//! | [`journal`] | the SQLite journal of fare operations and journeys |
//! | [`line`] | line-wide journeys shared by every station, in PostgreSQL |
//! | [`relay`] | gate relay backends (recording; GPIO) |
//! | [`daemon`] | lanes: the pipeline of one tap, wiring the pieces above together |
//! | [`sim`] | the acquirer simulator used by `tapgate demo`, `tapgate sim` and the tests |
//! | [`clock`] | the clock port |
//! | [`escape`] | outside text made safe for one line of a log or a terminal |

pub mod aggregator;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod cpm;
pub mod daemon;
pub mod escape;
pub mod failpoint;
pub mod fare;
pub mod flow;
pub mod journal;
pub mod line;
pub mod nfc;
pub mod ports;
pub mod relay;
pub mod sim;
pub mod snap;
