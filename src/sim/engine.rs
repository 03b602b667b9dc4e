//! What the simulated aggregator checks and decides, as pure code: a request (headers and raw
//! body bytes) plus the time in, a reply (or a fault action) out, the ledger and stats updated.
//! The server module only moves bytes.
//!
//! The wire is parsed here independently of tapgate's client (plain `serde_json::Value`, its
//! own field lists), so that a mistake in the client's types shows up as a rejection.

use std::collections::{HashMap, HashSet};

use axum::http::HeaderMap;
use jiff::{civil::Date, Timestamp, Zoned};
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::faults::{Fault, FaultPlan, Service};
use super::ledger::{Ledger, LedgerEntry, Payment, PaymentStatus, TapInfo};
use super::qr::pan_of;
use super::{RefundReplay, SimConfig};
use crate::snap::sign;

/// Counters of everything the simulator saw, rejections by kind. A correct client causes no
/// rejection of the kinds summed by [`SimStats::protocol_violations`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Calls to the token endpoint.
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
    /// another refund).
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

/// `responseCode`: HTTP status, service code, case.
fn code(status: u16, service: Service, case: &str) -> String {
    format!("{status}{}{case}", service.code())
}

/// A body field problem: missing mandatory field (`xx02`) or bad format (`xx01`).
enum FieldErr {
    Missing(String),
    Format(String, &'static str),
}

impl FieldErr {
    fn into_reject(self) -> Reject {
        match self {
            FieldErr::Missing(f) => reject(
                Kind::Body,
                400,
                "02",
                "Invalid Mandatory Field",
                format!("{f} missing"),
            ),
            FieldErr::Format(f, why) => reject(
                Kind::Body,
                400,
                "01",
                "Invalid Field Format",
                format!("{f}: {why}"),
            ),
        }
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, key: &str, max: usize) -> Result<&'a str, FieldErr> {
    opt_str(obj, key, max)?.ok_or_else(|| FieldErr::Missing(key.into()))
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<&'a str>, FieldErr> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(FieldErr::Missing(key.into())),
        Some(Value::String(s)) if s.chars().count() > max => {
            Err(FieldErr::Format(key.into(), "too long"))
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldErr::Format(key.into(), "not a string")),
    }
}

fn opt_obj<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, FieldErr> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(FieldErr::Format(key.into(), "not an object")),
    }
}

/// An amount object `{"value":"14000.00","currency":"IDR"}`, in whole rupiah.
fn opt_amount(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, FieldErr> {
    let Some(a) = opt_obj(obj, key)? else {
        return Ok(None);
    };
    let value = req_str(a, "value", 18).map_err(|e| prefix(e, key))?;
    let currency = req_str(a, "currency", 3).map_err(|e| prefix(e, key))?;
    if currency != "IDR" {
        return Err(FieldErr::Format(format!("{key}.currency"), "not IDR"));
    }
    parse_amount(value).map(Some).ok_or_else(|| {
        FieldErr::Format(format!("{key}.value"), "not digits with two zero decimals")
    })
}

fn prefix(e: FieldErr, key: &str) -> FieldErr {
    match e {
        FieldErr::Missing(f) => FieldErr::Missing(format!("{key}.{f}")),
        FieldErr::Format(f, why) => FieldErr::Format(format!("{key}.{f}"), why),
    }
}

/// The strict wire form `"14000.00"`: 1–15 digits, a dot, `00` (IDR has no minor unit).
fn parse_amount(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > 15 || frac != "00" {
        return None;
    }
    whole.parse().ok()
}

/// Counts body keys outside `known` (returns their names).
fn unknown_keys(obj: &Map<String, Value>, known: &[&str]) -> Vec<String> {
    obj.keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// The transaction headers docs/protocol.md §3 makes mandatory, lower-case.
const MANDATORY_HEADERS: [&str; 12] = [
    "content-type",
    "authorization",
    "x-timestamp",
    "x-signature",
    "x-partner-id",
    "x-external-id",
    "channel-id",
    "origin",
    "x-ip-address",
    "x-device-id",
    "x-latitude",
    "x-longitude",
];

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Checks `YYYY-MM-DDTHH:MM:SS±HH:MM` exactly, with an offset in `allowed_hours`.
pub(crate) fn parse_timestamp(s: &str, allowed_hours: &[i8]) -> Result<Timestamp, &'static str> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 25
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 | 22 => *c == b':',
            19 => *c == b'+' || *c == b'-',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err("not YYYY-MM-DDTHH:MM:SS+HH:MM");
    }
    let ts: Timestamp = s.parse().map_err(|_| "not a valid date and time")?;
    let hours: i8 = s[20..22].parse().map_err(|_| "bad offset")?;
    let hours = if b[19] == b'-' { -hours } else { hours };
    if &s[23..25] != "00" || !allowed_hours.contains(&hours) {
        return Err("offset is not a local Indonesian offset");
    }
    Ok(ts)
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
}

