//! The reconciler: drives every uncertain payment to a final state by query, and every owed
//! refund by refund, with exponential backoff and full jitter. Nothing is ever re-sent as a new
//! payment. The decisions are pure functions ([`plan_step`], [`after_query`],
//! [`after_refund`], [`backoff_ms`]); [`Reconciler`] carries them out.

use std::sync::Arc;
use std::time::Duration;

use crate::aggregator::{check_amount, QueryOutcome, RefundOutcome, TxStatus};
use crate::config::ReconcilerConfig;
use crate::daemon::station::{JournalHandle, Station, StationCore};
use crate::fare::policy::PayResult;
use crate::fare::OpState;
use crate::flow::journey::stale_close;
use crate::flow::settle::{self as record, in_flight_window_ms, Learned};
use crate::journal::{Channel, JournalError, JourneyClose, OpRow, Transition};

/// The metric label of a call: `query`, `refund`; `qr_query`, `qr_refund` for a QR sale.
fn endpoint(channel: Channel, call: &'static str) -> &'static str {
    match (channel, call) {
        (Channel::Mpm, "query") => "qr_query",
        (Channel::Mpm, "refund") => "qr_refund",
        _ => call,
    }
}

/// What to do next with one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet (in flight, or not due).
    Wait,
    /// Ask the aggregator what became of the payment.
    Query,
    /// Refund the payment (gate did not open).
    Refund,
    /// Give up and ask a person, with the reason.
    Attention(String),
}

/// Decides the next step for a non-final row at `now_ms`. `in_flight_ms` is how long a PENDING
/// row may belong to a tap still waiting for its reply.
pub fn plan_step(row: &OpRow, now_ms: i64, cfg: &ReconcilerConfig, in_flight_ms: i64) -> Step {
    let age_ms = now_ms.saturating_sub(row.created_at_ms);
    let too_old = age_ms
        > i64::try_from(cfg.attention_after_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
    if row.state.is_final() {
        return Step::Wait;
    }
    // Age alone never parks an operation that has had fewer than three tries (one a person
    // sent back from ATTENTION gets them).
    if row.attempts >= cfg.max_attempts || (too_old && row.attempts >= 3) {
        return Step::Attention(format!(
            "still {} after {} attempts and {} minutes",
            row.state,
            row.attempts,
            age_ms / 60_000
        ));
    }
    if row.next_attempt_at_ms.is_some_and(|t| t > now_ms) {
        return Step::Wait;
    }
    match row.state {
        OpState::Pending if age_ms < in_flight_ms => Step::Wait,
        OpState::Pending | OpState::Unknown => Step::Query,
        OpState::RefundPending => Step::Refund,
        _ => Step::Wait,
    }
}

/// Retry delay for `attempt` (0-based): uniform in `[0, min(cap, base·2^attempt)]` with
/// `jitter` in `[0, 1)` (full jitter: spreads a fleet's retries after an outage).
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, jitter: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64.checked_shl(attempt.min(40)).unwrap_or(u64::MAX));
    let ceiling = exp.min(cap_ms);
    // Truncation is the intent: a delay in whole milliseconds.
    (ceiling as f64 * jitter.clamp(0.0, 1.0)) as u64
}

fn retry(row: &OpRow, now_ms: i64, cfg: &ReconcilerConfig, why: String) -> Transition {
    let delay = backoff_ms(
        row.attempts,
        cfg.backoff_base_ms,
        cfg.backoff_cap_ms,
        rand::random(),
    );
    // A PENDING row is never PENDING again once looked at: it becomes UNKNOWN.
    let to = if row.state == OpState::Pending {
        OpState::Unknown
    } else {
        row.state
    };
    Transition {
        next_attempt_at_ms: Some(now_ms.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))),
        reason: Some(why),
        bump_attempts: true,
        ..Transition::new(to, now_ms)
    }
}

