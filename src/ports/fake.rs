//! In-memory fakes of the ports, for the lane and reconciler tiers: no sockets, no files.
//!
//! [`MemJournal`] keeps the journal's rules (single-flight, one open journey per passenger,
//! the operation state machine of [`crate::journal::rules`]) so a flow tested on it is held to
//! what SQLite would enforce; [`FakePayments`] answers from a script, with delays on tokio's
//! clock (pause it in tests). Both can be told to fail.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{JourneyStore, OpJournal, Payments, PortFuture};
use crate::aggregator::{PayOutcome, QueryOutcome, RefundOutcome};
use crate::fare::policy::TapOutcome;
use crate::fare::{OpState, Rupiah};
use crate::flow::{BeginTap, JourneyChange, Planned, Settlement, TapPayment};
use crate::journal::{
    apply as apply_transition, validate_new, FoundJourney, JournalError, JourneyClose,
    JourneyEvent, JourneyEventKind, JourneyRow, JourneyState, NewOp, OpRow, Settled, TapBlock,
    TapClaim, TapDecision, TapStart, Transition, TransitionError,
};

/// Which journal call a [`MemJournal`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JournalCall {
    /// [`JourneyStore::begin_tap`].
    Begin,
    /// [`JourneyStore::change`], and the journey part of [`OpJournal::settle`] (as one of
    /// its savepoints: the record part is written all the same).
    Change,
    /// [`OpJournal::record`], and the record part of [`OpJournal::settle`] (the journey part
    /// is written all the same).
    Record,
    /// Every read and the reconciler's writes.
    Other,
}

#[derive(Debug, Default)]
struct Tables {
    ops: Vec<OpRow>,
    journeys: Vec<JourneyRow>,
    failing: HashMap<JournalCall, String>,
    slow: HashMap<JournalCall, Duration>,
    line_events: Vec<JourneyEvent>,
    entry_unknown: Vec<String>,
    unpaid: Vec<OpRow>,
}

/// The journal in memory, with its rules.
#[derive(Clone, Debug, Default)]
pub struct MemJournal(Arc<Mutex<Tables>>);

fn new_row(op: &NewOp) -> OpRow {
    OpRow {
        partner_reference_no: op.partner_reference_no.clone(),
        kind: op.kind,
        lane: op.lane.clone(),
        direction: op.direction,
        station_id: op.station_id.clone(),
        amount: op.amount,
        pan_key: op.pan_key.clone(),
        pan_masked: op.pan_masked.clone(),
        nns: op.nns.clone(),
        state: OpState::Pending,
        reference_no: None,
        response_code: None,
        gate_opened: None,
        reason: None,
        attempts: 0,
        next_attempt_at_ms: Some(op.next_attempt_at_ms),
        refund_no: None,
        refund_amount: None,
        created_at_ms: op.created_at_ms,
        updated_at_ms: op.created_at_ms,
        journey_id: op.journey_id,
        fast_opened: false,
        channel: Default::default(),
    }
}

impl Tables {
    fn check(&self, call: JournalCall) -> Result<(), JournalError> {
        match self.failing.get(&call) {
            Some(why) => Err(JournalError::Worker(why.clone())),
            None => Ok(()),
        }
    }

    fn op(&self, partner_ref: &str) -> Option<&OpRow> {
        self.ops
            .iter()
            .find(|o| o.partner_reference_no == partner_ref)
    }

    fn block(&self, c: &TapClaim) -> Option<TapBlock> {
        let mine = || self.ops.iter().rev().filter(|o| o.pan_key == c.pan_key);
        if let Some(o) = mine()
            .find(|o| o.state == OpState::Pending && o.next_attempt_at_ms.unwrap_or(0) > c.now_ms)
        {
            return Some(TapBlock::InFlight {
                partner_reference_no: o.partner_reference_no.clone(),
            });
        }
        let owed: Vec<&OpRow> = self
            .unpaid
            .iter()
            .filter(|o| o.pan_key == c.pan_key)
            .collect();
        if c.check_unpaid && !owed.is_empty() {
            return Some(TapBlock::Unpaid(crate::journal::Owed {
                amount: Rupiah(owed.iter().map(|o| o.amount.0).sum()),
                count: u32::try_from(owed.len()).unwrap_or(u32::MAX),
            }));
        }
        if c.passed_since_ms >= c.now_ms {
            return None;
        }
        mine()
            .find(|o| {
                o.created_at_ms >= c.passed_since_ms
                    && o.direction == c.direction
                    && o.gate_opened == Some(true)
            })
            .map(|o| TapBlock::JustPassed {
                partner_reference_no: o.partner_reference_no.clone(),
            })
    }

