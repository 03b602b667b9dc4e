//! One QR sale at a lane: journaled, generated, shown, polled, then opened or withdrawn
//! (see [`super`] for the whole story). The decisions are pure functions ([`seen`],
//! [`withdrawal`], [`after_generate`]); [`run`] carries them out.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use super::QrDesk;
use crate::aggregator::mpm::{GenerateOutcome, QrRequest};
use crate::aggregator::{check_amount, AmountMismatch, QueryOutcome, TxStatus};
use crate::fare::policy::{PayResult, TapOutcome};
use crate::fare::{Direction, OpState, Rupiah};
use crate::flow::settle::plan_transitions;
use crate::flow::{Learned, TapReport};
use crate::journal::{NewOp, OpKind, Transition, MPM_PAYER};

/// After the QR's validity ends the gate asks once more, this much later: a payment made in
/// the last second still opens the gate.
pub const LAST_LOOK_AFTER: Duration = Duration::from_secs(1);

/// What the reconciler leaves a sale beyond its last look's answer, for the relay and the
/// journal write.
pub const HANDS_OFF_MARGIN: Duration = Duration::from_secs(5);

/// Why a QR left the screen unpaid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawn {
    /// Its validity ended.
    Expired,
    /// The passenger cancelled on the screen.
    Cancelled,
    /// A tap opened the lane's gate: the passenger at the gate is not the one the QR waited
    /// for, or paid by tapping after all.
    Tapped,
    /// The daemon is stopping.
    ShuttingDown,
    /// The aggregator reports the QR over (failed, cancelled, unknown) before it was paid.
    Over,
}

impl Withdrawn {
    /// Spelling for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Withdrawn::Expired => "expired",
            Withdrawn::Cancelled => "cancelled",
            Withdrawn::Tapped => "tapped",
            Withdrawn::ShuttingDown => "shutting_down",
            Withdrawn::Over => "over",
        }
    }
}

/// What one query says of a QR on screen. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Paid: open (unless the amount is another).
    Paid {
        /// The aggregator's `referenceNo`, when the answer gave it.
        reference_no: Option<String>,
        /// The `responseCode`.
        response_code: String,
        /// Another amount than the fare was reported.
        mismatch: Option<AmountMismatch>,
    },
    /// Not paid yet, or no usable answer: ask again.
    NotYet,
    /// Over without payment (`05`, `06`, `07`), or refunded (`04`): never going to open.
    Over(TxStatus),
}

/// Reads a query answer about a QR of `fare`. Pure.
pub fn seen(q: &QueryOutcome, fare: Rupiah) -> Seen {
    match q {
        QueryOutcome::Status {
            status: TxStatus::Success,
            reference_no,
            response_code,
            amount,
        } => Seen::Paid {
            reference_no: reference_no.clone(),
            response_code: response_code.clone(),
            mismatch: check_amount(fare, amount.as_ref()),
        },
        QueryOutcome::Status { status, .. } if status.is_final() => Seen::Over(*status),
        // Pending, a QR the aggregator does not know yet, or no answer: the next poll.
        _ => Seen::NotYet,
    }
}

/// The transition that withdraws a QR: the gate will not open for it, and the reconciler
/// asks at once (it stays UNKNOWN until the aggregator says unpaid, or paid: then refunded).
/// Pure.
pub fn withdrawal(why: Withdrawn, now_ms: i64) -> Transition {
    Transition {
        gate_opened: Some(false),
        next_attempt_at_ms: Some(now_ms),
        reason: Some(format!(
            "QR withdrawn ({}): the gate will not open for it; a payment still made is refunded",
            why.as_str()
        )),
        ..Transition::new(OpState::Unknown, now_ms)
    }
}