/// The transitions a query answer leads to.
pub fn after_query(
    row: &OpRow,
    q: &QueryOutcome,
    now_ms: i64,
    cfg: &ReconcilerConfig,
) -> Vec<Transition> {
    let learned = |result, reference_no: Option<String>, code: &str, why: String| Learned {
        result,
        reference_no,
        response_code: Some(code.to_string()),
        reason: why,
        amount_mismatch: None,
    };
    let settle = |l: Learned| {
        let mut ts = record::plan_transitions(&l, row.gate_opened, row.amount, now_ms, now_ms);
        if let Some(first) = ts.first_mut() {
            first.bump_attempts = true;
        }
        ts
    };
    match q {
        QueryOutcome::Status {
            status,
            reference_no,
            response_code,
            amount,
        } => match status {
            TxStatus::Success => settle(Learned {
                amount_mismatch: check_amount(row.amount, amount.as_ref()).map(|m| m.to_string()),
                ..learned(
                    PayResult::Success,
                    reference_no.clone().or_else(|| row.reference_no.clone()),
                    response_code,
                    "query: paid".into(),
                )
            }),
            TxStatus::Failed | TxStatus::Cancelled | TxStatus::NotFound => settle(learned(
                PayResult::Declined,
                None,
                response_code,
                format!("query: {}", status.as_wire()),
            )),
            TxStatus::Refunded => vec![Transition {
                reason: Some("query: the aggregator reports this payment refunded, but tapgate never refunded it".into()),
                response_code: Some(response_code.clone()),
                bump_attempts: true,
                ..Transition::new(OpState::Attention, now_ms)
            }],
            TxStatus::Initiated | TxStatus::Paying | TxStatus::Pending => vec![retry(
                row,
                now_ms,
                cfg,
                format!("query: status {}, polling", status.as_wire()),
            )],
        },
        QueryOutcome::NotFound { response_code } => {
            let grace = i64::try_from(cfg.not_found_after_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX);
            if now_ms.saturating_sub(row.created_at_ms) >= grace {
                settle(learned(
                    PayResult::Declined,
                    None,
                    response_code,
                    "query: the aggregator has no such payment".into(),
                ))
            } else {
                vec![retry(row, now_ms, cfg, "query: not found yet".into())]
            }
        }
        QueryOutcome::Unavailable { reason } => vec![retry(
            row,
            now_ms,
            cfg,
            format!("query unavailable: {reason}"),
        )],
        QueryOutcome::Refused {
            response_code,
            message,
        } => vec![retry(
            row,
            now_ms,
            cfg,
            format!(
                "query refused {}: {message}",
                response_code.as_deref().unwrap_or("-")
            ),
        )],
    }
}

/// A QR sale the aggregator reports unpaid (failed, cancelled, not found) before `payable_ms`
/// after it began (its validity and `[qr] late_payment_seconds`) is not final yet: a late
/// payment may still land, and must then be refunded. Returns the transition that asks again
/// (no attempt counted: this is waiting, not failing), at most a minute later and no later
/// than the window's end; `None` when the answer stands. Pure.
pub fn qr_unpaid_too_soon(
    row: &OpRow,
    q: &QueryOutcome,
    now_ms: i64,
    payable_ms: i64,
    cfg: &ReconcilerConfig,
) -> Option<Transition> {
    let unpaid = matches!(
        q,
        QueryOutcome::NotFound { .. }
            | QueryOutcome::Status {
                status: TxStatus::Failed | TxStatus::Cancelled | TxStatus::NotFound,
                ..
            }
    );
    let window_end = row.created_at_ms.saturating_add(payable_ms);
    if row.channel != Channel::Mpm || !unpaid || now_ms >= window_end {
        return None;
    }
    let step = i64::try_from(cfg.backoff_cap_ms.min(60_000)).unwrap_or(60_000);
    Some(Transition {
        next_attempt_at_ms: Some(now_ms.saturating_add(step).min(window_end)),
        response_code: q.code().map(str::to_string),
        reason: Some(format!(
            "query: QR unpaid so far ({}); a late payment is still possible for {} s",
            q.reason(),
            (window_end - now_ms) / 1000
        )),
        ..Transition::new(OpState::Unknown, now_ms)
    })
}