    fn open_journey_of(&self, pan_key: &str) -> Option<&JourneyRow> {
        self.journeys
            .iter()
            .find(|j| j.pan_key == pan_key && j.state == JourneyState::Open)
    }

    fn close(
        &mut self,
        c: JourneyClose,
        tap_out_ref: Option<&str>,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        if c.state == JourneyState::Open {
            return Err(JournalError::CloseIntoOpen(c.id));
        }
        let j = self
            .journeys
            .iter_mut()
            .find(|j| j.id == c.id)
            .ok_or(JournalError::UnknownJourney(c.id))?;
        if j.state != JourneyState::Open {
            return Err(JournalError::JourneyNotOpen {
                id: c.id,
                state: j.state,
            });
        }
        j.state = c.state;
        j.fare = c.fare;
        j.closed_at_ms = Some(at_ms);
        j.tap_out_ref = tap_out_ref.map(str::to_string);
        if let Some(r) = tap_out_ref {
            if let Some(op) = self.ops.iter_mut().find(|o| o.partner_reference_no == r) {
                op.journey_id = Some(c.id);
            }
        }
        Ok(())
    }

    /// [`JourneyStore::change`] (fails while [`JournalCall::Change`] is failing).
    fn change(&mut self, change: JourneyChange) -> Result<(), JournalError> {
        self.check(JournalCall::Change)?;
        match change {
            JourneyChange::Open {
                pan_key,
                station_id,
                tap_in_ref,
                at_ms,
            } => self.open(pan_key, station_id, tap_in_ref, at_ms),
            JourneyChange::Close {
                close,
                tap_out_ref,
                at_ms,
            } => self.close(close, Some(&tap_out_ref), at_ms),
            JourneyChange::CloseOnLine {
                tap_in_ref,
                tap_out_ref,
                fare,
                at_ms,
            } => {
                self.line_events.push(JourneyEvent {
                    tap_in_ref,
                    station: String::new(),
                    at_ms,
                    kind: JourneyEventKind::Closed {
                        tap_out_ref,
                        fare: fare.unwrap_or(Rupiah(0)),
                        references_hold: true,
                    },
                });
                Ok(())
            }
        }
    }

    /// [`OpJournal::record`] (fails while [`JournalCall::Record`] is failing): all the
    /// transitions or none.
    fn record(
        &mut self,
        partner_reference_no: String,
        transitions: Vec<Transition>,
    ) -> Result<Option<OpRow>, JournalError> {
        self.check(JournalCall::Record)?;
        if transitions.is_empty() {
            return Ok(None);
        }
        let Some(i) = self
            .ops
            .iter()
            .position(|o| o.partner_reference_no == partner_reference_no)
        else {
            return Err(JournalError::UnknownReference(partner_reference_no));
        };
        let mut row = self.ops[i].clone();
        for tr in &transitions {
            let (from, to) = (row.state, tr.to);
            let partner_ref = partner_reference_no.clone();
            row = apply_transition(&row, tr).map_err(|e| match e {
                TransitionError::Illegal => JournalError::IllegalTransition {
                    partner_ref,
                    from,
                    to,
                },
                TransitionError::Rejected(why) => JournalError::Rejected {
                    partner_ref,
                    from,
                    to,
                    why,
                },
            })?;
        }
        if row.fast_opened && row.state == OpState::Declined && self.ops[i].state != row.state {
            self.unpaid.push(row.clone());
        }
        self.ops[i] = row.clone();
        Ok(Some(row))
    }

