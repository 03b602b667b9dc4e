//! One tap as a sans-IO flow: it decides, an executor does.
//!
//! [`TapFlow::start`] takes the payload and returns the first [`Step`]; each
//! [`Effect`] the executor carries out comes back as a [`Reply`] to [`TapFlow::resume`],
//! until [`Step::Done`] hands over the [`TapEnd`]. The flow never touches a clock, a socket, a
//! file or a relay: the current time comes with each reply. The order of the effects is the
//! money's safety:
//!
//! 1. `Claim`: this passenger is not the same tap seen again (debounce, another lane).
//! 2. `Begin`: the passenger's open journey is read, the fare planned and the operation
//!    journaled `PENDING`, in one transaction of the journal (write before send).
//! 3. `Pay`: the aggregator is asked, up to the decision deadline. Under
//!    `[policy.fast_open]` the flow waits only `wait_ms`; with no answer by then it asks for
//!    `FastOpen` (the station's exposure and the aggregator's health), and either opens with
//!    the payment still going on, or goes back to waiting (`AwaitPay`) as in strict mode.
//! 4. `OpenGate`: only when the verdict says so.
//! 5. `Settle`: the journey opened or closed and the payment's result recorded, in one
//!    journal transaction (each part keeping its own result).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::journey::close_at_max_fare;
use super::line::{merge, Known, LineAnswer, LineDuplicate, LineView};
use super::outcome::{AmountMismatch, PayOutcome};
use super::report::TapReport;
use super::settle::{
    in_flight_window_ms, late_reply_window_ms, learned_from, pay_result, plan_transitions, Learned,
};
use crate::cpm;
use crate::fare::fast_open::FastOpenRefusal;
use crate::fare::policy::{self, OpenJourney, PayResult, Plan, TapOutcome, Verdict};
use crate::fare::settings::PolicyConfig;
use crate::fare::tariff::{FareRule, Tariff};
use crate::fare::{Direction, Rupiah};
use crate::journal::{
    FoundJourney, JourneyClose, JourneyEvent, JourneyEventKind, LineWrites, NewOp, OpKind, Owed,
    TapBlock, TapClaim, TapDecision, TapStart, Transition,
};

/// What a lane's flow knows of its lane and station; fixed while the daemon runs.
#[derive(Clone, Debug)]
pub struct TapSettings {
    /// The lane's name.
    pub lane: String,
    /// The lane's direction.
    pub direction: Direction,
    /// The station's id.
    pub station_id: String,
    /// The gate's device id, sent with each payment.
    pub gate_id: String,
    /// The station's policy.
    pub policy: PolicyConfig,
    /// The station's tariff.
    pub tariff: Arc<Tariff>,
    /// How long the payment request may take before the HTTP client gives up.
    pub request_timeout_ms: u64,
    /// The station belongs to a line whose journeys are shared: each tap asks the line
    /// ([`Effect::Lookup`]) before it is journaled.
    pub line: bool,
}

/// One tap as read at the reader.
pub struct TapInput {
    /// The NFC payload exactly as read. Never logged.
    pub qr_content: String,
    /// How long the read took.
    pub read_us: u64,
    /// Free-exit (emergency) mode is on.
    pub free_exit: bool,
    /// Now, Unix milliseconds.
    pub now_ms: i64,
    /// The `partnerReferenceNo` this tap's payment will carry, if it gets one.
    pub partner_reference_no: String,
    /// The passenger key of a PAN (keyed hash; see the daemon's `PassengerKey`).
    pub passenger_key: Box<dyn Fn(&cpm::Pan) -> String + Send>,
}

/// One `qr-cpm-payment` to send, a tap-in hold or a tap-out settlement: everything the
/// aggregator needs, owned. The one type for a payment, from the flow to the SNAP body.
#[derive(Clone, PartialEq, Eq)]
pub struct TapPayment {
    /// Our reference, already journaled.
    pub partner_reference_no: String,
    /// The NFC text exactly as read. Never logged (`Debug` hides it).
    pub qr_content: String,
    /// Hold (tap-in) or fare (tap-out).
    pub amount: Rupiah,
    /// Tap-in or tap-out.
    pub direction: Direction,
    /// This station's id.
    pub station_id: String,
    /// This gate's id.
    pub gate_id: String,
    /// On tap-out, the tap-in this journey started with.
    pub tap_in: Option<TapInRef>,
}

