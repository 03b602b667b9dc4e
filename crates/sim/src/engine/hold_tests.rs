//! The hold model through the engine: tap-ins reserve, tap-outs naming them finalize them,
//! refunds release them, and a hold a tap-out finalized cannot be refunded.

use serde_json::{json, Value};

use super::tests::{call, engine};
use super::{Action, Engine, Reply};
use crate::clock::ManualClock;
use crate::faults::{Fault, Service};
use crate::ledger::{HoldReference, HoldState, LedgerEntry, PaymentStatus};
use crate::passengers::summarize_passengers;

/// A gate talking to an engine on a manual clock: fresh payloads, fresh external ids.
struct Gate {
    e: Engine,
    clock: ManualClock,
    token: String,
    ext: u32,
}

const PAN_A: &str = "9360000211219862952";
const PAN_B: &str = "9360091430100531720";

impl Gate {
    fn new() -> Gate {
        let (e, clock, token) = engine();
        Gate {
            e,
            clock,
            token,
            ext: 100,
        }
    }

    fn send(&mut self, service: Service, body: &Value, fault: Option<Fault>) -> Reply {
        self.ext += 1;
        match call(
            &mut self.e,
            &self.clock,
            &self.token,
            self.ext,
            service,
            body,
            fault,
        ) {
            Action::Answer(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// A payment of `amount` by `pan` with `additionalInfo` `info` (none when null).
    fn tap(&mut self, pref: &str, pan: &str, amount: u64, info: Value) -> Reply {
        self.tap_with(pref, pan, amount, info, None)
    }

    fn tap_with(
        &mut self,
        pref: &str,
        pan: &str,
        amount: u64,
        info: Value,
        fault: Option<Fault>,
    ) -> Reply {
        let token = self.ext.to_be_bytes();
        let qr = crate::cpm::build::payload(
            &crate::cpm::build::PayloadSpec::new(pan).with_token(&token),
        );
        let mut body = json!({
            "partnerReferenceNo": pref, "qrContent": qr, "merchantId": "MRT-JKT-DEMO",
            "amount": {"value": format!("{amount}.00"), "currency": "IDR"}
        });
        if !info.is_null() {
            body["additionalInfo"] = info;
        }
        self.send(Service::Payment, &body, fault)
    }

    fn tap_in(&mut self, pref: &str, pan: &str, amount: u64) -> String {
        let r = self.tap(
            pref,
            pan,
            amount,
            json!({"tapType": "IN", "stationId": "BLM"}),
        );
        assert_eq!(r.body["responseCode"], "2006000", "{r:?}");
        r.body["referenceNo"].as_str().unwrap().to_string()
    }

    /// A tap-out of `amount` naming the tap-in `tap_in` (by both references when it is
    /// known to the ledger, by the partner reference alone otherwise).
    fn tap_out(&mut self, pref: &str, pan: &str, amount: u64, tap_in: Option<&str>) -> Reply {
        let mut info = json!({"tapType": "OUT", "stationId": "ASN"});
        if let Some(t) = tap_in {
            info["tapInPartnerReferenceNo"] = json!(t);
            if let Some(r) = self.e.ledger().iter().find(|e| e.partner_reference_no == t) {
                info["tapInReferenceNo"] = json!(r.reference_no);
            }
        }
        self.tap(pref, pan, amount, info)
    }

    fn refund(&mut self, reference: &str, refund_no: &str, amount: u64) -> Reply {
        let body = json!({
            "merchantId": "MRT-JKT-DEMO", "originalReferenceNo": reference,
            "partnerRefundNo": refund_no,
            "refundAmount": {"value": format!("{amount}.00"), "currency": "IDR"},
            "reason": "test",
        });
        self.send(Service::Refund, &body, None)
    }

    fn query_status(&mut self, pref: &str) -> Value {
        let body = json!({
            "originalPartnerReferenceNo": pref, "serviceCode": "60",
            "merchantId": "MRT-JKT-DEMO",
        });
        let r = self.send(Service::Query, &body, None);
        assert_eq!(r.body["responseCode"], "2006100", "{r:?}");
        r.body["latestTransactionStatus"].clone()
    }

    fn entry(&self, pref: &str) -> LedgerEntry {
        self.e
            .ledger()
            .into_iter()
            .find(|e| e.partner_reference_no == pref)
            .unwrap()
    }
}

#[test]
fn a_tap_in_holds_and_a_tap_out_naming_it_finalizes_it() {
    let mut g = Gate::new();
    g.tap_in("IN-1", PAN_A, 9000);
    let hold = g.entry("IN-1");
    assert_eq!((hold.hold.clone(), hold.held), (HoldState::Open, 9000));
    // Reserved, not charged; the per-payment view the audit uses is unchanged.
    assert_eq!((hold.charged(), hold.net_charged()), (0, 9000));

    let r = g.tap_out("OUT-1", PAN_A, 3000, Some("IN-1"));
    assert_eq!(r.body["responseCode"], "2006000", "{r:?}");
    let out = g.entry("OUT-1");
    assert_eq!(
        out.hold_reference,
        Some(HoldReference::Finalized {
            hold: "IN-1".into()
        })
    );
    assert_eq!(
        (out.hold.clone(), out.held, out.charged()),
        (HoldState::NotHold, 0, 3000)
    );
    let hold = g.entry("IN-1");
    assert_eq!(
        (hold.hold.clone(), hold.held),
        (HoldState::Finalized { by: "OUT-1".into() }, 0)
    );
    // The wire does not change: the hold still queries as a success.
    assert_eq!(hold.status, PaymentStatus::Succeeded);
    assert_eq!(g.query_status("IN-1"), "00");

    let s = summarize_passengers(&g.e.ledger());
    assert_eq!(s.passengers.len(), 1);
    let p = &s.passengers[0];
    assert_eq!(
        (p.net_charged, p.held, p.holds_open, p.payments),
        (3000, 0, 0, 2)
    );
    assert_eq!(
        (p.masked_pan.as_str(), p.nns.as_str()),
        ("93600002*******2952", "93600002")
    );
    assert_eq!(
        g.e.stats().protocol_violations(),
        0,
        "{:?}",
        g.e.stats().recent
    );
}

#[test]
fn a_refund_of_a_finalized_hold_is_refused_and_changes_nothing() {
    let mut g = Gate::new();
    let hold_ref = g.tap_in("IN-1", PAN_A, 9000);
    // A release asked while the hold was open, replayed after the tap-out, is answered
    // the same (idempotent), and refunds nothing twice.
    let first = g.refund(&hold_ref, "RF-IN-1", 1000);
    assert_eq!(first.body["responseCode"], "2008000", "{first:?}");
    assert_eq!(g.entry("IN-1").held, 8000);
    let out_ref = g.tap_out("OUT-1", PAN_A, 3000, Some("IN-1")).body["referenceNo"]
        .as_str()
        .unwrap()
        .to_string();
    let before = g.e.ledger();

    let r = g.refund(&hold_ref, "RF-IN-2", 8000);
    assert_eq!(
        (r.status, r.body["responseCode"].clone()),
        (403, json!("4038015")),
        "{r:?}"
    );
    assert!(
        r.body["responseMessage"]
            .as_str()
            .unwrap()
            .contains("finalized"),
        "{r:?}"
    );
    assert_eq!(g.e.ledger(), before, "a refused refund changes nothing");
    assert_eq!(g.e.stats().refund_rejections, 1);
    assert_eq!(g.refund(&hold_ref, "RF-IN-1", 1000), first);
    assert_eq!(g.e.ledger(), before);

    // The tap-out is a charge: refunded as today, in part, idempotently.
    let r = g.refund(&out_ref, "RF-OUT-1", 1000);
    assert_eq!(r.body["responseCode"], "2008000", "{r:?}");
    assert_eq!(g.refund(&out_ref, "RF-OUT-1", 1000), r);
    let out = g.entry("OUT-1");
    assert_eq!((out.refunded, out.charged()), (1000, 2000));
    let p = summarize_passengers(&g.e.ledger()).passengers[0].clone();
    assert_eq!((p.net_charged, p.held, p.holds_open), (2000, 0, 0));
}

#[test]
fn a_refund_releases_an_open_hold_in_part_or_whole() {
    let mut g = Gate::new();
    let reference = g.tap_in("IN-1", PAN_A, 9000);
    assert_eq!(
        g.refund(&reference, "RF-1", 4000).body["responseCode"],
        "2008000"
    );
    let hold = g.entry("IN-1");
    assert_eq!(
        (hold.hold.clone(), hold.held, hold.charged()),
        (HoldState::Open, 5000, 0)
    );
    let s = summarize_passengers(&g.e.ledger());
    assert_eq!(
        (s.totals.held, s.totals.holds_open, s.totals.net_charged),
        (5000, 1, 0)
    );

    assert_eq!(
        g.refund(&reference, "RF-2", 5000).body["responseCode"],
        "2008000"
    );
    let hold = g.entry("IN-1");
    assert_eq!((hold.hold.clone(), hold.held), (HoldState::Released, 0));
    let s = summarize_passengers(&g.e.ledger());
    assert_eq!(
        (s.totals.held, s.totals.holds_open, s.totals.net_charged),
        (0, 0, 0)
    );

    // A partly released hold is still finalized by its tap-out, which releases the rest.
    let reference = g.tap_in("IN-2", PAN_A, 9000);
    g.refund(&reference, "RF-3", 2000);
    g.tap_out("OUT-2", PAN_A, 3000, Some("IN-2"));
    let hold = g.entry("IN-2");
    assert_eq!(
        (hold.hold, hold.held),
        (HoldState::Finalized { by: "OUT-2".into() }, 0)
    );
    let p = summarize_passengers(&g.e.ledger()).passengers[0].clone();
    assert_eq!(
        (p.net_charged, p.held, p.holds_open, p.payments),
        (3000, 0, 0, 3)
    );
}

#[test]
fn a_tap_out_naming_no_open_hold_is_a_plain_charge() {
    let mut g = Gate::new();
    let unmatched = |e: &LedgerEntry| match &e.hold_reference {
        Some(HoldReference::Unmatched { named, why }) => format!("{named}: {why}"),
        other => panic!("{other:?}"),
    };
    // Unknown reference.
    let r = g.tap_out("OUT-0", PAN_A, 14000, Some("NOPE"));
    assert_eq!(r.body["responseCode"], "2006000", "{r:?}");
    assert_eq!(
        unmatched(&g.entry("OUT-0")),
        "NOPE: no payment with that reference"
    );
    // A hold already finalized by another tap-out.
    g.tap_in("IN-1", PAN_A, 9000);
    g.tap_out("OUT-1", PAN_A, 3000, Some("IN-1"));
    g.tap_out("OUT-2", PAN_A, 3000, Some("IN-1"));
    assert_eq!(
        unmatched(&g.entry("OUT-2")),
        "IN-1: hold already finalized by OUT-1"
    );
    // A released hold.
    let reference = g.tap_in("IN-2", PAN_A, 9000);
    g.refund(&reference, "RF-2", 9000);
    g.tap_out("OUT-3", PAN_A, 3000, Some("IN-2"));
    assert_eq!(unmatched(&g.entry("OUT-3")), "IN-2: hold already released");
    // A payment that is no tap-in, and references that disagree.
    g.tap("PLAIN-1", PAN_B, 5000, Value::Null);
    g.tap_out("OUT-4", PAN_B, 3000, Some("PLAIN-1"));
    assert_eq!(unmatched(&g.entry("OUT-4")), "PLAIN-1: not a tap-in");
    g.tap_in("IN-3", PAN_B, 9000);
    let info = json!({"tapType": "OUT", "tapInPartnerReferenceNo": "IN-3",
                      "tapInReferenceNo": g.entry("IN-1").reference_no});
    g.tap("OUT-5", PAN_B, 3000, info);
    assert!(unmatched(&g.entry("OUT-5")).starts_with("IN-3: no payment"));
    assert_eq!(g.entry("IN-3").hold, HoldState::Open);
    // No reference at all: a plain charge that says nothing about holds.
    g.tap_out("OUT-6", PAN_B, 14000, None);
    assert_eq!(g.entry("OUT-6").hold_reference, None);
    // No tapType: today's plain payment.
    let plain = g.entry("PLAIN-1");
    assert_eq!(
        (plain.hold.clone(), plain.held, plain.charged()),
        (HoldState::NotHold, 0, 5000)
    );

    let s = summarize_passengers(&g.e.ledger());
    let a = s.passengers[0].clone();
    // 14000 + 3000 (finalized) + 3000 (OUT-2) + 3000 (OUT-3); both holds closed.
    assert_eq!(
        (a.net_charged, a.held, a.holds_open, a.payments),
        (23000, 0, 0, 6)
    );
    let b = s.passengers[1].clone();
    assert_eq!(
        (b.net_charged, b.held, b.holds_open, b.payments),
        (25000, 9000, 1, 5)
    );
    assert_eq!(
        (s.totals.held, s.totals.holds_open, s.totals.net_charged),
        (9000, 1, 48000)
    );
}

#[test]
fn pending_and_declined_tap_ins_and_declined_tap_outs_finalize_nothing() {
    let mut g = Gate::new();
    let info = json!({"tapType": "IN"});
    let r = g.tap_with("IN-P", PAN_A, 9000, info, Some(Fault::Accepted));
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        (g.entry("IN-P").hold, g.entry("IN-P").held),
        (HoldState::Pending, 0)
    );
    g.tap_out("OUT-P", PAN_A, 3000, Some("IN-P"));
    assert!(matches!(
        g.entry("OUT-P").hold_reference,
        Some(HoldReference::Unmatched { ref why, .. }) if why == "hold still pending"
    ));
    // Once its pending time is over the hold is open, and a later tap-out finalizes it.
    g.clock
        .advance_ms(i64::try_from(g.e.cfg.pending_ms).unwrap() + 1);
    assert_eq!(
        (g.entry("IN-P").hold, g.entry("IN-P").held),
        (HoldState::Open, 9000)
    );

    // A declined tap-out leaves the hold open; a declined tap-in reserves nothing.
    g.e.decline_pan(PAN_A, "4036014");
    let r = g.tap_out("OUT-D", PAN_A, 3000, Some("IN-P"));
    assert_eq!(r.body["responseCode"], "4036014", "{r:?}");
    assert_eq!(g.entry("OUT-D").hold_reference, None);
    assert_eq!(g.entry("IN-P").hold, HoldState::Open);
    g.tap("IN-D", PAN_A, 9000, json!({"tapType": "IN"}));
    assert_eq!(
        (g.entry("IN-D").hold, g.entry("IN-D").held),
        (HoldState::NotHold, 0)
    );
    g.tap_out("OUT-X", PAN_B, 3000, Some("IN-D"));
    assert!(matches!(
        g.entry("OUT-X").hold_reference,
        Some(HoldReference::Unmatched { ref why, .. }) if why == "tap-in was declined"
    ));
    g.e.decline_pan(PAN_A, "");
    g.tap_out("OUT-1", PAN_A, 3000, Some("IN-P"));
    assert_eq!(
        g.entry("IN-P").hold,
        HoldState::Finalized { by: "OUT-1".into() }
    );
}
