//! How a payment result is written to the journal: the one place that turns "what we learned"
//! (at the decision, from a late reply, or from the reconciler's query) into transitions the
//! journal's state machine accepts.

use super::outcome::PayOutcome;
use crate::fare::policy::PayResult;
use crate::fare::{OpState, Rupiah};
use crate::journal::Transition;

/// What was learned about a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    /// The result class.
    pub result: PayResult,
    /// The aggregator's `referenceNo`, when it gave one.
    pub reference_no: Option<String>,
    /// The `responseCode`, when one came.
    pub response_code: Option<String>,
    /// Why, for the journal's event log.
    pub reason: String,
    /// The answer reported another amount than the payment's (see
    /// the aggregator client's amount check): a success still, but recorded as ATTENTION.
    pub amount_mismatch: Option<String>,
}

/// The transitions recording `learned` for an operation of `amount` whose gate outcome is
/// `gate_opened` (`None`: never recorded, counts as not opened). `retry_at_ms` is when the
/// reconciler may next look at an operation left uncertain.
pub fn plan_transitions(
    learned: &Learned,
    gate_opened: Option<bool>,
    amount: Rupiah,
    at_ms: i64,
    retry_at_ms: i64,
) -> Vec<Transition> {
    let opened = gate_opened.unwrap_or(false);
    let base = |to| Transition {
        response_code: learned.response_code.clone(),
        gate_opened: Some(opened),
        reason: Some(learned.reason.clone()),
        ..Transition::new(to, at_ms)
    };
    match (learned.result, &learned.reference_no) {
        // A success is a success (the gate followed it), but an answer naming another amount
        // than the one journaled is a person's case: ATTENTION with both amounts, and with the
        // refund owed when the gate did not open.
        (PayResult::Success, Some(reference)) if learned.amount_mismatch.is_some() => {
            let mismatch = learned.amount_mismatch.as_deref().unwrap_or_default();
            let refund = if opened {
                ""
            } else {
                "; gate did not open: refund owed"
            };
            vec![Transition {
                reference_no: Some(reference.clone()),
                reason: Some(format!("{mismatch}; {}{refund}", learned.reason)),
                ..base(OpState::Attention)
            }]
        }
        (PayResult::Success, Some(reference)) => {
            let paid = Transition {
                reference_no: Some(reference.clone()),
                ..base(OpState::Succeeded)
            };
            if opened {
                vec![paid]
            } else {
                let refund = Transition {
                    refund_amount: Some(amount),
                    reason: Some(format!(
                        "{}; gate did not open: refund owed",
                        learned.reason
                    )),
                    next_attempt_at_ms: Some(at_ms),
                    gate_opened: None,
                    ..Transition::new(OpState::RefundPending, at_ms)
                };
                vec![paid, refund]
            }
        }
        (PayResult::Success, None) => vec![Transition {
            reason: Some(format!(
                "{}; paid but no referenceNo given: query for it",
                learned.reason
            )),
            next_attempt_at_ms: Some(at_ms),
            ..base(OpState::Unknown)
        }],
        (PayResult::Declined | PayResult::Refused, _) => vec![base(OpState::Declined)],
        (PayResult::Unknown, _) => vec![Transition {
            next_attempt_at_ms: Some(retry_at_ms),
            ..base(OpState::Unknown)
        }],
    }
}

/// How long after its timeout a payment's reply is still waited for: the margin between the
/// HTTP client giving up and the reconciler taking the operation over. One value for the lane
/// (which marks its row as its own until then) and the reconciler (which leaves it alone until
/// then), so neither can query a payment whose reply the other is still waiting for.
pub const LATE_REPLY_MARGIN_MS: u64 = 2_000;

/// How long a `PENDING` operation belongs to the tap that began it: its decision deadline,
/// then the rest of the request's time, then [`LATE_REPLY_MARGIN_MS`].
pub fn in_flight_window_ms(decision_deadline_ms: u64, request_timeout_ms: u64) -> i64 {
    i64::try_from(
        decision_deadline_ms
            .saturating_add(request_timeout_ms)
            .saturating_add(LATE_REPLY_MARGIN_MS),
    )
    .unwrap_or(i64::MAX)
}