impl fmt::Debug for TapPayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapPayment")
            .field("partner_reference_no", &self.partner_reference_no)
            .field("qr_content", &"<redacted>")
            .field("amount", &self.amount)
            .field("direction", &self.direction)
            .field("station_id", &self.station_id)
            .field("gate_id", &self.gate_id)
            .field("tap_in", &self.tap_in)
            .finish()
    }
}

/// The tap-in a tap-out closes, as found with the journey (no second read of the journal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapInRef {
    /// The tap-in's `partnerReferenceNo`.
    pub partner_reference_no: String,
    /// The tap-in's `referenceNo`, when its success was seen.
    pub reference_no: Option<String>,
}

/// The journey a tap-out closes, as the flow carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trip {
    /// The journey's id in this station's journal; `None` for a journey opened at another
    /// station (it is closed on the line).
    pub id: Option<i64>,
    /// Its tap-in.
    pub tap_in: TapInRef,
}

/// What [`BeginPlan::decide`] hands back once the operation is journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Hold or fare.
    pub amount: Rupiah,
    /// How a tap-out fare was found.
    pub rule: Option<FareRule>,
    /// The journey a tap-out closes.
    pub trip: Option<Trip>,
}

/// The decision made inside the journal's transaction, from the passenger's open journey.
#[derive(Clone, Debug)]
pub struct BeginPlan {
    settings: Arc<TapSettings>,
    op: NewOp,
    line: Option<Box<LineView>>,
}

impl BeginPlan {
    /// Plans the tap given the passenger's open journey, as the journal found it in the same
    /// transaction that will journal the operation.
    pub fn decide(self, open: Option<FoundJourney>) -> TapDecision<Planned, TapOutcome> {
        let s = &self.settings;
        let exit = s.direction == Direction::Out;
        let merged = match merge(open, self.line.as_deref(), exit) {
            Ok(m) => m,
            Err(LineDuplicate::ClaimedElsewhere(_) | LineDuplicate::JustClosed(_)) => {
                return TapDecision::Refuse(TapOutcome::Duplicate)
            }
        };
        let (view, tap_in_op, remote_reference) = match &merged.known {
            Known::None => (None, None, None),
            Known::Local(f) => (
                Some(OpenJourney {
                    id: Some(f.journey.id),
                    entry_station: f.journey.entry_station.clone(),
                    tap_in_ref: f.journey.tap_in_ref.clone(),
                }),
                f.tap_in.as_ref(),
                None,
            ),
            Known::Remote(e) => (
                Some(OpenJourney {
                    id: None,
                    entry_station: e.entry_station.clone(),
                    tap_in_ref: e.tap_in_ref.clone(),
                }),
                None,
                e.tap_in_reference_no.clone(),
            ),
        };
        match policy::plan(s.direction, &s.station_id, view, &s.tariff, &s.policy) {
            Plan::Refuse(outcome) => TapDecision::Refuse(outcome),
            Plan::Pay {
                amount,
                rule,
                journey,
                close_first,
            } => {
                let mut line = LineWrites {
                    closed_elsewhere: merged.closed_elsewhere,
                    entry_unknown: s.line && rule == Some(FareRule::UnknownEntry),
                    ..LineWrites::default()
                };
                let trip = journey.map(|j| Trip {
                    id: j.id,
                    tap_in: TapInRef {
                        reference_no: match j.id {
                            Some(_) => tap_in_op.and_then(|op| op.reference_no.clone()),
                            None => remote_reference.clone(),
                        },
                        partner_reference_no: j.tap_in_ref,
                    },
                });
                let close_first = close_first.and_then(|j| match j.id {
                    Some(id) => {
                        let (state, fare) = close_at_max_fare(tap_in_op);
                        Some(JourneyClose { id, state, fare })
                    }
                    None => {
                        line.events.push(JourneyEvent {
                            tap_in_ref: j.tap_in_ref,
                            station: s.station_id.clone(),
                            at_ms: self.op.created_at_ms,
                            kind: JourneyEventKind::StaleClosed { fare: None },
                        });
                        None
                    }
                });
                let op = NewOp {
                    amount,
                    journey_id: trip.as_ref().and_then(|t| t.id),
                    ..self.op
                };
                TapDecision::Begin {
                    op: Box::new(op),
                    close_first,
                    line,
                    then: Planned { amount, rule, trip },
                }
            }
        }
    }
}

