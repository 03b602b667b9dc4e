//! One lane: the pipeline of a tap, from the payload to the relay, journaled before any
//! money moves. Decisions come from [`crate::fare::policy`]; this module carries them out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::aggregator::{PayOutcome, TapInRef, TapPayment};
use crate::config::LaneConfig;
use crate::cpm;
use crate::daemon::record::{self, Learned};
use crate::daemon::station::Station;
use crate::fare::policy::{self, Debouncer, OpenJourney, PayResult, Plan, TapOutcome};
use crate::fare::Direction;
use crate::journal::{JourneyRow, JourneyState, NewOp, TapBlock, TapClaim, TapDecision, TapStart};
use crate::nfc::{CardEvent, TapReadError};
use crate::relay::Relay;

/// Time spent in each stage of a tap, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    /// APDU exchange with the phone.
    pub read_us: u64,
    /// Payload decoding and policy.
    pub decode_us: u64,
    /// Journal write before the payment (durable).
    pub journal_us: u64,
    /// The aggregator call, up to the decision.
    pub aggregator_us: u64,
    /// The relay command.
    pub relay_us: u64,
    /// Journal write after the decision.
    pub settle_us: u64,
    /// From the decoded payload to the decision.
    pub total_us: u64,
}

/// What happened to one tap: printed by `tapgate tap`, logged once per tap.
#[derive(Clone, Debug, Serialize)]
pub struct TapReport {
    /// Lane name.
    pub lane: String,
    /// `in` or `out`.
    pub direction: Direction,
    /// Whether the gate was opened.
    pub opened: bool,
    /// What the passenger experienced.
    pub outcome: TapOutcome,
    /// The payment's reference, when one was made.
    #[serde(rename = "partnerReferenceNo", skip_serializing_if = "Option::is_none")]
    pub partner_reference_no: Option<String>,
    /// The aggregator's reference, on success.
    #[serde(rename = "referenceNo", skip_serializing_if = "Option::is_none")]
    pub reference_no: Option<String>,
    /// Amount held or settled, whole rupiah.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// How a tap-out fare was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fare_rule: Option<&'static str>,
    /// Issuer id (first 8 PAN digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nns: Option<String>,
    /// Issuer name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<&'static str>,
    /// First 8 and last 4 PAN digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pan_masked: Option<String>,
    /// The aggregator's responseCode, when one came.
    #[serde(rename = "responseCode", skip_serializing_if = "Option::is_none")]
    pub response_code: Option<String>,
    /// Human explanation for the technician.
    pub message: String,
    /// Stage timings.
    pub timings: Timings,
}

impl TapReport {
    /// A tap that ended before any money moved: gate shut, nothing but the reason.
    pub fn refused(
        lane: &str,
        direction: Direction,
        outcome: TapOutcome,
        message: impl Into<String>,
    ) -> TapReport {
        TapReport {
            lane: lane.to_string(),
            direction,
            opened: false,
            outcome,
            partner_reference_no: None,
            reference_no: None,
            amount: None,
            fare_rule: None,
            nns: None,
            issuer: None,
            pan_masked: None,
            response_code: None,
            message: message.into(),
            timings: Timings::default(),
        }
    }
}

/// A gate lane.
pub struct Lane {
    cfg: LaneConfig,
    device_id: String,
    station: Arc<Station>,
    relay: Arc<dyn Relay>,
    debouncer: Mutex<Debouncer>,
}

