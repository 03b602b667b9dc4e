//! What the simulated aggregator checks and decides, as pure code: a request (headers and raw
//! body bytes) plus the time in, a reply (or a fault action) out, the ledger and stats updated.
//! The server module only moves bytes.
//!
//! The wire is parsed here independently of tapgate's client (plain `serde_json::Value`, its
//! own field lists), so that a mistake in the client's types shows up as a rejection.
//!
//! One file per endpoint: `token.rs` (B2B access token), `payment.rs`, `query.rs`,
//! `refund.rs`; `auth.rs` checks who may call (a transaction endpoint, a token request) and
//! `fields.rs` reads body fields (amounts, the original references a query or refund names).
//! QRIS MPM: `mpm.rs` (the merchant's generate, query, refund, and the notification) and
//! `linkage.rs` (the wallet's customer token, payment and query), with the same caller
//! checks and field readers. This file holds the shared state, the counters, how faults
//! combine with processing, and the rejections and checks several endpoints share (merchant,
//! new payment, refund amount, token minting), so that each answers them alike.

mod auth;
mod fields;
mod linkage;
mod mpm;
mod payment;
mod query;
mod refund;
mod token;

#[cfg(test)]
mod hold_tests;

use std::collections::{HashMap, HashSet};

use axum::http::HeaderMap;
use jiff::{civil::Date, Timestamp, Zoned};
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use fields::{unknown_keys, FieldErr};

use super::faults::{Fault, FaultPlan, Service};
use super::ledger::{Ledger, LedgerEntry};
use super::linkage::Customers;
use super::mpm::{MpmBook, MpmStats};
use super::SimConfig;

pub(crate) use mpm::MpmEndpoint;

/// Counters of everything the simulator saw, rejections by kind. A correct client causes no
/// rejection of the kinds summed by [`SimStats::protocol_violations`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// TCP connections accepted. Each is a connection the client had to open, on a real
    /// network a TCP (and TLS) handshake; a client that keeps its connection warm opens one
    /// and reuses it.
    pub connections_accepted: u64,
    /// Calls to the token endpoint: every token fetch, issued or refused.
    pub token_requests: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// Calls to the payment endpoint.
    pub payment_requests: u64,
    /// Calls to the query endpoint.
    pub query_requests: u64,
    /// Calls to the refund endpoint.
    pub refund_requests: u64,
    /// Bad RSA (token) or HMAC (transaction) signatures.
    pub signature_failures: u64,
    /// Missing or malformed headers, stale timestamps, unknown client key, partner or channel.
    pub header_failures: u64,
    /// Unknown or expired bearer tokens.
    pub token_failures: u64,
    /// `X-EXTERNAL-ID` used twice in one day.
    pub external_id_reuses: u64,
    /// Bodies that are not JSON, miss a mandatory field or carry a badly formatted one.
    pub body_failures: u64,
    /// `merchantId` not ours.
    pub merchant_failures: u64,
    /// `qrContent` that is not a QRIS CPM payload.
    pub qr_failures: u64,
    /// `qrContent` presented a second time (declined: its token is single-use).
    pub qr_reuses: u64,
    /// `partnerReferenceNo` used twice (`409xx01`).
    pub duplicate_references: u64,
    /// Zero or over-refunded amounts (`404xx13`).
    pub amount_failures: u64,
    /// Payments declined by the issuer (declined PANs).
    pub declines: u64,
    /// Queries and refunds naming a payment the simulator does not know.
    pub not_found: u64,
    /// Refunds refused for another reason (payment pending, `partnerRefundNo` reused for
    /// another refund, a hold a tap-out already finalized).
    pub refund_rejections: u64,
    /// Body fields the simulator does not know (a typo in an optional field is otherwise
    /// silent). Not a rejection.
    pub unknown_fields: u64,
    /// Payments accepted (paid, or pending after a 202).
    pub payments_accepted: u64,
    /// Refunds recorded.
    pub refunds_made: u64,
    /// Identical refunds answered again without refunding twice.
    pub refund_replays: u64,
    /// Faults injected, all kinds.
    pub faults_injected: u64,
    /// The most recent rejections and warnings, oldest first (at most 64).
    pub recent: Vec<Note>,
    /// QRIS MPM and Linkage calls and outcomes. Their rejections are counted above by kind
    /// and noted under the CPM service of the same kind (generate and Linkage payment as
    /// `payment`, the customer token as `token`), the detail starting with the endpoint.
    #[serde(default)]
    pub mpm: MpmStats,
}