/// Begin the tap in the journal: [`BeginPlan::decide`] runs inside its transaction.
#[derive(Clone, Debug)]
pub struct BeginTap {
    /// Who asks, for the journal's single-flight check.
    pub claim: TapClaim,
    /// The decision to run on the open journey.
    pub plan: BeginPlan,
}

/// A journey change that a tap's result brings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JourneyChange {
    /// A tap-in let through: the journey starts.
    Open {
        /// The passenger.
        pan_key: String,
        /// Where.
        station_id: String,
        /// The tap-in operation.
        tap_in_ref: String,
        /// When, Unix milliseconds.
        at_ms: i64,
    },
    /// A tap-out let through, closing a journey opened at another station: the journey
    /// ends on the line (this journal sends the event).
    CloseOnLine {
        /// The journey's tap-in.
        tap_in_ref: String,
        /// The tap-out operation.
        tap_out_ref: String,
        /// The fare charged (`None`: let out unpaid, the hold stands).
        fare: Option<Rupiah>,
        /// When, Unix milliseconds.
        at_ms: i64,
    },
    /// A tap-out let through: the journey ends.
    Close {
        /// How.
        close: JourneyClose,
        /// The tap-out operation.
        tap_out_ref: String,
        /// When, Unix milliseconds.
        at_ms: i64,
    },
}

/// What to write once the gate has decided, in one journal transaction: the journey first (it
/// says who was let through, which is already true), then the payment's transitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The journey change, if any.
    pub journey: Option<JourneyChange>,
    /// The operation.
    pub partner_reference_no: String,
    /// Its transitions.
    pub transitions: Vec<Transition>,
    /// The gate opened before the aggregator answered: the journal marks the operation, so
    /// that an unpaid end puts the passenger on the unpaid list.
    pub fast_opened: bool,
}

/// An effect for the executor to carry out.
#[derive(Debug)]
pub enum Effect {
    /// Is this the same tap seen again (debounce), or is the passenger's tap in progress at
    /// another lane? Answer with [`Reply::Claim`]; a granted claim is held until the tap ends.
    Claim {
        /// The passenger.
        pan_key: String,
    },
    /// Ask the line about this passenger ([`Reply::Lookup`]), within its budget: their open
    /// journey anywhere on the line, claimed for `claim` at an exit; whether an exit of theirs
    /// was just made elsewhere; and how the line sees the journey this station's journal
    /// holds open for them.
    Lookup {
        /// The passenger.
        pan_key: String,
        /// At an exit, this tap-out's reference, to claim the journey with.
        claim: Option<String>,
        /// How long the claim lives, ms.
        claim_ms: i64,
        /// An exit closed at or after this time is this tap seen again.
        debounce_since_ms: i64,
    },
    /// Journal the tap ([`Reply::Begin`]).
    Begin(BeginTap),
    /// Send the payment; answer with [`Reply::Pay`] by `deadline`, or `None` when it passed
    /// (the payment keeps going: its late reply is [`TapEnd::late`]'s business). With `wait`,
    /// answer `None` already when `wait` has passed with no answer: the payment keeps going,
    /// and [`Effect::AwaitPay`] may follow.
    Pay {
        /// The payment.
        request: TapPayment,
        /// The decision deadline.
        deadline: Duration,
        /// Fast open's wait (shorter than the deadline).
        wait: Option<Duration>,
    },
    /// May this tap open before its answer? The station's unconfirmed exposure and the
    /// aggregator's health decide ([`Reply::FastOpen`]); a grant counts `amount` as exposure
    /// until the payment's result is known.
    FastOpen {
        /// The payment.
        partner_reference_no: String,
        /// Its amount.
        amount: Rupiah,
    },
    /// Go on waiting for the payment sent by the last [`Effect::Pay`], until its deadline
    /// ([`Reply::Pay`]).
    AwaitPay,
    /// Pulse the relay ([`Reply::Gate`]).
    OpenGate,
    /// Write the result ([`Reply::Settle`]).
    Settle(Settlement),
}

