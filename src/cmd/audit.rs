//! Comparing the gate's journal with the simulator's ledger: the check behind the demo's
//! summary, the fault tests and the crash harness. After the reconciler has run, the two must
//! tell the same story about every rupiah.
//!
//! It lives on the gate's side: the simulator only exposes its ledger ([`LedgerEntry`]) and
//! never reads the gate's journal types.

use std::collections::HashMap;

use crate::fare::OpState;
use crate::journal::{Channel, OpRow};
use crate::sim::mpm::{MpmLedger, MpmStatus};
use crate::sim::{LedgerEntry, PaymentStatus};

/// Every disagreement between `ledger` and `journal`, one line each; empty when they agree.
///
/// Rules: a SUCCEEDED operation is paid in the ledger, same amount and reference, nothing
/// refunded; a REFUNDED one is refunded in full; a DECLINED one charged nothing; a row still
/// uncertain is reported; a ledger payment the journal does not know must have charged nothing.
/// QR sales (channel `mpm`) are left to [`compare_qr_sales`].
pub fn compare_with_journal(ledger: &[LedgerEntry], journal: &[OpRow]) -> Vec<String> {
    let journal: Vec<&OpRow> = journal
        .iter()
        .filter(|r| r.channel == Channel::Cpm)
        .collect();
    let by_ref: HashMap<&str, &LedgerEntry> = ledger
        .iter()
        .map(|e| (e.partner_reference_no.as_str(), e))
        .collect();
    let mut out = Vec::new();
    for row in journal.iter().copied() {
        let r = row.partner_reference_no.as_str();
        let entry = by_ref.get(r).copied();
        match (row.state, entry) {
            (OpState::Succeeded, Some(e)) => {
                let paid = matches!(e.status, PaymentStatus::Succeeded);
                if !paid || e.amount != row.amount.0 || e.refunded != 0 {
                    out.push(format!(
                        "{r}: journal SUCCEEDED {} but ledger {:?} amount {} refunded {}",
                        row.amount.0, e.status, e.amount, e.refunded
                    ));
                }
                if row.reference_no.is_some() && row.reference_no != e.reference_no {
                    out.push(format!(
                        "{r}: referenceNo differs between journal and ledger"
                    ));
                }
            }
            (OpState::Succeeded, None) => out.push(format!(
                "{r}: journal SUCCEEDED but the ledger has no such payment"
            )),
            (OpState::Refunded, Some(e)) => {
                if e.net_charged() != 0 || e.refunded != row.refund_amount.map_or(0, |a| a.0) {
                    out.push(format!(
                        "{r}: journal REFUNDED {} but ledger {:?} amount {} refunded {}",
                        row.refund_amount.map_or(0, |a| a.0),
                        e.status,
                        e.amount,
                        e.refunded
                    ));
                }
            }
            (OpState::Refunded, None) => out.push(format!(
                "{r}: journal REFUNDED but the ledger has no such payment"
            )),
            (OpState::Declined, Some(e)) if e.net_charged() != 0 => out.push(format!(
                "{r}: journal DECLINED but the ledger charged {}",
                e.net_charged()
            )),
            (OpState::Declined, _) | (OpState::Attention, _) => {}
            (state @ (OpState::Pending | OpState::Unknown | OpState::RefundPending), _) => {
                out.push(format!("{r}: still {state} in the journal"))
            }
        }
    }
    let known: std::collections::HashSet<&str> = journal
        .iter()
        .map(|r| r.partner_reference_no.as_str())
        .collect();
    for e in ledger {
        if !known.contains(e.partner_reference_no.as_str()) && e.net_charged() != 0 {
            out.push(format!(
                "{}: the ledger charged {} for a payment the journal never recorded",
                e.partner_reference_no,
                e.net_charged()
            ));
        }
    }
    out
}

/// Every disagreement between the QRs the simulator generated (`mpm`) and the journal's QR
/// sales, one line each; empty when they agree.
///
/// Rules: a SUCCEEDED sale is a paid QR of the same amount and reference, nothing refunded; a
/// REFUNDED one was paid and refunded exactly once, in full; a DECLINED one was never paid; a
/// sale still uncertain is reported; a paid QR the journal does not know must be refunded.
pub fn compare_qr_sales(mpm: &MpmLedger, journal: &[OpRow]) -> Vec<String> {
    let mut out = Vec::new();
    let sales = journal.iter().filter(|r| r.channel == Channel::Mpm);
    for row in sales.clone() {
        let r = row.partner_reference_no.as_str();
        let qr = mpm.qrs.iter().find(|q| q.partner_reference_no == r);
        match (row.state, qr) {
            (OpState::Succeeded, Some(q)) => {
                if q.status != MpmStatus::Paid || q.amount != row.amount.0 || q.refunded != 0 {
                    out.push(format!(
                        "{r}: journal SUCCEEDED {} but the QR is {:?}, amount {}, refunded {}",
                        row.amount.0, q.status, q.amount, q.refunded
                    ));
                }
                if row.reference_no.as_deref() != Some(q.reference_no.as_str()) {
                    out.push(format!("{r}: referenceNo differs between journal and QR"));
                }
            }
            (OpState::Refunded, Some(q)) => {
                if q.payment.is_none() || q.refunds.len() != 1 || q.refunded != q.amount {
                    out.push(format!(
                        "{r}: journal REFUNDED but the QR was paid {}, refunded {} time(s), {} in all",
                        q.payment.is_some(),
                        q.refunds.len(),
                        q.refunded
                    ));
                }
            }
            (OpState::Declined, Some(q)) if q.payment.is_some() => {
                out.push(format!("{r}: journal DECLINED but the QR was paid"));
            }
            (OpState::Succeeded | OpState::Refunded, None) => out.push(format!(
                "{r}: journal {} but the aggregator has no such QR",
                row.state
            )),
            (OpState::Declined | OpState::Attention, _) => {}
            (state @ (OpState::Pending | OpState::Unknown | OpState::RefundPending), _) => {
                out.push(format!("{r}: still {state} in the journal"))
            }
        }
    }
    for q in &mpm.qrs {
        let known = sales
            .clone()
            .any(|r| r.partner_reference_no == q.partner_reference_no);
        if !known && q.payment.is_some() && q.refunded != q.amount {
            out.push(format!(
                "{}: a QR paid {} that the journal never recorded",
                q.partner_reference_no,
                q.amount - q.refunded
            ));
        }
    }
    out
}