impl SimStats {
    /// Rejections a correct client never causes: signatures, headers, tokens, reused
    /// external ids, malformed bodies, wrong merchant, undecodable `qrContent`.
    pub fn protocol_violations(&self) -> u64 {
        self.signature_failures
            + self.header_failures
            + self.token_failures
            + self.external_id_reuses
            + self.body_failures
            + self.merchant_failures
            + self.qr_failures
    }
}

/// One rejection or warning, for a person (or a failing test) to read. Never holds
/// `qrContent`, PANs or secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The service called.
    pub service: Service,
    /// What kind of problem (`signature`, `header`, `body`, `unknown_field`, ...).
    pub kind: String,
    /// The `responseCode` answered (empty for warnings).
    pub code: String,
    /// Which header or field, and why.
    pub detail: String,
}

/// One HTTP request as the engine sees it.
pub(crate) struct SimRequest<'a> {
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

/// An HTTP answer: status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// What the server does with a call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Send this answer.
    Answer(Reply),
    /// Send the first half of this answer's JSON, as a 200.
    Garbage(Reply),
    /// Close the connection without answering.
    Drop,
}

/// Which stats counter a rejection goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Signature,
    Header,
    Token,
    ExternalId,
    Body,
    Merchant,
    Qr,
    QrReuse,
    Duplicate,
    Amount,
    Decline,
    NotFound,
    Refund,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Signature => "signature",
            Kind::Header => "header",
            Kind::Token => "token",
            Kind::ExternalId => "external_id",
            Kind::Body => "body",
            Kind::Merchant => "merchant",
            Kind::Qr => "qr",
            Kind::QrReuse => "qr_reuse",
            Kind::Duplicate => "duplicate_reference",
            Kind::Amount => "amount",
            Kind::Decline => "decline",
            Kind::NotFound => "not_found",
            Kind::Refund => "refund",
        }
    }
}

/// A rejection on its way to becoming a reply.
struct Reject {
    kind: Kind,
    status: u16,
    case: &'static str,
    message: &'static str,
    detail: String,
}

fn reject(
    kind: Kind,
    status: u16,
    case: &'static str,
    message: &'static str,
    detail: impl Into<String>,
) -> Reject {
    Reject {
        kind,
        status,
        case,
        message,
        detail: detail.into(),
    }
}

// The rejections several endpoints give, each with its one status, case and message.

/// `400xx02`: a mandatory header is missing (named upper-case in the detail).
fn missing_header(name: &str) -> Reject {
    reject(
        Kind::Header,
        400,
        "02",
        "Invalid Mandatory Field",
        name.to_ascii_uppercase(),
    )
}

/// `401xx00`: a header or signature the aggregator does not accept.
fn unauthorized(kind: Kind, detail: impl Into<String>) -> Reject {
    reject(kind, 401, "00", "Unauthorized.", detail)
}

/// `409xx01`: a payment's (QR's) `partnerReferenceNo` used before.
fn duplicate_reference() -> Reject {
    reject(
        Kind::Duplicate,
        409,
        "01",
        "Duplicate partnerReferenceNo",
        "",
    )
}

/// `404xx01`: the payment (QR, refund) named is not known.
fn not_found(detail: &str) -> Reject {
    reject(Kind::NotFound, 404, "01", "Transaction Not Found", detail)
}

/// `404xx13`: a zero amount, or one the payment or QR does not allow.
fn invalid_amount(detail: &'static str) -> Reject {
    reject(Kind::Amount, 404, "13", "Invalid Amount", detail)
}