/// The transition a refund answer leads to.
pub fn after_refund(
    row: &OpRow,
    r: &RefundOutcome,
    now_ms: i64,
    cfg: &ReconcilerConfig,
) -> Transition {
    match r {
        RefundOutcome::Refunded {
            refund_no,
            response_code,
        } => Transition {
            response_code: Some(response_code.clone()),
            refund_no: refund_no.clone(),
            refund_amount: Some(row.amount_to_refund()),
            reason: Some("refunded".into()),
            bump_attempts: true,
            ..Transition::new(OpState::Refunded, now_ms)
        },
        RefundOutcome::Unavailable { reason } => {
            retry(row, now_ms, cfg, format!("refund unavailable: {reason}"))
        }
        RefundOutcome::Refused {
            response_code,
            message,
        } => Transition {
            response_code: response_code.clone(),
            reason: Some(format!(
                "refund refused {}: {message}",
                response_code.as_deref().unwrap_or("-")
            )),
            bump_attempts: true,
            ..Transition::new(OpState::Attention, now_ms)
        },
    }
}

/// Carries out the reconciler's steps through the station's ports (journal and aggregator).
pub struct Reconciler {
    station: Arc<StationCore>,
    /// The SQLite journal, for start-up recovery; `None` over fakes.
    journal: Option<JournalHandle>,
    /// The line's background work (outbox, follower, converge), on a line.
    line: Option<Arc<crate::daemon::line::LineLink>>,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Operations looked at.
    pub seen: usize,
    /// Queries sent.
    pub queries: usize,
    /// Refunds sent.
    pub refunds: usize,
    /// Operations moved to ATTENTION.
    pub attention: usize,
    /// Successful holds found without a journey and sent to refund.
    pub holds_without_journey: usize,
}

impl Reconciler {
    /// A reconciler for `station`.
    pub fn new(station: Arc<Station>) -> Self {
        Reconciler {
            journal: Some(station.journal.clone()),
            line: station.line.clone(),
            station: station.core(),
        }
    }

    /// A reconciler over a bare [`StationCore`] (for example over the fakes of
    /// [`crate::ports::fake`]); it has no start-up recovery ([`Reconciler::recover_pending`]).
    pub fn on_core(station: Arc<StationCore>) -> Self {
        Reconciler {
            station,
            journal: None,
            line: None,
        }
    }

    fn in_flight_ms(&self) -> i64 {
        let c = &self.station.config;
        in_flight_window_ms(
            c.policy.decision_deadline_ms,
            c.aggregator.request_timeout_ms,
        )
    }

    /// Startup recovery: every PENDING row was left by a process that died between journal and
    /// reply. It becomes UNKNOWN (resolved by query), never re-sent.
    pub async fn recover_pending(&self) -> Result<usize, crate::journal::JournalError> {
        let now = self.station.now_ms();
        let Some(journal) = &self.journal else {
            return Err(JournalError::Worker(
                "start-up recovery needs the SQLite journal".into(),
            ));
        };
        journal
            .run(move |j| {
                let rows = j.list(&crate::journal::OpFilter {
                    state: Some(OpState::Pending),
                    ..Default::default()
                })?;
                // A row whose lane may still be waiting for its reply, begun by a process that
                // is still running (another `tapgate tap`, a daemon sharing this journal),
                // belongs to that live tap: left alone, it stays in its hands (and blocks a
                // second tap of the same passenger); the reconciler takes it once its time is
                // up. A row whose process is gone is taken over at once. (Rows without an
                // owner, from before schema version 2, wait for their time.)
                let owners: std::collections::HashMap<String, Option<String>> =
                    j.pending_owners()?.into_iter().collect();
                let live = |r: &OpRow| match owners.get(&r.partner_reference_no).cloned().flatten()
                {
                    Some(owner) => crate::journal::owner_is_alive(&owner),
                    None => true,
                };
                // A QR sale whose process is gone is on no screen any more: the gate will never
                // open for it, so a payment made now is refunded.
                let orphans: Vec<String> = j
                    .qr_sales_on_screen()?
                    .into_iter()
                    .filter(|(_, owner)| {
                        !owner.as_deref().is_some_and(crate::journal::owner_is_alive)
                    })
                    .map(|(pref, _)| pref)
                    .collect();
                for pref in &orphans {
                    j.transition(
                        pref,
                        &Transition {
                            gate_opened: Some(false),
                            next_attempt_at_ms: Some(now),
                            reason: Some(
                                "QR sale of a process that stopped: withdrawn; a payment still \
                                 made is refunded"
                                    .into(),
                            ),
                            ..Transition::new(OpState::Unknown, now)
                        },
                    )?;
                }
                let rows: Vec<_> = rows
                    .into_iter()
                    .filter(|r| !orphans.contains(&r.partner_reference_no))
                    .filter(|r| !(matches!(r.next_attempt_at_ms, Some(t) if t > now) && live(r)))
                    .collect();
                let n = rows.len() + orphans.len();
                for row in rows {
                    j.transition(
                        &row.partner_reference_no,
                        &Transition {
                            reason: Some(
                                "found PENDING at startup: process stopped mid-payment".into(),
                            ),
                            // Nobody is waiting for this reply any more: query at once.
                            next_attempt_at_ms: Some(now),
                            ..Transition::new(OpState::Unknown, now)
                        },
                    )?;
                }
                Ok(n)
            })
            .await
    }