/// The transitions a generate answer leads to, and whether the QR may be shown. Pure.
pub fn after_generate(g: &GenerateOutcome, shown_until: &str, now_ms: i64) -> Vec<Transition> {
    match g {
        GenerateOutcome::Generated {
            reference_no,
            response_code,
            ..
        } => vec![Transition {
            reference_no: Some(reference_no.clone()),
            response_code: Some(response_code.clone()),
            reason: Some(format!("QR shown until {shown_until}")),
            ..Transition::new(OpState::Unknown, now_ms)
        }],
        GenerateOutcome::Refused {
            response_code,
            message,
        } => vec![Transition {
            response_code: response_code.clone(),
            gate_opened: Some(false),
            reason: Some(format!("generate refused: {message}")),
            ..Transition::new(OpState::Declined, now_ms)
        }],
        GenerateOutcome::Unknown {
            response_code,
            reason,
        } => vec![Transition {
            response_code: response_code.clone(),
            gate_opened: Some(false),
            next_attempt_at_ms: Some(now_ms),
            reason: Some(format!(
                "generate unanswered ({reason}): no QR was shown; query it to its end"
            )),
            ..Transition::new(OpState::Unknown, now_ms)
        }],
    }
}

/// A QR sale's `partnerReferenceNo`: a tap's form with `TQ` in place of `TG`, so that a
/// person reading the journal tells the two apart.
pub fn new_qr_reference(station: &str, lane: &str, now: &jiff::Zoned) -> String {
    let tap = crate::daemon::lane::new_partner_reference(station, lane, now);
    format!("TQ{}", tap.get(2..).unwrap_or_default())
}

/// The journal's passenger key of a QR sale: the gate never learns who paid, so each sale is
/// its own passenger (no journey, no anti-passback, no unpaid list).
fn payer_key(partner_ref: &str) -> String {
    hex::encode(Sha256::digest(format!("mpm:{partner_ref}").as_bytes()))
}

/// How the sale ended.
#[derive(Debug)]
enum End {
    Paid {
        opened: bool,
        response_code: String,
        mismatch: Option<AmountMismatch>,
    },
    Withdrawn(Withdrawn),
    Refused(String, Option<String>),
    Unanswered(String),
    Journal(String),
}

/// What one sale is: where, which way, for how much, under which reference.
struct Sale<'a> {
    lane: &'a str,
    direction: Direction,
    fare: Rupiah,
    pref: &'a str,
}

/// Runs one sale of `fare` at `lane` until it is paid, expires or is withdrawn through
/// `withdraw`. Every end is journaled, logged and shown.
pub async fn run(
    desk: &QrDesk,
    lane: &str,
    direction: Direction,
    fare: Rupiah,
    mut withdraw: watch::Receiver<Option<Withdrawn>>,
) {
    let st = &desk.station;
    let started = Instant::now();
    let now = st.clock.now();
    let pref = new_qr_reference(&st.config.station.id, lane, &now);
    let wake = desk.register(&pref);
    let sale = Sale {
        lane,
        direction,
        fare,
        pref: &pref,
    };
    let end = sell(desk, &sale, &now, &wake, &mut withdraw).await;
    desk.unregister(&pref);
    finish(desk, &sale, &end, started.elapsed());
}