/// The answer to an [`Effect::Claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Go on.
    Granted,
    /// The same passenger was let through this lane within the debounce window.
    Repeat,
    /// Another lane of this process has a tap of this passenger in progress.
    Busy,
}

/// The result of an effect.
#[derive(Debug)]
pub enum Reply {
    /// For [`Effect::Claim`].
    Claim(Claim),
    /// For [`Effect::Lookup`].
    Lookup(LineView),
    /// For [`Effect::Begin`]; `Err` is the journal's error, for the technician.
    Begin(Result<TapStart<Planned, TapOutcome>, String>),
    /// For [`Effect::Pay`] and [`Effect::AwaitPay`]; `None`: no answer by the deadline (or
    /// by the wait).
    Pay(Option<PayOutcome>),
    /// For [`Effect::FastOpen`].
    FastOpen(Result<(), FastOpenRefusal>),
    /// For [`Effect::OpenGate`].
    Gate(Result<(), String>),
    /// For [`Effect::Settle`]: the journey's write, then the operation's.
    Settle {
        /// The journey change's result.
        journey: Result<(), String>,
        /// The transitions' result.
        record: Result<(), String>,
    },
}

/// Something the executor reports (log line, metric) once the tap ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The answer named another amount than the payment's.
    AmountMismatch(AmountMismatch),
    /// The relay failed: the gate did not open.
    RelayFailed(String),
    /// An exit was let out unpaid because the aggregator could not be used.
    UnpaidExit {
        /// Why (a [`super::outcome::RefusedWhy`] name).
        why: &'static str,
        /// The fare not charged.
        amount: Rupiah,
    },
    /// The journey write failed (a hold without a journey is refunded by the reconciler).
    JourneyWriteFailed(String),
    /// The result write failed (the reconciler resolves the row by query).
    RecordFailed(String),
    /// The line could not answer in time: the tap went on with the station's knowledge.
    LineUnavailable(String),
    /// The gate opened before the aggregator answered.
    FastOpened {
        /// The amount now unconfirmed.
        amount: Rupiah,
    },
    /// No answer within the fast-open wait, and fast open was refused: the tap waited on.
    FastOpenRefused(FastOpenRefusal),
    /// A tap-in refused because the passenger is on the unpaid list.
    UnpaidRefused(Owed),
}

/// A payment whose deadline passed: its reply, if it comes, is recorded with
/// [`super::settle::late_reply_transitions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateReply {
    /// The operation.
    pub partner_reference_no: String,
    /// Whether the gate opened.
    pub opened: bool,
    /// The amount asked.
    pub amount: Rupiah,
}

/// How a tap ended.
#[derive(Debug)]
pub struct TapEnd {
    /// The report (timings are the executor's to fill).
    pub report: TapReport,
    /// What to log and count.
    pub notices: Vec<Notice>,
    /// A reply still to wait for.
    pub late: Option<LateReply>,
    /// The passenger was let through (the debounce remembers them).
    pub passed_pan_key: Option<String>,
    /// A claim this exit took on a line journey and did not use (the gate stayed shut and
    /// no payment is in flight): the executor releases it, so that the passenger's next tap
    /// is not taken for this one.
    pub release_claim: Option<ClaimRelease>,
    /// Fast open was granted for this tap: `Some(true)` when the gate then opened (the
    /// exposure stands until the payment's result), `Some(false)` when the relay failed (the
    /// executor gives the exposure back).
    pub fast_open: Option<bool>,
}

/// A line claim to release: the journey and the claiming tap-out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRelease {
    /// The journey's tap-in.
    pub tap_in_ref: String,
    /// The claim (this tap-out's reference).
    pub claim: String,
}

/// The next thing to do.
#[derive(Debug)]
pub enum Step {
    /// Carry out this effect, then [`TapFlow::resume`] with its reply.
    Do(Effect),
    /// The tap is over.
    Done(TapEnd),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Claim,
    Lookup,
    Begin,
    PayWait,
    FastOpen,
    Pay,
    Gate,
    Settle,
    Done,
}

/// One tap in progress. See the module docs.
pub struct TapFlow {
    settings: Arc<TapSettings>,
    qr_content: String,
    now_ms: i64,
    pan_key: String,
    report: TapReport,
    stage: Stage,
    amount: Rupiah,
    trip: Option<Trip>,
    line: Option<LineView>,
    timed_out: bool,
    verdict: Option<Verdict>,
    learned: Option<Learned>,
    unpaid_why: Option<&'static str>,
    fast_open: bool,
    opened: bool,
    notices: Vec<Notice>,
}

