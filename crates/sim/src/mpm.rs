//! QRIS MPM at the simulated aggregator: the dynamic QRs a merchant (the gate) generated, the
//! Linkage payments wallets made against them, the merchant's refunds, and the payment
//! notifications sent to the merchant.
//!
//! The endpoints live in the engine (`engine/mpm.rs` for the merchant's generate, query and
//! refund; `engine/linkage.rs` for the wallet's customer token, payment and query); this
//! module holds their state, the snapshots that leave the simulator
//! ([`MpmLedger`] at `GET /sim/ledger/mpm`) and the notification's delivery.
//!
//! A QR's life: generated (`03` pending) → paid once by a Linkage payment (`00`) → refunded
//! in part (`00`) or in full (`04`); or never paid before its validity ended (`06`). A payment
//! after the end is refused as expired unless [`MpmConfig::accept_late_payments`] is on, in
//! which case it succeeds and is marked `late` (the merchant must refund it).
//!
//! **Notifications.** When a QR is paid and a callback URL is known (generate's
//! `additionalInfo.callback_payment`, else [`MpmConfig::notify_url`]), the simulator POSTs
//! `qr-mpm-notify` (service 52) to it once, with a timeout and no retry. It signs the way a
//! SNAP transaction is signed, in the other direction: `X-SIGNATURE` = base64(HMAC-SHA512(key
//! = the partner's client secret, `POST:<callback path>:<token>:<hex sha256(body)>:<X-TIMESTAMP>`)),
//! where `<token>` is a fresh random token the simulator also sends as `Authorization: Bearer
//! <token>` (SNAP has the aggregator fetch a token from the merchant first; the simulator
//! skips that step, so the receiver takes the token from the header and checks the
//! signature, which covers it). Headers: `Content-Type`, `Authorization`, `X-TIMESTAMP`,
//! `X-SIGNATURE`, `X-PARTNER-ID`, `X-EXTERNAL-ID` (32 digits), `CHANNEL-ID`. Body:
//! `originalPartnerReferenceNo`, `originalReferenceNo`, `merchantId`,
//! `latestTransactionStatus` `00`, `transactionStatusDesc`, `amount`, `transactionDate`,
//! `paidTime`, `additionalInfo` {`paymentReferenceNo`, `late`}. Only `http://` callbacks are
//! reached (the simulator speaks no TLS). [`MpmConfig::drop_notifications`] (or
//! `POST /sim/mpm/notifications {"drop":true}`) loses every notification on purpose, so a
//! test can prove that query alone is enough.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Shared;

/// The merchant the simulated aggregator presents in its QRs, and how MPM behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpmConfig {
    /// Tag 59 of every QR (at most 25 characters).
    pub merchant_name: String,
    /// Tag 60 (at most 15 characters).
    pub merchant_city: String,
    /// Tag 26.01: the merchant PAN (here NNS 93600777, Finpay).
    pub merchant_pan: String,
    /// Tag 51.02: the QRIS National Merchant ID.
    pub nmid: String,
    /// A QR's validity when generate gives no `validityPeriod`, seconds.
    pub default_validity_secs: u64,
    /// The longest validity generate may ask for, seconds.
    pub max_validity_secs: u64,
    /// Where to notify when generate names no `callback_payment`; no notification when
    /// `None`.
    pub notify_url: Option<String>,
    /// How long a notification may take before it counts as failed, milliseconds.
    pub notify_timeout_ms: u64,
    /// Lose every notification (counted as dropped), to prove query alone suffices.
    pub drop_notifications: bool,
    /// Let a payment after the QR's validity succeed (marked late) instead of refusing it as
    /// expired: the case where the merchant must refund.
    pub accept_late_payments: bool,
    /// The demo wallet customer's starting balance, whole rupiah
    /// ([`crate::linkage::DEMO_AUTH_CODE`]).
    pub demo_customer_balance: u64,
}

