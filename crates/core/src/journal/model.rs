//! The journal's rows and requests, as plain values.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::fare::{Direction, OpState, Rupiah};

/// What a fare operation does with the passenger's money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Tap-in: hold the maximum fare from this station.
    Hold,
    /// Tap-out (or a flat fare): take the real fare.
    Settle,
}

impl OpKind {
    /// The journal's spelling: `hold` or `settle`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Hold => "hold",
            OpKind::Settle => "settle",
        }
    }

    /// Parses the journal's spelling.
    pub fn parse(s: &str) -> Option<OpKind> {
        match s {
            "hold" => Some(OpKind::Hold),
            "settle" => Some(OpKind::Settle),
            _ => None,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the passenger paid: by tapping their phone (QRIS TAP, the aggregator's CPM API), or by
/// scanning a QR the gate showed (QRIS MPM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// QRIS TAP: `qr-cpm-payment`, `-query`, `-refund`.
    #[default]
    Cpm,
    /// A dynamic QR the gate showed: `qr-mpm-generate`, `-query`, `-refund`. Such an
    /// operation has no PAN: its `pan_key` is a digest of its own reference, its
    /// `pan_masked` and `nns` read [`MPM_PAYER`].
    Mpm,
}

/// What an MPM operation holds in place of a masked PAN and an NNS: the gate never learns who
/// paid a QR it showed.
pub const MPM_PAYER: &str = "QR";

impl Channel {
    /// The journal's spelling: `cpm` or `mpm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Cpm => "cpm",
            Channel::Mpm => "mpm",
        }
    }

    /// Parses the journal's spelling.
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "cpm" => Some(Channel::Cpm),
            "mpm" => Some(Channel::Mpm),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The life of a journey: a tap-in linked to its tap-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JourneyState {
    /// Tapped in, not yet out.
    Open,
    /// Tapped out; the fare is settled.
    Closed,
    /// The tap-in was never paid; nothing to settle.
    Void,
    /// No tap-out within the maximum trip time; closed by policy at the maximum fare.
    StaleClosed,
    /// No tap-out within the maximum trip time; the hold was released by policy.
    Released,
}

impl JourneyState {
    /// The journal's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JourneyState::Open => "OPEN",
            JourneyState::Closed => "CLOSED",
            JourneyState::Void => "VOID",
            JourneyState::StaleClosed => "STALE_CLOSED",
            JourneyState::Released => "RELEASED",
        }
    }

    /// Parses the journal's spelling.
    pub fn parse(s: &str) -> Option<JourneyState> {
        Some(match s {
            "OPEN" => JourneyState::Open,
            "CLOSED" => JourneyState::Closed,
            "VOID" => JourneyState::Void,
            "STALE_CLOSED" => JourneyState::StaleClosed,
            "RELEASED" => JourneyState::Released,
            _ => return None,
        })
    }
}

impl fmt::Display for JourneyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fare operation about to be sent: everything [`super::Journal::begin`] records.
///
/// There is deliberately no field for the `qrContent`, the full PAN or a name: the journal
/// must never hold them. `pan_masked` is checked to hold at most 12 digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOp {
    /// `partnerReferenceNo`: 1 to 64 printable ASCII characters, unique forever.
    pub partner_reference_no: String,
    /// Hold (tap-in) or settle (tap-out).
    pub kind: OpKind,
    /// The lane's id from the station config.
    pub lane: String,
    /// The lane's direction.
    pub direction: Direction,
    /// The station's id (e.g. `LBB`).
    pub station_id: String,
    /// The amount asked for; never zero.
    pub amount: Rupiah,
    /// Keyed hash of the PAN, hex; computed by the caller.
    pub pan_key: String,
    /// First 8 and last 4 digits of the PAN, the rest masked (`93600914*******1234`).
    pub pan_masked: String,
    /// National Numbering System id of the issuer.
    pub nns: String,
    /// The journey this operation belongs to, when already known.
    pub journey_id: Option<i64>,
    /// When the reconciler may first look at this operation if the lane never finishes it
    /// (the lane's decision deadline plus a margin): the reconciler must not query a payment
    /// while the lane's own call may still be in flight.
    pub next_attempt_at_ms: i64,
    /// Now, Unix milliseconds.
    pub created_at_ms: i64,
}