    /// One pass: holds without a journey sent to refund, the due operations, then the stale
    /// journeys.
    pub async fn pass(&self) -> Result<PassStats, crate::journal::JournalError> {
        self.line_round().await;
        let orphans = self.refund_holds_without_journey().await?;
        let mut stats = self.pass_operations().await?;
        stats.holds_without_journey = orphans;
        self.close_stale_journeys().await?;
        Ok(stats)
    }

    /// On a line: sends the outbox, closes journeys that ended elsewhere, converges
    /// unknown-entry exits (each part logs its own failure).
    pub async fn line_round(&self) {
        if let (Some(line), Some(journal)) = (&self.line, &self.journal) {
            line.round(&self.station, journal).await;
        }
    }

    /// Sends every successful hold that belongs to no journey to refund: nothing would ever
    /// settle it (a second hold for one passenger, e.g. one phone read by two readers, or a
    /// hold whose journey could not be written). Each is logged as an error and counted in
    /// `tapgate_holds_without_journey_total`; the refund itself then runs as any other, and a
    /// refused refund ends in ATTENTION with its reason. Returns how many were found.
    pub async fn refund_holds_without_journey(
        &self,
    ) -> Result<usize, crate::journal::JournalError> {
        let st = &self.station;
        let rows = st.ports.ops.holds_without_journey(64).await?;
        let n = rows.len();
        for row in rows {
            let now = st.now_ms();
            let reason = format!(
                "hold of {} without a journey (a second hold for one passenger, or its journey \
                 could not be written): refund owed",
                row.amount
            );
            tracing::error!(target: "tapgate::fare", fare_ref = %row.partner_reference_no,
                lane = %row.lane, pan = %row.pan_masked, amount = row.amount.0,
                "successful hold without a journey: refunding it");
            st.metrics.inc(
                "tapgate_holds_without_journey_total",
                &[("lane", row.lane.as_str())],
            );
            let t = Transition {
                refund_amount: Some(row.amount),
                reason: Some(reason),
                next_attempt_at_ms: Some(now),
                duplicate_hold: true,
                ..Transition::new(OpState::RefundPending, now)
            };
            let pref = row.partner_reference_no.clone();
            if let Err(e) = st.ports.ops.record(pref, vec![t]).await {
                if e.is_storage_fault() {
                    return Err(e);
                }
                tracing::error!(target: "tapgate::fare", fare_ref = %row.partner_reference_no,
                    error = %e, "journal refused to send a hold without a journey to refund");
            }
        }
        Ok(n)
    }

    /// Asks where an operation stands, through the endpoints of its channel.
    async fn query(&self, row: &OpRow) -> QueryOutcome {
        let ports = &self.station.ports;
        match (row.channel, &ports.qr) {
            (Channel::Cpm, _) => ports.payments.query(&row.partner_reference_no).await,
            (Channel::Mpm, Some(qr)) => {
                qr.query(&row.partner_reference_no, row.reference_no.as_deref())
                    .await
            }
            (Channel::Mpm, None) => QueryOutcome::Unavailable {
                reason: "this station has no QRIS MPM endpoints to query a QR sale".into(),
            },
        }
    }