impl fmt::Debug for TapFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapFlow")
            .field("lane", &self.settings.lane)
            .field("stage", &self.stage)
            .field("partner_reference_no", &self.report.partner_reference_no)
            .finish_non_exhaustive()
    }
}

impl TapFlow {
    /// Starts a tap: checks free exit and the payload, then asks for the claim.
    pub fn start(settings: Arc<TapSettings>, input: TapInput) -> (TapFlow, Step) {
        let mut report = TapReport::refused(
            &settings.lane,
            settings.direction,
            TapOutcome::Approved,
            String::new(),
        );
        report.timings.read_us = input.read_us;
        report.partner_reference_no = Some(input.partner_reference_no);
        let mut flow = TapFlow {
            settings,
            qr_content: String::new(),
            now_ms: input.now_ms,
            pan_key: String::new(),
            report,
            stage: Stage::Claim,
            amount: Rupiah(0),
            trip: None,
            line: None,
            timed_out: false,
            verdict: None,
            learned: None,
            unpaid_why: None,
            fast_open: false,
            opened: false,
            notices: Vec::new(),
        };
        if input.free_exit {
            let step = flow.refuse(
                TapOutcome::FreeExit,
                "free-exit (emergency) mode: gates are held open, no fare is taken".into(),
            );
            return (flow, step);
        }
        let payload = match cpm::decode(&input.qr_content) {
            Ok(p) => p,
            Err(e) => {
                let step = flow.refuse(TapOutcome::InvalidPayload, e.to_string());
                return (flow, step);
            }
        };
        flow.report.nns = Some(payload.nns().to_string());
        flow.report.issuer = cpm::issuer_name(payload.nns());
        flow.report.pan_masked = Some(payload.pan().masked());
        flow.pan_key = (input.passenger_key)(payload.pan());
        flow.qr_content = input.qr_content;
        let step = Step::Do(Effect::Claim {
            pan_key: flow.pan_key.clone(),
        });
        (flow, step)
    }

    /// Takes the reply to the last effect, at `now_ms` (Unix milliseconds), and returns the
    /// next step. A reply that does not answer the last effect ends the tap with the gate shut.
    pub fn resume(&mut self, reply: Reply, now_ms: i64) -> Step {
        match (self.stage, reply) {
            (Stage::Claim, Reply::Claim(c)) => self.on_claim(c),
            (Stage::Lookup, Reply::Lookup(v)) => self.on_lookup(v),
            (Stage::Begin, Reply::Begin(r)) => self.on_begin(r),
            (Stage::PayWait, Reply::Pay(None)) => {
                self.stage = Stage::FastOpen;
                Step::Do(Effect::FastOpen {
                    partner_reference_no: self
                        .report
                        .partner_reference_no
                        .clone()
                        .unwrap_or_default(),
                    amount: self.amount,
                })
            }
            (Stage::PayWait | Stage::Pay, Reply::Pay(o)) => self.on_pay(o, now_ms),
            (Stage::FastOpen, Reply::FastOpen(r)) => self.on_fast_open(r),
            (Stage::Gate, Reply::Gate(r)) => self.on_gate(r, now_ms),
            (Stage::Settle, Reply::Settle { journey, record }) => self.on_settled(journey, record),
            (stage, reply) => {
                let why = format!("internal error: {reply:?} does not answer stage {stage:?}");
                self.notices.push(Notice::RecordFailed(why.clone()));
                self.report.opened = false;
                self.refuse(TapOutcome::JournalUnavailable, why)
            }
        }
    }

    fn refuse(&mut self, outcome: TapOutcome, message: String) -> Step {
        self.report.outcome = outcome;
        self.report.message = message;
        if self.stage < Stage::Pay {
            // Nothing was journaled: the reference was never used.
            self.report.partner_reference_no = None;
        }
        self.done()
    }