    fn open(
        &mut self,
        pan_key: String,
        entry_station: String,
        tap_in_ref: String,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        if let Some(j) = self.open_journey_of(&pan_key) {
            return Err(JournalError::JourneyAlreadyOpen { id: j.id });
        }
        let id = i64::try_from(self.journeys.len()).unwrap_or(i64::MAX) + 1;
        let op = self
            .ops
            .iter_mut()
            .find(|o| o.partner_reference_no == tap_in_ref)
            .ok_or_else(|| JournalError::UnknownReference(tap_in_ref.clone()))?;
        op.journey_id = Some(id);
        self.journeys.push(JourneyRow {
            id,
            pan_key,
            entry_station,
            tap_in_ref,
            tap_out_ref: None,
            state: JourneyState::Open,
            fare: None,
            opened_at_ms: at_ms,
            closed_at_ms: None,
        });
        Ok(())
    }
}

impl MemJournal {
    /// An empty journal.
    pub fn new() -> MemJournal {
        MemJournal::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `call` fail with `why` from now on (`None`: work again).
    pub fn fail(&self, call: JournalCall, why: Option<&str>) {
        let mut t = self.lock();
        match why {
            Some(w) => t.failing.insert(call, w.to_string()),
            None => t.failing.remove(&call),
        };
    }

    /// Makes `call` take `d` on tokio's clock from now on (`None`: answer at once). The wait
    /// comes before the call and holds nothing: it stands for a write slowed by its own
    /// call, which other lanes' calls do not queue behind.
    pub fn slow(&self, call: JournalCall, d: Option<Duration>) {
        let mut t = self.lock();
        match d {
            Some(d) => t.slow.insert(call, d),
            None => t.slow.remove(&call),
        };
    }

    async fn delay(&self, calls: &[JournalCall]) {
        let d = {
            let t = self.lock();
            calls.iter().filter_map(|c| t.slow.get(c)).max().copied()
        };
        if let Some(d) = d {
            tokio::time::sleep(d).await;
        }
    }

    /// Every operation, in the order begun.
    pub fn ops(&self) -> Vec<OpRow> {
        self.lock().ops.clone()
    }

    /// One operation.
    pub fn op(&self, partner_ref: &str) -> Option<OpRow> {
        self.lock().op(partner_ref).cloned()
    }

    /// Every journey, in the order opened.
    /// The events written for the line (journeys this journal does not hold).
    pub fn line_events(&self) -> Vec<JourneyEvent> {
        self.lock().line_events.clone()
    }

    /// The unpaid list: fast-opened operations that ended unpaid, as they ended.
    pub fn unpaid(&self) -> Vec<OpRow> {
        self.lock().unpaid.clone()
    }

    /// The operations marked as exits whose entry only the line could tell.
    pub fn entry_unknown(&self) -> Vec<String> {
        self.lock().entry_unknown.clone()
    }

    /// Every journey, in id order.
    pub fn journeys(&self) -> Vec<JourneyRow> {
        self.lock().journeys.clone()
    }

    /// Journals an operation directly (a tap-in made elsewhere in a test's story).
    pub fn insert(&self, op: &NewOp, state: OpState, reference_no: Option<&str>) {
        let mut row = new_row(op);
        row.state = state;
        row.reference_no = reference_no.map(str::to_string);
        self.lock().ops.push(row);
    }

    /// Opens a journey directly, with the journal's rules (its tap-in must be journaled, one
    /// open journey per passenger); returns its id.
    pub fn insert_journey(
        &self,
        pan_key: &str,
        entry: &str,
        tap_in_ref: &str,
        at_ms: i64,
    ) -> Result<i64, JournalError> {
        let mut t = self.lock();
        t.open(pan_key.into(), entry.into(), tap_in_ref.into(), at_ms)?;
        Ok(i64::try_from(t.journeys.len()).unwrap_or(i64::MAX))
    }
}

impl JourneyStore for MemJournal {
    fn begin_tap(
        &self,
        begin: BeginTap,
    ) -> PortFuture<'_, Result<TapStart<Planned, TapOutcome>, JournalError>> {
        Box::pin(async move {
            self.delay(&[JournalCall::Begin]).await;
            let mut t = self.lock();
            t.check(JournalCall::Begin)?;
            if let Some(b) = t.block(&begin.claim) {
                return Ok(TapStart::Blocked(b));
            }
            let open = t.open_journey_of(&begin.claim.pan_key).cloned().map(|j| {
                let tap_in = t.op(&j.tap_in_ref).cloned();
                FoundJourney { journey: j, tap_in }
            });
            match begin.plan.decide(open) {
                TapDecision::Refuse(o) => Ok(TapStart::Refused(o)),
                TapDecision::Begin {
                    op,
                    close_first,
                    line,
                    then,
                } => {
                    validate_new(&op)
                        .map_err(|(field, why)| JournalError::InvalidOp { field, why })?;
                    if let Some(c) = line.closed_elsewhere {
                        let close = JourneyClose {
                            id: c.id,
                            state: c.state,
                            fare: c.fare,
                        };
                        t.close(close, None, op.created_at_ms)?;
                    }
                    if let Some(c) = close_first {
                        t.close(c, None, op.created_at_ms)?;
                    }
                    t.line_events.extend(line.events);
                    if line.entry_unknown {
                        t.entry_unknown.push(op.partner_reference_no.clone());
                    }
                    t.ops.push(new_row(&op));
                    Ok(TapStart::Begun(then))
                }
            }
        })
    }

