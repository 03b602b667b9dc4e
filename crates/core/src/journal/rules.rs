//! The fare-operation state machine and the money rules on its fields: pure, no SQLite.

use std::fmt;

use super::model::{NewOp, OpKind, OpRow, Transition, MAX_REASON_CHARS};
use crate::fare::OpState;

/// Whether the state machine lets an operation move from `from` to `to`.
///
/// ```text
/// PENDING        -> UNKNOWN | SUCCEEDED | DECLINED | ATTENTION
/// UNKNOWN        -> UNKNOWN (another query) | SUCCEEDED | DECLINED | ATTENTION
/// SUCCEEDED      -> SUCCEEDED (record the gate outcome) | REFUND_PENDING (gate not opened)
/// REFUND_PENDING -> REFUND_PENDING (another try) | REFUNDED | ATTENTION
/// ATTENTION      -> UNKNOWN (query again) | REFUND_PENDING (refund again)
/// DECLINED, REFUNDED: nothing
/// ```
///
/// A late success goes through `SUCCEEDED` (with `gate_opened = false`) before
/// `REFUND_PENDING`, so the history shows that money moved. Nothing ever returns to `PENDING`:
/// a payment is never re-sent, since the `qrContent` is single-use.
pub fn allowed(from: OpState, to: OpState) -> bool {
    use OpState::*;
    matches!(
        (from, to),
        (Pending, Unknown | Succeeded | Declined | Attention)
            | (Unknown, Unknown | Succeeded | Declined | Attention)
            | (Succeeded, Succeeded | RefundPending)
            | (RefundPending, RefundPending | Refunded | Attention)
            | (Attention, Unknown | RefundPending)
    )
}

/// A money rule that a transition's fields break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `SUCCEEDED` and `REFUND_PENDING` need the aggregator's `referenceNo` (queries and
    /// refunds quote it).
    MissingReferenceNo,
    /// A `referenceNo` is already recorded and differs: at most one payment per reference.
    ReferenceNoChanged,
    /// The gate outcome is already recorded and differs: it is a physical fact.
    GateOutcomeChanged,
    /// The gate opened, so the passenger got what was paid for: no refund (checked for both
    /// `REFUND_PENDING` and `REFUNDED`), unless the payment is a hold that belongs to no
    /// journey, sent to refund as such ([`Transition::duplicate_hold`]).
    RefundAfterGateOpened,
    /// `REFUND_PENDING` needs the amount to refund.
    MissingRefundAmount,
    /// The refund is zero or larger than the operation's amount (checked for both
    /// `REFUND_PENDING` and `REFUNDED`).
    RefundAmountOutOfRange,
    /// `ATTENTION` needs a reason: a person must know what to look at.
    MissingReason,
    /// `SUCCEEDED -> SUCCEEDED` may only record the gate outcome.
    OnlyGateOutcome,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::MissingReferenceNo => "the aggregator's referenceNo is required",
            Rejection::ReferenceNoChanged => "a different referenceNo is already recorded",
            Rejection::GateOutcomeChanged => "a different gate outcome is already recorded",
            Rejection::RefundAfterGateOpened => "the gate opened, nothing to refund",
            Rejection::MissingRefundAmount => "the refund amount is required",
            Rejection::RefundAmountOutOfRange => "the refund amount must be 1..=amount",
            Rejection::MissingReason => "a reason is required",
            Rejection::OnlyGateOutcome => "a SUCCEEDED operation may only record its gate outcome",
        })
    }
}

/// Why [`apply`] refused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitionError {
    /// [`allowed`] says no.
    Illegal,
    /// Allowed, but the fields break a rule.
    Rejected(Rejection),
}