/// A change of a fare operation's state and what was learned with it.
///
/// `None` fields are left unchanged. Build one with [`Transition::new`] and struct update:
/// `Transition { reference_no: Some(r), ..Transition::new(OpState::Succeeded, now_ms) }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The new state (may equal the current one where [`super::allowed`] says so).
    pub to: OpState,
    /// The aggregator's `referenceNo`; required to reach `SUCCEEDED`, never changed once set.
    pub reference_no: Option<String>,
    /// The aggregator's `responseCode` of the call that led here.
    pub response_code: Option<String>,
    /// Whether the gate opened for this operation; never changed once known.
    pub gate_opened: Option<bool>,
    /// Why, for `DECLINED` and `ATTENTION` (required for the latter). Cut to
    /// [`MAX_REASON_CHARS`] characters.
    pub reason: Option<String>,
    /// When the reconciler should look next, Unix milliseconds.
    pub next_attempt_at_ms: Option<i64>,
    /// The aggregator's `refundNo`.
    pub refund_no: Option<String>,
    /// The amount to refund; required to reach `REFUND_PENDING`, at most the operation's amount.
    pub refund_amount: Option<Rupiah>,
    /// Count one more aggregator attempt (payment, query or refund call).
    pub bump_attempts: bool,
    /// This refund is of a hold that belongs to no journey (a second hold for one passenger,
    /// or one whose journey could not be written): the gate opened for the passenger's one
    /// journey, not for this payment, so it is refunded although its gate opened. Only a
    /// `SUCCEEDED` or `ATTENTION` hold with no journey may be sent to `REFUND_PENDING` so.
    pub duplicate_hold: bool,
    /// The line learned the journey's real fare after the gate opened: an exit charged the
    /// unknown-entry fare is refunded the difference, or the hold of a journey that a tap-out
    /// at another station closed without finalizing it is released. Only a `SUCCEEDED` or
    /// `ATTENTION` operation may be sent to `REFUND_PENDING` so.
    pub line_correction: bool,
    /// Now, Unix milliseconds.
    pub at_ms: i64,
}

/// Longest `reason` kept, in characters; longer ones are cut, not refused, so that an
/// aggregator's verbose message can never stop a state from being recorded.
pub const MAX_REASON_CHARS: usize = 500;

impl Transition {
    /// A move to `to` at `at_ms` that changes nothing else.
    pub fn new(to: OpState, at_ms: i64) -> Transition {
        Transition {
            to,
            reference_no: None,
            response_code: None,
            gate_opened: None,
            reason: None,
            next_attempt_at_ms: None,
            refund_no: None,
            refund_amount: None,
            bump_attempts: false,
            duplicate_hold: false,
            line_correction: false,
            at_ms,
        }
    }
}

/// One fare operation as journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpRow {
    /// `partnerReferenceNo`.
    pub partner_reference_no: String,
    /// Hold or settle.
    pub kind: OpKind,
    /// The lane's id.
    pub lane: String,
    /// The lane's direction.
    pub direction: Direction,
    /// The station's id.
    pub station_id: String,
    /// Amount asked for, whole rupiah.
    #[serde(serialize_with = "ser_rupiah")]
    pub amount: Rupiah,
    /// Keyed hash of the PAN.
    pub pan_key: String,
    /// Masked PAN.
    pub pan_masked: String,
    /// Issuer NNS.
    pub nns: String,
    /// Current state.
    #[serde(serialize_with = "ser_state")]
    pub state: OpState,
    /// The aggregator's `referenceNo`, once known.
    pub reference_no: Option<String>,
    /// The last `responseCode`.
    pub response_code: Option<String>,
    /// Whether the gate opened; `None` while unknown.
    pub gate_opened: Option<bool>,
    /// Why it was declined or needs attention.
    pub reason: Option<String>,
    /// Aggregator calls made for it so far.
    pub attempts: u32,
    /// When the reconciler should look next.
    pub next_attempt_at_ms: Option<i64>,
    /// The aggregator's `refundNo`.
    pub refund_no: Option<String>,
    /// Amount to refund / refunded.
    #[serde(serialize_with = "ser_opt_rupiah")]
    pub refund_amount: Option<Rupiah>,
    /// When it was begun, Unix milliseconds.
    pub created_at_ms: i64,
    /// When it last changed, Unix milliseconds.
    pub updated_at_ms: i64,
    /// Its journey, when linked.
    pub journey_id: Option<i64>,
    /// The gate opened before the aggregator answered (`[policy.fast_open]`).
    pub fast_opened: bool,
    /// Tapped (CPM) or paid by scanning the gate's QR (MPM).
    pub channel: Channel,
}

impl OpRow {
    /// What a refund of this operation returns: the amount recorded when the refund became
    /// owed, else the whole operation. The refund request and the journal's record of it both
    /// use this, so what is asked and what is written cannot differ.
    pub fn amount_to_refund(&self) -> Rupiah {
        self.refund_amount.unwrap_or(self.amount)
    }
}

/// One line of an operation's history. The events table is append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// Order of writing.
    pub id: i64,
    /// The operation.
    pub partner_reference_no: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// State before; `None` for the event that created the operation.
    #[serde(serialize_with = "ser_opt_state")]
    pub from_state: Option<OpState>,
    /// State after (equal to `from_state` for events that only add facts, e.g. a journey link).
    #[serde(serialize_with = "ser_state")]
    pub to_state: OpState,
    /// What changed, `key=value` pairs.
    pub detail: String,
}

