//! What a station's journal writes for the line: the journey events its outbox carries to the
//! line's shared store, and the extra writes a tap makes when the line knows more than the
//! station (a journey closed at another station, an entry the line could not tell).

use crate::fare::Rupiah;

use super::model::JourneyState;

/// What happened to a journey, as the outbox carries it to the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JourneyEventKind {
    /// Tapped in: the journey starts.
    Opened {
        /// Keyed hash of the PAN.
        pan_key: String,
        /// The aggregator's `referenceNo` of the tap-in hold. A station's outbox leaves it
        /// out (the hold's result comes a moment after its journey) and fills it in from the
        /// tap-in operation when the event is sent.
        tap_in_reference_no: Option<String>,
    },
    /// Tapped out.
    Closed {
        /// The tap-out operation.
        tap_out_ref: String,
        /// The fare charged.
        fare: Rupiah,
        /// Whether the tap-out named the tap-in's hold (`tapInPartnerReferenceNo`), so the
        /// aggregator finalized it. `false`: a plain charge (the exit did not know the entry
        /// in time, or the converge closed it later); the entry station releases its hold.
        references_hold: bool,
    },
    /// Closed by policy at the maximum fare (`None`: not known yet).
    StaleClosed {
        /// The fare.
        fare: Option<Rupiah>,
    },
    /// The tap-in was never paid.
    Void,
    /// Closed by policy, the hold left to expire.
    Released,
}

impl JourneyEventKind {
    /// The spelling stored in the outbox (the journey state the event leads to, `OPENED` for
    /// the start).
    pub fn as_str(&self) -> &'static str {
        match self {
            JourneyEventKind::Opened { .. } => "OPENED",
            JourneyEventKind::Closed { .. } => "CLOSED",
            JourneyEventKind::StaleClosed { .. } => "STALE_CLOSED",
            JourneyEventKind::Void => "VOID",
            JourneyEventKind::Released => "RELEASED",
        }
    }

    /// The state a closing event leads to; `None` for `Opened`.
    pub fn closes_to(&self) -> Option<JourneyState> {
        match self {
            JourneyEventKind::Opened { .. } => None,
            JourneyEventKind::Closed { .. } => Some(JourneyState::Closed),
            JourneyEventKind::StaleClosed { .. } => Some(JourneyState::StaleClosed),
            JourneyEventKind::Void => Some(JourneyState::Void),
            JourneyEventKind::Released => Some(JourneyState::Released),
        }
    }

    /// The event for a journey closed into `state` with `fare` (`None` for `OPEN`, which no
    /// close leads to). `tap_out_ref` is the tap-out of a `CLOSED` journey.
    pub fn for_close(
        state: JourneyState,
        fare: Option<Rupiah>,
        tap_out_ref: Option<&str>,
        references_hold: bool,
    ) -> Option<JourneyEventKind> {
        Some(match state {
            JourneyState::Open => return None,
            JourneyState::Closed => match tap_out_ref {
                Some(r) => JourneyEventKind::Closed {
                    tap_out_ref: r.to_owned(),
                    fare: fare.unwrap_or(Rupiah(0)),
                    references_hold,
                },
                None => JourneyEventKind::StaleClosed { fare },
            },
            JourneyState::StaleClosed => JourneyEventKind::StaleClosed { fare },
            JourneyState::Void => JourneyEventKind::Void,
            JourneyState::Released => JourneyEventKind::Released,
        })
    }
}

/// One journey event to send to the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JourneyEvent {
    /// The journey: its tap-in `partnerReferenceNo`.
    pub tap_in_ref: String,
    /// The station where it happened.
    pub station: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// What.
    pub kind: JourneyEventKind,
}

impl JourneyEvent {
    /// The event's id on the line, the same however often it is written or sent:
    /// `<tap-in>/<KIND>/<tap-out or station>`. Applying an event twice is applying it once.
    pub fn event_id(&self) -> String {
        let by = match &self.kind {
            JourneyEventKind::Closed { tap_out_ref, .. } => tap_out_ref.as_str(),
            _ => self.station.as_str(),
        };
        format!("{}/{}/{}", self.tap_in_ref, self.kind.as_str(), by)
    }
}

/// A journey of this journal that the line says was closed elsewhere: closed here the same
/// way, no money moved by this close. When a tap-out at another station closed it without
/// naming its hold (that exit did not know the entry in time), the hold is released
/// (`release_hold`: sent to refund in full).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElsewhereClose {
    /// The local journey.
    pub id: i64,
    /// The state the line has it in.
    pub state: JourneyState,
    /// The fare the line recorded.
    pub fare: Option<Rupiah>,
    /// Release the tap-in's hold.
    pub release_hold: bool,
}

/// What a tap writes for the line besides its operation, in the same transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineWrites {
    /// The passenger's local journey, closed at another station.
    pub closed_elsewhere: Option<ElsewhereClose>,
    /// Events for journeys this journal does not hold (anti-passback closing a journey
    /// opened at another station).
    pub events: Vec<JourneyEvent>,
    /// A tap-out charged the unknown-entry fare while the line is in use: the reconciler
    /// keeps looking for the entry, and refunds the difference once it is found.
    pub entry_unknown: bool,
}
