//! The wallet's Linkage H2H endpoints: the B2B2C customer token (service 74),
//! `qr-mpm-payment` (50) and `qr-mpm-query` with `serviceCode` `54` (51). Customers in
//! [`crate::linkage`], the QRs they pay in [`crate::mpm`].
//!
//! A payment passes, in order: every mandatory header (the §3 set plus
//! `Authorization-Customer`, `400xx02`), the CPM caller checks (B2B token `401xx01`, partner
//! and channel, timestamp, HMAC `401xx00`, `X-EXTERNAL-ID`), the customer token (`401xx02`
//! invalid or expired, `401xx04` not found), the body fields (`400xx02` missing, `400xx01`
//! malformed: amounts must be `"5000.00"`), the merchant (`404xx08`), the QR named by
//! `additionalInfo.reffFlag` (`404xx01` unknown) and its amount (`404xx13`). Then the refusals
//! a query reports as failed (`06`): QR already paid (`404xx14`), expired (`403xx00`),
//! insufficient funds (`403xx14`).

use jiff::Zoned;
use serde_json::{json, Map, Value};

use super::auth::header;
use super::fields::{
    opt_amount, opt_obj, opt_str, original_with_external_id, prefix, req_str, rupiah, FieldErr,
};
use super::{
    duplicate_reference, invalid_amount, json_object, not_found, reject, unauthorized, Engine,
    Kind, Reject, Reply, SimRequest,
};
use crate::faults::Service;
use crate::ledger::mask_pan;
use crate::linkage::CustomerTokenError;
use crate::mpm::{LinkagePaymentEntry, MpmPaymentEntry, MpmStatus, Notification};
use crate::snap::sign;

impl Engine {
    /// The B2B2C token: the partner's RSA signature as for the B2B token, then the linked
    /// customer's `authCode` exchanged for a customer token.
    pub(super) fn customer_token(
        &mut self,
        req: &SimRequest<'_>,
        now: &Zoned,
    ) -> Result<Reply, Reject> {
        self.check_token_request(req.headers, now)?;
        let body = json_object(req.body)?;
        let known = ["grantType", "authCode", "refreshToken", "additionalInfo"];
        let (grant, code) = self.read_fields(Service::Token, &body, &known, |b| {
            Ok((req_str(b, "grantType", 64)?, req_str(b, "authCode", 256)?))
        })?;
        if !grant.eq_ignore_ascii_case("authorization_code") {
            return Err(
                FieldErr::Format("grantType".into(), "not authorization_code").into_reject(),
            );
        }
        let (token, expires) = self.new_token(now);
        let Some(customer) = self
            .customers
            .issue(code, token.clone(), now.timestamp(), expires)
        else {
            return Err(unauthorized(
                Kind::Token,
                "authCode is no linked customer's",
            ));
        };
        self.stats.mpm.customer_tokens_issued += 1;
        let expiry = sign::timestamp(&expires.to_zoned(now.time_zone().clone()));
        Ok(Reply {
            status: 200,
            body: json!({
                "responseCode": "2007400",
                "responseMessage": "Successful",
                "accessToken": token,
                "tokenType": "Bearer",
                "accessTokenExpiryTime": expiry,
                "expiresIn": self.cfg.token_ttl_secs.to_string(),
                "additionalInfo": { "customerId": customer },
            }),
        })
    }

    /// The customer whose token `Authorization-Customer` carries (its presence was checked).
    pub(super) fn check_customer(
        &self,
        h: &axum::http::HeaderMap,
        now: &Zoned,
    ) -> Result<String, Reject> {
        let value = header(h, "authorization-customer").unwrap_or_default();
        let Some(token) = value.strip_prefix("Bearer ") else {
            return Err(reject(
                Kind::Token,
                401,
                "02",
                "Invalid Customer Token",
                "Authorization-Customer is not `Bearer <token>`",
            ));
        };
        match self.customers.by_token(token.trim(), now.timestamp()) {
            Ok(c) => Ok(c.id.clone()),
            Err(CustomerTokenError::Expired) => Err(reject(
                Kind::Token,
                401,
                "02",
                "Invalid Customer Token",
                "customer token expired",
            )),
            Err(CustomerTokenError::Unknown) => Err(reject(
                Kind::Token,
                401,
                "04",
                "Customer Token Not Found",
                "customer token unknown",
            )),
        }
    }

    /// Linkage `qr-mpm-payment` by `customer`: pays the QR `additionalInfo.reffFlag` names.
    pub(super) fn linkage_payment(
        &mut self,
        body: &Map<String, Value>,
        customer: &str,
        now: &Zoned,
    ) -> Result<(Reply, Option<Notification>), Reject> {
        const KNOWN: [&str; 7] = [
            "partnerReferenceNo",
            "merchantId",
            "subMerchantId",
            "amount",
            "feeAmount",
            "verificationId",
            "additionalInfo",
        ];
        let p = self.read_fields(Service::Payment, body, &KNOWN, parse_linkage_payment)?;
        let (qi, late) = self.payable_qr(&p, customer, now)?;
        Ok(self.pay_qr(qi, &p, customer, late, now))
    }