/// The row after `t`, or why `t` may not happen. Pure: the journal writes what this returns.
pub fn apply(cur: &OpRow, t: &Transition) -> Result<OpRow, TransitionError> {
    use TransitionError::Rejected as R;
    if !allowed(cur.state, t.to) {
        return Err(TransitionError::Illegal);
    }
    if let (Some(old), Some(new)) = (&cur.reference_no, &t.reference_no) {
        if old != new {
            return Err(R(Rejection::ReferenceNoChanged));
        }
    }
    if let (Some(old), Some(new)) = (cur.gate_opened, t.gate_opened) {
        if old != new {
            return Err(R(Rejection::GateOutcomeChanged));
        }
    }
    if cur.state == OpState::Succeeded
        && t.to == OpState::Succeeded
        && (t.response_code.is_some()
            || t.reason.is_some()
            || t.refund_no.is_some()
            || t.refund_amount.is_some())
    {
        return Err(R(Rejection::OnlyGateOutcome));
    }

    let mut next = cur.clone();
    next.state = t.to;
    set(&mut next.reference_no, &t.reference_no);
    set(&mut next.response_code, &t.response_code);
    set(&mut next.refund_no, &t.refund_no);
    if let Some(g) = t.gate_opened {
        next.gate_opened = Some(g);
    }
    if let Some(r) = &t.reason {
        next.reason = Some(r.chars().take(MAX_REASON_CHARS).collect());
    }
    if let Some(at) = t.next_attempt_at_ms {
        next.next_attempt_at_ms = Some(at);
    }
    if let Some(a) = t.refund_amount {
        next.refund_amount = Some(a);
    }
    // A person sent it back from ATTENTION: it gets a fresh set of attempts.
    if cur.state == OpState::Attention && t.to != OpState::Attention {
        next.attempts = 0;
    }
    if t.bump_attempts {
        next.attempts = next.attempts.saturating_add(1);
    }
    next.updated_at_ms = t.at_ms;

    let has_reference = next.reference_no.as_deref().is_some_and(|r| !r.is_empty());
    match t.to {
        OpState::Succeeded if !has_reference => return Err(R(Rejection::MissingReferenceNo)),
        OpState::RefundPending | OpState::Refunded => {
            if !has_reference {
                return Err(R(Rejection::MissingReferenceNo));
            }
            // A hold with no journey is refunded although its gate opened (see
            // `Transition::duplicate_hold`); once admitted, its refund runs its course.
            let duplicate_hold = (t.duplicate_hold
                && cur.kind == OpKind::Hold
                && cur.journey_id.is_none()
                && matches!(cur.state, OpState::Succeeded | OpState::Attention))
                || (t.line_correction
                    && matches!(cur.state, OpState::Succeeded | OpState::Attention))
                || (cur.state == OpState::RefundPending && cur.gate_opened == Some(true));
            if next.gate_opened == Some(true) && !duplicate_hold {
                return Err(R(Rejection::RefundAfterGateOpened));
            }
            match next.refund_amount {
                None => return Err(R(Rejection::MissingRefundAmount)),
                Some(a) if a.0 == 0 || a > next.amount => {
                    return Err(R(Rejection::RefundAmountOutOfRange))
                }
                Some(_) => {}
            }
        }
        OpState::Attention if !matches!(next.reason.as_deref(), Some(r) if !r.trim().is_empty()) => {
            return Err(R(Rejection::MissingReason))
        }
        _ => {}
    }
    Ok(next)
}

fn set(field: &mut Option<String>, new: &Option<String>) {
    if let Some(v) = new {
        *field = Some(v.clone());
    }
}

