//! The simulator's truth: every payment it recorded, by `partnerReferenceNo`, with its refunds.
//!
//! Full PANs live in this memory only (to match declines); everything that leaves it, the
//! [`LedgerEntry`] snapshots and the `/sim/ledger` JSON, carries the masked PAN, the NNS and a
//! passenger key (a salted hash whose salt never leaves the process).
//!
//! Holds, as the aggregator's sequence describes them: a tap-in (`tapType` `IN`) that succeeds
//! reserves its amount and charges nothing; a tap-out (`OUT`) naming an open hold
//! (`tapInPartnerReferenceNo`, `tapInReferenceNo`) finalizes it: the tap-out's amount is
//! charged and the hold is released. A refund of an open hold releases that part of it; a hold
//! already finalized can no longer be refunded. Every other payment is a plain charge.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Where a payment stands, as the aggregator would report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Accepted (after a 202) and not yet resolved: query answers `03`.
    Pending,
    /// Paid: query answers `00`.
    Succeeded,
    /// Paid and partly refunded: query still answers `00`.
    PartiallyRefunded,
    /// Paid and refunded in full: query answers `04`.
    Refunded,
    /// Declined by the issuer: query answers `06`, nothing was charged.
    Declined,
}

impl PaymentStatus {
    /// `latestTransactionStatus` for this status.
    pub fn latest_transaction_status(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "03",
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded => "00",
            PaymentStatus::Refunded => "04",
            PaymentStatus::Declined => "06",
        }
    }

    /// `transactionStatusDesc` for this status.
    pub fn description(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "Pending",
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded => "Success",
            PaymentStatus::Refunded => "Refunded",
            PaymentStatus::Declined => "Failed",
        }
    }
}

/// The tap markers a payment carried in `additionalInfo` (all as received, all optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapInfo {
    /// `tapType`: `IN` or `OUT` in tapgate's default profile.
    pub tap_type: Option<String>,
    /// `stationId`.
    pub station_id: Option<String>,
    /// `gateId`.
    pub gate_id: Option<String>,
    /// `tapInPartnerReferenceNo` (tap-out only).
    pub tap_in_partner_reference_no: Option<String>,
    /// `tapInReferenceNo` (tap-out only).
    pub tap_in_reference_no: Option<String>,
}

/// Where a payment stands in the hold model.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HoldState {
    /// Not a hold: a tap-out, a payment without `tapType`, or a declined tap-in (it reserved
    /// nothing).
    NotHold,
    /// A tap-in the aggregator has not settled yet (query answers `03`): nothing reserved yet;
    /// it opens by itself when the pending time ends.
    Pending,
    /// Money reserved, not charged; [`LedgerEntry::held`] says how much is still reserved.
    Open,
    /// The tap-out `by` (its `partnerReferenceNo`) named this hold: the tap-out charges its
    /// own amount (once it settles, if it was answered `202`) and this hold is released. It
    /// can no longer be refunded.
    Finalized {
        /// The finalizing tap-out's `partnerReferenceNo`.
        by: String,
    },
    /// Refunded in full before any tap-out named it: nothing reserved, nothing charged.
    Released,
}

/// What a tap-out's reference to a tap-in came to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum HoldReference {
    /// It finalized the open hold `hold` (the tap-in's `partnerReferenceNo`).
    Finalized {
        /// The hold's `partnerReferenceNo`.
        hold: String,
    },
    /// It named `named`, which is no open hold: the tap-out is a plain charge and nothing was
    /// released. `why` says what `named` was.
    Unmatched {
        /// The reference the tap-out carried (`tapInPartnerReferenceNo`, else
        /// `tapInReferenceNo`).
        named: String,
        /// Why it did not match: unknown, not a tap-in, still pending, declined, released, or
        /// already finalized (by which tap-out).
        why: String,
    },
}

