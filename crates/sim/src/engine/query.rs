//! The `qr-cpm-query` endpoint (service 61): a payment's status.

use jiff::Zoned;
use serde_json::{json, Map, Value};

use super::fields::{opt_str, req_str, unknown_keys, FieldErr};
use super::{reject, Engine, Kind, Reject, Reply};
use crate::faults::Service;
use crate::ledger::PaymentStatus;
use crate::snap::sign;

impl Engine {
    /// A query call that passed [`Engine::authorize`]: the payment's status now.
    pub(super) fn query(
        &mut self,
        body: &Map<String, Value>,
        now: &Zoned,
    ) -> Result<(Reply, bool), Reject> {
        const KNOWN: [&str; 8] = [
            "originalPartnerReferenceNo",
            "originalReferenceNo",
            "originalExternalId",
            "serviceCode",
            "merchantId",
            "subMerchantId",
            "externalStoreId",
            "additionalInfo",
        ];
        self.warn_unknown(Service::Query, unknown_keys(body, &KNOWN));
        let fields = (|| {
            let partner = opt_str(body, "originalPartnerReferenceNo", 64)?;
            let reference = opt_str(body, "originalReferenceNo", 64)?;
            opt_str(body, "originalExternalId", 36)?;
            if partner.is_none() && reference.is_none() {
                return Err(FieldErr::Missing("originalPartnerReferenceNo".into()));
            }
            if opt_str(body, "serviceCode", 2)?.is_some_and(|c| c != "60") {
                return Err(FieldErr::Format("serviceCode".into(), "not 60"));
            }
            let merchant = req_str(body, "merchantId", 64)?;
            Ok((partner, reference, merchant))
        })();
        let (partner, reference, merchant) = fields.map_err(FieldErr::into_reject)?;
        if merchant != self.cfg.merchant_id {
            return Err(reject(
                Kind::Merchant,
                404,
                "08",
                "Invalid Merchant",
                "merchantId is not ours",
            ));
        }
        let Some(p) = self.ledger.get(partner, reference) else {
            return Err(reject(
                Kind::NotFound,
                404,
                "01",
                "Transaction Not Found",
                "",
            ));
        };
        let now_ts = now.timestamp();
        let status = p.status(now_ts);
        let partner_key = if self.cfg.misspelled_partner_reference {
            "originalPartnerReferanceNo"
        } else {
            "originalPartnerReferenceNo"
        };
        let mut out = json!({
            "responseCode": "2006100",
            "responseMessage": "Successful",
            "originalReferenceNo": p.reference_no,
            "serviceCode": "60",
            "latestTransactionStatus": status.latest_transaction_status(),
            "transactionStatusDesc": status.description(),
            "amount": { "value": format!("{}.00", p.amount), "currency": "IDR" },
            "additionalInfo": { "refundedAmount": { "value": format!("{}.00", p.refunded()), "currency": "IDR" } },
        });
        if let Some(o) = out.as_object_mut() {
            o.insert(partner_key.into(), json!(p.partner_reference_no));
            if matches!(
                status,
                PaymentStatus::Succeeded
                    | PaymentStatus::PartiallyRefunded
                    | PaymentStatus::Refunded
            ) {
                let paid = p.paid_at().to_zoned(now.time_zone().clone());
                o.insert("paidTime".into(), json!(sign::timestamp(&paid)));
            }
            if let Some(c) = &p.decline_code {
                o.insert("latestTransactionStatusCode".into(), json!(c));
            }
        }
        Ok((
            Reply {
                status: 200,
                body: out,
            },
            false,
        ))
    }
}