    /// The QR the payment may pay, and whether the payment is late. A refusal a query must
    /// report as failed (already paid, expired, insufficient funds) is recorded.
    fn payable_qr(
        &mut self,
        p: &LinkagePaymentFields<'_>,
        customer: &str,
        now: &Zoned,
    ) -> Result<(usize, bool), Reject> {
        self.check_merchant(p.merchant_id)?;
        if self.mpm.has_payment_reference(p.partner_reference_no) {
            return Err(duplicate_reference());
        }
        let qi = self
            .mpm
            .find(None, Some(p.reff_flag))
            .ok_or_else(|| not_found("additionalInfo.reffFlag names no QR"))?;
        let (qr_amount, paid, valid_until) = match self.mpm.qrs.get(qi) {
            Some(q) => (q.amount, q.payment.is_some(), q.valid_until),
            None => return Err(not_found("")),
        };
        if p.amount != qr_amount {
            return Err(invalid_amount("amount is not the QR's"));
        }
        let late = now.timestamp() >= valid_until;
        let balance = self.customers.get(customer).map_or(0, |c| c.balance);
        let refusal = if paid {
            reject(Kind::QrReuse, 404, "14", "Paid Bill", "QR already paid")
        } else if late && !self.cfg.mpm.accept_late_payments {
            reject(
                Kind::Decline,
                403,
                "00",
                "Transaction Expired",
                "QR validity ended",
            )
        } else if balance < p.amount.saturating_add(p.fee) {
            reject(
                Kind::Decline,
                403,
                "14",
                "Insufficient Funds",
                "balance below amount",
            )
        } else {
            return Ok((qi, late));
        };
        self.mpm.record_payment(LinkagePaymentEntry {
            partner_reference_no: p.partner_reference_no.to_string(),
            reference_no: None,
            qr_reference_no: p.reff_flag.to_string(),
            customer_id: customer.to_string(),
            amount: p.amount,
            refusal_code: Some(format!("{}50{}", refusal.status, refusal.case)),
            transaction_date: sign::timestamp(now),
        });
        Err(refusal)
    }

    /// Pays QR `qi`: the customer is debited, the QR marked paid, the payment recorded, and
    /// the merchant's notification prepared.
    fn pay_qr(
        &mut self,
        qi: usize,
        p: &LinkagePaymentFields<'_>,
        customer: &str,
        late: bool,
        now: &Zoned,
    ) -> (Reply, Option<Notification>) {
        let reference_no = self.mpm.new_reference("SIMLNK");
        let transaction_date = sign::timestamp(now);
        let pan = match self.customers.get_mut(customer) {
            Some(c) => {
                c.balance = c.balance.saturating_sub(p.amount.saturating_add(p.fee));
                c.pan.clone()
            }
            None => String::new(),
        };
        let payment = MpmPaymentEntry {
            partner_reference_no: p.partner_reference_no.to_string(),
            reference_no: reference_no.clone(),
            customer_id: customer.to_string(),
            masked_pan: mask_pan(&pan),
            paid_time: transaction_date.clone(),
            late,
        };
        let terminal = self.mpm.qrs.get_mut(qi).and_then(|q| {
            q.payment = Some(payment);
            q.terminal_id.clone()
        });
        self.mpm.record_payment(LinkagePaymentEntry {
            partner_reference_no: p.partner_reference_no.to_string(),
            reference_no: Some(reference_no.clone()),
            qr_reference_no: p.reff_flag.to_string(),
            customer_id: customer.to_string(),
            amount: p.amount,
            refusal_code: None,
            transaction_date: transaction_date.clone(),
        });
        self.stats.mpm.payments_made += 1;
        if late {
            self.stats.mpm.late_payments += 1;
        }
        let notification = self.notification_for(qi, now);
        let m = &self.cfg.mpm;
        let body = json!({
            "responseCode": "2005000",
            "responseMessage": "Successful",
            "referenceNo": reference_no,
            "partnerReferenceNo": p.partner_reference_no,
            "transactionDate": transaction_date,
            "amount": rupiah(p.amount),
            "feeAmount": rupiah(p.fee),
            "verificationId": p.verification_id,
            "additionalInfo": {
                "merchantName": m.merchant_name,
                "acquirerName": "SIMULATOR",
                "merchantLocation": m.merchant_city,
                "merchantPAN": m.merchant_pan,
                "terminalId": terminal,
                "customerPAN": mask_pan(&pan),
            },
        });
        (Reply { status: 200, body }, notification)
    }

