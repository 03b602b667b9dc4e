//! One lane: the executor of the tap flow ([`crate::flow::tap`]). The flow decides; this
//! module carries out each effect through the station's ports, measures it, and logs the tap.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::aggregator::PayOutcome;
use crate::config::LaneConfig;
use crate::daemon::station::{PassengerGuard, Station, StationCore};
use crate::fare::policy::{Debouncer, TapOutcome};
use crate::fare::Direction;
use crate::flow::settle::late_reply_transitions;
use crate::flow::{
    Claim, Effect, LateReply, LineView, Notice, Reply, Settlement, Step, TapEnd, TapFlow, TapInput,
    TapPayment, TapSettings,
};
pub use crate::flow::{TapReport, Timings};
use crate::nfc::{CardEvent, TapReadError};
use crate::ports::LineQuery;
use crate::relay::Relay;

/// A gate lane.
pub struct Lane {
    cfg: LaneConfig,
    settings: Arc<TapSettings>,
    station: Arc<StationCore>,
    relay: Arc<dyn Relay>,
    debouncer: Mutex<Debouncer>,
}

/// What the executor keeps while one tap runs.
struct Run {
    timings: Timings,
    started: Duration,
    guard: Option<PassengerGuard>,
    pan_key: Option<String>,
    late: Option<tokio::sync::oneshot::Receiver<PayOutcome>>,
    /// The decision deadline of the payment in flight.
    pay_deadline: Option<tokio::time::Instant>,
    /// The payment fast open was granted for.
    fast_open: Option<String>,
}

impl Lane {
    /// A lane of `station` driving `relay`.
    pub fn new(cfg: LaneConfig, station: Arc<Station>, relay: Arc<dyn Relay>) -> Lane {
        Lane::on_core(cfg, station.core(), relay)
    }

    /// A lane over a bare [`StationCore`] (for example over the fakes of
    /// [`crate::ports::fake`]) driving `relay`.
    pub fn on_core(cfg: LaneConfig, station: Arc<StationCore>, relay: Arc<dyn Relay>) -> Lane {
        let c = &station.config;
        let settings = Arc::new(TapSettings {
            lane: cfg.name.clone(),
            direction: cfg.direction,
            station_id: c.station.id.clone(),
            gate_id: cfg.device_id(&c.station),
            policy: c.policy.clone(),
            tariff: station.tariff.clone(),
            request_timeout_ms: c.aggregator.request_timeout_ms,
            line: station.ports.line.is_some(),
        });
        let debouncer = Mutex::new(Debouncer::new(c.policy.debounce_ms));
        Lane {
            cfg,
            settings,
            station,
            relay,
            debouncer,
        }
    }

    /// The lane's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The lane's direction.
    pub fn direction(&self) -> Direction {
        self.cfg.direction
    }

    fn report(&self, outcome: TapOutcome, message: impl Into<String>) -> TapReport {
        TapReport::refused(&self.cfg.name, self.cfg.direction, outcome, message)
    }

    /// Handles one card event; reader state changes yield no report.
    pub async fn handle_event(&self, ev: CardEvent) -> Option<TapReport> {
        match ev {
            CardEvent::Payload {
                qr_content,
                read_us,
                ..
            } => Some(self.handle_payload(&qr_content, read_us).await),
            CardEvent::ReadFailed { error, read_us, .. } => {
                let outcome = match error {
                    TapReadError::WalletNotReady { .. } => TapOutcome::WalletNotReady,
                    _ => TapOutcome::ReadFailed,
                };
                let mut r = self.report(outcome, error.to_string());
                r.timings.read_us = read_us;
                self.finish(&r);
                Some(r)
            }
            CardEvent::ReaderUp { .. } | CardEvent::ReaderDown { .. } => None,
        }
    }

    /// Runs the whole pipeline for one payload read in `read_us`.
    pub async fn handle_payload(&self, qr_content: &str, read_us: u64) -> TapReport {
        let r = self.pipeline(qr_content, read_us).await;
        self.finish(&r);
        r
    }

