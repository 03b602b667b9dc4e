//! The tap as a pure flow: what one tap decides, step by step, with no I/O.
//!
//! | module | owns |
//! |---|---|
//! | [`tap`] | the flow of one tap: effects out, replies in |
//! | [`settle`] | a payment's result → the journal's transitions (one rule for the lane, late replies and the reconciler) |
//! | [`line`] | what the line's shared journeys tell a tap, merged with the station's |
//! | [`journey`] | how a journey closes without a tap-out (stale sweep, `close_at_max_fare`) |
//! | [`outcome`] | what became of a payment (success, declined, refused, unknown) |
//! | [`report`] | what a tap did, as printed and logged |

pub mod journey;
pub mod line;
pub mod outcome;
pub mod report;
pub mod settle;
pub mod tap;

pub use line::{LineAnswer, LineEntry, LineState, LineView};
pub use report::{TapReport, Timings};
pub use settle::{Learned, LATE_REPLY_MARGIN_MS};
pub use tap::{
    BeginPlan, BeginTap, Claim, ClaimRelease, Effect, JourneyChange, LateReply, Notice, Planned,
    Reply, Settlement, Step, TapEnd, TapFlow, TapInRef, TapInput, TapPayment, TapSettings, Trip,
};