/// One refund recorded against a payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundEntry {
    /// The client's `partnerRefundNo` (the idempotency key).
    pub partner_refund_no: String,
    /// The `refundNo` the simulator issued.
    pub refund_no: String,
    /// Refunded amount, whole rupiah.
    pub amount: u64,
    /// `refundTime` as answered.
    pub refund_time: String,
    /// The fault that hid the answer from the client, if any (`drop`, `garbage`, ...).
    pub fault: Option<String>,
}

/// A snapshot of one payment, safe to print and serialize (no full PAN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The client's `partnerReferenceNo`.
    pub partner_reference_no: String,
    /// The `referenceNo` issued (absent for declines).
    pub reference_no: Option<String>,
    /// The `X-EXTERNAL-ID` of the request that created the payment.
    pub external_id: String,
    /// The PAN with all but its first 8 and last 4 digits masked.
    pub masked_pan: String,
    /// The issuer's NNS (first 8 PAN digits).
    pub nns: String,
    /// Amount, whole rupiah.
    pub amount: u64,
    /// Status now.
    pub status: PaymentStatus,
    /// The decline code, for declined payments.
    pub decline_code: Option<String>,
    /// `transactionDate` as answered (SNAP timestamp).
    pub transaction_date: String,
    /// The tap markers from `additionalInfo`.
    pub tap: TapInfo,
    /// The refunds, oldest first.
    pub refunds: Vec<RefundEntry>,
    /// Sum of the refunds, whole rupiah.
    pub refunded: u64,
    /// The fault that hid the payment's answer from the client, if any.
    pub fault: Option<String>,
    /// The passenger: a key derived from the PAN, the same for every payment of one PAN in
    /// this simulator and meaningless outside it (the PAN cannot be recovered from it).
    pub passenger: String,
    /// Where the payment stands as a hold ([`HoldState::NotHold`] for charges).
    pub hold: HoldState,
    /// Rupiah this payment holds now: amount minus refunded for an open hold, else 0.
    pub held: u64,
    /// For a tap-out that named a tap-in: whether it finalized that hold. `None` when it named
    /// none, for every other payment, and for a declined tap-out (it finalized nothing).
    pub hold_reference: Option<HoldReference>,
}

impl LedgerEntry {
    /// What the passenger is out of pocket for this payment right now: paid minus refunded
    /// (zero for pending and declined payments).
    pub fn net_charged(&self) -> u64 {
        match self.status {
            PaymentStatus::Succeeded
            | PaymentStatus::PartiallyRefunded
            | PaymentStatus::Refunded => self.amount.saturating_sub(self.refunded),
            PaymentStatus::Pending | PaymentStatus::Declined => 0,
        }
    }

    /// Whether the payment is a tap-in (`tapType` `IN`): a hold, never a charge.
    pub fn is_tap_in(&self) -> bool {
        is_tap_in(&self.tap)
    }

    /// What this payment adds to its passenger's net charge: [`LedgerEntry::net_charged`] for
    /// a charge (tap-out or plain payment), 0 for a tap-in, which only ever reserves money
    /// (its tap-out carries the charge, its refunds are releases).
    pub fn charged(&self) -> u64 {
        if self.is_tap_in() {
            0
        } else {
            self.net_charged()
        }
    }
}

fn is_tap_in(tap: &TapInfo) -> bool {
    tap.tap_type.as_deref() == Some("IN")
}

/// First 8 and last 4 digits kept, the rest replaced by `*`.
pub fn mask_pan(pan: &str) -> String {
    let n = pan.chars().count();
    if n <= 12 {
        return "*".repeat(n);
    }
    pan.chars()
        .enumerate()
        .map(|(i, c)| if i < 8 || i >= n - 4 { c } else { '*' })
        .collect()
}

