//! The merchant's QRIS MPM endpoints: `qr-mpm-generate` (service 47), `qr-mpm-query` (51),
//! `qr-mpm-refund` (78, ASPI's table); the dispatch they share with the Linkage endpoints
//! (`linkage.rs`); the payment notification's construction. State in [`crate::mpm`].
//!
//! Every call passes the same checks as a CPM call ([`Engine::authorize`]: the §3 headers,
//! B2B token, HMAC, `X-EXTERNAL-ID`), then its body is read with the same field readers.

use axum::http::HeaderMap;
use jiff::{Timestamp, Zoned};
use serde_json::{json, Map, Value};

use super::auth::header;
use super::fields::{
    opt_amount, opt_obj, opt_str, original, original_with_external_id, req_str, rupiah, FieldErr,
    Original,
};
use super::{
    check_refund_amount, json_object, missing_header, not_found, not_permitted, reject, Engine,
    Kind, Reject, Reply, SimRequest,
};
use crate::faults::Service;
use crate::mpm::{MpmLedger, MpmRefundEntry, MpmStatus, Notification, NotifyState, Qr};
use crate::mpm_qr::MpmQrSpec;
use crate::snap::sign;

/// An MPM or Linkage endpoint of the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MpmEndpoint {
    /// `qr-mpm-generate` (merchant).
    Generate,
    /// `qr-mpm-query` (merchant).
    Query,
    /// `qr-mpm-refund` (merchant).
    Refund,
    /// B2B2C customer token (wallet).
    CustomerToken,
    /// Linkage `qr-mpm-payment` (wallet).
    LinkagePayment,
    /// Linkage `qr-mpm-query` with `serviceCode` `54` (wallet).
    LinkageQuery,
}

impl MpmEndpoint {
    /// The service code in the middle of its `responseCode`s.
    pub(crate) fn code(self) -> &'static str {
        match self {
            MpmEndpoint::Generate => "47",
            MpmEndpoint::Query | MpmEndpoint::LinkageQuery => "51",
            MpmEndpoint::Refund => "78",
            MpmEndpoint::CustomerToken => "74",
            MpmEndpoint::LinkagePayment => "50",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            MpmEndpoint::Generate => "qr-mpm-generate",
            MpmEndpoint::Query => "qr-mpm-query",
            MpmEndpoint::Refund => "qr-mpm-refund",
            MpmEndpoint::CustomerToken => "access-token/b2b2c",
            MpmEndpoint::LinkagePayment => "linkage qr-mpm-payment",
            MpmEndpoint::LinkageQuery => "linkage qr-mpm-query",
        }
    }

    /// The CPM service its notes are filed under.
    fn noted_as(self) -> Service {
        match self {
            MpmEndpoint::Generate | MpmEndpoint::LinkagePayment => Service::Payment,
            MpmEndpoint::Query | MpmEndpoint::LinkageQuery => Service::Query,
            MpmEndpoint::Refund => Service::Refund,
            MpmEndpoint::CustomerToken => Service::Token,
        }
    }

    fn is_linkage(self) -> bool {
        matches!(
            self,
            MpmEndpoint::LinkagePayment | MpmEndpoint::LinkageQuery
        )
    }
}

/// 32 random digits: an `X-EXTERNAL-ID` that fits MPM's 32-character limit.
fn external_id() -> String {
    (0..32)
        .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
        .collect()
}