    fn change(&self, change: JourneyChange) -> PortFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            self.delay(&[JournalCall::Change]).await;
            self.lock().change(change)
        })
    }

    fn find_open(
        &self,
        pan_key: String,
    ) -> PortFuture<'_, Result<Option<JourneyRow>, JournalError>> {
        Box::pin(async move {
            let t = self.lock();
            t.check(JournalCall::Other)?;
            Ok(t.open_journey_of(&pan_key).cloned())
        })
    }

    fn stale(
        &self,
        older_than_ms: i64,
    ) -> PortFuture<'_, Result<super::StaleJourneys, JournalError>> {
        Box::pin(async move {
            let t = self.lock();
            t.check(JournalCall::Other)?;
            Ok(t.journeys
                .iter()
                .filter(|j| j.state == JourneyState::Open && j.opened_at_ms < older_than_ms)
                .map(|j| (j.clone(), t.op(&j.tap_in_ref).cloned()))
                .collect())
        })
    }

    fn close(&self, close: JourneyClose, at_ms: i64) -> PortFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            let mut t = self.lock();
            t.check(JournalCall::Other)?;
            t.close(close, None, at_ms)
        })
    }

    fn close_elsewhere(
        &self,
        c: crate::journal::ElsewhereClose,
        at_ms: i64,
    ) -> PortFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            let tap_in = {
                let mut t = self.lock();
                t.check(JournalCall::Other)?;
                let close = JourneyClose {
                    id: c.id,
                    state: c.state,
                    fare: c.fare,
                };
                t.close(close, None, at_ms)?;
                t.journeys
                    .iter()
                    .find(|j| j.id == c.id)
                    .map(|j| j.tap_in_ref.clone())
            };
            let Some(tap_in) = tap_in.filter(|_| c.release_hold) else {
                return Ok(());
            };
            let Some(op) = self.op(&tap_in) else {
                return Ok(());
            };
            if !matches!(op.state, OpState::Succeeded | OpState::Attention) {
                return Ok(());
            }
            let t = Transition {
                refund_amount: Some(op.amount),
                reason: Some("journey closed elsewhere without this hold: released".into()),
                next_attempt_at_ms: Some(at_ms),
                line_correction: true,
                ..Transition::new(OpState::RefundPending, at_ms)
            };
            self.record(tap_in, vec![t]).await.map(|_| ())
        })
    }
}

