//! The `qr-cpm-payment` endpoint (service 60): a tap's payment.

use jiff::{Timestamp, Zoned};
use serde_json::{json, Map, Value};

use super::auth::header;
use super::fields::{opt_amount, opt_obj, opt_str, prefix, req_str, rupiah, FieldErr};
use super::{reject, Engine, Kind, Reject, Reply, SimRequest};
use crate::faults::{Fault, Service};
use crate::ledger::{Payment, TapInfo};
use crate::qr::pan_of;
use crate::snap::sign;

impl Engine {
    /// A payment call that passed [`Engine::authorize`].
    pub(super) fn payment(
        &mut self,
        req: &SimRequest<'_>,
        body: &Map<String, Value>,
        now: &Zoned,
        fault: Option<Fault>,
    ) -> Result<(Reply, bool), Reject> {
        const KNOWN: [&str; 11] = [
            "partnerReferenceNo",
            "qrContent",
            "amount",
            "feeAmount",
            "merchantId",
            "subMerchantId",
            "terminalId",
            "externalStoreId",
            "title",
            "scannerInfo",
            "additionalInfo",
        ];
        let p = self.read_fields(Service::Payment, body, &KNOWN, parse_payment)?;
        let pan = self.check_payable(&p)?;
        let ext = header(req.headers, "x-external-id").unwrap_or_default();
        let recorded = self.record_payment(p, pan, ext, now, fault);
        Ok((self.payment_reply(recorded), true))
    }

    /// Our merchant, a new `partnerReferenceNo`, a non-zero amount and a decodable `qrContent`
    /// not presented before (it is used up here). Returns the payload's PAN.
    fn check_payable(&mut self, p: &PaymentFields<'_>) -> Result<String, Reject> {
        let seen = self.ledger.has_partner_reference(p.partner_reference_no);
        self.check_new_payment(p.merchant_id, seen, p.amount)?;
        let Some(pan) = pan_of(p.qr_content) else {
            return Err(reject(
                Kind::Qr,
                400,
                "01",
                "Invalid Field Format",
                "qrContent is not a QRIS CPM payload",
            ));
        };
        if !self.ledger.consume_qr(p.qr_content) {
            return Err(reject(
                Kind::QrReuse,
                403,
                "00",
                "Transaction Expired",
                "qrContent was already used",
            ));
        }
        Ok(pan)
    }

    /// Writes the payment to the ledger: declined when its PAN is (or the issuer model draws a
    /// decline), pending for a while when
    /// the call is answered with a 202. A tap-out naming an open hold finalizes it.
    fn record_payment(
        &mut self,
        p: PaymentFields<'_>,
        pan: String,
        external_id: &str,
        now: &Zoned,
        fault: Option<Fault>,
    ) -> Recorded {
        let decline_code = match self.declines.get(&pan) {
            Some(c) => Some(c.clone()),
            None => self.faults.issuer_decline(),
        };
        let accepted = matches!(fault, Some(Fault::Accepted));
        let pending_until = accepted.then(|| {
            let ms = i64::try_from(self.cfg.pending_ms).unwrap_or(i64::MAX / 2);
            now.timestamp()
                .checked_add(jiff::SignedDuration::from_millis(ms))
                .unwrap_or(Timestamp::MAX)
        });
        let reference_no = decline_code.is_none().then(|| self.ledger.new_reference());
        // A declined tap-out finalizes nothing: the hold it named stays open.
        let hold_reference = if decline_code.is_none() {
            self.ledger
                .finalize_hold(&p.tap, p.partner_reference_no, now.timestamp())
        } else {
            None
        };
        let transaction_date = sign::timestamp(now);
        self.ledger.insert(Payment {
            partner_reference_no: p.partner_reference_no.to_string(),
            reference_no: reference_no.clone(),
            external_id: external_id.to_string(),
            pan,
            amount: p.amount,
            decline_code: decline_code.clone(),
            pending_until,
            created: now.timestamp(),
            transaction_date: transaction_date.clone(),
            tap: p.tap,
            refunds: vec![],
            fault: fault.map(|f| f.name().to_string()),
            finalized_by: None,
            hold_reference,
        });
        Recorded {
            partner_reference_no: p.partner_reference_no.to_string(),
            reference_no,
            decline_code,
            transaction_date,
            amount: p.amount,
        }
    }

    /// The answer to a recorded payment: the issuer's decline, or success.
    fn payment_reply(&mut self, r: Recorded) -> Reply {
        if let Some(c) = r.decline_code {
            self.stats.declines += 1;
            self.note(
                Service::Payment,
                "decline",
                c.clone(),
                "declined PAN".into(),
            );
            return Reply {
                status: c.get(..3).and_then(|s| s.parse().ok()).unwrap_or(403),
                body: json!({
                    "responseCode": c,
                    "responseMessage": decline_message(&c),
                    "partnerReferenceNo": r.partner_reference_no,
                    "transactionDate": r.transaction_date,
                }),
            };
        }
        self.stats.payments_accepted += 1;
        let body = json!({
            "responseCode": "2006000",
            "responseMessage": "Successful",
            "referenceNo": r.reference_no,
            "partnerReferenceNo": r.partner_reference_no,
            "transactionDate": r.transaction_date,
            "amount": rupiah(r.amount),
        });
        Reply { status: 200, body }
    }
}