impl Engine {
    /// The MPM or Linkage endpoint a call is for, if any. When the merchant's and the wallet's
    /// query share a path, a call carrying `Authorization-Customer` or a body `serviceCode`
    /// of `54` is the wallet's.
    pub(crate) fn mpm_endpoint_of(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<MpmEndpoint> {
        let p = &self.cfg.paths;
        if path == p.linkage_query && path == p.mpm_query {
            let by_header = headers.contains_key("authorization-customer");
            let by_code = serde_json::from_slice::<Value>(body)
                .is_ok_and(|v| v["serviceCode"].as_str() == Some("54"));
            return Some(if by_header || by_code {
                MpmEndpoint::LinkageQuery
            } else {
                MpmEndpoint::Query
            });
        }
        [
            (&p.mpm_generate, MpmEndpoint::Generate),
            (&p.mpm_query, MpmEndpoint::Query),
            (&p.mpm_refund, MpmEndpoint::Refund),
            (&p.customer_token, MpmEndpoint::CustomerToken),
            (&p.linkage_payment, MpmEndpoint::LinkagePayment),
            (&p.linkage_query, MpmEndpoint::LinkageQuery),
        ]
        .into_iter()
        .find(|(want, _)| want.as_str() == path)
        .map(|(_, e)| e)
    }

    /// Handles one MPM or Linkage call: the answer, and the notification to send if the
    /// call paid a QR whose merchant is to be told.
    pub(crate) fn handle_mpm(
        &mut self,
        ep: MpmEndpoint,
        req: &SimRequest<'_>,
    ) -> (Reply, Option<Notification>) {
        let s = &mut self.stats.mpm;
        *match ep {
            MpmEndpoint::Generate => &mut s.generate_requests,
            MpmEndpoint::Query => &mut s.query_requests,
            MpmEndpoint::Refund => &mut s.refund_requests,
            MpmEndpoint::CustomerToken => &mut s.customer_token_requests,
            MpmEndpoint::LinkagePayment => &mut s.payment_requests,
            MpmEndpoint::LinkageQuery => &mut s.linkage_query_requests,
        } += 1;
        let now = self.now();
        let result = match ep {
            MpmEndpoint::CustomerToken => self.customer_token(req, &now).map(|r| (r, None)),
            _ => self.mpm_call(ep, req, &now),
        };
        match result {
            Ok(done) => done,
            Err(r) => (
                self.rejected_as(ep.code(), ep.noted_as(), ep.name(), r),
                None,
            ),
        }
    }

    /// A transaction call: who may call (Linkage also needs a customer token), then the body.
    fn mpm_call(
        &mut self,
        ep: MpmEndpoint,
        req: &SimRequest<'_>,
        now: &Zoned,
    ) -> Result<(Reply, Option<Notification>), Reject> {
        // Checked first so that a missing customer header is answered like any other missing
        // header, before the external id is spent.
        if ep.is_linkage() && header(req.headers, "authorization-customer").is_none() {
            return Err(missing_header("authorization-customer"));
        }
        self.authorize(req, now)?;
        let customer = if ep.is_linkage() {
            Some(self.check_customer(req.headers, now)?)
        } else {
            None
        };
        let body = json_object(req.body)?;
        let customer = customer.unwrap_or_default();
        match ep {
            MpmEndpoint::Generate => self.mpm_generate(&body, now).map(|r| (r, None)),
            MpmEndpoint::Query => self.mpm_query(&body, now).map(|r| (r, None)),
            MpmEndpoint::Refund => self.mpm_refund(&body, now).map(|r| (r, None)),
            MpmEndpoint::LinkagePayment => self.linkage_payment(&body, &customer, now),
            _ => self.linkage_query(&body, now).map(|r| (r, None)),
        }
    }

    /// `qr-mpm-generate`: a dynamic QR for the amount, valid for `validityPeriod`.
    fn mpm_generate(&mut self, body: &Map<String, Value>, now: &Zoned) -> Result<Reply, Reject> {
        const KNOWN: [&str; 8] = [
            "partnerReferenceNo",
            "amount",
            "feeAmount",
            "merchantId",
            "subMerchantId",
            "terminalId",
            "validityPeriod",
            "additionalInfo",
        ];
        let g = self.read_fields(Service::Payment, body, &KNOWN, parse_generate)?;
        let seen = self.mpm.has_partner_reference(g.partner_reference_no);
        self.check_new_payment(g.merchant_id, seen, g.amount)?;
        let valid_until = self
            .validity(g.validity, now)
            .map_err(|why| FieldErr::Format("validityPeriod".into(), why).into_reject())?;
        let reference_no = self.mpm.new_reference("SIMMPM");
        let m = &self.cfg.mpm;
        let qr_content = MpmQrSpec {
            acquirer_domain: "ID.CO.SIMULATOR.WWW".into(),
            merchant_pan: m.merchant_pan.clone(),
            merchant_id: g.merchant_id.to_string(),
            nmid: m.nmid.clone(),
            criteria: "UBE".into(),
            mcc: "4111".into(),
            amount: g.amount,
            merchant_name: m.merchant_name.clone(),
            merchant_city: m.merchant_city.clone(),
            bill_number: None,
            reference: reference_no.clone(),
            terminal: g.terminal_id.map(str::to_string),
        }
        .build()
        .map_err(|e| {
            reject(
                Kind::Body,
                400,
                "01",
                "Invalid Field Format",
                format!("cannot build the QR: {e}"),
            )
        })?;
        let valid_until_text = sign::timestamp(&valid_until.to_zoned(now.time_zone().clone()));
        let callback_url = g
            .callback
            .map(str::to_string)
            .or_else(|| m.notify_url.clone());
        let reply = json!({
            "responseCode": "2004700",
            "responseMessage": "Successful",
            "referenceNo": reference_no,
            "partnerReferenceNo": g.partner_reference_no,
            "qrContent": qr_content,
            "merchantName": m.merchant_name,
            "terminalId": g.terminal_id,
            "additionalInfo": {
                "merchantId": g.merchant_id,
                "subMerchantId": g.sub_merchant_id,
                "nmid": m.nmid,
                "validityPeriod": valid_until_text,
            },
        });
        self.mpm.insert(Qr {
            partner_reference_no: g.partner_reference_no.to_string(),
            reference_no,
            merchant_id: g.merchant_id.to_string(),
            terminal_id: g.terminal_id.map(str::to_string),
            amount: g.amount,
            qr_content,
            created: sign::timestamp(now),
            valid_until,
            valid_until_text,
            callback_url,
            payment: None,
            refunds: vec![],
            notification: NotifyState::None,
        });
        self.stats.mpm.qrs_generated += 1;
        Ok(Reply {
            status: 200,
            body: reply,
        })
    }

    /// The end of a QR's validity: `validityPeriod` as seconds (`"120"`) or as the moment it
    /// ends (`2026-11-22T09:20:02+07:00`), the configured default when absent; in the future
    /// and within the configured maximum.
    fn validity(&self, text: Option<&str>, now: &Zoned) -> Result<Timestamp, &'static str> {
        let now_ts = now.timestamp();
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX / 2);
        let end = match text {
            None => now_ts
                .checked_add(jiff::SignedDuration::from_secs(secs(
                    self.cfg.mpm.default_validity_secs,
                )))
                .map_err(|_| "out of range")?,
            Some(t) if t.bytes().all(|b| b.is_ascii_digit()) => {
                let s: u64 = t.parse().map_err(|_| "too large")?;
                now_ts
                    .checked_add(jiff::SignedDuration::from_secs(secs(s)))
                    .map_err(|_| "out of range")?
            }
            Some(t) => t
                .parse::<Timestamp>()
                .map_err(|_| "neither seconds nor an ISO 8601 time with offset")?,
        };
        let max = now_ts
            .checked_add(jiff::SignedDuration::from_secs(secs(
                self.cfg.mpm.max_validity_secs,
            )))
            .unwrap_or(Timestamp::MAX);
        if end <= now_ts {
            return Err("not in the future");
        }
        if end > max {
            return Err("longer than the simulator allows");
        }
        Ok(end)
    }

    /// `qr-mpm-query`: where the QR stands.
    fn mpm_query(&mut self, body: &Map<String, Value>, now: &Zoned) -> Result<Reply, Reject> {
        const KNOWN: [&str; 6] = [
            "originalPartnerReferenceNo",
            "originalReferenceNo",
            "originalExternalId",
            "serviceCode",
            "merchantId",
            "additionalInfo",
        ];
        let (o, merchant) = self.read_fields(Service::Query, body, &KNOWN, |b| {
            let o = original_with_external_id(b, "originalReferenceNo")?;
            if opt_str(b, "serviceCode", 2)?.is_some_and(|c| c != "47") {
                return Err(FieldErr::Format("serviceCode".into(), "not 47"));
            }
            opt_obj(b, "additionalInfo")?;
            Ok((o, req_str(b, "merchantId", 64)?))
        })?;
        self.check_merchant(merchant)?;
        let Some(q) = self
            .mpm
            .find(o.partner, o.reference)
            .and_then(|i| self.mpm.qrs.get(i))
        else {
            return Err(not_found(""));
        };
        let status = q.status(now.timestamp());
        let mut out = json!({
            "responseCode": "2005100",
            "responseMessage": "Successful",
            "originalReferenceNo": q.reference_no,
            "originalPartnerReferenceNo": q.partner_reference_no,
            "referenceNo": q.reference_no,
            "partnerReferenceNo": q.partner_reference_no,
            "serviceCode": "47",
            "latestTransactionStatus": status.transaction_status(),
            "transactionStatus": status.transaction_status(),
            "transactionStatusDesc": status.description(),
            "amount": rupiah(q.amount),
            "transactionDate": q.created,
            "additionalInfo": {
                "refundedAmount": rupiah(q.refunded()),
                "validityPeriod": q.valid_until_text,
            },
        });
        if let (Some(p), Some(o)) = (&q.payment, out.as_object_mut()) {
            o.insert("paidTime".into(), json!(p.paid_time));
            if let Some(info) = o.get_mut("additionalInfo").and_then(Value::as_object_mut) {
                info.insert("paymentReferenceNo".into(), json!(p.reference_no));
                info.insert("late".into(), json!(p.late));
            }
        }
        Ok(Reply {
            status: 200,
            body: out,
        })
    }

    /// `qr-mpm-refund`: idempotent by the refund's `partnerReferenceNo`; the amount goes back
    /// to the customer who paid.
    fn mpm_refund(&mut self, body: &Map<String, Value>, now: &Zoned) -> Result<Reply, Reject> {
        const KNOWN: [&str; 7] = [
            "partnerReferenceNo",
            "originalPartnerReferenceNo",
            "originalReferenceNo",
            "merchantId",
            "amount",
            "reason",
            "additionalInfo",
        ];
        let f = self.read_fields(Service::Refund, body, &KNOWN, parse_mpm_refund)?;
        if let Some(m) = f.merchant {
            self.check_merchant(m)?;
        }
        let Some(qi) = self.mpm.find(f.original.partner, f.original.reference) else {
            return Err(not_found(""));
        };
        if let Some(key) = self.mpm.refunds.get(f.partner_reference_no).cloned() {
            if key.qr != qi || key.amount != f.amount {
                return Err(reject(
                    Kind::Refund,
                    409,
                    "01",
                    "Duplicate partnerReferenceNo",
                    "partnerReferenceNo already used for another refund",
                ));
            }
            self.stats.mpm.refund_replays += 1;
            return self.refund_answer(qi, key.refund);
        }
        let Some(q) = self.mpm.qrs.get(qi) else {
            return Err(not_found(""));
        };
        let Some(payer) = q.payment.as_ref().map(|p| p.customer_id.clone()) else {
            return Err(not_permitted(match q.status(now.timestamp()) {
                MpmStatus::Expired => "QR expired unpaid",
                _ => "QR not paid",
            }));
        };
        check_refund_amount(f.amount, q.refunded(), q.amount)?;
        let entry = MpmRefundEntry {
            partner_reference_no: f.partner_reference_no.to_string(),
            reference_no: self.mpm.new_reference("SIMMRF"),
            amount: f.amount,
            reason: f.reason.map(str::to_string),
            refund_time: sign::timestamp(now),
        };
        let Some(q) = self.mpm.qrs.get_mut(qi) else {
            return Err(not_found(""));
        };
        q.refunds.push(entry);
        let ri = q.refunds.len() - 1;
        self.mpm.refunds.insert(
            f.partner_reference_no.to_string(),
            crate::mpm::RefundKey {
                qr: qi,
                refund: ri,
                amount: f.amount,
            },
        );
        if let Some(c) = self.customers.get_mut(&payer) {
            c.balance = c.balance.saturating_add(f.amount);
        }
        self.stats.mpm.refunds_made += 1;
        self.refund_answer(qi, ri)
    }

    fn refund_answer(&self, qi: usize, ri: usize) -> Result<Reply, Reject> {
        let found = self
            .mpm
            .qrs
            .get(qi)
            .and_then(|q| Some((q, q.refunds.get(ri)?)));
        let Some((q, r)) = found else {
            return Err(not_found(""));
        };
        Ok(Reply {
            status: 200,
            body: json!({
                "responseCode": "2007800",
                "responseMessage": "Successful",
                "referenceNo": r.reference_no,
                "partnerReferenceNo": r.partner_reference_no,
                "originalReferenceNo": q.reference_no,
                "originalPartnerReferenceNo": q.partner_reference_no,
                "amount": rupiah(r.amount),
                "transactionDate": r.refund_time,
            }),
        })
    }

    /// The notification of a QR just paid, signed (see [`crate::mpm`]), or `None` when no
    /// callback is known or notifications are being dropped (recorded as such).
    pub(super) fn notification_for(&mut self, qi: usize, now: &Zoned) -> Option<Notification> {
        let q = self.mpm.qrs.get(qi)?;
        let url = q.callback_url.clone()?;
        let partner = q.partner_reference_no.clone();
        if self.cfg.mpm.drop_notifications {
            self.mpm.notified(&partner, NotifyState::Dropped);
            self.stats.mpm.notifications_dropped += 1;
            return None;
        }
        let p = q.payment.as_ref()?;
        let body = json!({
            "originalPartnerReferenceNo": q.partner_reference_no,
            "originalReferenceNo": q.reference_no,
            "merchantId": q.merchant_id,
            "latestTransactionStatus": "00",
            "transactionStatusDesc": "Success",
            "amount": rupiah(q.amount),
            "transactionDate": p.paid_time,
            "paidTime": p.paid_time,
            "additionalInfo": { "paymentReferenceNo": p.reference_no, "late": p.late },
        });
        let body = serde_json::to_vec(&body).ok()?;
        let path = crate::wallet::HttpUrl::parse(&url)
            .map(|u| u.path)
            .unwrap_or_else(|_| "/".into());
        let token: String = (0..40)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect();
        let ts = sign::timestamp(now);
        let sig =
            sign::transaction_signature(&self.cfg.client_secret, "POST", &path, &token, &body, &ts);
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("Authorization".into(), format!("Bearer {token}")),
            ("X-TIMESTAMP".into(), ts),
            ("X-SIGNATURE".into(), sig),
            ("X-PARTNER-ID".into(), self.cfg.partner_id.clone()),
            ("X-EXTERNAL-ID".into(), external_id()),
        ];
        if let Some(ch) = &self.cfg.channel_id {
            headers.push(("CHANNEL-ID".into(), ch.clone()));
        }
        self.mpm.notified(&partner, NotifyState::Sending);
        Some(Notification {
            partner_reference_no: partner,
            url,
            headers,
            body,
            timeout: std::time::Duration::from_millis(self.cfg.mpm.notify_timeout_ms),
        })
    }

    /// Records what became of a notification.
    pub(crate) fn mpm_notified(&mut self, partner_reference_no: &str, state: NotifyState) {
        let s = &mut self.stats.mpm;
        match &state {
            NotifyState::Delivered { .. } => s.notifications_delivered += 1,
            NotifyState::Failed { .. } => s.notifications_failed += 1,
            NotifyState::Dropped => s.notifications_dropped += 1,
            NotifyState::None | NotifyState::Sending => {}
        }
        self.mpm.notified(partner_reference_no, state);
    }

    /// Every QR and Linkage payment, statuses as of now.
    pub(crate) fn mpm_ledger(&self) -> MpmLedger {
        self.mpm.snapshot(self.now().timestamp())
    }

    /// Turns the loss of every later notification on or off.
    pub(crate) fn set_drop_notifications(&mut self, on: bool) {
        self.cfg.mpm.drop_notifications = on;
    }

    /// Turns acceptance of payments after a QR's validity on or off.
    pub(crate) fn set_accept_late_payments(&mut self, on: bool) {
        self.cfg.mpm.accept_late_payments = on;
    }

    /// Links a new wallet customer.
    pub(crate) fn link_customer(&mut self, balance: u64) -> crate::LinkedCustomer {
        self.customers.link(balance)
    }

    /// Every linked customer, balances as of now.
    pub(crate) fn customers(&self) -> Vec<crate::LinkedCustomer> {
        self.customers.all()
    }
}

