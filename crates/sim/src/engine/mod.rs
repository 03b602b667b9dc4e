//! What the simulated aggregator checks and decides, as pure code: a request (headers and raw
//! body bytes) plus the time in, a reply (or a fault action) out, the ledger and stats updated.
//! The server module only moves bytes.
//!
//! The wire is parsed here independently of tapgate's client (plain `serde_json::Value`, its
//! own field lists), so that a mistake in the client's types shows up as a rejection.
//!
//! One file per endpoint: `token.rs` (B2B access token), `payment.rs`, `query.rs`,
//! `refund.rs`; `auth.rs` checks who may call a transaction endpoint and `fields.rs` reads
//! body fields. This file holds the shared state, the counters and how faults combine with
//! processing.

mod auth;
mod fields;
mod payment;
mod query;
mod refund;
mod token;

use std::collections::{HashMap, HashSet};

use axum::http::HeaderMap;
use jiff::{civil::Date, Timestamp, Zoned};
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::faults::{Fault, FaultPlan, Service};
use super::ledger::{Ledger, LedgerEntry};
use super::SimConfig;

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

    /// The passenger key of `pan` ([`LedgerEntry::passenger`]).
    pub(crate) fn passenger_key(&self, pan: &str) -> String {
        self.ledger.passenger_key(pan)
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
        let body = json!({
            "partnerReferenceNo": pref, "qrContent": Q1, "merchantId": "MRT-JKT-DEMO",
            "amount": {"value": "3000.00", "currency": "IDR"}
        });
        call(e, clock, token, ext, Service::Payment, &body, fault)
    }

    /// Signs and hands `body` to the engine as a call to `service` with external id `ext`.
    fn call(
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

    use crate::ledger::{HoldReference, HoldState, PaymentStatus};
    use crate::passengers::summarize_passengers;

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
}