    /// Refunds an operation the gate did not open for, through the endpoints of its channel.
    async fn refund(&self, row: &OpRow, reference: &str) -> RefundOutcome {
        let ports = &self.station.ports;
        let (pref, amount) = (&row.partner_reference_no, row.amount_to_refund());
        match (row.channel, &ports.qr) {
            (Channel::Cpm, _) => {
                ports
                    .payments
                    .refund(pref, reference, amount, "gate did not open")
                    .await
            }
            (Channel::Mpm, Some(qr)) => {
                qr.refund(pref, reference, amount, "QR paid but the gate did not open")
                    .await
            }
            (Channel::Mpm, None) => RefundOutcome::Unavailable {
                reason: "this station has no QRIS MPM endpoints to refund a QR sale".into(),
            },
        }
    }

    async fn pass_operations(&self) -> Result<PassStats, crate::journal::JournalError> {
        let st = &self.station;
        let now = st.now_ms();
        let rows = st.ports.ops.due(now, 64).await?;
        let mut stats = PassStats::default();
        let cfg = &st.config.reconciler;
        for row in rows {
            stats.seen += 1;
            let now = st.now_ms();
            let ts = match plan_step(&row, now, cfg, self.in_flight_ms()) {
                Step::Wait => continue,
                Step::Attention(why) => {
                    stats.attention += 1;
                    tracing::warn!(target: "tapgate::fare", fare_ref = %row.partner_reference_no,
                        lane = %row.lane, reason = %why, "operation needs ATTENTION");
                    vec![Transition {
                        reason: Some(why),
                        ..Transition::new(OpState::Attention, now)
                    }]
                }
                Step::Query => {
                    stats.queries += 1;
                    let q = self.query(&row).await;
                    if let QueryOutcome::Status {
                        status: TxStatus::Success,
                        amount,
                        ..
                    } = &q
                    {
                        if let Some(m) = check_amount(row.amount, amount.as_ref()) {
                            crate::daemon::lane::report_amount_mismatch(
                                st,
                                "query",
                                &row.partner_reference_no,
                                &m,
                            );
                        }
                    }
                    st.metrics.inc(
                        "tapgate_aggregator_requests_total",
                        &[
                            ("endpoint", endpoint(row.channel, "query")),
                            ("code", q.code().unwrap_or("no_answer")),
                        ],
                    );
                    let payable = st.config.qr_payable_for_ms();
                    match qr_unpaid_too_soon(&row, &q, st.now_ms(), payable, cfg) {
                        Some(wait) => vec![wait],
                        None => after_query(&row, &q, st.now_ms(), cfg),
                    }
                }
                Step::Refund => {
                    stats.refunds += 1;
                    let reference = row.reference_no.clone().unwrap_or_default();
                    let r = self.refund(&row, &reference).await;
                    st.metrics.inc(
                        "tapgate_aggregator_requests_total",
                        &[
                            ("endpoint", endpoint(row.channel, "refund")),
                            ("code", r.code().unwrap_or("no_answer")),
                        ],
                    );
                    vec![after_refund(&row, &r, st.now_ms(), cfg)]
                }
            };
            let Some(last) = ts.last() else { continue };
            let to = last.to;
            let reason = last.reason.clone().unwrap_or_default();
            let pref = row.partner_reference_no.clone();
            match st.ports.ops.record(pref, ts).await {
                Ok(written) => {
                    if let Some(w) = &written {
                        st.fast_open_resolved(w);
                    }
                }
                Err(e) if e.is_storage_fault() => return Err(e),
                Err(e) => {
                    tracing::error!(target: "tapgate::fare", fare_ref = %row.partner_reference_no,
                        error = %e, "journal refused the reconciler's transition");
                    continue;
                }
            }
            if to != row.state {
                tracing::info!(target: "tapgate::fare", fare_ref = %row.partner_reference_no,
                    lane = %row.lane, from = row.state.as_str(), to = to.as_str(), reason = %reason,
                    "operation state changed");
            }
        }
        Ok(stats)
    }