/// A payment as the simulator keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Payment {
    pub(crate) partner_reference_no: String,
    pub(crate) reference_no: Option<String>,
    pub(crate) external_id: String,
    pub(crate) pan: String,
    pub(crate) amount: u64,
    /// `None`: paid; `Some(code)`: declined with that code.
    pub(crate) decline_code: Option<String>,
    /// Until then the payment shows as pending.
    pub(crate) pending_until: Option<Timestamp>,
    pub(crate) created: Timestamp,
    pub(crate) transaction_date: String,
    pub(crate) tap: TapInfo,
    pub(crate) refunds: Vec<RefundEntry>,
    pub(crate) fault: Option<String>,
    /// For a tap-in: the tap-out that finalized it.
    pub(crate) finalized_by: Option<String>,
    /// For a tap-out that named a tap-in: what came of it.
    pub(crate) hold_reference: Option<HoldReference>,
}

impl Payment {
    pub(crate) fn status(&self, now: Timestamp) -> PaymentStatus {
        if self.pending_until.is_some_and(|t| now < t) {
            return PaymentStatus::Pending;
        }
        if self.decline_code.is_some() {
            return PaymentStatus::Declined;
        }
        let refunded = self.refunded();
        if refunded == 0 {
            PaymentStatus::Succeeded
        } else if refunded >= self.amount {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        }
    }

    pub(crate) fn refunded(&self) -> u64 {
        self.refunds.iter().map(|r| r.amount).sum()
    }

    /// When the money moved: creation, or the end of the pending time.
    pub(crate) fn paid_at(&self) -> Timestamp {
        self.pending_until.unwrap_or(self.created)
    }

    pub(crate) fn is_tap_in(&self) -> bool {
        is_tap_in(&self.tap)
    }

    /// The hold state and the rupiah held now.
    pub(crate) fn hold(&self, now: Timestamp) -> (HoldState, u64) {
        if !self.is_tap_in() {
            return (HoldState::NotHold, 0);
        }
        if let Some(by) = &self.finalized_by {
            return (HoldState::Finalized { by: by.clone() }, 0);
        }
        match self.status(now) {
            PaymentStatus::Declined => (HoldState::NotHold, 0),
            PaymentStatus::Pending => (HoldState::Pending, 0),
            PaymentStatus::Refunded => (HoldState::Released, 0),
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded => {
                (HoldState::Open, self.amount.saturating_sub(self.refunded()))
            }
        }
    }

    pub(crate) fn snapshot(&self, now: Timestamp, passenger: String) -> LedgerEntry {
        let (hold, held) = self.hold(now);
        LedgerEntry {
            partner_reference_no: self.partner_reference_no.clone(),
            reference_no: self.reference_no.clone(),
            external_id: self.external_id.clone(),
            masked_pan: mask_pan(&self.pan),
            nns: self.pan.chars().take(8).collect(),
            amount: self.amount,
            status: self.status(now),
            decline_code: self.decline_code.clone(),
            transaction_date: self.transaction_date.clone(),
            tap: self.tap.clone(),
            refunds: self.refunds.clone(),
            refunded: self.refunded(),
            fault: self.fault.clone(),
            passenger,
            hold,
            held,
            hold_reference: self.hold_reference.clone(),
        }
    }
}

/// The request behind a refund, kept to tell a replay from a conflicting reuse of
/// `partnerRefundNo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefundKey {
    pub(crate) original_reference_no: String,
    pub(crate) amount: u64,
}

/// All payments and the indexes over them.
#[derive(Debug)]
pub(crate) struct Ledger {
    payments: Vec<Payment>,
    by_partner_ref: HashMap<String, usize>,
    by_reference: HashMap<String, usize>,
    /// partnerRefundNo → (payment index, refund index, what was asked).
    refunds: HashMap<String, (usize, usize, RefundKey)>,
    /// SHA-256 of every qrContent that reached the issuer: the token inside is single-use,
    /// and the text itself is never kept.
    used_qr: HashSet<[u8; 32]>,
    seq: u64,
    /// Salt of the passenger keys: random per simulator and never shown, so a key cannot be
    /// turned back into a PAN by hashing the few million PANs its masked form leaves open.
    passenger_salt: [u8; 32],
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            payments: Vec::new(),
            by_partner_ref: HashMap::new(),
            by_reference: HashMap::new(),
            refunds: HashMap::new(),
            used_qr: HashSet::new(),
            seq: 0,
            passenger_salt: rand::random(),
        }
    }
}