impl OpJournal for MemJournal {
    fn record(
        &self,
        partner_reference_no: String,
        transitions: Vec<Transition>,
    ) -> PortFuture<'_, Result<Option<OpRow>, JournalError>> {
        Box::pin(async move {
            self.delay(&[JournalCall::Record]).await;
            self.lock().record(partner_reference_no, transitions)
        })
    }

    fn begin_qr(&self, op: NewOp) -> PortFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            self.delay(&[JournalCall::Begin]).await;
            let mut t = self.lock();
            t.check(JournalCall::Begin)?;
            crate::journal::validate_new(&op)
                .map_err(|(field, why)| JournalError::InvalidOp { field, why })?;
            if t.op(&op.partner_reference_no).is_some() {
                return Err(JournalError::DuplicateReference(op.partner_reference_no));
            }
            t.ops.push(OpRow {
                channel: crate::journal::Channel::Mpm,
                ..new_row(&op)
            });
            Ok(())
        })
    }

    fn settle(&self, s: Settlement) -> PortFuture<'_, Settled> {
        Box::pin(async move {
            self.delay(&[JournalCall::Change, JournalCall::Record])
                .await;
            // One lock for both parts: nothing else sees one without the other, as with the
            // real journal's one transaction. Each part fails alone (its savepoint).
            let mut t = self.lock();
            let journey = match s.journey {
                Some(c) => t.change(c),
                None => Ok(()),
            };
            if s.fast_opened {
                if let Some(o) = t
                    .ops
                    .iter_mut()
                    .find(|o| o.partner_reference_no == s.partner_reference_no)
                {
                    o.fast_opened = true;
                }
            }
            let record = t.record(s.partner_reference_no, s.transitions);
            Settled { journey, record }
        })
    }

    fn get(
        &self,
        partner_reference_no: String,
    ) -> PortFuture<'_, Result<Option<OpRow>, JournalError>> {
        Box::pin(async move {
            let t = self.lock();
            t.check(JournalCall::Other)?;
            Ok(t.op(&partner_reference_no).cloned())
        })
    }

    fn due(&self, now_ms: i64, limit: usize) -> PortFuture<'_, Result<Vec<OpRow>, JournalError>> {
        Box::pin(async move {
            let t = self.lock();
            t.check(JournalCall::Other)?;
            Ok(t.ops
                .iter()
                .filter(|o| !o.state.is_final() && o.next_attempt_at_ms.unwrap_or(0) <= now_ms)
                .take(limit)
                .cloned()
                .collect())
        })
    }

    fn non_final(&self) -> PortFuture<'_, Result<usize, JournalError>> {
        Box::pin(async move {
            let t = self.lock();
            t.check(JournalCall::Other)?;
            Ok(t.ops.iter().filter(|o| !o.state.is_final()).count())
        })
    }

    fn holds_without_journey(
        &self,
        limit: usize,
    ) -> PortFuture<'_, Result<Vec<OpRow>, JournalError>> {
        Box::pin(async move {
            let t = self.lock();
            t.check(JournalCall::Other)?;
            Ok(t.ops
                .iter()
                .filter(|o| {
                    o.kind == crate::journal::OpKind::Hold
                        && o.state == OpState::Succeeded
                        && o.journey_id.is_none()
                })
                .take(limit)
                .cloned()
                .collect())
        })
    }
}

/// How the fake aggregator answers one payment.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This outcome after this long (on tokio's clock).
    After(Duration, PayOutcome),
    /// Never: the call hangs until dropped.
    Never,
}

#[derive(Debug, Default)]
struct Script {
    pay: VecDeque<Answer>,
    query: VecDeque<QueryOutcome>,
    refund: VecDeque<RefundOutcome>,
    paid: Vec<TapPayment>,
    queried: Vec<String>,
    refunded: Vec<(String, Rupiah)>,
}

/// The aggregator from a script. An empty script answers a payment with success
/// (`referenceNo` `REF-<partnerReferenceNo>`), a query with "unavailable", a refund with
/// "refunded".
#[derive(Clone, Debug, Default)]
pub struct FakePayments(Arc<Mutex<Script>>);

impl FakePayments {
    /// A fake with an empty script.
    pub fn new() -> FakePayments {
        FakePayments::default()
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the answer to the next payment.
    pub fn then_pay(&self, a: Answer) -> &Self {
        self.lock().pay.push_back(a);
        self
    }

    /// Queues the answer to the next query.
    pub fn then_query(&self, q: QueryOutcome) -> &Self {
        self.lock().query.push_back(q);
        self
    }

    /// Queues the answer to the next refund.
    pub fn then_refund(&self, r: RefundOutcome) -> &Self {
        self.lock().refund.push_back(r);
        self
    }

    /// Every payment asked for, in order.
    pub fn payments(&self) -> Vec<TapPayment> {
        self.lock().paid.clone()
    }

    /// Every query asked for.
    pub fn queries(&self) -> Vec<String> {
        self.lock().queried.clone()
    }

    /// Every refund asked for, with its amount.
    pub fn refunds(&self) -> Vec<(String, Rupiah)> {
        self.lock().refunded.clone()
    }

    /// A success as the default answer gives it.
    pub fn success(p: &TapPayment) -> PayOutcome {
        PayOutcome::Success {
            reference_no: Some(format!("REF-{}", p.partner_reference_no)),
            response_code: "2006000".into(),
            amount_mismatch: None,
        }
    }
}

impl Payments for FakePayments {
    fn pay<'a>(&'a self, p: &'a TapPayment) -> PortFuture<'a, PayOutcome> {
        Box::pin(async move {
            let answer = {
                let mut s = self.lock();
                s.paid.push(p.clone());
                s.pay.pop_front()
            };
            match answer {
                None => FakePayments::success(p),
                Some(Answer::After(d, o)) => {
                    tokio::time::sleep(d).await;
                    o
                }
                Some(Answer::Never) => std::future::pending().await,
            }
        })
    }