    /// The one log event, the metrics and the passenger's screen of a finished tap.
    fn finish(&self, r: &TapReport) {
        log_tap(r);
        if let (true, Some(desk)) = (r.opened, self.station.qr_desk()) {
            desk.withdraw(&r.lane, crate::qr::Withdrawn::Tapped);
        }
        if let Some(display) = self.station.display() {
            display.publish(r);
        }
        let m = &self.station.metrics;
        m.inc(
            "tapgate_taps_total",
            &[
                ("lane", &r.lane),
                ("direction", r.direction.as_str()),
                ("outcome", r.outcome.as_str()),
            ],
        );
        let t = &r.timings;
        for (stage, us) in [
            ("read", t.read_us),
            ("decode", t.decode_us),
            ("journal", t.journal_us),
            ("aggregator", t.aggregator_us),
            ("relay", t.relay_us),
            ("settle", t.settle_us),
            ("total", t.total_us),
        ] {
            if us > 0 {
                m.observe(
                    "tapgate_tap_stage_seconds",
                    &[("lane", &r.lane), ("stage", stage)],
                    us as f64 / 1e6,
                );
            }
        }
        if t.aggregator_us > 0 {
            m.inc(
                "tapgate_aggregator_requests_total",
                &[
                    ("endpoint", "payment"),
                    ("code", r.response_code.as_deref().unwrap_or("no_answer")),
                ],
            );
        }
    }

    async fn pipeline(&self, qr_content: &str, read_us: u64) -> TapReport {
        let st = &self.station;
        let key = st.passenger_key.clone();
        let input = TapInput {
            qr_content: qr_content.to_string(),
            read_us,
            free_exit: st.free_exit.load(std::sync::atomic::Ordering::SeqCst),
            now_ms: st.now_ms(),
            partner_reference_no: new_partner_reference(
                &self.settings.station_id,
                &self.cfg.name,
                &st.clock.now(),
            ),
            passenger_key: Box::new(move |pan| key.of(pan)),
        };
        let mut run = Run {
            timings: Timings {
                read_us,
                ..Timings::default()
            },
            started: st.clock.monotonic(),
            guard: None,
            pan_key: None,
            late: None,
            pay_deadline: None,
            fast_open: None,
        };
        let (mut flow, mut step) = TapFlow::start(self.settings.clone(), input);
        run.timings.decode_us = self.since(run.started);
        loop {
            match step {
                Step::Done(end) => return self.end(end, run).await,
                Step::Do(effect) => {
                    let reply = self.carry_out(effect, &mut run).await;
                    step = flow.resume(reply, st.now_ms());
                }
            }
        }
    }

    fn since(&self, t: Duration) -> u64 {
        let now = self.station.clock.monotonic();
        u64::try_from(now.saturating_sub(t).as_micros()).unwrap_or(u64::MAX)
    }

    /// Carries out one effect of the flow and returns its reply.
    async fn carry_out(&self, effect: Effect, run: &mut Run) -> Reply {
        let st = &self.station;
        let t = st.clock.monotonic();
        match effect {
            Effect::Claim { pan_key } => {
                let reply = self.claim(&pan_key, run);
                run.pan_key = Some(pan_key);
                run.timings.decode_us = self.since(run.started);
                Reply::Claim(reply)
            }
            Effect::Lookup {
                pan_key,
                claim,
                claim_ms,
                debounce_since_ms,
            } => {
                let view = self
                    .lookup(pan_key, claim, claim_ms, debounce_since_ms)
                    .await;
                run.timings.line_us = self.since(t);
                Reply::Lookup(view)
            }
            Effect::Begin(begin) => {
                crate::failpoint::hit("before_journal");
                let r = st.ports.journeys.begin_tap(begin).await;
                run.timings.journal_us = self.since(t);
                if matches!(r, Ok(crate::journal::TapStart::Begun(_))) {
                    crate::failpoint::hit("after_journal");
                }
                Reply::Begin(r.map_err(|e| e.to_string()))
            }
            Effect::Pay {
                request,
                deadline,
                wait,
            } => {
                self.send(request, deadline, run);
                let outcome = self.await_pay(wait, run).await;
                run.timings.aggregator_us = self.since(t);
                if outcome.is_some() || wait.is_none() {
                    crate::failpoint::hit("after_reply");
                }
                Reply::Pay(outcome)
            }
            Effect::AwaitPay => {
                let outcome = self.await_pay(None, run).await;
                run.timings.aggregator_us += self.since(t);
                crate::failpoint::hit("after_reply");
                Reply::Pay(outcome)
            }
            Effect::FastOpen {
                partner_reference_no,
                amount,
            } => {
                let r = st.fast_open_admit(&partner_reference_no, amount);
                if r.is_ok() {
                    run.fast_open = Some(partner_reference_no);
                }
                Reply::FastOpen(r)
            }
            Effect::OpenGate => {
                run.timings.decision_us = self.since(run.started);
                let r = st
                    .open_gate(&self.cfg.name, self.relay.as_ref())
                    .map_err(|e| e.to_string());
                run.timings.relay_us = self.since(t);
                Reply::Gate(r)
            }
            Effect::Settle(s) => {
                if run.timings.decision_us == 0 {
                    run.timings.decision_us = self.since(run.started);
                }
                let reply = self.settle(s).await;
                run.timings.settle_us = self.since(t);
                reply
            }
        }
    }