    /// Linkage `qr-mpm-query`: where a wallet's payment stands.
    pub(super) fn linkage_query(
        &mut self,
        body: &Map<String, Value>,
        now: &Zoned,
    ) -> Result<Reply, Reject> {
        const KNOWN: [&str; 7] = [
            "originalPartnerReferenceNo",
            "originalReferenceNo",
            "originalExternalId",
            "serviceCode",
            "merchantId",
            "subMerchantId",
            "additionalInfo",
        ];
        let (o, merchant) = self.read_fields(Service::Query, body, &KNOWN, |b| {
            let o = original_with_external_id(b, "originalReferenceNo")?;
            if req_str(b, "serviceCode", 2)? != "54" {
                return Err(FieldErr::Format("serviceCode".into(), "not 54"));
            }
            opt_str(b, "subMerchantId", 64)?;
            opt_obj(b, "additionalInfo")?;
            Ok((o, req_str(b, "merchantId", 64)?))
        })?;
        self.check_merchant(merchant)?;
        let Some(p) = self.mpm.find_payment(o.partner, o.reference) else {
            return Err(not_found(""));
        };
        let refunded = p.reference_no.as_deref().and_then(|r| {
            self.mpm
                .qr_paid_by(r)
                .map(|q| q.status(now.timestamp()) == MpmStatus::Refunded)
        });
        let (status, desc) = match (&p.refusal_code, refunded) {
            (Some(_), _) => ("06", "Failed"),
            (None, Some(true)) => ("04", "Refunded"),
            (None, _) => ("00", "Success"),
        };
        let mut out = json!({
            "responseCode": "2005100",
            "responseMessage": "Successful",
            "originalReferenceNo": p.reference_no,
            "originalPartnerReferenceNo": p.partner_reference_no,
            "serviceCode": "54",
            "latestTransactionStatus": status,
            "transactionStatusDesc": desc,
            "amount": rupiah(p.amount),
            "additionalInfo": { "reffFlag": p.qr_reference_no },
        });
        if let Some(o) = out.as_object_mut() {
            match &p.refusal_code {
                Some(c) => o.insert("latestTransactionStatusCode".into(), json!(c)),
                None => o.insert("paidTime".into(), json!(p.transaction_date)),
            };
        }
        Ok(Reply {
            status: 200,
            body: out,
        })
    }
}

/// The fields of a Linkage payment body the simulator acts on.
struct LinkagePaymentFields<'a> {
    partner_reference_no: &'a str,
    merchant_id: &'a str,
    amount: u64,
    fee: u64,
    verification_id: &'a str,
    reff_flag: &'a str,
}

fn parse_linkage_payment(body: &Map<String, Value>) -> Result<LinkagePaymentFields<'_>, FieldErr> {
    let partner_reference_no = req_str(body, "partnerReferenceNo", 64)?;
    let merchant_id = req_str(body, "merchantId", 64)?;
    opt_str(body, "subMerchantId", 64)?;
    let amount = opt_amount(body, "amount")?.ok_or_else(|| FieldErr::Missing("amount".into()))?;
    let fee = opt_amount(body, "feeAmount")?.unwrap_or(0);
    let verification_id = req_str(body, "verificationId", 64)?;
    let info = opt_obj(body, "additionalInfo")?
        .ok_or_else(|| FieldErr::Missing("additionalInfo".into()))?;
    let reff_flag = req_str(info, "reffFlag", 64).map_err(|e| prefix(e, "additionalInfo"))?;
    Ok(LinkagePaymentFields {
        partner_reference_no,
        merchant_id,
        amount,
        fee,
        verification_id,
        reff_flag,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fields::{changed, verdict};
    use super::*;

    #[test]
    fn payment_fields_are_checked_one_by_one() {
        let good = json!({
            "partnerReferenceNo": "W1", "merchantId": "M",
            "amount": {"value": "5000.00", "currency": "IDR"},
            "feeAmount": {"value": "0.00", "currency": "IDR"},
            "verificationId": "V1", "additionalInfo": {"reffFlag": "SIMMPM0000000001"}
        });
        let p = parse_linkage_payment(good.as_object().unwrap())
            .ok()
            .unwrap();
        assert_eq!(
            (p.amount, p.fee, p.reff_flag),
            (5000, 0, "SIMMPM0000000001")
        );
        let case = |change: &dyn Fn(&mut Map<String, Value>)| {
            verdict(parse_linkage_payment(&changed(&good, change)))
        };
        assert_eq!(case(&|b| drop(b.remove("feeAmount"))), "ok");
        assert_eq!(
            case(&|b| drop(b.remove("verificationId"))),
            "missing verificationId"
        );
        assert_eq!(
            case(&|b| drop(b.remove("additionalInfo"))),
            "missing additionalInfo"
        );
        assert_eq!(
            case(&|b| drop(b.insert("additionalInfo".into(), json!({})))),
            "missing additionalInfo.reffFlag"
        );
        assert_eq!(
            case(&|b| drop(b.insert("amount".into(), json!({"value": "5000", "currency": "IDR"})))),
            "format amount.value"
        );
        assert_eq!(
            case(&|b| drop(b.insert(
                "feeAmount".into(),
                json!({"value": "0.5", "currency": "IDR"})
            ))),
            "format feeAmount.value"
        );
    }
}