    fn done(&mut self) -> Step {
        self.stage = Stage::Done;
        let late = self.timed_out.then(|| LateReply {
            partner_reference_no: self.report.partner_reference_no.clone().unwrap_or_default(),
            opened: self.opened,
            amount: self.amount,
        });
        Step::Done(TapEnd {
            report: self.report.clone(),
            notices: std::mem::take(&mut self.notices),
            release_claim: self.unused_claim(),
            late,
            passed_pan_key: self.opened.then(|| self.pan_key.clone()),
            fast_open: self.fast_open.then_some(self.opened),
        })
    }

    fn on_claim(&mut self, c: Claim) -> Step {
        let message = match c {
            Claim::Granted if self.settings.line => {
                let s = &self.settings;
                self.stage = Stage::Lookup;
                let now = self.now_ms;
                let debounce = i64::try_from(s.policy.debounce_ms).unwrap_or(i64::MAX);
                return Step::Do(Effect::Lookup {
                    pan_key: self.pan_key.clone(),
                    claim: (s.direction == Direction::Out)
                        .then(|| self.report.partner_reference_no.clone().unwrap_or_default()),
                    claim_ms: in_flight_window_ms(
                        s.policy.decision_deadline_ms,
                        s.request_timeout_ms,
                    ),
                    debounce_since_ms: now.saturating_sub(debounce),
                });
            }
            Claim::Granted => {
                self.stage = Stage::Begin;
                return Step::Do(Effect::Begin(self.begin_tap()));
            }
            Claim::Repeat => "same passenger within the debounce window: the same tap",
            Claim::Busy => {
                "a tap for this passenger is in progress at another lane: the same tap, no \
                 second payment"
            }
        };
        self.refuse(TapOutcome::Duplicate, message.into())
    }

    fn on_lookup(&mut self, view: LineView) -> Step {
        if let LineView::Unavailable(why) = &view {
            self.notices.push(Notice::LineUnavailable(why.clone()));
        }
        if let (
            Direction::In,
            LineView::Answered(LineAnswer {
                unpaid: Some(owed), ..
            }),
        ) = (self.settings.direction, &view)
        {
            return self.refuse_unpaid(*owed);
        }
        self.line = Some(view);
        self.stage = Stage::Begin;
        Step::Do(Effect::Begin(self.begin_tap()))
    }

    /// The line journey this exit claimed, when the claim went unused: no gate opened and no
    /// payment is still in flight.
    fn unused_claim(&self) -> Option<ClaimRelease> {
        if self.opened || self.timed_out || self.settings.direction != Direction::Out {
            return None;
        }
        let Some(LineView::Answered(a)) = &self.line else {
            return None;
        };
        let open = a.open.as_ref()?;
        Some(ClaimRelease {
            tap_in_ref: open.tap_in_ref.clone(),
            claim: self.report.partner_reference_no.clone()?,
        })
    }

    fn begin_tap(&self) -> BeginTap {
        let s = &self.settings;
        let now = self.now_ms;
        let debounce = i64::try_from(s.policy.debounce_ms).unwrap_or(i64::MAX);
        let op = NewOp {
            partner_reference_no: self.report.partner_reference_no.clone().unwrap_or_default(),
            kind: match s.direction {
                Direction::In => OpKind::Hold,
                Direction::Out => OpKind::Settle,
            },
            lane: s.lane.clone(),
            direction: s.direction,
            station_id: s.station_id.clone(),
            amount: Rupiah(0),
            pan_key: self.pan_key.clone(),
            pan_masked: self.report.pan_masked.clone().unwrap_or_default(),
            nns: self.report.nns.clone().unwrap_or_default(),
            journey_id: None,
            // The reconciler leaves the row to this tap until its reply can no longer come.
            next_attempt_at_ms: now.saturating_add(in_flight_window_ms(
                s.policy.decision_deadline_ms,
                s.request_timeout_ms,
            )),
            created_at_ms: now,
        };
        BeginTap {
            claim: TapClaim {
                pan_key: self.pan_key.clone(),
                direction: s.direction,
                now_ms: now,
                passed_since_ms: now.saturating_sub(debounce),
                check_unpaid: s.direction == Direction::In,
            },
            plan: BeginPlan {
                settings: s.clone(),
                op,
                line: self.line.clone().map(Box::new),
            },
        }
    }