    /// Asks the line, with the journey this station's journal holds open for the passenger.
    async fn lookup(
        &self,
        pan_key: String,
        claim: Option<String>,
        claim_ms: i64,
        debounce_since_ms: i64,
    ) -> LineView {
        let st = &self.station;
        let Some(line) = st.ports.line.clone() else {
            return LineView::Unavailable("no line store configured".into());
        };
        let local = match st.ports.journeys.find_open(pan_key.clone()).await {
            Ok(j) => j.map(|j| j.tap_in_ref),
            Err(e) => return LineView::Unavailable(format!("journal: {e}")),
        };
        line.lookup(LineQuery {
            pan_key,
            claim,
            local_tap_in_ref: local,
            now_ms: st.now_ms(),
            claim_ms,
            debounce_since_ms,
        })
        .await
    }

    fn claim(&self, pan_key: &str, run: &mut Run) -> Claim {
        let repeat = self
            .debouncer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_repeat(pan_key, self.station.now_ms());
        if repeat {
            return Claim::Repeat;
        }
        // One tap of a passenger at a time: another lane of this process already on it means
        // the same phone held across two readers.
        match self.station.claim_passenger(pan_key) {
            Some(g) => {
                run.guard = Some(g);
                Claim::Granted
            }
            None => Claim::Busy,
        }
    }