/// One journey as journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JourneyRow {
    /// Its id.
    pub id: i64,
    /// Keyed hash of the passenger's PAN.
    pub pan_key: String,
    /// Where the passenger tapped in.
    pub entry_station: String,
    /// The tap-in operation.
    pub tap_in_ref: String,
    /// The tap-out operation, once there is one.
    pub tap_out_ref: Option<String>,
    /// Current state.
    pub state: JourneyState,
    /// The fare finally charged, once known.
    #[serde(serialize_with = "ser_opt_rupiah")]
    pub fare: Option<Rupiah>,
    /// Tap-in time, Unix milliseconds.
    pub opened_at_ms: i64,
    /// When it was closed, Unix milliseconds.
    pub closed_at_ms: Option<i64>,
}

/// Which operations [`super::Journal::list`] returns; every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpFilter {
    /// Only this state.
    pub state: Option<OpState>,
    /// Only this lane.
    pub lane: Option<String>,
    /// Only operations begun at or after this time, Unix milliseconds.
    pub since_ms: Option<i64>,
    /// At most this many (oldest first).
    pub limit: Option<usize>,
}

fn ser_rupiah<S: Serializer>(v: &Rupiah, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.0)
}

fn ser_opt_rupiah<S: Serializer>(v: &Option<Rupiah>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(r) => s.serialize_some(&r.0),
        None => s.serialize_none(),
    }
}

fn ser_state<S: Serializer>(v: &OpState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

fn ser_opt_state<S: Serializer>(v: &Option<OpState>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(st) => s.serialize_some(st.as_str()),
        None => s.serialize_none(),
    }
}

/// Who is asking to start a tap, for [`super::Journal::begin_tap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapClaim {
    /// The passenger's key (keyed hash of the PAN).
    pub pan_key: String,
    /// The lane's direction.
    pub direction: Direction,
    /// Now, Unix milliseconds.
    pub now_ms: i64,
    /// A passage of this passenger through a gate of the same direction at or after this time
    /// is the same tap seen by another reader (the station-wide debounce); `now_ms` or later
    /// turns the check off.
    pub passed_since_ms: i64,
    /// Refuse the tap when the passenger is on this journal's unpaid list (tap-ins; on a line,
    /// the line's list is asked as well, with the lookup).
    pub check_unpaid: bool,
}

/// Why [`super::Journal::begin_tap`] would not start a tap: another tap of the same passenger
/// is in the way. No row was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapBlock {
    /// A payment of this passenger is in flight: its operation is `PENDING` and the lane that
    /// began it still owns it (its `next_attempt_at_ms` is in the future).
    InFlight {
        /// The operation in flight.
        partner_reference_no: String,
    },
    /// This passenger went through a gate of the same direction moments ago.
    JustPassed {
        /// The operation that opened that gate.
        partner_reference_no: String,
    },
    /// The passenger owes fares from fast-opened payments that ended unpaid.
    Unpaid(Owed),
}

/// What a passenger owes on the unpaid list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owed {
    /// The sum of the uncleared entries.
    pub amount: Rupiah,
    /// How many entries.
    pub count: u32,
}

/// What the caller of [`super::Journal::begin_tap`] decided, given the passenger's open
/// journey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapDecision<B, R> {
    /// No payment: nothing is written.
    Refuse(R),
    /// Journal `op` (first closing the journey `close_first` as `STALE_CLOSED`, when given),
    /// all in the same transaction.
    Begin {
        /// The operation to journal as `PENDING`.
        op: Box<NewOp>,
        /// An open journey to close before the new tap-in (anti-passback
        /// `close_at_max_fare`).
        close_first: Option<JourneyClose>,
        /// What the line knew that this journal must write too.
        line: super::LineWrites,
        /// Handed back to the caller.
        then: B,
    },
}

/// What [`super::Journal::begin_tap`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapStart<B, R> {
    /// Another tap of the passenger is in the way; nothing was written.
    Blocked(TapBlock),
    /// The caller refused the tap; nothing was written.
    Refused(R),
    /// The operation is journaled (durably): its payment may be sent.
    Begun(B),
}

/// A passenger's open journey as [`super::Journal::begin_tap`] finds it: the journey and its
/// tap-in operation (whose `referenceNo` a tap-out quotes, and whose state says whether the
/// hold stands), so the tap needs no second read of the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundJourney {
    /// The journey.
    pub journey: JourneyRow,
    /// Its tap-in operation; `None` only when that row is missing or damaged.
    pub tap_in: Option<OpRow>,
}

/// How to close a journey: into which state, with which fare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JourneyClose {
    /// The journey's id.
    pub id: i64,
    /// Anything but `OPEN`.
    pub state: JourneyState,
    /// The fare finally charged, when known.
    pub fare: Option<Rupiah>,
}