    fn query<'a>(&'a self, partner_reference_no: &'a str) -> PortFuture<'a, QueryOutcome> {
        Box::pin(async move {
            let mut s = self.lock();
            s.queried.push(partner_reference_no.to_string());
            s.query.pop_front().unwrap_or(QueryOutcome::Unavailable {
                reason: "fake: no scripted answer".into(),
            })
        })
    }

    fn refund<'a>(
        &'a self,
        partner_reference_no: &'a str,
        _reference_no: &'a str,
        amount: Rupiah,
        _reason: &'a str,
    ) -> PortFuture<'a, RefundOutcome> {
        Box::pin(async move {
            let mut s = self.lock();
            s.refunded.push((partner_reference_no.to_string(), amount));
            s.refund.pop_front().unwrap_or(RefundOutcome::Refunded {
                refund_no: None,
                response_code: "2007800".into(),
            })
        })
    }
}

/// The line in memory: answers each lookup with the view set by [`FakeLine::answer`] (after an
/// optional delay on tokio's clock, cut at the lookup budget like the real store), and
/// records the queries and released claims.
#[derive(Clone, Default)]
pub struct FakeLine(Arc<Mutex<LineTables>>);

#[derive(Default)]
struct LineTables {
    answer: Option<crate::flow::LineView>,
    delay: Duration,
    budget: Option<Duration>,
    queries: Vec<super::LineQuery>,
    released: Vec<(String, String)>,
    states: HashMap<String, crate::flow::LineState>,
    down: bool,
}

impl FakeLine {
    /// A line with no answer set: lookups say it is unavailable.
    pub fn new() -> FakeLine {
        FakeLine::default()
    }

    fn lock(&self) -> MutexGuard<'_, LineTables> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The view every lookup gets from now on.
    pub fn answer(&self, view: crate::flow::LineView) {
        self.lock().answer = Some(view);
    }

    /// Lookups take `delay`, and give up after `budget` as the real store does.
    pub fn slow(&self, delay: Duration, budget: Duration) {
        let mut t = self.lock();
        t.delay = delay;
        t.budget = Some(budget);
    }

    /// The line holds this journey in this state (for [`super::LinePort::states`]).
    pub fn set_state(&self, s: crate::flow::LineState) {
        self.lock().states.insert(s.tap_in_ref.clone(), s);
    }

    /// The line's background calls fail (`true`) or answer (`false`).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// The lookups made, in order.
    pub fn queries(&self) -> Vec<super::LineQuery> {
        self.lock().queries.clone()
    }

    /// The claims released, as (tap-in, claim).
    pub fn released(&self) -> Vec<(String, String)> {
        self.lock().released.clone()
    }
}

impl super::LinePort for FakeLine {
    fn lookup(&self, q: super::LineQuery) -> PortFuture<'_, crate::flow::LineView> {
        Box::pin(async move {
            let (answer, delay, budget) = {
                let mut t = self.lock();
                t.queries.push(q);
                (t.answer.clone(), t.delay, t.budget)
            };
            if let Some(b) = budget {
                if delay > b {
                    tokio::time::sleep(b).await;
                    return crate::flow::LineView::Unavailable(format!(
                        "no answer within the {} ms lookup budget",
                        b.as_millis()
                    ));
                }
            }
            tokio::time::sleep(delay).await;
            answer.unwrap_or_else(|| crate::flow::LineView::Unavailable("no answer set".into()))
        })
    }

    fn release_claim(&self, tap_in_ref: String, claim: String) -> PortFuture<'_, ()> {
        Box::pin(async move {
            self.lock().released.push((tap_in_ref, claim));
        })
    }

    fn states(
        &self,
        refs: Vec<String>,
    ) -> PortFuture<'_, Result<Vec<crate::flow::LineState>, String>> {
        Box::pin(async move {
            let t = self.lock();
            if t.down {
                return Err("the line is down".into());
            }
            Ok(refs
                .iter()
                .filter_map(|r| t.states.get(r).cloned())
                .collect())
        })
    }
}