    /// Sends the payment in its own task, so that a reply after the deadline is still
    /// journaled (and the aggregator's health told of it).
    fn send(&self, request: TapPayment, deadline: Duration, run: &mut Run) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = self.station.clone();
        st.payment_sent();
        tokio::spawn(async move {
            let outcome = st.ports.payments.pay(&request).await;
            st.payment_answered(&outcome);
            let _ = tx.send(outcome);
        });
        run.late = Some(rx);
        run.pay_deadline = Some(tokio::time::Instant::now() + deadline);
    }

    /// Waits for the payment sent by [`Lane::send`] until its deadline, or only `wait` when
    /// given; `None`: no answer by then (the receiver stays in `run` for the late reply).
    async fn await_pay(&self, wait: Option<Duration>, run: &mut Run) -> Option<PayOutcome> {
        let deadline = run.pay_deadline.unwrap_or_else(tokio::time::Instant::now);
        let until = match wait {
            Some(w) => deadline.min(tokio::time::Instant::now() + w),
            None => deadline,
        };
        let rx = run.late.as_mut()?;
        match tokio::time::timeout_at(until, rx).await {
            Ok(Ok(o)) => {
                run.late = None;
                Some(o)
            }
            Ok(Err(_)) => {
                run.late = None;
                Some(PayOutcome::Unknown {
                    response_code: None,
                    reason: "payment task ended without a result".into(),
                })
            }
            Err(_) => None,
        }
    }

    /// The journey change and the payment's result in one journal transaction: one durable
    /// commit after the decision. A crash before it leaves the row PENDING and no journey,
    /// resolved to a refund of the hold (a passenger let in without a journey pays the
    /// unknown-entry fare at the exit): never twice.
    async fn settle(&self, s: Settlement) -> Reply {
        let settled = self.station.ports.ops.settle(s).await;
        Reply::Settle {
            journey: settled.journey.map_err(|e| e.to_string()),
            record: settled.record.map(|_| ()).map_err(|e| e.to_string()),
        }
    }

    /// The end of a tap: notices logged and counted, the debounce told, a late reply awaited.
    async fn end(&self, end: TapEnd, mut run: Run) -> TapReport {
        let st = &self.station;
        let mut r = end.report;
        run.timings.total_us = self.since(run.started);
        if run.timings.decision_us == 0 {
            run.timings.decision_us = run.timings.total_us;
        }
        r.timings = run.timings;
        if let (Some(false), Some(pref)) = (end.fast_open, run.fast_open.take()) {
            st.fast_open_withdraw(&pref);
        }
        if let Some(k) = &end.passed_pan_key {
            self.debouncer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .passed(k, st.now_ms());
        }
        if let (Some(c), Some(line)) = (end.release_claim, st.ports.line.clone()) {
            tokio::spawn(async move { line.release_claim(c.tap_in_ref, c.claim).await });
        }
        let fare_ref = r.partner_reference_no.clone().unwrap_or_default();
        for n in &end.notices {
            self.notice(n, &fare_ref);
        }
        if let (Some(late), Some(rx)) = (end.late, run.late.take()) {
            let st2 = st.clone();
            let lane = self.cfg.name.clone();
            let handle = tokio::spawn(async move {
                if let Ok(reply) = rx.await {
                    record_late_reply(&st2, &lane, &late, &reply).await;
                }
            });
            st.inflight.lock().await.push(handle);
        }
        drop(run.guard);
        r
    }

    fn notice(&self, n: &Notice, fare_ref: &str) {
        let lane = &self.cfg.name;
        match n {
            Notice::AmountMismatch(m) => {
                report_amount_mismatch(&self.station, "payment", fare_ref, m)
            }
            Notice::RelayFailed(e) => {
                tracing::error!(lane = %lane, error = %e, "relay failed: gate not opened")
            }
            Notice::UnpaidExit { why, amount } => {
                self.station.metrics.inc(
                    "tapgate_exits_unpaid_total",
                    &[("lane", lane), ("reason", why)],
                );
                tracing::warn!(target: "tapgate::fare", lane = %lane, fare_ref = %fare_ref,
                    reason = why, amount = amount.0,
                    "exit opened unpaid: the aggregator could not be used");
            }
            Notice::JourneyWriteFailed(e) => {
                // A tap-in hold left without a journey is found and refunded by the reconciler
                // (the passenger, with no journey, pays the unknown-entry fare at the exit).
                tracing::error!(lane = %lane, fare_ref = %fare_ref, error = %e,
                    "journey update failed; a hold without a journey is refunded by the reconciler")
            }
            Notice::LineUnavailable(why) => {
                self.station
                    .metrics
                    .inc("tapgate_line_lookups_degraded_total", &[("lane", lane)]);
                tracing::warn!(target: "tapgate::line", lane = %lane, fare_ref = %fare_ref,
                    reason = %why,
                    "the line did not answer in time: this tap used what the station knows")
            }
            Notice::FastOpened { amount } => {
                self.station
                    .metrics
                    .inc("tapgate_fast_opens_total", &[("lane", lane)]);
                tracing::info!(target: "tapgate::fast_open", lane = %lane, fare_ref = %fare_ref,
                    amount = amount.0, "gate fast-opened before the aggregator answered");
            }
            Notice::FastOpenRefused(why) => {
                self.station.metrics.inc(
                    "tapgate_fast_open_refused_total",
                    &[("lane", lane), ("reason", why.as_str())],
                );
                tracing::info!(target: "tapgate::fast_open", lane = %lane, fare_ref = %fare_ref,
                    reason = why.as_str(), "{why}; the tap waits for the answer");
            }
            Notice::UnpaidRefused(owed) => {
                self.station
                    .metrics
                    .inc("tapgate_taps_refused_unpaid_total", &[("lane", lane)]);
                tracing::warn!(target: "tapgate::fast_open", lane = %lane,
                    owed = owed.amount.0, entries = owed.count,
                    "tap-in refused: the passenger is on the unpaid list");
            }
            Notice::RecordFailed(e) => {
                // The row stays as it was: the reconciler resolves it by query.
                tracing::error!(lane = %lane, fare_ref = %fare_ref, error = %e,
                    "journal write after the payment failed; the reconciler will resolve it")
            }
        }
    }
}