/// What changed between two rows, as `key=value` pairs for the events table. Never includes
/// PAN material (it cannot change anyway).
pub fn describe_change(before: &OpRow, after: &OpRow) -> String {
    let mut parts: Vec<String> = Vec::new();
    if before.reference_no != after.reference_no {
        parts.push(format!("reference_no={}", opt(&after.reference_no)));
    }
    if before.response_code != after.response_code {
        parts.push(format!("response_code={}", opt(&after.response_code)));
    }
    if before.gate_opened != after.gate_opened {
        let g = match after.gate_opened {
            Some(true) => "1",
            Some(false) => "0",
            None => "-",
        };
        parts.push(format!("gate_opened={g}"));
    }
    if before.attempts != after.attempts {
        parts.push(format!("attempts={}", after.attempts));
    }
    if before.next_attempt_at_ms != after.next_attempt_at_ms {
        if let Some(n) = after.next_attempt_at_ms {
            parts.push(format!("next_attempt_at_ms={n}"));
        }
    }
    if before.refund_amount != after.refund_amount {
        if let Some(a) = after.refund_amount {
            parts.push(format!("refund_amount={}", a.0));
        }
    }
    if before.refund_no != after.refund_no {
        parts.push(format!("refund_no={}", opt(&after.refund_no)));
    }
    if before.reason != after.reason {
        parts.push(format!(
            "reason={:?}",
            after.reason.as_deref().unwrap_or("")
        ));
    }
    parts.join(" ")
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Longest `partnerReferenceNo` SNAP accepts.
pub const MAX_PARTNER_REF_LEN: usize = 64;

/// Checks a new operation before anything is written. Pure.
pub fn validate_new(op: &NewOp) -> Result<(), (&'static str, &'static str)> {
    let r = &op.partner_reference_no;
    if r.is_empty() || r.len() > MAX_PARTNER_REF_LEN {
        return Err(("partner_reference_no", "must be 1 to 64 characters"));
    }
    if !r.bytes().all(|b| b.is_ascii_graphic()) {
        return Err((
            "partner_reference_no",
            "must be printable ASCII without spaces",
        ));
    }
    for (name, v) in [
        ("lane", &op.lane),
        ("station_id", &op.station_id),
        ("nns", &op.nns),
    ] {
        if v.trim().is_empty() || v.len() > 64 {
            return Err((name, "must be 1 to 64 characters"));
        }
    }
    if op.amount.0 == 0 {
        return Err(("amount", "must not be zero"));
    }
    if i64::try_from(op.amount.0).is_err() {
        return Err(("amount", "too large"));
    }
    if op.pan_key.is_empty()
        || op.pan_key.len() > 128
        || !op.pan_key.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(("pan_key", "must be a hex digest"));
    }
    let digits = op.pan_masked.bytes().filter(u8::is_ascii_digit).count();
    if digits > 12 {
        return Err((
            "pan_masked",
            "holds more than 12 digits: looks like a full PAN, which must never be stored",
        ));
    }
    if op.pan_masked.len() > 32 {
        return Err(("pan_masked", "longer than any masked PAN"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fare::{Direction, Rupiah};
    use crate::journal::model::OpKind;

    const ALL: [OpState; 7] = OpState::ALL;

    #[test]
    fn allowed_matches_the_table_exhaustively() {
        use OpState::*;
        let expected: &[(OpState, OpState)] = &[
            (Pending, Unknown),
            (Pending, Succeeded),
            (Pending, Declined),
            (Pending, Attention),
            (Unknown, Unknown),
            (Unknown, Succeeded),
            (Unknown, Declined),
            (Unknown, Attention),
            (Succeeded, Succeeded),
            (Succeeded, RefundPending),
            (RefundPending, RefundPending),
            (RefundPending, Refunded),
            (RefundPending, Attention),
            (Attention, Unknown),
            (Attention, RefundPending),
        ];
        let mut seen = 0;
        for from in ALL {
            for to in ALL {
                let want = expected.contains(&(from, to));
                assert_eq!(allowed(from, to), want, "{from} -> {to}");
                seen += usize::from(want);
            }
        }
        assert_eq!(seen, expected.len());
    }

    #[test]
    fn nothing_returns_to_pending_and_terminal_states_are_dead_ends() {
        for from in ALL {
            assert!(!allowed(from, OpState::Pending), "{from} -> PENDING");
            assert!(!allowed(OpState::Declined, from));
            assert!(!allowed(OpState::Refunded, from));
        }
    }

    #[test]
    fn out_of_a_final_state_only_refund_or_retry() {
        for from in ALL.into_iter().filter(|s| s.is_final()) {
            for to in ALL {
                if from == to && from == OpState::Succeeded {
                    continue;
                }
                let expected = matches!(
                    (from, to),
                    (OpState::Succeeded, OpState::RefundPending)
                        | (
                            OpState::Attention,
                            OpState::Unknown | OpState::RefundPending
                        )
                );
                assert_eq!(allowed(from, to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn every_non_final_state_can_reach_attention() {
        for from in ALL.into_iter().filter(|s| !s.is_final()) {
            assert!(allowed(from, OpState::Attention), "{from}");
        }
    }

    fn row(state: OpState) -> OpRow {
        OpRow {
            partner_reference_no: "TG-LBB-01-000001".into(),
            kind: OpKind::Hold,
            lane: "LBB-IN-1".into(),
            direction: Direction::In,
            station_id: "LBB".into(),
            amount: Rupiah(14000),
            pan_key: "ab".repeat(16),
            pan_masked: "93600914*******1234".into(),
            nns: "93600914".into(),
            state,
            reference_no: None,
            response_code: None,
            gate_opened: None,
            reason: None,
            attempts: 1,
            next_attempt_at_ms: Some(1000),
            refund_no: None,
            refund_amount: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            journey_id: None,
            fast_opened: false,
            channel: Default::default(),
        }
    }

    fn t(to: OpState) -> Transition {
        Transition::new(to, 50)
    }

    #[test]
    fn success_needs_a_reference_and_keeps_it() {
        let cur = row(OpState::Pending);
        assert_eq!(
            apply(&cur, &t(OpState::Succeeded)),
            Err(TransitionError::Rejected(Rejection::MissingReferenceNo))
        );
        let ok = apply(
            &cur,
            &Transition {
                reference_no: Some("R1".into()),
                response_code: Some("2006000".into()),
                bump_attempts: true,
                ..t(OpState::Succeeded)
            },
        )
        .unwrap();
        assert_eq!(ok.reference_no.as_deref(), Some("R1"));
        assert_eq!(ok.attempts, 2);
        assert_eq!(ok.updated_at_ms, 50);
        assert_eq!(ok.gate_opened, None);

        let changed = Transition {
            reference_no: Some("R2".into()),
            ..t(OpState::Succeeded)
        };
        assert_eq!(
            apply(&ok, &changed),
            Err(TransitionError::Rejected(Rejection::ReferenceNoChanged))
        );
        let empty = Transition {
            reference_no: Some(String::new()),
            ..t(OpState::Succeeded)
        };
        assert_eq!(
            apply(&cur, &empty),
            Err(TransitionError::Rejected(Rejection::MissingReferenceNo))
        );
    }

    #[test]
    fn succeeded_may_only_record_the_gate_once() {
        let mut cur = row(OpState::Succeeded);
        cur.reference_no = Some("R1".into());
        let gate = |g| Transition {
            gate_opened: Some(g),
            ..t(OpState::Succeeded)
        };
        let opened = apply(&cur, &gate(true)).unwrap();
        assert_eq!(opened.gate_opened, Some(true));
        assert_eq!(apply(&opened, &gate(true)).unwrap().gate_opened, Some(true));
        assert_eq!(
            apply(&opened, &gate(false)),
            Err(TransitionError::Rejected(Rejection::GateOutcomeChanged))
        );
        let extra = Transition {
            response_code: Some("2006000".into()),
            ..gate(true)
        };
        assert_eq!(
            apply(&cur, &extra),
            Err(TransitionError::Rejected(Rejection::OnlyGateOutcome))
        );
    }

    #[test]
    fn refund_rules() {
        let mut cur = row(OpState::Succeeded);
        cur.reference_no = Some("R1".into());
        let refund = |amount| Transition {
            gate_opened: Some(false),
            refund_amount: amount,
            ..t(OpState::RefundPending)
        };
        assert_eq!(
            apply(&cur, &refund(None)),
            Err(TransitionError::Rejected(Rejection::MissingRefundAmount))
        );
        for bad in [0, 14001] {
            assert_eq!(
                apply(&cur, &refund(Some(Rupiah(bad)))),
                Err(TransitionError::Rejected(Rejection::RefundAmountOutOfRange))
            );
        }
        let pending = apply(&cur, &refund(Some(Rupiah(14000)))).unwrap();
        assert_eq!(pending.state, OpState::RefundPending);
        assert_eq!(pending.gate_opened, Some(false));

        let mut opened = cur.clone();
        opened.gate_opened = Some(true);
        let no_gate_field = Transition {
            refund_amount: Some(Rupiah(14000)),
            ..t(OpState::RefundPending)
        };
        assert_eq!(
            apply(&opened, &no_gate_field),
            Err(TransitionError::Rejected(Rejection::RefundAfterGateOpened))
        );

        // Found by the random walk: a refund must not complete by claiming the gate opened.
        let claim_open = Transition {
            gate_opened: Some(true),
            ..t(OpState::Refunded)
        };
        let mut unknown_gate = pending.clone();
        unknown_gate.gate_opened = None;
        assert_eq!(
            apply(&pending, &claim_open),
            Err(TransitionError::Rejected(Rejection::GateOutcomeChanged))
        );
        assert_eq!(
            apply(&unknown_gate, &claim_open),
            Err(TransitionError::Rejected(Rejection::RefundAfterGateOpened))
        );
        assert_eq!(
            apply(&pending, &t(OpState::Refunded)).unwrap().state,
            OpState::Refunded
        );

        let mut no_ref = row(OpState::Attention);
        no_ref.reason = Some("x".into());
        assert_eq!(
            apply(&no_ref, &no_gate_field),
            Err(TransitionError::Rejected(Rejection::MissingReferenceNo))
        );
    }

    #[test]
    fn attention_needs_a_reason_and_long_reasons_are_cut() {
        let cur = row(OpState::Unknown);
        assert_eq!(
            apply(&cur, &t(OpState::Attention)),
            Err(TransitionError::Rejected(Rejection::MissingReason))
        );
        let blank = Transition {
            reason: Some("  ".into()),
            ..t(OpState::Attention)
        };
        assert_eq!(
            apply(&cur, &blank),
            Err(TransitionError::Rejected(Rejection::MissingReason))
        );
        let long = Transition {
            reason: Some("é".repeat(MAX_REASON_CHARS + 10)),
            ..t(OpState::Attention)
        };
        let r = apply(&cur, &long).unwrap().reason.unwrap();
        assert_eq!(r.chars().count(), MAX_REASON_CHARS);
    }

    #[test]
    fn illegal_moves_are_reported_as_such() {
        let cur = row(OpState::Refunded);
        assert_eq!(
            apply(
                &cur,
                &Transition {
                    reference_no: Some("R".into()),
                    ..t(OpState::Succeeded)
                }
            ),
            Err(TransitionError::Illegal)
        );
    }

    #[test]
    fn a_hold_without_a_journey_is_refunded_although_its_gate_opened() {
        let mut cur = row(OpState::Succeeded);
        cur.reference_no = Some("R1".into());
        cur.gate_opened = Some(true);
        let refund = |dup| Transition {
            refund_amount: Some(Rupiah(14000)),
            reason: Some("second hold".into()),
            duplicate_hold: dup,
            ..t(OpState::RefundPending)
        };
        // Without saying so, a paid gate is never refunded.
        assert_eq!(
            apply(&cur, &refund(false)),
            Err(TransitionError::Rejected(Rejection::RefundAfterGateOpened))
        );
        let pending = apply(&cur, &refund(true)).unwrap();
        assert_eq!(pending.state, OpState::RefundPending);
        // Once admitted, the refund runs its course.
        let done = apply(
            &pending,
            &Transition {
                refund_amount: Some(Rupiah(14000)),
                ..t(OpState::Refunded)
            },
        )
        .unwrap();
        assert_eq!(done.state, OpState::Refunded);
        // Only a hold with no journey.
        let mut linked = cur.clone();
        linked.journey_id = Some(3);
        assert_eq!(
            apply(&linked, &refund(true)),
            Err(TransitionError::Rejected(Rejection::RefundAfterGateOpened))
        );
        let mut settle = cur.clone();
        settle.kind = OpKind::Settle;
        assert_eq!(
            apply(&settle, &refund(true)),
            Err(TransitionError::Rejected(Rejection::RefundAfterGateOpened))
        );
    }

    #[test]
    fn describe_change_lists_only_what_changed() {
        let cur = row(OpState::Pending);
        let next = apply(
            &cur,
            &Transition {
                reference_no: Some("R1".into()),
                response_code: Some("2006000".into()),
                ..t(OpState::Succeeded)
            },
        )
        .unwrap();
        assert_eq!(
            describe_change(&cur, &next),
            "reference_no=R1 response_code=2006000"
        );
        assert_eq!(describe_change(&next, &next), "");
    }

    /// Random walks through the state machine with random fields: whatever [`apply`] accepts
    /// keeps the money invariants.
    #[test]
    fn random_walks_keep_the_money_invariants() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7A9_6A7E);
        let mut accepted = 0u32;
        for _ in 0..2_000 {
            let mut cur = row(OpState::Pending);
            let mut first_reference: Option<String> = None;
            let mut first_gate: Option<bool> = None;
            for step in 0..12 {
                let to = ALL[rng.random_range(0..ALL.len())];
                let pick = |rng: &mut rand::rngs::StdRng, v: &[&str]| {
                    if rng.random_bool(0.5) {
                        Some(v[rng.random_range(0..v.len())].to_owned())
                    } else {
                        None
                    }
                };
                let t = Transition {
                    reference_no: pick(&mut rng, &["R1", "R2", ""]),
                    response_code: pick(&mut rng, &["2006000", "5006001"]),
                    gate_opened: if rng.random_bool(0.3) {
                        Some(rng.random_bool(0.5))
                    } else {
                        None
                    },
                    reason: pick(&mut rng, &["x", " "]),
                    refund_amount: if rng.random_bool(0.5) {
                        Some(Rupiah(rng.random_range(0..20_000)))
                    } else {
                        None
                    },
                    bump_attempts: rng.random_bool(0.5),
                    ..Transition::new(to, 100 + step)
                };
                let Ok(next) = apply(&cur, &t) else {
                    continue;
                };
                accepted += 1;
                assert!(allowed(cur.state, next.state));
                assert_ne!(next.state, OpState::Pending);
                // Attempts only grow, except that a row sent back from ATTENTION starts afresh.
                assert!(next.attempts >= cur.attempts || cur.state == OpState::Attention);
                if let Some(r) = &first_reference {
                    assert_eq!(next.reference_no.as_ref(), Some(r), "reference changed");
                }
                if let Some(g) = first_gate {
                    assert_eq!(next.gate_opened, Some(g), "gate outcome changed");
                }
                if matches!(next.state, OpState::Succeeded | OpState::RefundPending) {
                    assert!(next.reference_no.as_deref().is_some_and(|r| !r.is_empty()));
                }
                if matches!(next.state, OpState::RefundPending | OpState::Refunded) {
                    assert_ne!(next.gate_opened, Some(true));
                    let a = next.refund_amount.unwrap();
                    assert!(a.0 > 0 && a <= next.amount);
                }
                if next.state == OpState::Attention {
                    assert!(!next.reason.as_deref().unwrap().trim().is_empty());
                }
                first_reference = next.reference_no.clone().or(first_reference);
                first_gate = next.gate_opened.or(first_gate);
                cur = next;
            }
        }
        assert!(accepted > 2_000, "the walk hardly moved: {accepted}");
    }

    fn new_op() -> NewOp {
        NewOp {
            partner_reference_no: "TG-LBB-01-000001".into(),
            kind: OpKind::Hold,
            lane: "LBB-IN-1".into(),
            direction: Direction::In,
            station_id: "LBB".into(),
            amount: Rupiah(14000),
            pan_key: "0123abcd".repeat(8),
            pan_masked: "93600914*******1234".into(),
            nns: "93600914".into(),
            journey_id: None,
            next_attempt_at_ms: 2000,
            created_at_ms: 1000,
        }
    }

    #[test]
    fn validate_new_refuses_full_pans_and_bad_fields() {
        assert_eq!(validate_new(&new_op()), Ok(()));
        type Mutate = Box<dyn Fn(&mut NewOp)>;
        let cases: Vec<(&str, Mutate)> = vec![
            (
                "pan_masked",
                Box::new(|o| o.pan_masked = "9360091412341234".into()),
            ),
            ("pan_key", Box::new(|o| o.pan_key = "not hex".into())),
            ("pan_key", Box::new(|o| o.pan_key.clear())),
            ("amount", Box::new(|o| o.amount = Rupiah(0))),
            ("amount", Box::new(|o| o.amount = Rupiah(u64::MAX))),
            (
                "partner_reference_no",
                Box::new(|o| o.partner_reference_no.clear()),
            ),
            (
                "partner_reference_no",
                Box::new(|o| o.partner_reference_no = "a b".into()),
            ),
            (
                "partner_reference_no",
                Box::new(|o| o.partner_reference_no = "x".repeat(65)),
            ),
            ("lane", Box::new(|o| o.lane = " ".into())),
            ("station_id", Box::new(|o| o.station_id.clear())),
            ("nns", Box::new(|o| o.nns.clear())),
        ];
        for (field, mutate) in cases {
            let mut op = new_op();
            mutate(&mut op);
            assert_eq!(validate_new(&op).map_err(|e| e.0), Err(field), "{op:?}");
        }
    }
}