impl Default for MpmConfig {
    /// The demo merchant: `MRT JAKARTA DEMO`, Jakarta; QRs valid 5 minutes by default, at most
    /// a day; notifications delivered, late payments refused; the demo customer holds
    /// Rp 1,000,000.
    fn default() -> Self {
        MpmConfig {
            merchant_name: "MRT JAKARTA DEMO".into(),
            merchant_city: "JAKARTA".into(),
            merchant_pan: "936007770000000001".into(),
            nmid: "ID1026000000001".into(),
            default_validity_secs: 300,
            max_validity_secs: 86_400,
            notify_url: None,
            notify_timeout_ms: 3000,
            drop_notifications: false,
            accept_late_payments: false,
            demo_customer_balance: 1_000_000,
        }
    }
}

/// Where a generated QR stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MpmStatus {
    /// Not paid, still valid: `03`.
    Pending,
    /// Paid: `00`.
    Paid,
    /// Paid, refunded in part: `00`.
    PartiallyRefunded,
    /// Paid, refunded in full: `04`.
    Refunded,
    /// Not paid and its validity ended: `06`.
    Expired,
}

impl MpmStatus {
    /// `latestTransactionStatus` / `transactionStatus`.
    pub fn transaction_status(self) -> &'static str {
        match self {
            MpmStatus::Pending => "03",
            MpmStatus::Paid | MpmStatus::PartiallyRefunded => "00",
            MpmStatus::Refunded => "04",
            MpmStatus::Expired => "06",
        }
    }

    /// `transactionStatusDesc`.
    pub fn description(self) -> &'static str {
        match self {
            MpmStatus::Pending => "Pending",
            MpmStatus::Paid | MpmStatus::PartiallyRefunded => "Success",
            MpmStatus::Refunded => "Refunded",
            MpmStatus::Expired => "Failed",
        }
    }
}

/// What became of a QR's payment notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NotifyState {
    /// Not paid yet, or no callback URL known.
    None,
    /// Being delivered.
    Sending,
    /// Lost on purpose ([`MpmConfig::drop_notifications`]).
    Dropped,
    /// Answered by the merchant.
    Delivered {
        /// The HTTP status.
        http_status: u16,
        /// The answer's `responseCode`, if it had one.
        response_code: Option<String>,
    },
    /// Not delivered: no connection, timeout, or a URL the simulator cannot reach.
    Failed {
        /// Why.
        why: String,
    },
}

/// The Linkage payment that paid a QR, as the merchant side sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpmPaymentEntry {
    /// The wallet's `partnerReferenceNo`.
    pub partner_reference_no: String,
    /// The aggregator's `referenceNo` of the payment.
    pub reference_no: String,
    /// The paying customer.
    pub customer_id: String,
    /// The customer's PAN, masked.
    pub masked_pan: String,
    /// When it was paid (SNAP timestamp).
    pub paid_time: String,
    /// Paid after the QR's validity ended (allowed by the late-payment knob).
    pub late: bool,
}

/// One refund of an MPM payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpmRefundEntry {
    /// The merchant's `partnerReferenceNo` of the refund (the idempotency key).
    pub partner_reference_no: String,
    /// The `referenceNo` the simulator issued.
    pub reference_no: String,
    /// Whole rupiah.
    pub amount: u64,
    /// `reason`, as given.
    pub reason: Option<String>,
    /// `transactionDate` of the refund.
    pub refund_time: String,
}

/// A generated QR, safe to print and serialize (the `qrContent` is public by nature: it is
/// shown on the gate's screen).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpmEntry {
    /// The merchant's `partnerReferenceNo`.
    pub partner_reference_no: String,
    /// The `referenceNo` issued (also the QR's reference label, 62.05).
    pub reference_no: String,
    /// `merchantId`.
    pub merchant_id: String,
    /// `terminalId`, if given.
    pub terminal_id: Option<String>,
    /// Amount, whole rupiah.
    pub amount: u64,
    /// The QRIS string.
    pub qr_content: String,
    /// Generated at (SNAP timestamp).
    pub created: String,
    /// Valid until (SNAP timestamp).
    pub valid_until: String,
    /// Status now.
    pub status: MpmStatus,
    /// The payment, once paid.
    pub payment: Option<MpmPaymentEntry>,
    /// Refunds, oldest first.
    pub refunds: Vec<MpmRefundEntry>,
    /// Sum of the refunds.
    pub refunded: u64,
    /// Where the payment notification goes, if anywhere.
    pub callback_url: Option<String>,
    /// The notification's fate.
    pub notification: NotifyState,
}