/// Journals a payment reply that arrived after the gate had decided.
async fn record_late_reply(st: &StationCore, lane: &str, late: &LateReply, o: &PayOutcome) {
    let partner_ref = late.partner_reference_no.as_str();
    if let PayOutcome::Success {
        amount_mismatch: Some(m),
        ..
    } = o
    {
        report_amount_mismatch(st, "payment", partner_ref, m);
    }
    // Still unknown: the reconciler resolves it by query.
    let Some(transitions) = late_reply_transitions(o, late.opened, late.amount, st.now_ms()) else {
        return;
    };
    let code = o.code().map(str::to_string);
    match st
        .ports
        .ops
        .record(partner_ref.to_string(), transitions)
        .await
    {
        Ok(row) => {
            tracing::info!(
                target: "tapgate::fare",
                lane,
                fare_ref = partner_ref,
                state = row.as_ref().map_or("-", |r| r.state.as_str()),
                response_code = code.as_deref().unwrap_or("-"),
                "late payment reply journaled"
            );
            if let Some(row) = &row {
                st.fast_open_resolved(row);
            }
        }
        Err(e) => tracing::error!(lane, fare_ref = partner_ref, error = %e,
            "journal write of a late reply failed; the reconciler will resolve it"),
    }
}

/// The error log line and the metric of an answer that named another amount than the
/// payment's: the journal records it as ATTENTION with both amounts.
pub fn report_amount_mismatch(
    st: &StationCore,
    endpoint: &'static str,
    partner_ref: &str,
    m: &crate::aggregator::AmountMismatch,
) {
    st.metrics
        .inc("tapgate_amount_mismatches_total", &[("endpoint", endpoint)]);
    tracing::error!(target: "tapgate::fare", fare_ref = %partner_ref, endpoint,
        asked = m.asked.0, reported = %m.reported,
        "the aggregator reported another amount than the payment's: ATTENTION");
}

/// A `partnerReferenceNo`: `TG` + station + lane digest + local time to the millisecond + 6
/// random digits. Unique per gate without coordination, at most 46 characters, alphanumeric.
pub fn new_partner_reference(station: &str, lane: &str, now: &jiff::Zoned) -> String {
    let lane_tag: u32 = lane
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % 100;
    format!(
        "TG{station}{lane_tag:02}{}{:06}",
        now.strftime("%y%m%d%H%M%S%3f"),
        rand::random::<u32>() % 1_000_000
    )
}

/// One structured event per tap: what a technician greps for in `journalctl -u tapgate`.
pub fn log_tap(r: &TapReport) {
    let t = &r.timings;
    tracing::info!(
        target: "tapgate::tap",
        lane = %r.lane,
        direction = r.direction.as_str(),
        outcome = r.outcome.as_str(),
        opened = r.opened,
        fare_ref = r.partner_reference_no.as_deref().unwrap_or("-"),
        amount = r.amount.unwrap_or(0),
        nns = r.nns.as_deref().unwrap_or("-"),
        pan = r.pan_masked.as_deref().unwrap_or("-"),
        response_code = r.response_code.as_deref().unwrap_or("-"),
        read_us = t.read_us,
        decode_us = t.decode_us,
        line_us = t.line_us,
        journal_us = t.journal_us,
        aggregator_us = t.aggregator_us,
        relay_us = t.relay_us,
        settle_us = t.settle_us,
        total_us = t.total_us,
        "tap {}: {}",
        r.outcome.as_str(),
        r.message
    );
}