    fn on_begin(&mut self, r: Result<TapStart<Planned, TapOutcome>, String>) -> Step {
        let planned = match r {
            Ok(TapStart::Begun(p)) => p,
            Ok(TapStart::Refused(outcome)) => {
                return self.refuse(outcome, policy::refusal_message(outcome))
            }
            Ok(TapStart::Blocked(block)) => {
                let message = match block {
                    TapBlock::InFlight {
                        partner_reference_no,
                    } => format!(
                        "a tap for this passenger is in progress ({partner_reference_no}): \
                         the same tap, no second payment"
                    ),
                    TapBlock::JustPassed {
                        partner_reference_no,
                    } => format!(
                        "this passenger went through a gate of this direction moments ago \
                         ({partner_reference_no}): the same tap, no second payment"
                    ),
                    TapBlock::Unpaid(owed) => return self.refuse_unpaid(owed),
                };
                return self.refuse(TapOutcome::Duplicate, message);
            }
            Err(e) => {
                return self.refuse(
                    TapOutcome::JournalUnavailable,
                    format!("journal unavailable, taps refused until it recovers: {e}"),
                )
            }
        };
        let s = &self.settings;
        self.amount = planned.amount;
        self.report.amount = Some(planned.amount.0);
        self.report.fare_rule = planned.rule.map(|f| f.as_str());
        self.trip = planned.trip;
        let fo = &s.policy.fast_open;
        let wait = (fo.wait_ms < s.policy.decision_deadline_ms
            && fo.covers(self.report.nns.as_deref().unwrap_or_default()))
        .then(|| Duration::from_millis(fo.wait_ms));
        self.stage = if wait.is_some() {
            Stage::PayWait
        } else {
            Stage::Pay
        };
        Step::Do(Effect::Pay {
            request: TapPayment {
                partner_reference_no: self.report.partner_reference_no.clone().unwrap_or_default(),
                qr_content: std::mem::take(&mut self.qr_content),
                amount: planned.amount,
                direction: s.direction,
                station_id: s.station_id.clone(),
                gate_id: s.gate_id.clone(),
                tap_in: self.trip.as_ref().map(|t| t.tap_in.clone()),
            },
            deadline: Duration::from_millis(s.policy.decision_deadline_ms),
            wait,
        })
    }

    fn refuse_unpaid(&mut self, owed: Owed) -> Step {
        self.notices.push(Notice::UnpaidRefused(owed));
        let message = format!(
            "on the unpaid list: {} owed from {} fast-opened tap(s) that ended unpaid; entry \
             refused until staff clear it (`tapgate unpaid list`)",
            owed.amount, owed.count
        );
        self.refuse(TapOutcome::Unpaid, message)
    }

    /// No answer within the fast-open wait: open now when the station allowed it, else wait
    /// on as in strict mode.
    fn on_fast_open(&mut self, r: Result<(), FastOpenRefusal>) -> Step {
        if let Err(why) = r {
            self.notices.push(Notice::FastOpenRefused(why));
            self.stage = Stage::Pay;
            return Step::Do(Effect::AwaitPay);
        }
        let s = &self.settings;
        self.fast_open = true;
        self.timed_out = true;
        self.notices.push(Notice::FastOpened {
            amount: self.amount,
        });
        let learned = Learned {
            result: PayResult::Unknown,
            reference_no: None,
            response_code: None,
            reason: format!(
                "fast open: no answer within {} ms, opened before the aggregator answered; \
                 the payment goes on",
                s.policy.fast_open.wait_ms
            ),
            amount_mismatch: None,
        };
        self.report.fast_open = true;
        self.report.message = learned.reason.clone();
        self.report.outcome = TapOutcome::Approved;
        self.verdict = Some(Verdict {
            open_gate: true,
            outcome: TapOutcome::Approved,
        });
        self.learned = Some(learned);
        self.stage = Stage::Gate;
        Step::Do(Effect::OpenGate)
    }