    /// Closes journeys whose tap-in is older than the maximum trip time, per the station's
    /// `stale_journey` policy. A tap-in whose hold no longer stands (refunded, declined) closes
    /// as VOID; one still uncertain waits for the reconciler to resolve it first.
    pub async fn close_stale_journeys(&self) -> Result<usize, crate::journal::JournalError> {
        let st = &self.station;
        let now = st.now_ms();
        let max_trip = i64::try_from(st.config.policy.max_trip_minutes.saturating_mul(60_000))
            .unwrap_or(i64::MAX);
        let policy = st.config.policy.stale_journey;
        let stale = st
            .ports
            .journeys
            .stale(now.saturating_sub(max_trip))
            .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        // On a line, a journey may have ended at another station: the line is asked first,
        // and while it cannot answer no journey is closed at the maximum fare.
        let on_line = match &st.ports.line {
            None => Vec::new(),
            Some(line) => {
                let refs = stale.iter().map(|(j, _)| j.tap_in_ref.clone()).collect();
                match line.states(refs).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(target: "tapgate::line", error = %e, stale = stale.len(),
                            "stale journeys left open: the line cannot say whether they ended \
                             at another station");
                        return Ok(0);
                    }
                }
            }
        };
        let mut closed = 0;
        for (jy, tap_in) in stale {
            let elsewhere = on_line
                .iter()
                .find(|s| s.tap_in_ref == jy.tap_in_ref)
                .and_then(|s| s.elsewhere_close(jy.id));
            if let Some(c) = elsewhere {
                st.ports.journeys.close_elsewhere(c, now).await?;
                tracing::info!(target: "tapgate::line", journey = jy.id,
                    tap_in = %jy.tap_in_ref, "stale journey had ended at another station");
                closed += 1;
                continue;
            }
            let Some((state, fare)) = stale_close(tap_in.as_ref(), policy) else {
                continue;
            };
            st.ports
                .journeys
                .close(
                    JourneyClose {
                        id: jy.id,
                        state,
                        fare,
                    },
                    now,
                )
                .await?;
            tracing::info!(target: "tapgate::fare", journey = jy.id,
                tap_in = %jy.tap_in_ref, state = ?state,
                "stale journey closed (no tap-out within the maximum trip time)");
            closed += 1;
        }
        Ok(closed)
    }

    /// Runs passes until every operation is final or `limit` passes; returns the non-final count.
    pub async fn run_until_settled(
        &self,
        limit: Duration,
    ) -> Result<usize, crate::journal::JournalError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            self.pass().await?;
            let open = self.station.ports.ops.non_final().await?;
            if open == 0 || tokio::time::Instant::now() >= until {
                return Ok(open);
            }
            tokio::time::sleep(Duration::from_millis(
                self.station.config.reconciler.interval_ms.min(250),
            ))
            .await;
        }
    }

    /// The background loop: a pass every `interval_ms` until `stop` fires. Stops between
    /// operations, never in the middle of one.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = Duration::from_millis(self.station.config.reconciler.interval_ms);
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(target: "tapgate::fare", error = %e, "reconciler pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fare::Rupiah;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_ms(0, 2000, 300_000, 0.999_999), 1999);
        assert_eq!(backoff_ms(3, 2000, 300_000, 0.5), 8000);
        assert_eq!(backoff_ms(30, 2000, 300_000, 0.5), 150_000);
        assert_eq!(backoff_ms(200, 2000, 300_000, 1.0), 300_000);
        assert_eq!(backoff_ms(5, 2000, 300_000, 0.0), 0);
    }

    fn refund_owed(amount: u64, refund_amount: Option<u64>) -> OpRow {
        OpRow {
            partner_reference_no: "TGBLM0126120209150200000123456".into(),
            kind: crate::journal::OpKind::Hold,
            lane: "in-1".into(),
            direction: crate::fare::Direction::In,
            station_id: "BLM".into(),
            amount: Rupiah(amount),
            pan_key: "k".into(),
            pan_masked: "93600914*******1234".into(),
            nns: "93600914".into(),
            state: OpState::RefundPending,
            reference_no: Some("REF1".into()),
            response_code: Some("2006000".into()),
            gate_opened: Some(false),
            reason: None,
            attempts: 1,
            next_attempt_at_ms: Some(0),
            refund_no: None,
            refund_amount: refund_amount.map(Rupiah),
            created_at_ms: 0,
            updated_at_ms: 0,
            journey_id: None,
            fast_opened: false,
            channel: Default::default(),
        }
    }

    /// The refund the reconciler asks for and the refund it records are one amount: a partial
    /// refund owed is neither sent whole nor recorded whole.
    #[test]
    fn refund_sent_and_refund_recorded_are_the_same_amount() {
        let refunded = RefundOutcome::Refunded {
            refund_no: Some("RF1".into()),
            response_code: "2008000".into(),
        };
        let cfg = ReconcilerConfig::default();
        for (amount, owed, expect) in [(9000, Some(6000), 6000), (9000, None, 9000)] {
            let row = refund_owed(amount, owed);
            assert_eq!(row.amount_to_refund(), Rupiah(expect));
            let t = after_refund(&row, &refunded, 1, &cfg);
            assert_eq!(t.refund_amount, Some(row.amount_to_refund()));
            assert_eq!(t.to, OpState::Refunded);
        }
    }
}