impl MpmEntry {
    /// What the payer is out of pocket now: amount minus refunds once paid, else 0.
    pub fn net_charged(&self) -> u64 {
        if self.payment.is_some() {
            self.amount.saturating_sub(self.refunded)
        } else {
            0
        }
    }
}

/// One Linkage payment attempt that reached the business checks: paid, or refused for a
/// reason a query reports as failed (`06`): expired QR, QR already paid, insufficient funds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkagePaymentEntry {
    /// The wallet's `partnerReferenceNo`.
    pub partner_reference_no: String,
    /// The aggregator's `referenceNo` (paid payments only).
    pub reference_no: Option<String>,
    /// The QR's `referenceNo` (`additionalInfo.reffFlag`).
    pub qr_reference_no: String,
    /// The paying customer.
    pub customer_id: String,
    /// Amount, whole rupiah.
    pub amount: u64,
    /// `None` when paid; the refusal's `responseCode` otherwise.
    pub refusal_code: Option<String>,
    /// `transactionDate` as answered.
    pub transaction_date: String,
}

/// Everything MPM and Linkage recorded: `GET /sim/ledger/mpm`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpmLedger {
    /// Generated QRs, oldest first.
    pub qrs: Vec<MpmEntry>,
    /// Linkage payment attempts, oldest first.
    pub payments: Vec<LinkagePaymentEntry>,
}

/// MPM and Linkage counters (rejections are counted with the CPM ones, by kind, in
/// [`crate::SimStats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpmStats {
    /// Calls to `qr-mpm-generate`.
    pub generate_requests: u64,
    /// QRs generated.
    pub qrs_generated: u64,
    /// Calls to the merchant's `qr-mpm-query`.
    pub query_requests: u64,
    /// Calls to `qr-mpm-refund`.
    pub refund_requests: u64,
    /// Refunds recorded.
    pub refunds_made: u64,
    /// Identical refunds answered again without refunding twice.
    pub refund_replays: u64,
    /// Calls to the B2B2C customer-token endpoint.
    pub customer_token_requests: u64,
    /// Customer tokens issued.
    pub customer_tokens_issued: u64,
    /// Calls to Linkage `qr-mpm-payment`.
    pub payment_requests: u64,
    /// QRs paid.
    pub payments_made: u64,
    /// Of those, paid after their validity (late-payment knob).
    pub late_payments: u64,
    /// Calls to Linkage `qr-mpm-query`.
    pub linkage_query_requests: u64,
    /// Notifications answered by the merchant (any HTTP status).
    pub notifications_delivered: u64,
    /// Notifications lost on purpose.
    pub notifications_dropped: u64,
    /// Notifications that reached no one (connection, timeout, URL).
    pub notifications_failed: u64,
}

/// A QR as kept.
#[derive(Clone, Debug)]
pub(crate) struct Qr {
    pub(crate) partner_reference_no: String,
    pub(crate) reference_no: String,
    pub(crate) merchant_id: String,
    pub(crate) terminal_id: Option<String>,
    pub(crate) amount: u64,
    pub(crate) qr_content: String,
    pub(crate) created: String,
    pub(crate) valid_until: Timestamp,
    pub(crate) valid_until_text: String,
    pub(crate) callback_url: Option<String>,
    pub(crate) payment: Option<MpmPaymentEntry>,
    pub(crate) refunds: Vec<MpmRefundEntry>,
    pub(crate) notification: NotifyState,
}

impl Qr {
    pub(crate) fn refunded(&self) -> u64 {
        self.refunds.iter().map(|r| r.amount).sum()
    }

    pub(crate) fn status(&self, now: Timestamp) -> MpmStatus {
        if self.payment.is_none() {
            return if now >= self.valid_until {
                MpmStatus::Expired
            } else {
                MpmStatus::Pending
            };
        }
        match self.refunded() {
            0 => MpmStatus::Paid,
            r if r >= self.amount => MpmStatus::Refunded,
            _ => MpmStatus::PartiallyRefunded,
        }
    }