impl Lane {
    /// A lane of `station` driving `relay`.
    pub fn new(cfg: LaneConfig, station: Arc<Station>, relay: Arc<dyn Relay>) -> Lane {
        let device_id = cfg.device_id(&station.config.station);
        let debouncer = Mutex::new(Debouncer::new(station.config.policy.debounce_ms));
        Lane {
            cfg,
            device_id,
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

    /// The one log event and the metrics of a finished tap.
    fn finish(&self, r: &TapReport) {
        log_tap(r);
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
        let started = Instant::now();
        let st = &self.station;
        let policy_cfg = &st.config.policy;

        if st.free_exit.load(std::sync::atomic::Ordering::SeqCst) {
            let mut r = self.report(
                TapOutcome::FreeExit,
                "free-exit (emergency) mode: gates are held open, no fare is taken",
            );
            r.timings.read_us = read_us;
            return r;
        }
        let payload = match cpm::decode(qr_content) {
            Ok(p) => p,
            Err(e) => {
                let mut r = self.report(TapOutcome::InvalidPayload, e.to_string());
                r.timings.read_us = read_us;
                r.timings.decode_us = micros(started);
                return r;
            }
        };
        let mut r = self.report(TapOutcome::Approved, String::new());
        r.timings.read_us = read_us;
        r.nns = Some(payload.nns().to_string());
        r.issuer = cpm::issuer_name(payload.nns());
        r.pan_masked = Some(payload.pan().masked());
        let pan_key = st.passenger_key.of(payload.pan());
        let now_ms = st.now_ms();

        let repeat = self
            .debouncer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_repeat(&pan_key, now_ms);
        if repeat {
            r.outcome = TapOutcome::Duplicate;
            r.message = "same passenger within the debounce window: the same tap".into();
            r.timings.decode_us = micros(started);
            return r;
        }

        // One tap of a passenger at a time: another lane of this process already on it means
        // the same phone held across two readers.
        let Some(_passenger) = st.claim_passenger(&pan_key) else {
            r.outcome = TapOutcome::Duplicate;
            r.message = "a tap for this passenger is in progress at another lane: the same tap, \
                         no second payment"
                .into();
            r.timings.decode_us = micros(started);
            return r;
        };

        let station_id = st.config.station.id.clone();
        let partner_ref = new_partner_reference(&station_id, &self.cfg.name, &st.clock.now());
        let claim = TapClaim {
            pan_key: pan_key.clone(),
            direction: self.cfg.direction,
            now_ms,
            passed_since_ms: now_ms
                .saturating_sub(i64::try_from(policy_cfg.debounce_ms).unwrap_or(i64::MAX)),
        };
        let decide = {
            let st = st.clone();
            let direction = self.cfg.direction;
            let lane = self.cfg.name.clone();
            let station_id = station_id.clone();
            let partner_ref = partner_ref.clone();
            let pan_key = pan_key.clone();
            let pan_masked = payload.pan().masked();
            let nns = payload.nns().to_string();
            // The reconciler leaves the row to this tap until its reply can no longer come.
            let next_attempt_at_ms = now_ms
                .saturating_add(i64::try_from(policy_cfg.decision_deadline_ms).unwrap_or(0))
                .saturating_add(self.late_reply_window_ms());
            move |open: Option<JourneyRow>| {
                let open = open.map(|j| OpenJourney {
                    id: j.id,
                    entry_station: j.entry_station,
                    tap_in_ref: j.tap_in_ref,
                });
                let cfg = &st.config.policy;
                match policy::plan(direction, &station_id, open, &st.tariff, cfg) {
                    Plan::Refuse(outcome) => TapDecision::Refuse(outcome),
                    Plan::Pay {
                        amount,
                        rule,
                        journey,
                        close_first,
                    } => TapDecision::Begin {
                        op: Box::new(NewOp {
                            partner_reference_no: partner_ref,
                            kind: match direction {
                                Direction::In => crate::journal::OpKind::Hold,
                                Direction::Out => crate::journal::OpKind::Settle,
                            },
                            lane,
                            direction,
                            station_id,
                            amount,
                            pan_key,
                            pan_masked,
                            nns,
                            journey_id: journey.as_ref().map(|j| j.id),
                            next_attempt_at_ms,
                            created_at_ms: now_ms,
                        }),
                        close_first: close_first.map(|j| j.id),
                        then: (amount, rule, journey),
                    },
                }
            }
        };
        r.timings.decode_us = micros(started);

        crate::failpoint::hit("before_journal");
        let t = Instant::now();
        let started_tap = st.journal.run(move |j| j.begin_tap(&claim, decide)).await;
        let (amount, rule, journey) = match started_tap {
            Ok(TapStart::Begun(planned)) => planned,
            Ok(TapStart::Refused(outcome)) => {
                r.outcome = outcome;
                r.message = policy::refusal_message(outcome);
                return r;
            }
            Ok(TapStart::Blocked(block)) => {
                r.outcome = TapOutcome::Duplicate;
                r.message = match block {
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
                };
                return r;
            }
            Err(e) => return self.journal_down(r, &e.to_string(), started),
        };
        r.partner_reference_no = Some(partner_ref.clone());
        r.amount = Some(amount.0);
        r.fare_rule = rule.map(|f| f.as_str());
        r.timings.journal_us = micros(t);
        crate::failpoint::hit("after_journal");

        // The payment runs in its own task so a reply after the deadline is still journaled.
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let st = st.clone();
            let qr = qr_content.to_string();
            let pref = partner_ref.clone();
            let dir = self.cfg.direction;
            let gate_id = self.device_id.clone();
            let station_id = station_id.clone();
            let tap_in = journey.as_ref().map(|j| j.tap_in_ref.clone());
            tokio::spawn(async move {
                let tap_in_reference_no = match &tap_in {
                    Some(tref) => {
                        let tref = tref.clone();
                        st.journal
                            .run(move |j| j.get(&tref))
                            .await
                            .ok()
                            .flatten()
                            .and_then(|row| row.reference_no)
                    }
                    None => None,
                };
                let payment = TapPayment {
                    partner_reference_no: &pref,
                    qr_content: &qr,
                    amount,
                    direction: dir,
                    station_id: &station_id,
                    gate_id: &gate_id,
                    tap_in: tap_in.as_deref().map(|p| TapInRef {
                        partner_reference_no: p,
                        reference_no: tap_in_reference_no.as_deref(),
                    }),
                };
                let outcome = st.aggregator.pay(&payment).await;
                let _ = tx.send(outcome);
            });
        }
        let t = Instant::now();
        let deadline = Duration::from_millis(policy_cfg.decision_deadline_ms);
        let mut rx = rx;
        let (outcome, timed_out) = match tokio::time::timeout(deadline, &mut rx).await {
            Ok(Ok(o)) => (Some(o), false),
            Ok(Err(_)) => (
                Some(PayOutcome::Unknown {
                    response_code: None,
                    reason: "payment task ended without a result".into(),
                }),
                false,
            ),
            Err(_) => (None, true),
        };
        r.timings.aggregator_us = micros(t);
        crate::failpoint::hit("after_reply");
        if let Some(PayOutcome::Success {
            amount_mismatch: Some(m),
            ..
        }) = &outcome
        {
            report_amount_mismatch(st, "payment", &partner_ref, m);
        }
        let result = outcome.as_ref().map(pay_result);
        let verdict = policy::verdict(self.cfg.direction, result, policy_cfg);
        let mut learned = match &outcome {
            Some(o) => learned_from(o),
            None => Learned {
                result: PayResult::Unknown,
                reference_no: None,
                response_code: None,
                reason: format!(
                    "no answer within the {} ms decision deadline",
                    policy_cfg.decision_deadline_ms
                ),
                amount_mismatch: None,
            },
        };
        let unpaid_why = match (&outcome, verdict.outcome) {
            (Some(PayOutcome::Refused { why, .. }), TapOutcome::UnpaidExit) => Some(why.as_str()),
            _ => None,
        };
        if let Some(why) = unpaid_why {
            learned.reason = format!(
                "unpaid exit: the aggregator could not be used ({why}), no money moved; let out \
                 by policy (unreachable_at_exit = \"open\"); {}",
                learned.reason
            );
        }
        r.reference_no = learned.reference_no.clone();
        r.response_code = learned.response_code.clone();
        r.message = learned.reason.clone();

        // Open the gate first, record after: a crash in between leaves the row PENDING, which
        // resolves to a refund (a passenger is never charged for a gate that may not have opened).
        let mut opened = false;
        if verdict.open_gate {
            let t = Instant::now();
            match self.relay.open() {
                Ok(()) => opened = true,
                Err(e) => {
                    tracing::error!(lane = %self.cfg.name, error = %e, "relay failed: gate not opened");
                    learned.reason = format!("{}; relay failed: {e}", learned.reason);
                    r.message = learned.reason.clone();
                }
            }
            r.timings.relay_us = micros(t);
        }
        r.opened = opened;
        if opened {
            crate::failpoint::hit("after_relay");
            st.monitor
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .gate_opened(&self.cfg.name, crate::relay::inputs::monotonic_now());
            self.debouncer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .passed(&pan_key, st.now_ms());
        }
        r.outcome = if verdict.open_gate && !opened {
            TapOutcome::TryAgain
        } else {
            verdict.outcome
        };
        if let (Some(why), true) = (unpaid_why, opened) {
            st.metrics.inc(
                "tapgate_exits_unpaid_total",
                &[("lane", &self.cfg.name), ("reason", why)],
            );
            tracing::warn!(target: "tapgate::fare", lane = %self.cfg.name, fare_ref = %partner_ref,
                reason = why, amount = amount.0,
                "exit opened unpaid: the aggregator could not be used");
        }

        let t = Instant::now();
        // Journeys first: they say who was let through, which is already true. A crash before
        // the payment's own record below leaves it PENDING, resolved to a refund: a passenger
        // let in keeps a journey (pays the exit fare), never pays twice.
        let at = st.now_ms();
        let journey_result = match (self.cfg.direction, opened) {
            (Direction::In, true) => {
                let (k, s, p) = (pan_key.clone(), station_id.clone(), partner_ref.clone());
                st.journal
                    .run(move |j| j.open_journey(&k, &s, &p, at).map(|_| ()))
                    .await
            }
            (Direction::Out, true) => match journey {
                Some(jy) => {
                    let p = partner_ref.clone();
                    // An unpaid exit charged no fare: the journey closes without one (its
                    // tap-in hold stands, as for a journey closed at the maximum fare).
                    let fare = unpaid_why.is_none().then_some(amount);
                    st.journal
                        .run(move |j| {
                            j.close_journey(jy.id, JourneyState::Closed, Some(&p), fare, at)
                        })
                        .await
                }
                None => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(e) = journey_result {
            // A tap-in hold left without a journey is found and refunded by the reconciler
            // (the passenger, with no journey, pays the unknown-entry fare at the exit).
            tracing::error!(lane = %self.cfg.name, fare_ref = %partner_ref, error = %e,
                "journey update failed; a hold without a journey is refunded by the reconciler");
        }
        // A reply that came (even an unclear one) leaves nothing to wait for; after a missed
        // deadline the reply may still come, so the reconciler waits for it first.
        let retry_at = if timed_out {
            st.now_ms().saturating_add(self.late_reply_window_ms())
        } else {
            st.now_ms()
        };
        if let Err(e) =
            record::apply(st, &partner_ref, learned, Some(opened), amount, retry_at).await
        {
            // The row stays as it was: the reconciler resolves it by query.
            tracing::error!(lane = %self.cfg.name, fare_ref = %partner_ref, error = %e,
                "journal write after the payment failed; the reconciler will resolve it");
        }
        r.timings.settle_us = micros(t);
        r.timings.total_us = micros(started);

        if timed_out {
            let st2 = st.clone();
            let lane = self.cfg.name.clone();
            let handle = tokio::spawn(async move {
                if let Ok(late) = rx.await {
                    record_late_reply(&st2, &lane, &partner_ref, opened, amount, &late).await;
                }
            });
            st.inflight.lock().await.push(handle);
        }
        r
    }

    /// How long after the decision a late reply may still arrive: the reconciler leaves the
    /// operation alone until then.
    fn late_reply_window_ms(&self) -> i64 {
        let a = &self.station.config.aggregator;
        i64::try_from(a.request_timeout_ms.saturating_add(1000)).unwrap_or(i64::MAX)
    }

    fn journal_down(&self, mut r: TapReport, why: &str, started: Instant) -> TapReport {
        r.outcome = TapOutcome::JournalUnavailable;
        r.opened = false;
        r.message = format!("journal unavailable, taps refused until it recovers: {why}");
        r.timings.total_us = micros(started);
        r
    }
}

/// Journals a payment reply that arrived after the gate had decided.
async fn record_late_reply(
    st: &Station,
    lane: &str,
    partner_ref: &str,
    opened: bool,
    amount: crate::fare::Rupiah,
    o: &PayOutcome,
) {
    if let PayOutcome::Success {
        amount_mismatch: Some(m),
        ..
    } = o
    {
        report_amount_mismatch(st, "payment", partner_ref, m);
    }
    let mut learned = learned_from(o);
    if learned.result == PayResult::Unknown {
        // Still unknown: the reconciler resolves it by query.
        return;
    }
    learned.reason = format!("late reply: {}", learned.reason);
    let code = learned.response_code.clone();
    match record::apply(st, partner_ref, learned, Some(opened), amount, st.now_ms()).await {
        Ok(row) => tracing::info!(
            target: "tapgate::fare",
            lane,
            fare_ref = partner_ref,
            state = row.as_ref().map_or("-", |r| r.state.as_str()),
            response_code = code.as_deref().unwrap_or("-"),
            "late payment reply journaled"
        ),
        Err(e) => tracing::error!(lane, fare_ref = partner_ref, error = %e,
            "journal write of a late reply failed; the reconciler will resolve it"),
    }
}

/// The error log line and the metric of an answer that named another amount than the
/// payment's: the journal records it as ATTENTION with both amounts.
pub fn report_amount_mismatch(
    st: &Station,
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

/// Maps an aggregator outcome onto the policy's view.
pub fn pay_result(o: &PayOutcome) -> PayResult {
    match o {
        PayOutcome::Success { .. } => PayResult::Success,
        PayOutcome::Declined { .. } => PayResult::Declined,
        PayOutcome::Refused { .. } => PayResult::Refused,
        PayOutcome::Unknown { .. } => PayResult::Unknown,
    }
}

/// What a payment reply teaches the journal.
pub fn learned_from(o: &PayOutcome) -> Learned {
    let (reference_no, response_code, reason) = match o {
        PayOutcome::Success {
            reference_no,
            response_code,
            ..
        } => (
            reference_no.clone(),
            Some(response_code.clone()),
            "paid".to_string(),
        ),
        PayOutcome::Declined {
            response_code,
            message,
        } => (
            None,
            Some(response_code.clone()),
            format!("declined by issuer: {message}"),
        ),
        PayOutcome::Refused {
            response_code,
            message,
            why,
        } => (
            None,
            response_code.clone(),
            format!("refused ({}): {message}", why.as_str()),
        ),
        PayOutcome::Unknown {
            response_code,
            reason,
        } => (
            None,
            response_code.clone(),
            format!("outcome unknown, resolved by query: {reason}"),
        ),
    };
    let amount_mismatch = match o {
        PayOutcome::Success {
            amount_mismatch: Some(m),
            ..
        } => Some(m.to_string()),
        _ => None,
    };
    Learned {
        result: pay_result(o),
        reference_no,
        response_code,
        reason,
        amount_mismatch,
    }
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

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
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