async fn sell(
    desk: &QrDesk,
    sale: &Sale<'_>,
    now: &jiff::Zoned,
    wake: &tokio::sync::Notify,
    withdraw: &mut watch::Receiver<Option<Withdrawn>>,
) -> End {
    let Sale {
        lane,
        direction,
        fare,
        pref,
    } = *sale;
    let st = &desk.station;
    let validity = Duration::from_secs(desk.cfg.validity_seconds);
    let Ok(valid_until) = now.checked_add(validity) else {
        return End::Refused("the QR's validity is out of range".into(), None);
    };
    let Some(qr) = st.ports.qr.clone() else {
        return End::Refused("no QRIS MPM endpoints".into(), None);
    };
    let now_ms = now.timestamp().as_millisecond();
    // The QR is payable until `valid_until`, counted from now: the sale's last look is then,
    // whatever the generate took.
    let last_look = Instant::now() + validity + LAST_LOOK_AFTER;
    // The reconciler keeps off while the sale may still be asking: past the last look, its
    // answer (a token renewal and two attempts at most) and the journal write.
    let hands_off = validity
        + LAST_LOOK_AFTER
        + 3 * Duration::from_millis(st.config.aggregator.request_timeout_ms)
        + HANDS_OFF_MARGIN;
    let op = NewOp {
        partner_reference_no: pref.to_string(),
        kind: OpKind::Settle,
        lane: lane.to_string(),
        direction,
        station_id: st.config.station.id.clone(),
        amount: fare,
        pan_key: payer_key(pref),
        pan_masked: MPM_PAYER.into(),
        nns: MPM_PAYER.into(),
        journey_id: None,
        next_attempt_at_ms: now_ms
            .saturating_add(i64::try_from(hands_off.as_millis()).unwrap_or(i64::MAX / 2)),
        created_at_ms: now_ms,
    };
    if let Err(e) = st.ports.ops.begin_qr(op).await {
        return End::Journal(e.to_string());
    }
    let g = qr
        .generate(&QrRequest {
            partner_reference_no: pref.to_string(),
            amount: fare,
            valid_until: valid_until.clone(),
            note: format!("{} {lane}", st.config.station.id),
            callback_url: desk.cfg.callback_url.clone(),
        })
        .await;
    let shown_until = valid_until.strftime("%H:%M:%S").to_string();
    let record = st
        .ports
        .ops
        .record(
            pref.to_string(),
            after_generate(&g, &shown_until, st.now_ms()),
        )
        .await;
    let (reference_no, qr_content) = match (g, record) {
        (_, Err(e)) => return End::Journal(e.to_string()),
        (
            GenerateOutcome::Generated {
                reference_no,
                qr_content,
                ..
            },
            Ok(_),
        ) => (reference_no, qr_content),
        (
            GenerateOutcome::Refused {
                message,
                response_code,
            },
            Ok(_),
        ) => return End::Refused(message, response_code),
        (GenerateOutcome::Unknown { reason, .. }, Ok(_)) => return End::Unanswered(reason),
    };
    let screen = match desk
        .hub
        .show_qr(lane, &qr_content, fare, valid_until.timestamp())
    {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(target: "tapgate::qr", lane, fare_ref = pref, error = %e,
                "the QR cannot be shown");
            return withdrawn(desk, pref, Withdrawn::Over).await;
        }
    };
    let paid = wait_for_payment(desk, pref, &reference_no, fare, last_look, wake, withdraw).await;
    desk.hub.clear(lane, screen);
    match paid {
        Ok(p) => open(desk, lane, fare, pref, &reference_no, p).await,
        Err(why) => withdrawn(desk, pref, why).await,
    }
}

/// Asks every `poll_ms`, at once on a notification, and once after the validity ended; until
/// paid (`Ok`) or withdrawn (`Err`).
async fn wait_for_payment(
    desk: &QrDesk,
    pref: &str,
    reference_no: &str,
    fare: Rupiah,
    last_look: Instant,
    wake: &tokio::sync::Notify,
    withdraw: &mut watch::Receiver<Option<Withdrawn>>,
) -> Result<Seen, Withdrawn> {
    let st = &desk.station;
    let Some(qr) = st.ports.qr.clone() else {
        return Err(Withdrawn::Over);
    };
    let poll = Duration::from_millis(desk.cfg.poll_ms);
    loop {
        let next = (Instant::now() + poll).min(last_look);
        let last = tokio::select! {
            _ = tokio::time::sleep_until(next) => next >= last_look,
            _ = wake.notified() => false,
            changed = withdraw.changed() => {
                let why = *withdraw.borrow();
                match (changed, why) {
                    (_, Some(why)) => return Err(why),
                    (Err(_), None) => return Err(Withdrawn::ShuttingDown),
                    (Ok(()), None) => false,
                }
            }
        };
        let q = qr.query(pref, Some(reference_no)).await;
        st.metrics.inc(
            "tapgate_aggregator_requests_total",
            &[
                ("endpoint", "qr_query"),
                ("code", q.code().unwrap_or("no_answer")),
            ],
        );
        match seen(&q, fare) {
            p @ Seen::Paid { .. } => return Ok(p),
            Seen::Over(_) => return Err(Withdrawn::Over),
            Seen::NotYet if last => return Err(Withdrawn::Expired),
            Seen::NotYet => {}
        }
    }
}