/// `403xx15`: a refund of a payment that cannot be refunded (now).
fn not_permitted(detail: impl Into<String>) -> Reject {
    reject(Kind::Refund, 403, "15", "Transaction Not Permitted", detail)
}

/// The body as a JSON object, or `400xx00`.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Reject> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(reject(
            Kind::Body,
            400,
            "00",
            "Bad Request",
            "body is not a JSON object",
        )),
    }
}

/// A refund of `amount` out of a payment of `total` of which `refunded` went back already:
/// not zero and no more than is left (`404xx13`).
fn check_refund_amount(amount: u64, refunded: u64, total: u64) -> Result<(), Reject> {
    if amount == 0 || refunded.saturating_add(amount) > total {
        return Err(invalid_amount("refund exceeds what is left to refund"));
    }
    Ok(())
}

/// `responseCode`: HTTP status, service code, case.
fn code(status: u16, service: Service, case: &str) -> String {
    format!("{status}{}{case}", service.code())
}

/// The simulated aggregator's whole state.
pub(crate) struct Engine {
    cfg: SimConfig,
    tokens: HashMap<String, Timestamp>,
    external_ids: HashMap<Date, HashSet<String>>,
    ledger: Ledger,
    declines: HashMap<String, String>,
    pub(crate) faults: FaultPlan,
    stats: SimStats,
    rng: StdRng,
    /// QRIS MPM: generated QRs, Linkage payments, refunds.
    mpm: MpmBook,
    /// Linkage: the linked wallet customers and their tokens.
    customers: Customers,
}

impl Engine {
    pub(crate) fn new(cfg: SimConfig) -> Engine {
        let mut faults = FaultPlan::default();
        faults.set_issuer(cfg.issuer.clone());
        let customers = Customers::with_demo(cfg.mpm.demo_customer_balance);
        Engine {
            mpm: MpmBook::default(),
            customers,
            cfg,
            tokens: HashMap::new(),
            external_ids: HashMap::new(),
            ledger: Ledger::default(),
            declines: HashMap::new(),
            faults,
            stats: SimStats::default(),
            rng: StdRng::from_os_rng(),
        }
    }

    pub(crate) fn now(&self) -> Zoned {
        self.cfg.clock.now()
    }

    pub(crate) fn ledger(&self) -> Vec<LedgerEntry> {
        self.ledger.snapshot(self.now().timestamp())
    }

    /// The passenger key of `pan` ([`LedgerEntry::passenger`]).
    pub(crate) fn passenger_key(&self, pan: &str) -> String {
        self.ledger.passenger_key(pan)
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.stats.clone()
    }

    /// Counts a TCP connection the accept loop took.
    pub(crate) fn connection_accepted(&mut self) {
        self.stats.connections_accepted += 1;
    }

    /// Declines every later payment from `pan` with `code` (an empty code lifts the decline).
    pub(crate) fn decline_pan(&mut self, pan: &str, code: &str) {
        if code.is_empty() {
            self.declines.remove(pan);
        } else {
            self.declines.insert(pan.to_string(), code.to_string());
        }
    }

    /// The service a path belongs to.
    pub(crate) fn service_of(&self, path: &str) -> Option<Service> {
        let p = &self.cfg.paths;
        [
            (&p.token, Service::Token),
            (&p.payment, Service::Payment),
            (&p.query, Service::Query),
            (&p.refund, Service::Refund),
        ]
        .into_iter()
        .find(|(want, _)| want.as_str() == path)
        .map(|(_, s)| s)
    }

    /// Draws the fault for this call and counts it.
    pub(crate) fn next_fault(&mut self, service: Service) -> Option<Fault> {
        let f = self.faults.next(service)?;
        self.stats.faults_injected += 1;
        Some(f)
    }

    fn note(&mut self, service: Service, kind: &str, code: String, detail: String) {
        tracing::info!(
            service = service.as_str(),
            kind,
            code,
            detail,
            "simulator noted"
        );
        if self.stats.recent.len() >= 64 {
            self.stats.recent.remove(0);
        }
        self.stats.recent.push(Note {
            service,
            kind: kind.into(),
            code,
            detail,
        });
    }