    fn snapshot(&self, now: Timestamp) -> MpmEntry {
        MpmEntry {
            partner_reference_no: self.partner_reference_no.clone(),
            reference_no: self.reference_no.clone(),
            merchant_id: self.merchant_id.clone(),
            terminal_id: self.terminal_id.clone(),
            amount: self.amount,
            qr_content: self.qr_content.clone(),
            created: self.created.clone(),
            valid_until: self.valid_until_text.clone(),
            status: self.status(now),
            payment: self.payment.clone(),
            refunds: self.refunds.clone(),
            refunded: self.refunded(),
            callback_url: self.callback_url.clone(),
            notification: self.notification.clone(),
        }
    }
}

/// What was asked of a refund, to tell a replay from a conflicting reuse of its reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefundKey {
    pub(crate) qr: usize,
    pub(crate) refund: usize,
    pub(crate) amount: u64,
}

/// All MPM state and its indexes.
#[derive(Debug, Default)]
pub(crate) struct MpmBook {
    pub(crate) qrs: Vec<Qr>,
    by_partner: HashMap<String, usize>,
    by_reference: HashMap<String, usize>,
    pub(crate) refunds: HashMap<String, RefundKey>,
    pub(crate) payments: Vec<LinkagePaymentEntry>,
    payments_by_partner: HashMap<String, usize>,
    payments_by_reference: HashMap<String, usize>,
    seq: u64,
}

impl MpmBook {
    /// A fresh reference with `prefix` (`SIMMPM`, `SIMLNK`, `SIMMRF`): at most 16 characters,
    /// so it fits the QR's reference label.
    pub(crate) fn new_reference(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{:010}", self.seq)
    }

    pub(crate) fn has_partner_reference(&self, r: &str) -> bool {
        self.by_partner.contains_key(r)
    }

    pub(crate) fn insert(&mut self, qr: Qr) {
        let i = self.qrs.len();
        self.by_partner.insert(qr.partner_reference_no.clone(), i);
        self.by_reference.insert(qr.reference_no.clone(), i);
        self.qrs.push(qr);
    }

