//! Comparing the gate's journal with the simulator's ledger: the check behind the demo's
//! summary, the fault tests and the crash harness. After the reconciler has run, the two must
//! tell the same story about every rupiah.
//!
//! It lives on the gate's side: the simulator only exposes its ledger ([`LedgerEntry`]) and
//! never reads the gate's journal types.

use std::collections::HashMap;

use crate::fare::OpState;
use crate::journal::OpRow;
use crate::sim::{LedgerEntry, PaymentStatus};

/// Every disagreement between `ledger` and `journal`, one line each; empty when they agree.
///
/// Rules: a SUCCEEDED operation is paid in the ledger, same amount and reference, nothing
/// refunded; a REFUNDED one is refunded in full; a DECLINED one charged nothing; a row still
/// uncertain is reported; a ledger payment the journal does not know must have charged nothing.
pub fn compare_with_journal(ledger: &[LedgerEntry], journal: &[OpRow]) -> Vec<String> {
    let by_ref: HashMap<&str, &LedgerEntry> = ledger
        .iter()
        .map(|e| (e.partner_reference_no.as_str(), e))
        .collect();
    let mut out = Vec::new();
    for row in journal {
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