#[cfg(test)]
mod qr_tests {
    use super::*;
    use crate::fare::Rupiah;

    fn sale(channel: Channel) -> OpRow {
        OpRow {
            partner_reference_no: "TQBLM0126120209150200000123456".into(),
            kind: crate::journal::OpKind::Settle,
            lane: "out-1".into(),
            direction: crate::fare::Direction::Out,
            station_id: "BLM".into(),
            amount: Rupiah(14_000),
            pan_key: "k".into(),
            pan_masked: "QR".into(),
            nns: "QR".into(),
            state: OpState::Unknown,
            reference_no: Some("QREF1".into()),
            response_code: None,
            gate_opened: Some(false),
            reason: None,
            attempts: 1,
            next_attempt_at_ms: Some(0),
            refund_no: None,
            refund_amount: None,
            created_at_ms: 1_000_000,
            updated_at_ms: 1_000_000,
            journey_id: None,
            fast_opened: false,
            channel,
        }
    }

    fn status(s: TxStatus) -> QueryOutcome {
        QueryOutcome::Status {
            status: s,
            reference_no: None,
            response_code: "2005100".into(),
            amount: None,
        }
    }

    #[test]
    fn an_unpaid_qr_waits_for_a_late_payment_until_its_window_ends_and_a_tap_never_does() {
        let cfg = ReconcilerConfig::default();
        let payable = 720_000;
        let early = 1_000_000 + 300_000;
        for q in [
            status(TxStatus::Failed),
            status(TxStatus::Cancelled),
            status(TxStatus::NotFound),
            QueryOutcome::NotFound {
                response_code: "4045101".into(),
            },
        ] {
            let t = qr_unpaid_too_soon(&sale(Channel::Mpm), &q, early, payable, &cfg)
                .unwrap_or_else(|| panic!("{q:?} waits"));
            assert_eq!(t.to, OpState::Unknown);
            assert!(!t.bump_attempts, "waiting is not failing");
            let next = t.next_attempt_at_ms.expect("asked again");
            assert!(next > early && next <= 1_000_000 + payable, "{next}");
            assert!(qr_unpaid_too_soon(&sale(Channel::Cpm), &q, early, payable, &cfg).is_none());
        }
        let late = 1_000_000 + payable;
        assert!(
            qr_unpaid_too_soon(
                &sale(Channel::Mpm),
                &status(TxStatus::Failed),
                late,
                payable,
                &cfg
            )
            .is_none(),
            "the window is over: the answer stands"
        );
        for q in [
            status(TxStatus::Success),
            status(TxStatus::Pending),
            QueryOutcome::Unavailable { reason: "x".into() },
        ] {
            assert!(
                qr_unpaid_too_soon(&sale(Channel::Mpm), &q, early, payable, &cfg).is_none(),
                "{q:?} is not an unpaid answer"
            );
        }
    }
}