/// Paid: the gate opens (unless the amount is another), and the journal says so.
async fn open(
    desk: &QrDesk,
    lane: &str,
    fare: Rupiah,
    pref: &str,
    reference: &str,
    paid: Seen,
) -> End {
    let st = &desk.station;
    let Seen::Paid {
        reference_no,
        response_code,
        mismatch,
    } = paid
    else {
        return withdrawn(desk, pref, Withdrawn::Over).await;
    };
    let opened = if mismatch.is_some() {
        false
    } else {
        match desk
            .relays
            .get(lane)
            .map(|r| st.open_gate(lane, r.as_ref()))
        {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::error!(target: "tapgate::qr", lane, fare_ref = pref, error = %e,
                    "relay failed: gate not opened for a paid QR; it is refunded");
                false
            }
            None => false,
        }
    };
    let learned = Learned {
        result: PayResult::Success,
        reference_no: reference_no.or_else(|| Some(reference.to_string())),
        response_code: Some(response_code.clone()),
        reason: "QR paid".into(),
        amount_mismatch: mismatch.as_ref().map(ToString::to_string),
    };
    let now = st.now_ms();
    let ts = plan_transitions(&learned, Some(opened), fare, now, now);
    if let Err(e) = st.ports.ops.record(pref.to_string(), ts).await {
        tracing::error!(target: "tapgate::qr", lane, fare_ref = pref, error = %e,
            "journal write after a paid QR failed; the reconciler will resolve it");
    }
    End::Paid {
        opened,
        response_code,
        mismatch,
    }
}

async fn withdrawn(desk: &QrDesk, pref: &str, why: Withdrawn) -> End {
    let st = &desk.station;
    match st
        .ports
        .ops
        .record(pref.to_string(), vec![withdrawal(why, st.now_ms())])
        .await
    {
        Ok(_) => End::Withdrawn(why),
        Err(e) => End::Journal(e.to_string()),
    }
}

