//! The journal's rules, as pure code: the rows ([`model`]) and the state machine every
//! change must obey ([`rules`]). The SQLite store that keeps them lives in the daemon.

pub mod line;
pub mod model;
pub mod rules;

pub use line::{ElsewhereClose, JourneyEvent, JourneyEventKind, LineWrites};
pub use model::{
    Channel, EventRow, FoundJourney, JourneyClose, JourneyRow, JourneyState, NewOp, OpFilter,
    OpKind, OpRow, Owed, TapBlock, TapClaim, TapDecision, TapStart, Transition, MAX_REASON_CHARS,
    MPM_PAYER,
};
pub use rules::{allowed, apply, validate_new, Rejection, TransitionError};