impl Ledger {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh `referenceNo`.
    pub(crate) fn new_reference(&mut self) -> String {
        format!("SIMREF{:010}", self.next_seq())
    }

    pub(crate) fn has_partner_reference(&self, r: &str) -> bool {
        self.by_partner_ref.contains_key(r)
    }

    /// Marks a qrContent as consumed; `false` if it had been used before.
    pub(crate) fn consume_qr(&mut self, qr: &str) -> bool {
        self.used_qr.insert(Sha256::digest(qr.as_bytes()).into())
    }

    pub(crate) fn insert(&mut self, p: Payment) {
        let i = self.payments.len();
        self.by_partner_ref
            .insert(p.partner_reference_no.clone(), i);
        if let Some(r) = &p.reference_no {
            self.by_reference.insert(r.clone(), i);
        }
        self.payments.push(p);
    }

    pub(crate) fn get(
        &self,
        partner_ref: Option<&str>,
        reference: Option<&str>,
    ) -> Option<&Payment> {
        self.payments.get(self.index(partner_ref, reference)?)
    }

    /// The payment named by either reference (both must agree when both are given).
    fn index(&self, partner_ref: Option<&str>, reference: Option<&str>) -> Option<usize> {
        let a = partner_ref.map(|r| self.by_partner_ref.get(r));
        let b = reference.map(|r| self.by_reference.get(r));
        match (a, b) {
            (Some(Some(a)), Some(Some(b))) if a == b => Some(*a),
            (Some(Some(a)), None) => Some(*a),
            (None, Some(Some(b))) => Some(*b),
            _ => None,
        }
    }

    /// The key of `pan` in this simulator: 16 hex digits of SHA-256(salt, PAN).
    pub(crate) fn passenger_key(&self, pan: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.passenger_salt);
        h.update(pan.as_bytes());
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A tap-out about to be recorded (and not declined) as `by`: when its `tap` markers
    /// name a tap-in whose hold is open now, that hold is finalized by it. `None` when the
    /// payment is no tap-out or names no tap-in; otherwise what came of the reference.
    pub(crate) fn finalize_hold(
        &mut self,
        tap: &TapInfo,
        by: &str,
        now: Timestamp,
    ) -> Option<HoldReference> {
        if tap.tap_type.as_deref() != Some("OUT") {
            return None;
        }
        let partner = tap.tap_in_partner_reference_no.as_deref();
        let reference = tap.tap_in_reference_no.as_deref();
        let named = partner.or(reference)?.to_string();
        let unmatched = |why: String| Some(HoldReference::Unmatched { named, why });
        let Some(i) = self.index(partner, reference) else {
            return unmatched("no payment with that reference".into());
        };
        let p = self.payments.get_mut(i)?;
        if !p.is_tap_in() {
            return unmatched("not a tap-in".into());
        }
        match p.hold(now).0 {
            HoldState::Open => {}
            HoldState::Finalized { by: earlier } => {
                return unmatched(format!("hold already finalized by {earlier}"))
            }
            HoldState::Released => return unmatched("hold already released".into()),
            HoldState::Pending => return unmatched("hold still pending".into()),
            HoldState::NotHold => return unmatched("tap-in was declined".into()),
        }
        p.finalized_by = Some(by.to_string());
        Some(HoldReference::Finalized {
            hold: p.partner_reference_no.clone(),
        })
    }

    /// The refund already recorded under `partner_refund_no`, with what it was asked for.
    pub(crate) fn refund(
        &self,
        partner_refund_no: &str,
    ) -> Option<(&Payment, &RefundEntry, &RefundKey)> {
        let (pi, ri, key) = self.refunds.get(partner_refund_no)?;
        let p = self.payments.get(*pi)?;
        Some((p, p.refunds.get(*ri)?, key))
    }

