//! The ports a tap and the reconciler work through, so that the tap flow's executor and the
//! reconciler run the same way against the real parts (SNAP over HTTP, the SQLite journal)
//! and against the in-memory fakes of [`fake`].
//!
//! | port | real adapter | fake |
//! |---|---|---|
//! | [`Payments`] | [`crate::aggregator::Aggregator`] (SNAP) | [`fake::FakePayments`] |
//! | [`QrPayments`] (optional) | [`crate::aggregator::Aggregator`] (SNAP QRIS MPM) | [`fake::FakeQr`] |
//! | [`JourneyStore`] | [`crate::daemon::station::JournalHandle`] (SQLite) | [`fake::MemJournal`] |
//! | [`OpJournal`] | [`crate::daemon::station::JournalHandle`] (SQLite) | [`fake::MemJournal`] |
//! | [`crate::clock::Clock`] | [`crate::clock::SystemClock`] | [`crate::clock::ManualClock`] |
//! | [`crate::nfc`] card events | the PC/SC reader service | scripted events |
//! | [`LinePort`] (optional) | [`crate::line::LineStore`] (PostgreSQL) | [`fake::FakeLine`] |
//!
//! The traits return boxed futures so that a station holds them as `Arc<dyn …>`.

pub mod fake;
mod real;

use std::future::Future;
use std::pin::Pin;

use crate::aggregator::mpm::{GenerateOutcome, QrRequest};
use crate::aggregator::{PayOutcome, QueryOutcome, RefundOutcome};
use crate::fare::policy::TapOutcome;
use crate::flow::{BeginTap, LineView, Planned};
use crate::flow::{JourneyChange, Settlement, TapPayment};
use crate::journal::{
    JournalError, JourneyClose, JourneyRow, NewOp, OpRow, Settled, TapStart, Transition,
};

/// What a tap asks the line (see [`crate::flow::Effect::Lookup`]): the line store's own
/// query.
pub use crate::line::LookupQuery as LineQuery;

/// The line: the journeys of every station, shared. Every call has its own budget; a call
/// that cannot be answered in time says so instead of waiting.
pub trait LinePort: Send + Sync + 'static {
    /// The tap-path lookup, within the lookup budget.
    fn lookup(&self, q: LineQuery) -> PortFuture<'_, LineView>;
    /// Gives back an exit claim this tap did not use (best effort).
    fn release_claim(&self, tap_in_ref: String, claim: String) -> PortFuture<'_, ()>;
    /// How the line sees these journeys (those it knows), within the background budget.
    fn states(
        &self,
        refs: Vec<String>,
    ) -> PortFuture<'_, Result<Vec<crate::flow::LineState>, String>>;
}

/// Open journeys past their time, each with its tap-in operation (`None`: missing or damaged).
pub type StaleJourneys = Vec<(JourneyRow, Option<OpRow>)>;

/// A future a port returns.
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The payment aggregator: pay, query, refund. Each answer says what happened to the money.
pub trait Payments: Send + Sync + 'static {
    /// One `qr-cpm-payment`.
    fn pay<'a>(&'a self, p: &'a TapPayment) -> PortFuture<'a, PayOutcome>;
    /// What became of a payment.
    fn query<'a>(&'a self, partner_reference_no: &'a str) -> PortFuture<'a, QueryOutcome>;
    /// Refunds `amount` of a successful payment; safe to repeat (same `partnerRefundNo`).
    fn refund<'a>(
        &'a self,
        partner_reference_no: &'a str,
        reference_no: &'a str,
        amount: crate::fare::Rupiah,
        reason: &'a str,
    ) -> PortFuture<'a, RefundOutcome>;
}