    fn rejected(&mut self, service: Service, r: Reject) -> Reply {
        self.rejected_as(service.code(), service, "", r)
    }

    /// A rejection answered with service code `code2` in its `responseCode`, counted by kind
    /// and noted under `noted_as` with `endpoint` leading the detail (the MPM and Linkage
    /// endpoints have codes of their own but share the CPM counters).
    fn rejected_as(&mut self, code2: &str, noted_as: Service, endpoint: &str, r: Reject) -> Reply {
        let s = &mut self.stats;
        *match r.kind {
            Kind::Signature => &mut s.signature_failures,
            Kind::Header => &mut s.header_failures,
            Kind::Token => &mut s.token_failures,
            Kind::ExternalId => &mut s.external_id_reuses,
            Kind::Body => &mut s.body_failures,
            Kind::Merchant => &mut s.merchant_failures,
            Kind::Qr => &mut s.qr_failures,
            Kind::QrReuse => &mut s.qr_reuses,
            Kind::Duplicate => &mut s.duplicate_references,
            Kind::Amount => &mut s.amount_failures,
            Kind::Decline => &mut s.declines,
            Kind::NotFound => &mut s.not_found,
            Kind::Refund => &mut s.refund_rejections,
        } += 1;
        let c = format!("{}{code2}{}", r.status, r.case);
        let message = if r.detail.is_empty() || r.kind == Kind::Decline {
            r.message.to_string()
        } else {
            format!("{} {}", r.message, r.detail)
        };
        let detail = if endpoint.is_empty() {
            r.detail
        } else {
            format!("{endpoint}: {}", r.detail)
        };
        self.note(noted_as, r.kind.name(), c.clone(), detail);
        Reply {
            status: r.status,
            body: json!({ "responseCode": c, "responseMessage": message }),
        }
    }

    fn warn_unknown(&mut self, service: Service, keys: Vec<String>) {
        for k in keys {
            self.stats.unknown_fields += 1;
            self.note(service, "unknown_field", String::new(), k);
        }
    }

    /// Reads a body: warns of each key outside `known` (noted under `service`), then `parse`
    /// takes the fields the endpoint acts on (`400xx02` missing, `400xx01` malformed).
    fn read_fields<'a, T>(
        &mut self,
        service: Service,
        body: &'a Map<String, Value>,
        known: &[&str],
        parse: impl FnOnce(&'a Map<String, Value>) -> Result<T, FieldErr>,
    ) -> Result<T, Reject> {
        self.warn_unknown(service, unknown_keys(body, known));
        parse(body).map_err(FieldErr::into_reject)
    }

    /// `merchantId` is the simulator's merchant (`404xx08` otherwise).
    fn check_merchant(&self, merchant: &str) -> Result<(), Reject> {
        if merchant == self.cfg.merchant_id {
            return Ok(());
        }
        Err(reject(
            Kind::Merchant,
            404,
            "08",
            "Invalid Merchant",
            "merchantId is not ours",
        ))
    }

    /// What a new payment (CPM) or QR (MPM) needs before anything else: our merchant, a
    /// `partnerReferenceNo` not `seen` before (`409xx01`) and a non-zero amount (`404xx13`).
    fn check_new_payment(&self, merchant: &str, seen: bool, amount: u64) -> Result<(), Reject> {
        self.check_merchant(merchant)?;
        if seen {
            return Err(duplicate_reference());
        }
        if amount == 0 {
            return Err(invalid_amount("amount is zero"));
        }
        Ok(())
    }

