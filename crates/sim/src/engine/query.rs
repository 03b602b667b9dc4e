//! The `qr-cpm-query` endpoint (service 61): a payment's status.

use jiff::Zoned;
use serde_json::{json, Map, Value};

use super::fields::{opt_str, original_with_external_id, req_str, rupiah, FieldErr};
use super::{not_found, Engine, Reject, Reply};
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
        let (o, merchant) = self.read_fields(Service::Query, body, &KNOWN, |b| {
            let o = original_with_external_id(b, "originalPartnerReferenceNo")?;
            if opt_str(b, "serviceCode", 2)?.is_some_and(|c| c != "60") {
                return Err(FieldErr::Format("serviceCode".into(), "not 60"));
            }
            Ok((o, req_str(b, "merchantId", 64)?))
        })?;
        self.check_merchant(merchant)?;
        let Some(p) = self.ledger.get(o.partner, o.reference) else {
            return Err(not_found(""));
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
            "amount": rupiah(p.amount),
            "additionalInfo": { "refundedAmount": rupiah(p.refunded()) },
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