    /// Records a refund against the payment with `reference`; returns it. The caller checked
    /// the amount.
    pub(crate) fn add_refund(
        &mut self,
        reference: &str,
        partner_refund_no: &str,
        amount: u64,
        refund_time: String,
        fault: Option<String>,
    ) -> Option<RefundEntry> {
        let pi = *self.by_reference.get(reference)?;
        let refund_no = format!("SIMRFD{:010}", self.next_seq());
        let entry = RefundEntry {
            partner_refund_no: partner_refund_no.to_string(),
            refund_no,
            amount,
            refund_time,
            fault,
        };
        let p = self.payments.get_mut(pi)?;
        p.refunds.push(entry.clone());
        let key = RefundKey {
            original_reference_no: reference.to_string(),
            amount,
        };
        self.refunds.insert(
            partner_refund_no.to_string(),
            (pi, p.refunds.len() - 1, key),
        );
        Some(entry)
    }

    pub(crate) fn snapshot(&self, now: Timestamp) -> Vec<LedgerEntry> {
        self.payments
            .iter()
            .map(|p| p.snapshot(now, self.passenger_key(&p.pan)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(pref: &str, reference: Option<&str>) -> Payment {
        Payment {
            partner_reference_no: pref.into(),
            reference_no: reference.map(Into::into),
            external_id: "1".into(),
            pan: "9360000211219862952".into(),
            amount: 14000,
            decline_code: None,
            pending_until: None,
            created: Timestamp::UNIX_EPOCH,
            transaction_date: String::new(),
            tap: TapInfo::default(),
            refunds: vec![],
            fault: None,
            finalized_by: None,
            hold_reference: None,
        }
    }

    #[test]
    fn masks_all_but_first_eight_and_last_four() {
        assert_eq!(mask_pan("9360000211219862952"), "93600002*******2952");
        assert_eq!(mask_pan("123"), "***");
    }

    #[test]
    fn status_follows_pending_time_and_refunds() {
        let mut p = payment("A", Some("R"));
        let t0 = Timestamp::UNIX_EPOCH;
        let later = Timestamp::from_second(10).unwrap();
        p.pending_until = Some(later);
        assert_eq!(p.status(t0), PaymentStatus::Pending);
        assert_eq!(p.status(later), PaymentStatus::Succeeded);
        let mut l = Ledger::default();
        l.insert(p);
        l.add_refund("R", "RF1", 4000, String::new(), None).unwrap();
        assert_eq!(
            l.get(Some("A"), None).unwrap().status(later),
            PaymentStatus::PartiallyRefunded
        );
        l.add_refund("R", "RF2", 10000, String::new(), None)
            .unwrap();
        let snap = l.snapshot(later);
        assert_eq!(snap[0].status, PaymentStatus::Refunded);
        assert_eq!(snap[0].net_charged(), 0);
        assert_eq!(snap[0].masked_pan, "93600002*******2952");
        assert_eq!(snap[0].nns, "93600002");
        assert!(l.refund("RF2").is_some());
    }

    #[test]
    fn lookups_by_both_references_must_agree() {
        let mut l = Ledger::default();
        l.insert(payment("A", Some("RA")));
        l.insert(payment("B", Some("RB")));
        assert!(l.get(Some("A"), Some("RA")).is_some());
        assert!(l.get(None, Some("RB")).is_some());
        assert!(l.get(Some("A"), Some("RB")).is_none());
        assert!(l.get(Some("C"), None).is_none());
        assert!(l.get(None, None).is_none());
    }

    #[test]
    fn qr_content_is_single_use() {
        let mut l = Ledger::default();
        assert!(l.consume_qr("hQVDUFYx"));
        assert!(!l.consume_qr("hQVDUFYx"));
        assert!(l.consume_qr("hQVDUFYy"));
    }

    #[test]
    fn passenger_keys_are_stable_per_pan_and_salted_per_simulator() {
        let l = Ledger::default();
        let a = l.passenger_key("9360000211219862952");
        assert_eq!(a, l.passenger_key("9360000211219862952"));
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, l.passenger_key("9360000211219862953"));
        // Another simulator, another salt: the key is no plain hash of the PAN.
        assert_ne!(a, Ledger::default().passenger_key("9360000211219862952"));
        let unsalted: String = Sha256::digest(b"9360000211219862952")
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(a, unsalted);
    }

    #[test]
    fn hold_state_follows_tap_type_status_and_finalization() {
        let t0 = Timestamp::UNIX_EPOCH;
        let mut p = payment("IN-1", Some("R1"));
        assert_eq!(p.hold(t0), (HoldState::NotHold, 0));
        p.tap.tap_type = Some("IN".into());
        assert_eq!(p.hold(t0), (HoldState::Open, 14000));
        p.pending_until = Some(Timestamp::from_second(10).unwrap());
        assert_eq!(p.hold(t0).0, HoldState::Pending);
        p.pending_until = None;
        p.decline_code = Some("4036014".into());
        assert_eq!(p.hold(t0), (HoldState::NotHold, 0));
        p.decline_code = None;

        let mut l = Ledger::default();
        l.insert(p);
        let out = |r: Option<&str>| TapInfo {
            tap_type: Some("OUT".into()),
            tap_in_partner_reference_no: r.map(Into::into),
            ..TapInfo::default()
        };
        assert_eq!(l.finalize_hold(&out(None), "OUT-0", t0), None);
        // An IN payment naming a tap-in is a hold, not a tap-out: it finalizes nothing.
        let mut not_out = out(Some("IN-1"));
        not_out.tap_type = Some("IN".into());
        assert_eq!(l.finalize_hold(&not_out, "IN-9", t0), None);
        assert_eq!(
            l.finalize_hold(&out(Some("IN-1")), "OUT-1", t0),
            Some(HoldReference::Finalized {
                hold: "IN-1".into()
            })
        );
        let snap = l.snapshot(t0);
        assert_eq!(
            (snap[0].hold.clone(), snap[0].held, snap[0].charged()),
            (HoldState::Finalized { by: "OUT-1".into() }, 0, 0)
        );
        // The per-payment view is today's: paid, nothing refunded.
        assert_eq!(snap[0].net_charged(), 14000);
        assert!(matches!(
            l.finalize_hold(&out(Some("IN-1")), "OUT-2", t0),
            Some(HoldReference::Unmatched { .. })
        ));

        let mut l = Ledger::default();
        let mut p = payment("IN-2", Some("R2"));
        p.tap.tap_type = Some("IN".into());
        l.insert(p);
        l.add_refund("R2", "RF1", 14000, String::new(), None)
            .unwrap();
        assert_eq!(l.snapshot(t0)[0].hold, HoldState::Released);
    }

    #[test]
    fn hold_fields_have_a_stable_json_shape() {
        fn j(v: &impl Serialize) -> String {
            serde_json::to_string(v).unwrap()
        }
        assert_eq!(j(&HoldState::NotHold), r#"{"state":"not_hold"}"#);
        assert_eq!(j(&HoldState::Open), r#"{"state":"open"}"#);
        assert_eq!(
            j(&HoldState::Finalized { by: "O1".into() }),
            r#"{"state":"finalized","by":"O1"}"#
        );
        assert_eq!(
            j(&HoldReference::Unmatched {
                named: "I1".into(),
                why: "hold already released".into()
            }),
            r#"{"outcome":"unmatched","named":"I1","why":"hold already released"}"#
        );
        let back: HoldState = serde_json::from_str(r#"{"state":"finalized","by":"O1"}"#).unwrap();
        assert_eq!(back, HoldState::Finalized { by: "O1".into() });
    }
}