    /// A new 48-character access token (B2B or customer) and when it expires,
    /// `token_ttl_secs` from now.
    fn new_token(&mut self, now: &Zoned) -> (String, Timestamp) {
        let token: String = (&mut self.rng)
            .sample_iter(Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        let ttl = i64::try_from(self.cfg.token_ttl_secs).unwrap_or(i64::MAX / 2);
        let expires = now
            .timestamp()
            .checked_add(jiff::SignedDuration::from_secs(ttl))
            .unwrap_or(Timestamp::MAX);
        (token, expires)
    }

    /// Handles one call whose fault has been drawn (and whose delay, if any, has passed).
    pub(crate) fn handle(
        &mut self,
        service: Service,
        req: &SimRequest<'_>,
        fault: Option<Fault>,
    ) -> Action {
        match service {
            Service::Token => self.stats.token_requests += 1,
            Service::Payment => self.stats.payment_requests += 1,
            Service::Query => self.stats.query_requests += 1,
            Service::Refund => self.stats.refund_requests += 1,
        }
        let mark = fault.filter(|f| !matches!(f, Fault::Delay { .. }));
        let process = |me: &mut Engine| me.process(service, req, mark);
        let (status, case, message) = match mark {
            None => return Action::Answer(process(self).0),
            Some(Fault::Drop { applied }) => {
                if applied {
                    process(self);
                }
                return Action::Drop;
            }
            Some(Fault::Garbage { applied }) => {
                let reply = if applied {
                    process(self).0
                } else {
                    Reply {
                        status: 200,
                        body: json!({ "responseCode": code(200, service, "00"), "responseMessage": "Successful" }),
                    }
                };
                return Action::Garbage(reply);
            }
            Some(Fault::Accepted) => {
                let (reply, recorded) = process(self);
                if !recorded {
                    return Action::Answer(reply);
                }
                (202, "00", "Request In Progress")
            }
            Some(Fault::ServerError { applied }) => {
                if applied {
                    process(self);
                }
                (500, "01", "Internal Server Error")
            }
            Some(Fault::GatewayTimeout { applied }) => {
                if applied {
                    process(self);
                }
                (504, "00", "Timeout")
            }
            Some(Fault::Delay { .. }) => return Action::Answer(process(self).0),
            Some(Fault::Unauthorized) => (401, "00", "Unauthorized"),
            Some(Fault::Throttled) => (429, "00", "Too Many Requests"),
            Some(Fault::WrongAmount { rupiah }) => {
                let mut reply = process(self).0;
                if let Some(a) = reply.body.get_mut("amount").and_then(Value::as_object_mut) {
                    a.insert("value".into(), json!(format!("{rupiah}.00")));
                }
                return Action::Answer(reply);
            }
        };
        Action::Answer(Reply {
            status,
            body: json!({ "responseCode": code(status, service, case), "responseMessage": message }),
        })
    }

    /// Processes a call; the flag says whether it was recorded (ledger or token store).
    fn process(
        &mut self,
        service: Service,
        req: &SimRequest<'_>,
        fault: Option<Fault>,
    ) -> (Reply, bool) {
        let now = self.now();
        let result = match service {
            Service::Token => self.token(req, &now),
            _ => self
                .authorize(req, &now)
                .and_then(|()| json_object(req.body))
                .and_then(|body| match service {
                    Service::Payment => self.payment(req, &body, &now, fault),
                    Service::Query => self.query(&body, &now),
                    _ => self.refund(&body, &now, fault),
                }),
        };
        match result {
            Ok((reply, recorded)) => (reply, recorded),
            Err(r) => (self.rejected(service, r), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock as _, ManualClock};
    use crate::snap::sign::{self, RsaSigner};
    use axum::http::HeaderValue;

    const KEY: &str = include_str!("../../../../tests/fixtures/snap-doc-key.pem");
    const Q1: &str = "hQVDUFYwMWFmTwegAAAGAiAgUAdRUklTQ1BNWgqTYAACESGYYpUvXyARUkVORFkgTVVIQVJESUFOVE9fLQRpZGVuX1AYcm11aGFyZGlhbnRvQGhvdG1haWwuY29tnyUCYpVjC590CDRiODg5MGY1";

    /// An engine on a manual clock, with a token already issued.
    pub(super) fn engine() -> (Engine, ManualClock, String) {
        let clock = ManualClock::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
            super::super::jakarta(),
        );
        let mut cfg = SimConfig::demo();
        cfg.clock = std::sync::Arc::new(clock.clone());
        let mut e = Engine::new(cfg);
        let ts = sign::timestamp(&clock.now());
        let sig = RsaSigner::from_pem(KEY)
            .unwrap()
            .sign_b2b("tapgate-demo", &ts);
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("x-timestamp", &ts),
            ("x-client-key", "tapgate-demo"),
            ("x-signature", &sig),
        ] {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        let req = SimRequest {
            path: "/v1.0/access-token/b2b",
            headers: &h,
            body: br#"{"grantType":"client_credentials"}"#,
        };
        let Action::Answer(r) = e.handle(Service::Token, &req, None) else {
            panic!()
        };
        let token = r.body["accessToken"].as_str().unwrap().to_string();
        (e, clock, token)
    }

    fn pay(
        e: &mut Engine,
        clock: &ManualClock,
        token: &str,
        ext: u32,
        pref: &str,
        fault: Option<Fault>,
    ) -> Action {
        let body = json!({
            "partnerReferenceNo": pref, "qrContent": Q1, "merchantId": "MRT-JKT-DEMO",
            "amount": {"value": "3000.00", "currency": "IDR"}
        });
        call(e, clock, token, ext, Service::Payment, &body, fault)
    }

    /// Signs and hands `body` to the engine as a call to `service` with external id `ext`.
    pub(super) fn call(
        e: &mut Engine,
        clock: &ManualClock,
        token: &str,
        ext: u32,
        service: Service,
        body: &Value,
        fault: Option<Fault>,
    ) -> Action {
        let body = serde_json::to_vec(body).unwrap();
        let path = match service {
            Service::Payment => "/v1.0/qr/qr-cpm-payment",
            Service::Query => "/v1.0/qr/qr-cpm-query",
            _ => "/v1.0/qr/qr-cpm-refund",
        };
        let ts = sign::timestamp(&clock.now());
        let sig = sign::transaction_signature(
            "demo-secret-not-for-production",
            "POST",
            path,
            token,
            &body,
            &ts,
        );
        let mut h = HeaderMap::new();
        let ext = ext.to_string();
        let bearer = format!("Bearer {token}");
        for (k, v) in [
            ("content-type", "application/json"),
            ("authorization", &bearer),
            ("x-timestamp", &ts),
            ("x-signature", &sig),
            ("x-partner-id", "TAPGATE-DEMO"),
            ("x-external-id", &ext),
            ("channel-id", "95221"),
            ("origin", "gate"),
            ("x-ip-address", "10.0.0.1"),
            ("x-device-id", "G1"),
            ("x-latitude", "-6.2"),
            ("x-longitude", "106.8"),
        ] {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        e.handle(
            service,
            &SimRequest {
                path,
                headers: &h,
                body: &body,
            },
            fault,
        )
    }

    #[test]
    fn faults_combine_with_processing_as_documented() {
        let (mut e, clock, token) = engine();
        // Not applied: nothing recorded, and the single-use payload is still unused.
        assert_eq!(
            pay(
                &mut e,
                &clock,
                &token,
                1,
                "A",
                Some(Fault::Garbage { applied: false })
            )
            .clone(),
            {
                Action::Garbage(Reply {
                    status: 200,
                    body: json!({"responseCode": "2006000", "responseMessage": "Successful"}),
                })
            }
        );
        assert!(e.ledger().is_empty());
        // Applied: recorded, marked, and the client got nothing.
        assert_eq!(
            pay(
                &mut e,
                &clock,
                &token,
                2,
                "A",
                Some(Fault::Drop { applied: true })
            ),
            Action::Drop
        );
        let l = e.ledger();
        assert_eq!((l.len(), l[0].fault.as_deref()), (1, Some("drop")));
        // A 202 on a call that records nothing (here: the payload is used up) answers normally.
        let Action::Answer(r) = pay(&mut e, &clock, &token, 3, "B", Some(Fault::Accepted)) else {
            panic!()
        };
        assert_eq!(r.body["responseCode"], "4036000");
        assert_eq!(e.stats().protocol_violations(), 0, "{:?}", e.stats().recent);
        assert_eq!(e.stats().payment_requests, 3);
    }
}