/// The fields of a generate body the simulator acts on.
struct GenerateFields<'a> {
    partner_reference_no: &'a str,
    amount: u64,
    merchant_id: &'a str,
    sub_merchant_id: Option<&'a str>,
    terminal_id: Option<&'a str>,
    validity: Option<&'a str>,
    callback: Option<&'a str>,
}

fn parse_generate(body: &Map<String, Value>) -> Result<GenerateFields<'_>, FieldErr> {
    let partner_reference_no = req_str(body, "partnerReferenceNo", 64)?;
    let amount = opt_amount(body, "amount")?.ok_or_else(|| FieldErr::Missing("amount".into()))?;
    opt_amount(body, "feeAmount")?;
    let merchant_id = req_str(body, "merchantId", 64)?;
    let sub_merchant_id = opt_str(body, "subMerchantId", 64)?;
    let terminal_id = opt_str(body, "terminalId", 16)?;
    let validity = opt_str(body, "validityPeriod", 32)?;
    let mut callback = None;
    if let Some(info) = opt_obj(body, "additionalInfo")? {
        let p = |e| super::fields::prefix(e, "additionalInfo");
        for key in ["note", "qr_type"] {
            opt_str(info, key, 256).map_err(p)?;
        }
        callback = opt_str(info, "callback_payment", 512).map_err(p)?;
        if callback.is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            return Err(FieldErr::Format(
                "additionalInfo.callback_payment".into(),
                "not an http(s) URL",
            ));
        }
    }
    Ok(GenerateFields {
        partner_reference_no,
        amount,
        merchant_id,
        sub_merchant_id,
        terminal_id,
        validity,
        callback,
    })
}

/// The fields of a refund body the simulator acts on.
struct MpmRefundFields<'a> {
    partner_reference_no: &'a str,
    original: Original<'a>,
    merchant: Option<&'a str>,
    amount: u64,
    reason: Option<&'a str>,
}

fn parse_mpm_refund(body: &Map<String, Value>) -> Result<MpmRefundFields<'_>, FieldErr> {
    let partner_reference_no = req_str(body, "partnerReferenceNo", 64)?;
    let original = original(body, "originalReferenceNo")?;
    let merchant = opt_str(body, "merchantId", 64)?;
    let amount = opt_amount(body, "amount")?.ok_or_else(|| FieldErr::Missing("amount".into()))?;
    let reason = opt_str(body, "reason", 256)?;
    opt_obj(body, "additionalInfo")?;
    Ok(MpmRefundFields {
        partner_reference_no,
        original,
        merchant,
        amount,
        reason,
    })
}