/// The aggregator's QRIS MPM side, in memory: generate answers from a script (else a QR for
/// every request), a wallet that pays on demand ([`FakeQr::pay`]), queries that report what was
/// paid (else pending), refunds that succeed. Records every call.
#[derive(Clone, Debug, Default)]
pub struct FakeQr(Arc<Mutex<QrScript>>);

#[derive(Debug, Default)]
struct QrScript {
    generate: VecDeque<crate::aggregator::mpm::GenerateOutcome>,
    generated: Vec<crate::aggregator::mpm::QrRequest>,
    paid: HashMap<String, Rupiah>,
    queries: usize,
    refunds: Vec<(String, Rupiah)>,
}

impl FakeQr {
    /// A fake whose generates all succeed and whose QRs nobody has paid.
    pub fn new() -> FakeQr {
        FakeQr::default()
    }

    fn lock(&self) -> MutexGuard<'_, QrScript> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the answer to the next generate.
    pub fn then_generate(&self, g: crate::aggregator::mpm::GenerateOutcome) -> &Self {
        self.lock().generate.push_back(g);
        self
    }

    /// A wallet pays the QR `partner_reference_no`, `amount` as the aggregator reports it.
    pub fn pay(&self, partner_reference_no: &str, amount: Rupiah) {
        self.lock()
            .paid
            .insert(partner_reference_no.to_string(), amount);
    }

    /// Every QR asked for, in order.
    pub fn generated(&self) -> Vec<crate::aggregator::mpm::QrRequest> {
        self.lock().generated.clone()
    }

    /// How many queries were asked.
    pub fn queries(&self) -> usize {
        self.lock().queries
    }

    /// Every refund made: the QR's reference and the amount.
    pub fn refunds(&self) -> Vec<(String, Rupiah)> {
        self.lock().refunds.clone()
    }
}

impl super::QrPayments for FakeQr {
    fn generate<'a>(
        &'a self,
        q: &'a crate::aggregator::mpm::QrRequest,
    ) -> PortFuture<'a, crate::aggregator::mpm::GenerateOutcome> {
        Box::pin(async move {
            let mut s = self.lock();
            s.generated.push(q.clone());
            s.generate.pop_front().unwrap_or_else(|| {
                crate::aggregator::mpm::GenerateOutcome::Generated {
                    reference_no: format!("QREF-{}", q.partner_reference_no),
                    qr_content: format!("00020101021226{}", q.partner_reference_no),
                    response_code: "2004700".into(),
                }
            })
        })
    }

    fn query<'a>(
        &'a self,
        partner_reference_no: &'a str,
        reference_no: Option<&'a str>,
    ) -> PortFuture<'a, QueryOutcome> {
        Box::pin(async move {
            let mut s = self.lock();
            s.queries += 1;
            let refunded = s.refunds.iter().any(|(r, _)| r == partner_reference_no);
            let (status, amount) = match s.paid.get(partner_reference_no) {
                Some(_) if refunded => (crate::aggregator::TxStatus::Refunded, None),
                Some(a) => (crate::aggregator::TxStatus::Success, Some(*a)),
                None => (crate::aggregator::TxStatus::Pending, None),
            };
            QueryOutcome::Status {
                status,
                reference_no: reference_no.map(str::to_string),
                response_code: "2005100".into(),
                amount: amount.map(crate::aggregator::Amount::idr),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        partner_reference_no: &'a str,
        _reference_no: &'a str,
        amount: Rupiah,
        _reason: &'a str,
    ) -> PortFuture<'a, RefundOutcome> {
        Box::pin(async move {
            let mut s = self.lock();
            if !s.refunds.iter().any(|(r, _)| r == partner_reference_no) {
                s.refunds.push((partner_reference_no.to_string(), amount));
            }
            RefundOutcome::Refunded {
                refund_no: Some(format!("QRF-{partner_reference_no}")),
                response_code: "2007800".into(),
            }
        })
    }
}
