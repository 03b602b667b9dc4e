//! The `qr-cpm-refund` endpoint (service 80): idempotent refunds. A refund of an open hold
//! releases it (in part or whole); a hold finalized by a tap-out is refused (`4038015`).

use jiff::Zoned;
use serde_json::{json, Map, Value};

use super::fields::{opt_amount, opt_str, req_str, rupiah, FieldErr};
use super::{check_refund_amount, not_found, not_permitted, reject, Engine, Kind, Reject, Reply};
use crate::faults::{Fault, Service};
use crate::ledger::{Payment, PaymentStatus, RefundEntry};
use crate::snap::sign;
use crate::RefundReplay;

impl Engine {
    /// A refund call that passed [`Engine::authorize`].
    pub(super) fn refund(
        &mut self,
        body: &Map<String, Value>,
        now: &Zoned,
        fault: Option<Fault>,
    ) -> Result<(Reply, bool), Reject> {
        const KNOWN: [&str; 10] = [
            "merchantId",
            "subMerchantId",
            "originalPartnerReferenceNo",
            "originalReferenceNo",
            "originalExternalId",
            "partnerRefundNo",
            "refundAmount",
            "reason",
            "externalStoreId",
            "additionalInfo",
        ];
        let f = self.read_fields(Service::Refund, body, &KNOWN, parse_refund)?;
        self.check_merchant(f.merchant)?;
        if let Some(reply) = self.refund_again(&f)? {
            return Ok((reply, false));
        }
        self.check_refundable(&f, now)?;
        let entry = self
            .ledger
            .add_refund(
                f.reference,
                f.refund_no,
                f.amount,
                sign::timestamp(now),
                fault.map(|f| f.name().to_string()),
            )
            .ok_or_else(|| not_found(""))?;
        self.stats.refunds_made += 1;
        let reply = match self.ledger.get(None, Some(f.reference)) {
            Some(p) => refund_reply(p, &entry),
            None => return Err(not_found("")),
        };
        Ok((reply, true))
    }

    /// A `partnerRefundNo` seen before: the same refund again is answered as configured
    /// (never refunded twice); another refund under the same number is refused. `None` for a
    /// new number.
    fn refund_again(&mut self, f: &RefundFields<'_>) -> Result<Option<Reply>, Reject> {
        let Some((p, r, key)) = self.ledger.refund(f.refund_no) else {
            return Ok(None);
        };
        let same = key.original_reference_no == f.reference
            && key.amount == f.amount
            && f.partner.map_or(true, |x| x == p.partner_reference_no);
        if !same {
            return Err(reject(
                Kind::Refund,
                409,
                "01",
                "Duplicate partnerRefundNo",
                "partnerRefundNo already used for another refund",
            ));
        }
        let reply = match self.cfg.refund_replay {
            RefundReplay::SameResult => refund_reply(p, r),
            RefundReplay::Inconsistent => Reply {
                status: 404,
                body: json!({ "responseCode": "4048018", "responseMessage": "Inconsistent Request" }),
            },
        };
        self.stats.refund_replays += 1;
        Ok(Some(reply))
    }

    /// The payment exists, is final and paid, is not a hold a tap-out finalized, and has at
    /// least the amount left to refund.
    fn check_refundable(&self, f: &RefundFields<'_>, now: &Zoned) -> Result<(), Reject> {
        let Some(p) = self.ledger.get(f.partner, Some(f.reference)) else {
            return Err(not_found(""));
        };
        match p.status(now.timestamp()) {
            PaymentStatus::Pending => return Err(not_permitted("payment still pending")),
            PaymentStatus::Declined => return Err(not_found("payment was declined")),
            _ => {}
        }
        if let Some(by) = &p.finalized_by {
            // The tap-out charged its fare and released the hold: nothing is left to release.
            return Err(not_permitted(format!(
                "hold already finalized by tap-out {by}"
            )));
        }
        check_refund_amount(f.amount, p.refunded(), p.amount)
    }
}

/// The fields of a refund body the simulator acts on.
struct RefundFields<'a> {
    merchant: &'a str,
    reference: &'a str,
    partner: Option<&'a str>,
    refund_no: &'a str,
    amount: u64,
}

fn parse_refund(body: &Map<String, Value>) -> Result<RefundFields<'_>, FieldErr> {
    let merchant = req_str(body, "merchantId", 64)?;
    let reference = req_str(body, "originalReferenceNo", 64)?;
    let partner = opt_str(body, "originalPartnerReferenceNo", 64)?;
    let refund_no = req_str(body, "partnerRefundNo", 64)?;
    let amount = opt_amount(body, "refundAmount")?
        .ok_or_else(|| FieldErr::Missing("refundAmount".into()))?;
    req_str(body, "reason", 256)?;
    opt_str(body, "subMerchantId", 64)?;
    opt_str(body, "originalExternalId", 36)?;
    Ok(RefundFields {
        merchant,
        reference,
        partner,
        refund_no,
        amount,
    })
}

fn refund_reply(p: &Payment, r: &RefundEntry) -> Reply {
    Reply {
        status: 200,
        body: json!({
            "responseCode": "2008000",
            "responseMessage": "Successful",
            "originalReferenceNo": p.reference_no,
            "originalPartnerReferenceNo": p.partner_reference_no,
            "refundNo": r.refund_no,
            "partnerRefundNo": r.partner_refund_no,
            "refundAmount": rupiah(r.amount),
            "refundTime": r.refund_time,
        }),
    }
}