impl Engine {
    pub(crate) fn new(cfg: SimConfig) -> Engine {
        Engine {
            cfg,
            tokens: HashMap::new(),
            external_ids: HashMap::new(),
            ledger: Ledger::default(),
            declines: HashMap::new(),
            faults: FaultPlan::default(),
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

    pub(crate) fn stats(&self) -> SimStats {
        self.stats.clone()
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
        let c = code(r.status, service, r.case);
        let message = if r.detail.is_empty() || r.kind == Kind::Decline {
            r.message.to_string()
        } else {
            format!("{} {}", r.message, r.detail)
        };
        self.note(service, r.kind.name(), c.clone(), r.detail);
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
            _ => match self.authorize(req, &now) {
                Err(r) => Err(r),
                Ok(()) => match serde_json::from_slice::<Value>(req.body) {
                    Ok(Value::Object(body)) => match service {
                        Service::Payment => self.payment(req, &body, &now, fault),
                        Service::Query => self.query(&body, &now),
                        _ => self.refund(&body, &now, fault),
                    },
                    _ => Err(reject(
                        Kind::Body,
                        400,
                        "00",
                        "Bad Request",
                        "body is not a JSON object",
                    )),
                },
            },
        };
        match result {
            Ok((reply, recorded)) => (reply, recorded),
            Err(r) => (self.rejected(service, r), false),
        }
    }

    fn token(&mut self, req: &SimRequest<'_>, now: &Zoned) -> Result<(Reply, bool), Reject> {
        let h = req.headers;
        for name in ["content-type", "x-timestamp", "x-client-key", "x-signature"] {
            if header(h, name).is_none() {
                return Err(reject(
                    Kind::Header,
                    400,
                    "02",
                    "Invalid Mandatory Field",
                    name.to_ascii_uppercase(),
                ));
            }
        }
        let ts_text = header(h, "x-timestamp").unwrap_or_default();
        let client = header(h, "x-client-key").unwrap_or_default();
        let sig = header(h, "x-signature").unwrap_or_default();
        self.check_content_type(h)?;
        let ts = self.timestamp(ts_text)?;
        if client != self.cfg.client_id {
            return Err(reject(
                Kind::Header,
                401,
                "00",
                "Unauthorized.",
                "unknown X-CLIENT-KEY",
            ));
        }
        self.check_fresh(ts, now)?;
        if !sign::verify_b2b(&self.cfg.partner_public_key_der, client, ts_text, sig) {
            return Err(reject(
                Kind::Signature,
                401,
                "00",
                "Unauthorized.",
                "X-SIGNATURE does not verify",
            ));
        }
        let body = match serde_json::from_slice::<Value>(req.body) {
            Ok(Value::Object(o)) => o,
            _ => {
                return Err(reject(
                    Kind::Body,
                    400,
                    "00",
                    "Bad Request",
                    "body is not a JSON object",
                ))
            }
        };
        let unknown = unknown_keys(&body, &["grantType", "additionalInfo"]);
        self.warn_unknown(Service::Token, unknown);
        let grant = req_str(&body, "grantType", 64).map_err(FieldErr::into_reject)?;
        if grant != "client_credentials" {
            return Err(
                FieldErr::Format("grantType".into(), "not client_credentials").into_reject(),
            );
        }
        let token: String = (&mut self.rng)
            .sample_iter(Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        let now_ts = now.timestamp();
        self.tokens.retain(|_, exp| *exp > now_ts);
        let ttl = i64::try_from(self.cfg.token_ttl_secs).unwrap_or(i64::MAX / 2);
        let expires = now_ts
            .checked_add(jiff::SignedDuration::from_secs(ttl))
            .unwrap_or(Timestamp::MAX);
        self.tokens.insert(token.clone(), expires);
        self.stats.tokens_issued += 1;
        let expires_in = if self.cfg.expires_in_as_number {
            json!(self.cfg.token_ttl_secs)
        } else {
            json!(self.cfg.token_ttl_secs.to_string())
        };
        let body = json!({
            "responseCode": "2007300",
            "responseMessage": "Successful",
            "accessToken": token,
            "tokenType": "Bearer",
            "expiresIn": expires_in,
        });
        Ok((Reply { status: 200, body }, true))
    }

    /// `X-TIMESTAMP` parsed, or the rejection a SNAP aggregator gives a malformed one.
    fn timestamp(&self, text: &str) -> Result<jiff::Timestamp, Reject> {
        parse_timestamp(text, &self.cfg.allowed_utc_offsets_hours).map_err(|why| {
            reject(
                Kind::Header,
                400,
                "01",
                "Invalid Field Format",
                format!("X-TIMESTAMP: {why}"),
            )
        })
    }

    fn check_content_type(&self, h: &HeaderMap) -> Result<(), Reject> {
        let ct = header(h, "content-type").unwrap_or_default();
        if ct.to_ascii_lowercase().starts_with("application/json") {
            Ok(())
        } else {
            Err(reject(
                Kind::Header,
                400,
                "01",
                "Invalid Field Format",
                "Content-Type is not application/json",
            ))
        }
    }

    fn check_fresh(&self, ts: Timestamp, now: &Zoned) -> Result<(), Reject> {
        let skew = (now.timestamp().as_second() - ts.as_second()).unsigned_abs();
        if skew > self.cfg.timestamp_skew_secs {
            return Err(reject(
                Kind::Header,
                401,
                "00",
                "Unauthorized.",
                format!("X-TIMESTAMP is {skew} s away from the aggregator's clock"),
            ));
        }
        Ok(())
    }

    /// Headers, token, HMAC and `X-EXTERNAL-ID` of a transaction call.
    fn authorize(&mut self, req: &SimRequest<'_>, now: &Zoned) -> Result<(), Reject> {
        let h = req.headers;
        if let Some(missing) = MANDATORY_HEADERS.iter().find(|n| header(h, n).is_none()) {
            return Err(reject(
                Kind::Header,
                400,
                "02",
                "Invalid Mandatory Field",
                missing.to_ascii_uppercase(),
            ));
        }
        let get = |n: &str| header(h, n).unwrap_or_default();
        self.check_content_type(h)?;
        let ts_text = get("x-timestamp");
        let ts = self.timestamp(ts_text)?;
        if get("x-ip-address").parse::<std::net::IpAddr>().is_err() {
            return Err(reject(
                Kind::Header,
                400,
                "01",
                "Invalid Field Format",
                "X-IP-ADDRESS is not an IP address",
            ));
        }
        for (name, limit) in [("x-latitude", 90.0), ("x-longitude", 180.0)] {
            let ok = get(name)
                .parse::<f64>()
                .is_ok_and(|v| v.is_finite() && v.abs() <= limit);
            if !ok {
                return Err(reject(
                    Kind::Header,
                    400,
                    "01",
                    "Invalid Field Format",
                    format!("{} is not a coordinate", name.to_ascii_uppercase()),
                ));
            }
        }
        let Some(token) = get("authorization").strip_prefix("Bearer ") else {
            return Err(reject(
                Kind::Header,
                401,
                "01",
                "Invalid Token (B2B)",
                "Authorization is not `Bearer <token>`",
            ));
        };
        let token = token.trim();
        match self.tokens.get(token) {
            Some(exp) if *exp > now.timestamp() => {}
            Some(_) => {
                return Err(reject(
                    Kind::Token,
                    401,
                    "01",
                    "Invalid Token (B2B)",
                    "token expired",
                ))
            }
            None => {
                return Err(reject(
                    Kind::Token,
                    401,
                    "01",
                    "Invalid Token (B2B)",
                    "token unknown",
                ))
            }
        }
        if get("x-partner-id") != self.cfg.partner_id {
            return Err(reject(
                Kind::Header,
                401,
                "00",
                "Unauthorized.",
                "unknown X-PARTNER-ID",
            ));
        }
        if let Some(ch) = &self.cfg.channel_id {
            if get("channel-id") != ch {
                return Err(reject(
                    Kind::Header,
                    401,
                    "00",
                    "Unauthorized.",
                    "unexpected CHANNEL-ID",
                ));
            }
        }
        self.check_fresh(ts, now)?;
        let expected = sign::transaction_signature(
            &self.cfg.client_secret,
            "POST",
            req.path,
            token,
            req.body,
            ts_text,
        );
        if !sign::signatures_equal(&expected, get("x-signature")) {
            return Err(reject(
                Kind::Signature,
                401,
                "00",
                "Unauthorized.",
                "X-SIGNATURE does not match the body",
            ));
        }
        let ext = get("x-external-id");
        if ext.len() > 36 || !ext.bytes().all(|b| b.is_ascii_digit()) {
            return Err(reject(
                Kind::Header,
                400,
                "01",
                "Invalid Field Format",
                "X-EXTERNAL-ID is not 1-36 digits",
            ));
        }
        let today = now.date();
        self.external_ids
            .retain(|d, _| *d >= today.yesterday().unwrap_or(today));
        if !self
            .external_ids
            .entry(today)
            .or_default()
            .insert(ext.to_string())
        {
            return Err(reject(
                Kind::ExternalId,
                409,
                "00",
                "Conflict",
                "X-EXTERNAL-ID already used today",
            ));
        }
        Ok(())
    }

    fn payment(
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
        self.warn_unknown(Service::Payment, unknown_keys(body, &KNOWN));
        let p = parse_payment(body).map_err(FieldErr::into_reject)?;
        if p.merchant_id != self.cfg.merchant_id {
            return Err(reject(
                Kind::Merchant,
                404,
                "08",
                "Invalid Merchant",
                "merchantId is not ours",
            ));
        }
        if self.ledger.has_partner_reference(p.partner_reference_no) {
            return Err(reject(
                Kind::Duplicate,
                409,
                "01",
                "Duplicate partnerReferenceNo",
                "",
            ));
        }
        if p.amount == 0 {
            return Err(reject(
                Kind::Amount,
                404,
                "13",
                "Invalid Amount",
                "amount is zero",
            ));
        }
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
        let ext = header(req.headers, "x-external-id")
            .unwrap_or_default()
            .to_string();
        let decline_code = self.declines.get(&pan).cloned();
        let accepted = matches!(fault, Some(Fault::Accepted));
        let pending_until = accepted.then(|| {
            let ms = i64::try_from(self.cfg.pending_ms).unwrap_or(i64::MAX / 2);
            now.timestamp()
                .checked_add(jiff::SignedDuration::from_millis(ms))
                .unwrap_or(Timestamp::MAX)
        });
        let reference_no = decline_code.is_none().then(|| self.ledger.new_reference());
        let transaction_date = sign::timestamp(now);
        self.ledger.insert(Payment {
            partner_reference_no: p.partner_reference_no.to_string(),
            reference_no: reference_no.clone(),
            external_id: ext,
            pan,
            amount: p.amount,
            decline_code: decline_code.clone(),
            pending_until,
            created: now.timestamp(),
            transaction_date: transaction_date.clone(),
            tap: p.tap,
            refunds: vec![],
            fault: fault.map(|f| f.name().to_string()),
        });
        if let Some(c) = decline_code {
            self.stats.declines += 1;
            self.note(
                Service::Payment,
                "decline",
                c.clone(),
                "declined PAN".into(),
            );
            let reply = Reply {
                status: c.get(..3).and_then(|s| s.parse().ok()).unwrap_or(403),
                body: json!({
                    "responseCode": c,
                    "responseMessage": decline_message(&c),
                    "partnerReferenceNo": p.partner_reference_no,
                    "transactionDate": transaction_date,
                }),
            };
            return Ok((reply, true));
        }
        self.stats.payments_accepted += 1;
        let body = json!({
            "responseCode": "2006000",
            "responseMessage": "Successful",
            "referenceNo": reference_no,
            "partnerReferenceNo": p.partner_reference_no,
            "transactionDate": transaction_date,
            "amount": { "value": format!("{}.00", p.amount), "currency": "IDR" },
        });
        Ok((Reply { status: 200, body }, true))
    }

    fn query(&mut self, body: &Map<String, Value>, now: &Zoned) -> Result<(Reply, bool), Reject> {
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

    fn refund(
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
        self.warn_unknown(Service::Refund, unknown_keys(body, &KNOWN));
        let fields = (|| {
            let merchant = req_str(body, "merchantId", 64)?;
            let reference = req_str(body, "originalReferenceNo", 64)?;
            let partner = opt_str(body, "originalPartnerReferenceNo", 64)?;
            let refund_no = req_str(body, "partnerRefundNo", 64)?;
            let amount = opt_amount(body, "refundAmount")?
                .ok_or_else(|| FieldErr::Missing("refundAmount".into()))?;
            req_str(body, "reason", 256)?;
            opt_str(body, "subMerchantId", 64)?;
            opt_str(body, "originalExternalId", 36)?;
            Ok((merchant, reference, partner, refund_no, amount))
        })();
        let (merchant, reference, partner, refund_no, amount) =
            fields.map_err(FieldErr::into_reject)?;
        if merchant != self.cfg.merchant_id {
            return Err(reject(
                Kind::Merchant,
                404,
                "08",
                "Invalid Merchant",
                "merchantId is not ours",
            ));
        }
        if let Some((p, r, key)) = self.ledger.refund(refund_no) {
            let same = key.original_reference_no == reference
                && key.amount == amount
                && partner.map_or(true, |x| x == p.partner_reference_no);
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
            return Ok((reply, false));
        }
        let now_ts = now.timestamp();
        let Some(p) = self.ledger.get(partner, Some(reference)) else {
            return Err(reject(
                Kind::NotFound,
                404,
                "01",
                "Transaction Not Found",
                "",
            ));
        };
        match p.status(now_ts) {
            PaymentStatus::Pending => {
                return Err(reject(
                    Kind::Refund,
                    403,
                    "15",
                    "Transaction Not Permitted",
                    "payment still pending",
                ));
            }
            PaymentStatus::Declined => {
                return Err(reject(
                    Kind::NotFound,
                    404,
                    "01",
                    "Transaction Not Found",
                    "payment was declined",
                ));
            }
            _ => {}
        }
        if amount == 0 || p.refunded().saturating_add(amount) > p.amount {
            return Err(reject(
                Kind::Amount,
                404,
                "13",
                "Invalid Amount",
                "refund exceeds what is left to refund",
            ));
        }
        let entry = self
            .ledger
            .add_refund(
                reference,
                refund_no,
                amount,
                sign::timestamp(now),
                fault.map(|f| f.name().to_string()),
            )
            .ok_or_else(|| reject(Kind::NotFound, 404, "01", "Transaction Not Found", ""))?;
        self.stats.refunds_made += 1;
        let reply = match self.ledger.get(None, Some(reference)) {
            Some(p) => refund_reply(p, &entry),
            None => {
                return Err(reject(
                    Kind::NotFound,
                    404,
                    "01",
                    "Transaction Not Found",
                    "",
                ))
            }
        };
        Ok((reply, true))
    }
}

fn refund_reply(p: &Payment, r: &super::ledger::RefundEntry) -> Reply {
    Reply {
        status: 200,
        body: json!({
            "responseCode": "2008000",
            "responseMessage": "Successful",
            "originalReferenceNo": p.reference_no,
            "originalPartnerReferenceNo": p.partner_reference_no,
            "refundNo": r.refund_no,
            "partnerRefundNo": r.partner_refund_no,
            "refundAmount": { "value": format!("{}.00", r.amount), "currency": "IDR" },
            "refundTime": r.refund_time,
        }),
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
    use super::*;
    use crate::clock::{Clock as _, ManualClock};
    use crate::snap::sign::RsaSigner;
    use axum::http::HeaderValue;

    const KEY: &str = include_str!("../../tests/fixtures/snap-doc-key.pem");
    const Q1: &str = "hQVDUFYwMWFmTwegAAAGAiAgUAdRUklTQ1BNWgqTYAACESGYYpUvXyARUkVORFkgTVVIQVJESUFOVE9fLQRpZGVuX1AYcm11aGFyZGlhbnRvQGhvdG1haWwuY29tnyUCYpVjC590CDRiODg5MGY1";

    /// An engine on a manual clock, with a token already issued.
    fn engine() -> (Engine, ManualClock, String) {
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
        let body = serde_json::to_vec(&json!({
            "partnerReferenceNo": pref, "qrContent": Q1, "merchantId": "MRT-JKT-DEMO",
            "amount": {"value": "3000.00", "currency": "IDR"}
        }))
        .unwrap();
        let path = "/v1.0/qr/qr-cpm-payment";
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
            Service::Payment,
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

    #[test]
    fn amounts_must_have_two_zero_decimals() {
        assert_eq!(parse_amount("14000.00"), Some(14000));
        assert_eq!(parse_amount("0.00"), Some(0));
        for bad in [
            "14000", "14000.0", "14000.50", "-1.00", ".00", "1,000.00", "1e3.00", " 1.00",
        ] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timestamps_need_seconds_and_a_local_offset() {
        let ok = [7, 8, 9];
        assert!(parse_timestamp("2026-11-22T09:15:02+07:00", &ok).is_ok());
        assert!(parse_timestamp("2026-11-22T10:15:02+08:00", &ok).is_ok());
        for bad in [
            "2026-11-22T02:15:02Z",
            "2026-11-22T02:15:02+00:00",
            "2026-11-22T09:15:02.123+07:00",
            "2026-11-22 09:15:02+07:00",
            "2026-11-22T09:15+07:00",
            "2026-13-22T09:15:02+07:00",
            "2026-11-22T09:15:02+07:30",
        ] {
            assert!(parse_timestamp(bad, &ok).is_err(), "{bad}");
        }
        let a = parse_timestamp("2026-11-22T09:15:02+07:00", &ok).unwrap();
        let b = parse_timestamp("2026-11-22T10:15:02+08:00", &ok).unwrap();
        assert_eq!(a, b);
    }

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
        let case = |mutate: &dyn Fn(&mut Map<String, Value>)| {
            let mut b = good.as_object().unwrap().clone();
            mutate(&mut b);
            match parse_payment(&b) {
                Ok(_) => "ok".to_string(),
                Err(FieldErr::Missing(f)) => format!("missing {f}"),
                Err(FieldErr::Format(f, _)) => format!("format {f}"),
            }
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