    fn on_pay(&mut self, outcome: Option<PayOutcome>, now_ms: i64) -> Step {
        let s = self.settings.clone();
        self.timed_out = outcome.is_none();
        if let Some(PayOutcome::Success {
            amount_mismatch: Some(m),
            ..
        }) = &outcome
        {
            self.notices.push(Notice::AmountMismatch(m.clone()));
        }
        let verdict = policy::verdict(s.direction, outcome.as_ref().map(pay_result), &s.policy);
        let mut learned = match &outcome {
            Some(o) => learned_from(o),
            None => Learned {
                result: PayResult::Unknown,
                reference_no: None,
                response_code: None,
                reason: format!(
                    "no answer within the {} ms decision deadline",
                    s.policy.decision_deadline_ms
                ),
                amount_mismatch: None,
            },
        };
        if let (Some(PayOutcome::Refused { why, .. }), TapOutcome::UnpaidExit) =
            (&outcome, verdict.outcome)
        {
            self.unpaid_why = Some(why.as_str());
            learned.reason = format!(
                "unpaid exit: the aggregator could not be used ({}), no money moved; let out \
                 by policy (unreachable_at_exit = \"open\"); {}",
                why.as_str(),
                learned.reason
            );
        }
        self.report.reference_no = learned.reference_no.clone();
        self.report.response_code = learned.response_code.clone();
        self.report.message = learned.reason.clone();
        self.report.outcome = verdict.outcome;
        self.verdict = Some(verdict);
        self.learned = Some(learned);
        if verdict.open_gate {
            self.stage = Stage::Gate;
            Step::Do(Effect::OpenGate)
        } else {
            self.settle(now_ms)
        }
    }

    fn on_gate(&mut self, r: Result<(), String>, now_ms: i64) -> Step {
        match r {
            Ok(()) => self.opened = true,
            Err(e) => {
                if let Some(l) = self.learned.as_mut() {
                    l.reason = format!("{}; relay failed: {e}", l.reason);
                    self.report.message = l.reason.clone();
                }
                self.report.outcome = TapOutcome::TryAgain;
                self.notices.push(Notice::RelayFailed(e));
            }
        }
        self.report.opened = self.opened;
        if let (Some(why), true) = (self.unpaid_why, self.opened) {
            self.notices.push(Notice::UnpaidExit {
                why,
                amount: self.amount,
            });
        }
        self.settle(now_ms)
    }

    fn settle(&mut self, now_ms: i64) -> Step {
        let s = &self.settings;
        let partner_ref = self.report.partner_reference_no.clone().unwrap_or_default();
        let journey = match (s.direction, self.opened, &self.trip) {
            (Direction::In, true, _) => Some(JourneyChange::Open {
                pan_key: self.pan_key.clone(),
                station_id: s.station_id.clone(),
                tap_in_ref: partner_ref.clone(),
                at_ms: now_ms,
            }),
            (Direction::Out, true, Some(trip)) if trip.id.is_none() => {
                Some(JourneyChange::CloseOnLine {
                    tap_in_ref: trip.tap_in.partner_reference_no.clone(),
                    tap_out_ref: partner_ref.clone(),
                    fare: self.unpaid_why.is_none().then_some(self.amount),
                    at_ms: now_ms,
                })
            }
            (Direction::Out, true, Some(Trip { id: Some(id), .. })) => Some(JourneyChange::Close {
                close: JourneyClose {
                    id: *id,
                    state: crate::journal::JourneyState::Closed,
                    // An unpaid exit charged no fare: the journey closes without one (its
                    // tap-in hold stands, as for a journey closed at the maximum fare).
                    fare: self.unpaid_why.is_none().then_some(self.amount),
                },
                tap_out_ref: partner_ref.clone(),
                at_ms: now_ms,
            }),
            _ => None,
        };
        // A reply that came (even an unclear one) leaves nothing to wait for; after a missed
        // deadline the reply may still come, so the reconciler waits for it first.
        let retry_at = if self.timed_out {
            now_ms.saturating_add(late_reply_window_ms(s.request_timeout_ms))
        } else {
            now_ms
        };
        let transitions = match &self.learned {
            Some(l) => plan_transitions(l, Some(self.opened), self.amount, now_ms, retry_at),
            None => Vec::new(),
        };
        self.stage = Stage::Settle;
        Step::Do(Effect::Settle(Settlement {
            journey,
            partner_reference_no: partner_ref,
            transitions,
            fast_opened: self.fast_open && self.opened,
        }))
    }

    fn on_settled(&mut self, journey: Result<(), String>, record: Result<(), String>) -> Step {
        if let Err(e) = journey {
            self.notices.push(Notice::JourneyWriteFailed(e));
        }
        if let Err(e) = record {
            self.notices.push(Notice::RecordFailed(e));
        }
        self.done()
    }
}