/// The message of a decline code, by its case digits.
fn decline_message(code: &str) -> &'static str {
    match code.get(5..7) {
        Some("03") => "Suspected Fraud",
        Some("05") => "Do Not Honor",
        Some("07") => "Card Blocked",
        Some("14") => "Insufficient Funds",
        Some("15") => "Transaction Not Permitted",
        _ => "Declined",
    }
}

/// What the ledger recorded for a payment, for its answer.
struct Recorded {
    partner_reference_no: String,
    reference_no: Option<String>,
    decline_code: Option<String>,
    transaction_date: String,
    amount: u64,
}

/// The fields of a payment body the simulator acts on.
struct PaymentFields<'a> {
    partner_reference_no: &'a str,
    qr_content: &'a str,
    amount: u64,
    merchant_id: &'a str,
    tap: TapInfo,
}

fn parse_payment(body: &Map<String, Value>) -> Result<PaymentFields<'_>, FieldErr> {
    let partner_reference_no = req_str(body, "partnerReferenceNo", 64)?;
    let qr_content = req_str(body, "qrContent", 512)?;
    let amount = opt_amount(body, "amount")?.ok_or_else(|| FieldErr::Missing("amount".into()))?;
    opt_amount(body, "feeAmount")?;
    let merchant_id = req_str(body, "merchantId", 64)?;
    for key in ["subMerchantId", "terminalId", "externalStoreId", "title"] {
        opt_str(body, key, 64)?;
    }
    if let Some(scanner) = opt_obj(body, "scannerInfo")? {
        for key in ["deviceId", "deviceVersion", "deviceModel", "deviceIp"] {
            opt_str(scanner, key, 64).map_err(|e| prefix(e, "scannerInfo"))?;
        }
    }
    let mut tap = TapInfo::default();
    if let Some(info) = opt_obj(body, "additionalInfo")? {
        let get = |k: &str| -> Result<Option<String>, FieldErr> {
            Ok(opt_str(info, k, 64)
                .map_err(|e| prefix(e, "additionalInfo"))?
                .map(str::to_string))
        };
        tap = TapInfo {
            tap_type: get("tapType")?,
            station_id: get("stationId")?,
            gate_id: get("gateId")?,
            tap_in_partner_reference_no: get("tapInPartnerReferenceNo")?,
            tap_in_reference_no: get("tapInReferenceNo")?,
        };
    }
    Ok(PaymentFields {
        partner_reference_no,
        qr_content,
        amount,
        merchant_id,
        tap,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fields::{changed, verdict};
    use super::*;

    #[test]
    fn payment_fields_are_checked_one_by_one() {
        let good = json!({
            "partnerReferenceNo": "P1", "qrContent": "hQVDUFY", "merchantId": "M",
            "amount": {"value": "3000.00", "currency": "IDR"},
            "additionalInfo": {"tapType": "IN", "stationId": "LBB"}
        });
        let p = parse_payment(good.as_object().unwrap()).ok().unwrap();
        assert_eq!(p.amount, 3000);
        assert_eq!(p.tap.tap_type.as_deref(), Some("IN"));
        assert_eq!(p.tap.station_id.as_deref(), Some("LBB"));
        let case = |change: &dyn Fn(&mut Map<String, Value>)| {
            verdict(parse_payment(&changed(&good, change)))
        };
        assert_eq!(case(&|b| drop(b.remove("qrContent"))), "missing qrContent");
        assert_eq!(case(&|b| drop(b.remove("amount"))), "missing amount");
        assert_eq!(
            case(&|b| drop(b.insert("amount".into(), json!({"value": "3000"})))),
            "missing amount.currency"
        );
        assert_eq!(
            case(&|b| drop(b.insert("amount".into(), json!({"value": "3000", "currency": "IDR"})))),
            "format amount.value"
        );
        assert_eq!(
            case(&|b| drop(b.insert(
                "amount".into(),
                json!({"value": "3000.00", "currency": "USD"})
            ))),
            "format amount.currency"
        );
        assert_eq!(
            case(&|b| drop(b.insert("merchantId".into(), json!(7)))),
            "format merchantId"
        );
        assert_eq!(
            case(&|b| drop(b.insert("partnerReferenceNo".into(), json!("x".repeat(65))))),
            "format partnerReferenceNo"
        );
        assert_eq!(
            case(&|b| drop(b.insert("scannerInfo".into(), json!({"deviceId": 1})))),
            "format scannerInfo.deviceId"
        );
    }
}
