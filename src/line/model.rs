//! What the line store holds and answers: journey events, journeys, and the outcomes of
//! applying and closing.

use crate::fare::Rupiah;
use crate::journal::JourneyState;

/// One thing that happened to a journey at some station, as the station's outbox sends it.
/// Applying the same event (same `event_id`) twice is the same as once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineEvent {
    /// Unique on the line (e.g. the station id and its outbox sequence number).
    pub event_id: String,
    /// The journey: its tap-in `partnerReferenceNo`.
    pub tap_in_ref: String,
    /// The station where it happened (the entry for `Opened`, the exit for `Closed`, the
    /// closing station otherwise).
    pub station: String,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// What happened.
    pub kind: LineEventKind,
}

/// What happened to a journey: the same events a station's outbox holds (the core's
/// [`tapgate_core::journal::JourneyEventKind`]), so one type describes a journey event from
/// the station's transaction to the line's table.
pub use tapgate_core::journal::JourneyEventKind as LineEventKind;

/// What applying an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Recorded, and the journey moved forward or gained its entry.
    Changed,
    /// Recorded; the journey was already past it (a second close; an open whose entry was
    /// already known). The event stays in the events table for the reconcilers.
    NoChange,
    /// This event id was applied before: nothing done.
    Duplicate,
}

/// A passenger's open journey, as an exit needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenJourney {
    /// The journey: its tap-in `partnerReferenceNo`.
    pub tap_in_ref: String,
    /// Keyed hash of the PAN.
    pub pan_key: String,
    /// Where the passenger tapped in.
    pub entry_station: String,
    /// The aggregator's `referenceNo` of the tap-in hold.
    pub tap_in_reference_no: Option<String>,
    /// Tap-in time, Unix milliseconds.
    pub opened_at_ms: i64,
}

/// A journey as the line knows it. Entry fields are `None` while only a close has arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineJourney {
    /// The journey: its tap-in `partnerReferenceNo`.
    pub tap_in_ref: String,
    /// Keyed hash of the PAN.
    pub pan_key: Option<String>,
    /// Where the passenger tapped in.
    pub entry_station: Option<String>,
    /// The aggregator's `referenceNo` of the tap-in hold.
    pub tap_in_reference_no: Option<String>,
    /// Tap-in time, Unix milliseconds.
    pub opened_at_ms: Option<i64>,
    /// Where it stands.
    pub state: JourneyState,
    /// The exit station for `CLOSED`; the station whose policy closed it otherwise.
    pub closed_station: Option<String>,
    /// The tap-out operation.
    pub tap_out_ref: Option<String>,
    /// The fare recorded by the close.
    pub fare: Option<Rupiah>,
    /// When it was closed, Unix milliseconds.
    pub closed_at_ms: Option<i64>,
    /// For a journey closed by a tap-out: whether the tap-out referenced the tap-in hold.
    /// `None` for the other states (and for closes recorded before schema version 2).
    pub references_hold: Option<bool>,
}

/// What the exit (or entry) asks the line in one round trip ([`super::LineStore::lookup`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupQuery {
    /// Keyed hash of the PAN.
    pub pan_key: String,
    /// Exit: `Some(the tap-out's partnerReferenceNo)` to claim the passenger's open journey
    /// for this tap-out (only if unclaimed, or claimed by this same ref, or the other claim
    /// expired). Entry: `None` (no claim).
    pub claim: Option<String>,
    /// The journey the station's local journal believes open for this passenger, to learn
    /// how the line sees it (it may have been closed at another station).
    pub local_tap_in_ref: Option<String>,
    /// Now, Unix milliseconds (the station's clock).
    pub now_ms: i64,
    /// How long a claim lives (`now_ms + claim_ms` is its expiry).
    pub claim_ms: i64,
    /// A journey of this passenger closed by a tap-out (state `CLOSED`) at or after this
    /// time is reported in [`LookupAnswer::recent_close`] (the line-wide debounce of exits).
    pub debounce_since_ms: i64,
}

/// What the line answered to a [`LookupQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupAnswer {
    /// The passenger's open journey on the line (the newest), claimed by the query's `claim`
    /// when one was asked and won.
    pub open: Option<OpenJourney>,
    /// The open journey is claimed by ANOTHER live exit claim: that tap-out's ref (`open` is
    /// then `Some` too). The claim was not taken.
    pub claimed_by: Option<String>,
    /// The `tap_out_ref` of a journey of this passenger closed by a tap-out since
    /// `debounce_since_ms` (the newest; it may be the asking tap-out's own ref on a retry).
    pub recent_close: Option<String>,
    /// The line's view of `local_tap_in_ref` (`None`: the line does not know it).
    pub local: Option<LineJourney>,
    /// What the passenger owes on the line's unpaid list, if anything.
    pub owed: Option<tapgate_core::journal::Owed>,
}

/// What [`super::LineStore::close_if_open`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// This call closed the journey (or an earlier attempt of this same close did); the
    /// journey as closed.
    Closed(LineJourney),
    /// Another close came first; the journey as it stands.
    AlreadyClosed(LineJourney),
    /// The line has no such journey.
    NotFound,
}

/// What [`super::LineStore::migrate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// Version before.
    pub from: i32,
    /// Version after.
    pub to: i32,
}
