//! Line-wide journeys: the journeys of every station of a metro line in one PostgreSQL
//! database, so that an exit at any station finds the entry made at any other.
//!
//! The station journal stays the source of truth for money; this store is what stations
//! share: each journey keyed by its tap-in `partnerReferenceNo`, moved forward by events
//! ([`LineEvent`]) that stations apply idempotently and in any order, and closed by a
//! conditional update so that two exits racing for one journey close it once.
//!
//! | file | owns |
//! |---|---|
//! | `settings.rs` | [`LineSettings`], and the checked connection (no password in the URL, TLS off this machine) |
//! | `schema.rs` | the versioned migrations |
//! | `store.rs` | [`LineStore`]: migrate, join, apply, look up and claim, find, close, converge, prune |
//! | `unpaid.rs` | the line's unpaid list: entries sent, cleared anywhere, followed by their station |
//! | `model.rs` | events, journeys, outcomes |
//! | `fingerprint.rs` | [`KeyFingerprint`]: one passenger key per line, checked without holding it |
//! | `error.rs` | [`LineError`] and its [`ErrorClass`]: degrade and retry, or fatal |

mod error;
mod fingerprint;
mod model;
pub mod schema;
mod settings;
mod store;
mod unpaid;

pub use error::{sqlstate_class, ErrorClass, LineError, SqlClass};
pub use fingerprint::KeyFingerprint;
pub use model::{
    Applied, CloseOutcome, LineEvent, LineEventKind, LineJourney, LookupAnswer, LookupQuery,
    Migrated, OpenJourney,
};
pub use settings::{
    connection, Connection, LineSettings, DEFAULT_BACKGROUND_TIMEOUT_MS,
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_LOOKUP_TIMEOUT_MS, DEFAULT_POOL_SIZE,
};
pub use store::LineStore;