/// After a missed decision deadline: how long the reply may still come.
pub fn late_reply_window_ms(request_timeout_ms: u64) -> i64 {
    i64::try_from(request_timeout_ms.saturating_add(LATE_REPLY_MARGIN_MS)).unwrap_or(i64::MAX)
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

/// The transitions recording a reply that came after the gate had decided (`opened`), or
/// `None` when it is still unclear: the reconciler resolves that one by query.
pub fn late_reply_transitions(
    o: &PayOutcome,
    opened: bool,
    amount: Rupiah,
    at_ms: i64,
) -> Option<Vec<Transition>> {
    let mut learned = learned_from(o);
    if learned.result == PayResult::Unknown {
        return None;
    }
    learned.reason = format!("late reply: {}", learned.reason);
    Some(plan_transitions(
        &learned,
        Some(opened),
        amount,
        at_ms,
        at_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(result: PayResult, reference: Option<&str>) -> Learned {
        Learned {
            result,
            reference_no: reference.map(str::to_string),
            response_code: Some("2006000".into()),
            reason: "test".into(),
            amount_mismatch: None,
        }
    }

    #[test]
    fn a_success_naming_another_amount_is_attention_with_both_amounts() {
        for gate in [Some(true), Some(false), None] {
            let mut l = learned(PayResult::Success, Some("R1"));
            l.amount_mismatch = Some(
                "amount mismatch: asked Rp9,000 (9000.00), the aggregator reported 999999.00 IDR"
                    .into(),
            );
            let t = plan_transitions(&l, gate, Rupiah(9000), 1, 2);
            assert_eq!(t.len(), 1, "{gate:?}");
            assert_eq!(t[0].to, OpState::Attention);
            assert_eq!(t[0].reference_no.as_deref(), Some("R1"));
            assert_eq!(t[0].gate_opened, Some(gate == Some(true)));
            let reason = t[0].reason.as_deref().unwrap();
            assert!(
                reason.contains("9000.00") && reason.contains("999999.00"),
                "{reason}"
            );
            assert_eq!(
                reason.contains("refund owed"),
                gate != Some(true),
                "{reason}"
            );
        }
    }

    #[test]
    fn success_with_open_gate_is_one_step() {
        let t = plan_transitions(
            &learned(PayResult::Success, Some("R1")),
            Some(true),
            Rupiah(9000),
            1,
            2,
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].to, OpState::Succeeded);
        assert_eq!(t[0].gate_opened, Some(true));
    }

    #[test]
    fn success_without_open_gate_owes_a_refund() {
        for gate in [Some(false), None] {
            let t = plan_transitions(
                &learned(PayResult::Success, Some("R1")),
                gate,
                Rupiah(9000),
                1,
                2,
            );
            let states: Vec<_> = t.iter().map(|t| t.to).collect();
            assert_eq!(states, vec![OpState::Succeeded, OpState::RefundPending]);
            assert_eq!(t[0].gate_opened, Some(false));
            assert_eq!(t[1].refund_amount, Some(Rupiah(9000)));
        }
    }

    #[test]
    fn success_without_reference_is_resolved_by_query() {
        let t = plan_transitions(
            &learned(PayResult::Success, None),
            Some(true),
            Rupiah(9000),
            1,
            2,
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].to, OpState::Unknown);
        assert_eq!(t[0].gate_opened, Some(true));
    }

    #[test]
    fn unknown_waits_until_retry_time() {
        let t = plan_transitions(
            &learned(PayResult::Unknown, None),
            Some(false),
            Rupiah(1),
            1,
            99,
        );
        assert_eq!(t[0].to, OpState::Unknown);
        assert_eq!(t[0].next_attempt_at_ms, Some(99));
        let d = plan_transitions(
            &learned(PayResult::Declined, None),
            Some(false),
            Rupiah(1),
            1,
            99,
        );
        assert_eq!(d[0].to, OpState::Declined);
    }

    /// The one rule: what the journal records for a result depends on whether the gate
    /// opened, and nothing else decides it (the policy's verdict carries no state).
    #[test]
    fn late_success_without_an_open_gate_is_refunded() {
        let last = |result, gate| {
            plan_transitions(&learned(result, Some("R1")), gate, Rupiah(9000), 1, 2)
                .last()
                .map(|t| t.to)
        };
        assert_eq!(
            last(PayResult::Success, Some(false)),
            Some(OpState::RefundPending)
        );
        assert_eq!(last(PayResult::Success, None), Some(OpState::RefundPending));
        assert_eq!(
            last(PayResult::Success, Some(true)),
            Some(OpState::Succeeded)
        );
        assert_eq!(
            last(PayResult::Declined, Some(true)),
            Some(OpState::Declined)
        );
        assert_eq!(
            last(PayResult::Refused, Some(true)),
            Some(OpState::Declined)
        );
        assert_eq!(last(PayResult::Unknown, None), Some(OpState::Unknown));
    }
}
