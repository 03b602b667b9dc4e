//! What each passenger really paid, from the ledger: net charge (charges minus their refunds;
//! holds are reserved, not charged) and the holds still open. Pure: entries in, summary out.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ledger::{HoldState, LedgerEntry};

/// One passenger's money at the aggregator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passenger {
    /// The passenger key ([`LedgerEntry::passenger`]).
    pub passenger: String,
    /// The PAN, first 8 and last 4 digits kept.
    pub masked_pan: String,
    /// The issuer's NNS.
    pub nns: String,
    /// Charges minus their refunds, whole rupiah: what the passenger is out of pocket for.
    /// Holds are not counted (see [`LedgerEntry::charged`]).
    pub net_charged: u64,
    /// Rupiah reserved by holds still open.
    pub held: u64,
    /// How many holds are still open.
    pub holds_open: u64,
    /// Payments recorded for this passenger, all kinds and outcomes.
    pub payments: u64,
}

/// The sums over every passenger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassengerTotals {
    /// Passengers seen.
    pub passengers: u64,
    /// Payments recorded.
    pub payments: u64,
    /// Net charge of all passengers.
    pub net_charged: u64,
    /// Rupiah held in open holds.
    pub held: u64,
    /// Holds still open.
    pub holds_open: u64,
}

/// Every passenger in order of their first payment, and the totals: the body of
/// `GET /sim/ledger/passengers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passengers {
    /// One row per passenger.
    pub passengers: Vec<Passenger>,
    /// The sums.
    pub totals: PassengerTotals,
}

impl Passengers {
    /// The passenger with key `key`.
    pub fn get(&self, key: &str) -> Option<&Passenger> {
        self.passengers.iter().find(|p| p.passenger == key)
    }
}

/// Sums `entries` per passenger: net charge from [`LedgerEntry::charged`], open holds from
/// [`LedgerEntry::hold`] and [`LedgerEntry::held`].
pub fn summarize_passengers(entries: &[LedgerEntry]) -> Passengers {
    let mut out = Passengers::default();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        let i = match index.get(e.passenger.as_str()) {
            Some(i) => *i,
            None => {
                index.insert(&e.passenger, out.passengers.len());
                out.passengers.push(Passenger {
                    passenger: e.passenger.clone(),
                    masked_pan: e.masked_pan.clone(),
                    nns: e.nns.clone(),
                    ..Passenger::default()
                });
                out.passengers.len() - 1
            }
        };
        let open = u64::from(e.hold == HoldState::Open);
        if let Some(p) = out.passengers.get_mut(i) {
            p.net_charged = p.net_charged.saturating_add(e.charged());
            p.held = p.held.saturating_add(e.held);
            p.holds_open += open;
            p.payments += 1;
        }
        let t = &mut out.totals;
        t.net_charged = t.net_charged.saturating_add(e.charged());
        t.held = t.held.saturating_add(e.held);
        t.holds_open += open;
        t.payments += 1;
    }
    out.totals.passengers = out.passengers.len() as u64;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{HoldReference, PaymentStatus, TapInfo};

    fn entry(passenger: &str, amount: u64, status: PaymentStatus, tap: &str) -> LedgerEntry {
        LedgerEntry {
            partner_reference_no: format!("{passenger}-{amount}"),
            reference_no: None,
            external_id: "1".into(),
            masked_pan: format!("{passenger}*****"),
            nns: "93600002".into(),
            amount,
            status,
            decline_code: None,
            transaction_date: String::new(),
            tap: TapInfo {
                tap_type: (!tap.is_empty()).then(|| tap.to_string()),
                ..TapInfo::default()
            },
            refunds: vec![],
            refunded: 0,
            fault: None,
            passenger: passenger.into(),
            hold: HoldState::NotHold,
            held: 0,
            hold_reference: None,
        }
    }

    #[test]
    fn net_charge_counts_charges_and_their_refunds_never_holds() {
        use PaymentStatus::*;
        let open = LedgerEntry {
            hold: HoldState::Open,
            held: 5000,
            refunded: 4000,
            ..entry("a", 9000, PartiallyRefunded, "IN")
        };
        let finalized = LedgerEntry {
            hold: HoldState::Finalized {
                by: "a-3000".into(),
            },
            ..entry("a", 9001, Succeeded, "IN")
        };
        let tap_out = LedgerEntry {
            hold_reference: Some(HoldReference::Finalized {
                hold: "a-9001".into(),
            }),
            ..entry("a", 3000, Succeeded, "OUT")
        };
        let released = LedgerEntry {
            hold: HoldState::Released,
            refunded: 7000,
            ..entry("b", 7000, Refunded, "IN")
        };
        let part_refunded = LedgerEntry {
            refunded: 2000,
            ..entry("b", 14000, PartiallyRefunded, "OUT")
        };
        let entries = vec![
            open,
            entry("b", 5000, Succeeded, ""),
            finalized,
            tap_out,
            released,
            part_refunded,
            entry("b", 3000, Declined, "OUT"),
            entry("b", 3001, Pending, "OUT"),
            entry("c", 9000, Declined, "IN"),
        ];
        let s = summarize_passengers(&entries);
        let row = |k: &str| {
            let p = s.get(k).unwrap();
            (p.net_charged, p.held, p.holds_open, p.payments)
        };
        assert_eq!(row("a"), (3000, 5000, 1, 3));
        assert_eq!(row("b"), (5000 + 12000, 0, 0, 5));
        assert_eq!(row("c"), (0, 0, 0, 1));
        let order: Vec<&str> = s.passengers.iter().map(|p| p.passenger.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(s.passengers[0].masked_pan, "a*****");
        assert_eq!(
            s.totals,
            PassengerTotals {
                passengers: 3,
                payments: 9,
                net_charged: 20000,
                held: 5000,
                holds_open: 1,
            }
        );
        assert_eq!(summarize_passengers(&[]), Passengers::default());
    }
}