/// The sale's one log line, its metric, and the passenger's screen.
fn finish(desk: &QrDesk, sale: &Sale<'_>, end: &End, took: Duration) {
    let Sale {
        lane,
        direction,
        fare,
        pref,
    } = *sale;
    let st = &desk.station;
    let (outcome, screen) = match end {
        End::Paid { opened: true, .. } => ("paid", Some(TapOutcome::Approved)),
        End::Paid { .. } => ("paid_not_opened", Some(TapOutcome::Refused)),
        End::Withdrawn(w) => (w.as_str(), None),
        End::Refused(..) => ("refused", Some(TapOutcome::Refused)),
        End::Unanswered(_) => ("unanswered", Some(TapOutcome::TryAgain)),
        End::Journal(_) => ("journal_unavailable", Some(TapOutcome::JournalUnavailable)),
    };
    st.metrics.inc(
        "tapgate_qr_sales_total",
        &[("lane", lane), ("outcome", outcome)],
    );
    let detail = match end {
        End::Paid {
            opened,
            response_code,
            mismatch,
        } => match mismatch {
            Some(m) => format!("{m}: gate kept shut, ATTENTION ({response_code})"),
            None if *opened => format!("paid ({response_code}): gate opened"),
            None => format!("paid ({response_code}): gate did not open, refund owed"),
        },
        End::Withdrawn(w) => format!(
            "QR withdrawn ({}): the reconciler settles it; a payment still made is refunded",
            w.as_str()
        ),
        End::Refused(m, code) => {
            format!("generate refused ({}): {m}", code.as_deref().unwrap_or("-"))
        }
        End::Unanswered(r) => format!("generate unanswered: {r}; no QR shown"),
        End::Journal(e) => format!("journal: {e}"),
    };
    let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    if matches!(end, End::Journal(_) | End::Refused(..)) {
        tracing::error!(target: "tapgate::qr", lane, fare_ref = pref, outcome,
            amount = fare.0, took_ms, "QR sale {outcome}: {detail}");
    } else {
        tracing::info!(target: "tapgate::qr", lane, fare_ref = pref, outcome,
            amount = fare.0, took_ms, "QR sale {outcome}: {detail}");
    }
    if let Some(o) = screen {
        let mut r = TapReport::refused(lane, direction, o, detail);
        r.opened = o == TapOutcome::Approved;
        r.amount = Some(fare.0);
        r.partner_reference_no = Some(pref.to_string());
        desk.hub.publish(&r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::Amount;

    fn status(s: TxStatus, amount: u64) -> QueryOutcome {
        QueryOutcome::Status {
            status: s,
            reference_no: Some("R1".into()),
            response_code: "2005100".into(),
            amount: Some(Amount::idr(Rupiah(amount))),
        }
    }

    #[test]
    fn only_a_success_of_the_fare_opens_and_only_a_final_status_ends_the_wait() {
        assert!(matches!(
            seen(&status(TxStatus::Success, 14_000), Rupiah(14_000)),
            Seen::Paid { mismatch: None, .. }
        ));
        assert!(matches!(
            seen(&status(TxStatus::Success, 13_000), Rupiah(14_000)),
            Seen::Paid {
                mismatch: Some(_),
                ..
            }
        ));
        for s in [TxStatus::Pending, TxStatus::Initiated, TxStatus::Paying] {
            assert_eq!(seen(&status(s, 14_000), Rupiah(14_000)), Seen::NotYet);
        }
        for s in [
            TxStatus::Failed,
            TxStatus::Cancelled,
            TxStatus::NotFound,
            TxStatus::Refunded,
        ] {
            assert_eq!(seen(&status(s, 14_000), Rupiah(14_000)), Seen::Over(s));
        }
        for q in [
            QueryOutcome::Unavailable {
                reason: "timeout".into(),
            },
            QueryOutcome::NotFound {
                response_code: "4045101".into(),
            },
            QueryOutcome::Refused {
                response_code: None,
                message: "x".into(),
            },
        ] {
            assert_eq!(seen(&q, Rupiah(14_000)), Seen::NotYet);
        }
    }

    #[test]
    fn a_withdrawn_qr_is_never_opened_for_and_is_queried_at_once() {
        let t = withdrawal(Withdrawn::Expired, 5);
        assert_eq!(
            (t.to, t.gate_opened, t.next_attempt_at_ms),
            (OpState::Unknown, Some(false), Some(5))
        );
    }

    #[test]
    fn a_refused_generate_is_final_and_an_unanswered_one_is_queried() {
        let refused = after_generate(
            &GenerateOutcome::Refused {
                response_code: Some("4034701".into()),
                message: "no".into(),
            },
            "10:00:00",
            1,
        );
        assert_eq!(refused[0].to, OpState::Declined);
        let unknown = after_generate(
            &GenerateOutcome::Unknown {
                response_code: None,
                reason: "timeout".into(),
            },
            "10:00:00",
            1,
        );
        assert_eq!(
            (unknown[0].to, unknown[0].gate_opened),
            (OpState::Unknown, Some(false))
        );
        let shown = after_generate(
            &GenerateOutcome::Generated {
                reference_no: "R1".into(),
                qr_content: "000201".into(),
                response_code: "2004700".into(),
            },
            "10:00:00",
            1,
        );
        assert_eq!(shown[0].reference_no.as_deref(), Some("R1"));
        assert_eq!(shown[0].gate_opened, None);
    }

    #[test]
    fn a_qr_reference_reads_tq_and_each_sale_is_its_own_payer() {
        let now: jiff::Zoned = "2026-12-02T13:00:00+07:00[Asia/Jakarta]"
            .parse()
            .expect("t");
        let r = new_qr_reference("BLM", "out-1", &now);
        assert!(r.starts_with("TQBLM"), "{r}");
        assert_ne!(payer_key("TQ1"), payer_key("TQ2"));
        assert_eq!(payer_key("TQ1").len(), 64);
    }
}