    /// The QR named by either reference (both must agree when both are given).
    pub(crate) fn find(&self, partner: Option<&str>, reference: Option<&str>) -> Option<usize> {
        let a = partner.map(|r| self.by_partner.get(r).copied());
        let b = reference.map(|r| self.by_reference.get(r).copied());
        match (a, b) {
            (Some(Some(a)), Some(Some(b))) if a == b => Some(a),
            (Some(Some(a)), None) => Some(a),
            (None, Some(Some(b))) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn has_payment_reference(&self, partner: &str) -> bool {
        self.payments_by_partner.contains_key(partner)
    }

    pub(crate) fn record_payment(&mut self, p: LinkagePaymentEntry) {
        let i = self.payments.len();
        self.payments_by_partner
            .insert(p.partner_reference_no.clone(), i);
        if let Some(r) = &p.reference_no {
            self.payments_by_reference.insert(r.clone(), i);
        }
        self.payments.push(p);
    }

    /// The Linkage payment named by either reference (both must agree when both are given).
    pub(crate) fn find_payment(
        &self,
        partner: Option<&str>,
        reference: Option<&str>,
    ) -> Option<&LinkagePaymentEntry> {
        let a = partner.map(|r| self.payments_by_partner.get(r).copied());
        let b = reference.map(|r| self.payments_by_reference.get(r).copied());
        let i = match (a, b) {
            (Some(Some(a)), Some(Some(b))) if a == b => a,
            (Some(Some(a)), None) => a,
            (None, Some(Some(b))) => b,
            _ => return None,
        };
        self.payments.get(i)
    }

    /// The QR a paid Linkage payment paid.
    pub(crate) fn qr_paid_by(&self, payment_reference: &str) -> Option<&Qr> {
        self.qrs.iter().find(|q| {
            q.payment
                .as_ref()
                .is_some_and(|p| p.reference_no == payment_reference)
        })
    }

    pub(crate) fn snapshot(&self, now: Timestamp) -> MpmLedger {
        MpmLedger {
            qrs: self.qrs.iter().map(|q| q.snapshot(now)).collect(),
            payments: self.payments.clone(),
        }
    }

    /// Records what became of the notification of the QR `partner_reference_no`.
    pub(crate) fn notified(&mut self, partner_reference_no: &str, state: NotifyState) {
        if let Some(i) = self.by_partner.get(partner_reference_no) {
            if let Some(q) = self.qrs.get_mut(*i) {
                q.notification = state;
            }
        }
    }
}

/// A signed notification ready to go: built by the engine (pure), sent by [`deliver`].
#[derive(Clone, Debug)]
pub(crate) struct Notification {
    /// The QR it is about.
    pub(crate) partner_reference_no: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout: Duration,
}

/// POSTs `n` once and records the outcome in the ledger.
pub(crate) async fn deliver(shared: Arc<Shared>, n: Notification) {
    let outcome = crate::wallet::post(&n.url, &n.headers, n.body, n.timeout).await;
    let state = match outcome {
        Ok((status, body)) => NotifyState::Delivered {
            http_status: status,
            response_code: serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["responseCode"].as_str().map(str::to_string)),
        },
        Err(e) => NotifyState::Failed { why: e.to_string() },
    };
    tracing::info!(qr = %n.partner_reference_no, outcome = ?state, "simulator notified the merchant");
    shared.lock().mpm_notified(&n.partner_reference_no, state);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qr(valid_until: i64) -> Qr {
        Qr {
            partner_reference_no: "P".into(),
            reference_no: "R".into(),
            merchant_id: "M".into(),
            terminal_id: None,
            amount: 5000,
            qr_content: String::new(),
            created: String::new(),
            valid_until: Timestamp::from_second(valid_until).unwrap(),
            valid_until_text: String::new(),
            callback_url: None,
            payment: None,
            refunds: vec![],
            notification: NotifyState::None,
        }
    }

    #[test]
    fn status_follows_validity_payment_and_refunds() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let mut q = qr(100);
        assert_eq!(q.status(t(99)), MpmStatus::Pending);
        assert_eq!(q.status(t(100)), MpmStatus::Expired);
        q.payment = Some(MpmPaymentEntry {
            partner_reference_no: "W".into(),
            reference_no: "L".into(),
            customer_id: "C".into(),
            masked_pan: String::new(),
            paid_time: String::new(),
            late: false,
        });
        // Paid stays paid after the validity ends.
        assert_eq!(q.status(t(500)), MpmStatus::Paid);
        let refund = |amount| MpmRefundEntry {
            partner_reference_no: "RF".into(),
            reference_no: "X".into(),
            amount,
            reason: None,
            refund_time: String::new(),
        };
        q.refunds.push(refund(2000));
        assert_eq!(q.status(t(500)), MpmStatus::PartiallyRefunded);
        q.refunds.push(refund(3000));
        assert_eq!(q.status(t(500)), MpmStatus::Refunded);
        let codes: Vec<_> = [
            MpmStatus::Pending,
            MpmStatus::Paid,
            MpmStatus::PartiallyRefunded,
            MpmStatus::Refunded,
            MpmStatus::Expired,
        ]
        .iter()
        .map(|s| s.transaction_status())
        .collect();
        assert_eq!(codes, ["03", "00", "00", "04", "06"]);
    }

    #[test]
    fn lookups_by_both_references_must_agree() {
        let mut b = MpmBook::default();
        b.insert(qr(1));
        let mut q2 = qr(1);
        q2.partner_reference_no = "P2".into();
        q2.reference_no = "R2".into();
        b.insert(q2);
        assert_eq!(b.find(Some("P"), Some("R")), Some(0));
        assert_eq!(b.find(None, Some("R2")), Some(1));
        assert_eq!(b.find(Some("P"), Some("R2")), None);
        assert_eq!(b.find(None, None), None);
        assert_eq!(b.new_reference("SIMMPM").len(), 16);
    }
}