/// The aggregator's QRIS MPM endpoints, as the gate's merchant side uses them: a dynamic QR
/// for one fare, whether it was paid, and its refund.
pub trait QrPayments: Send + Sync + 'static {
    /// One `qr-mpm-generate`.
    fn generate<'a>(&'a self, q: &'a QrRequest) -> PortFuture<'a, GenerateOutcome>;
    /// Whether a QR was paid (`reference_no`: the aggregator's, when known).
    fn query<'a>(
        &'a self,
        partner_reference_no: &'a str,
        reference_no: Option<&'a str>,
    ) -> PortFuture<'a, QueryOutcome>;
    /// Refunds `amount` of a paid QR; safe to repeat.
    fn refund<'a>(
        &'a self,
        partner_reference_no: &'a str,
        reference_no: &'a str,
        amount: crate::fare::Rupiah,
        reason: &'a str,
    ) -> PortFuture<'a, RefundOutcome>;
}

/// Where journeys live: found by passenger key, opened at tap-in, closed at tap-out or by the
/// stale sweep.
pub trait JourneyStore: Send + Sync + 'static {
    /// Starts a tap: single-flight on the passenger, reads their open journey, runs
    /// `begin.plan` on it and journals the operation, atomically (see
    /// [`crate::journal::Journal::begin_tap`]).
    fn begin_tap(
        &self,
        begin: BeginTap,
    ) -> PortFuture<'_, Result<TapStart<Planned, TapOutcome>, JournalError>>;
    /// Opens or closes a journey after the gate decided.
    fn change(&self, change: JourneyChange) -> PortFuture<'_, Result<(), JournalError>>;
    /// The passenger's open journey.
    fn find_open(
        &self,
        pan_key: String,
    ) -> PortFuture<'_, Result<Option<JourneyRow>, JournalError>>;
    /// Open journeys begun before `older_than_ms`, each with its tap-in operation.
    fn stale(&self, older_than_ms: i64) -> PortFuture<'_, Result<StaleJourneys, JournalError>>;
    /// Closes a journey that no tap-out closed.
    fn close(&self, close: JourneyClose, at_ms: i64) -> PortFuture<'_, Result<(), JournalError>>;
    /// Closes a journey the line says ended at another station (see
    /// [`crate::journal::ElsewhereClose`]).
    fn close_elsewhere(
        &self,
        close: crate::journal::ElsewhereClose,
        at_ms: i64,
    ) -> PortFuture<'_, Result<(), JournalError>>;
}

/// The journal of fare operations, as the executor and the reconciler write it.
pub trait OpJournal: Send + Sync + 'static {
    /// Applies `transitions` to one operation, in order, atomically; returns the row as it
    /// ends (`None` when there was nothing to apply).
    fn record(
        &self,
        partner_reference_no: String,
        transitions: Vec<Transition>,
    ) -> PortFuture<'_, Result<Option<OpRow>, JournalError>>;
    /// Writes what a tap learned once its gate decided, atomically where the store can (one
    /// durable commit): the journey change, then the operation's transitions. Each part keeps
    /// its own result: a part that fails writes nothing, and the other is written all the
    /// same (see [`crate::journal::Journal::settle_tap`]).
    fn settle(&self, s: Settlement) -> PortFuture<'_, Settled>;
    /// Journals a QR sale (QRIS MPM) before its QR is generated (see
    /// [`crate::journal::Journal::begin_qr`]).
    fn begin_qr(&self, op: NewOp) -> PortFuture<'_, Result<(), JournalError>>;
    /// One operation.
    fn get(
        &self,
        partner_reference_no: String,
    ) -> PortFuture<'_, Result<Option<OpRow>, JournalError>>;
    /// Non-final operations due at `now_ms`, at most `limit`.
    fn due(&self, now_ms: i64, limit: usize) -> PortFuture<'_, Result<Vec<OpRow>, JournalError>>;
    /// How many operations are not final yet.
    fn non_final(&self) -> PortFuture<'_, Result<usize, JournalError>>;
    /// Successful holds that belong to no journey, at most `limit`.
    fn holds_without_journey(
        &self,
        limit: usize,
    ) -> PortFuture<'_, Result<Vec<OpRow>, JournalError>>;
}
