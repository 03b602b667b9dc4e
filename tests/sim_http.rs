//! The acquirer simulator over real HTTP on loopback: a hand-written SNAP client (reqwest) and a
//! raw TCP client against `tapgate::sim`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use tapgate::clock::{Clock, ManualClock, SystemClock};
use tapgate::sim::{
    jakarta, Fault, FaultMix, HoldState, IssuerModel, Latency, LedgerEntry, Passengers,
    PaymentStatus, RefundReplay, Service, SimConfig, SimHandle, SimStats, Simulator,
};
use tapgate::snap::sign::{self, RsaSigner};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DOC_KEY: &str = include_str!("fixtures/snap-doc-key.pem");
const PAN_BRI: &str = "9360000211219862952";
const PAN_GOPAY: &str = "9360091430100531720";
const MANDATORY: [&str; 12] = [
    "Content-Type",
    "Authorization",
    "X-TIMESTAMP",
    "X-SIGNATURE",
    "X-PARTNER-ID",
    "X-EXTERNAL-ID",
    "CHANNEL-ID",
    "ORIGIN",
    "X-IP-ADDRESS",
    "X-DEVICE-ID",
    "X-LATITUDE",
    "X-LONGITUDE",
];

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// One BER-TLV object (short or `81` lengths are all these payloads need).
fn tlv(tag: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = tag.to_vec();
    if value.len() < 0x80 {
        out.push(value.len() as u8);
    } else {
        out.extend([0x81, value.len() as u8]);
    }
    out.extend_from_slice(value);
    out
}

/// A QRIS CPM payload for `pan`, with a per-`n` issuer token (each tap is a fresh payload).
fn qr(pan: &str, n: u64) -> String {
    let mut digits = pan.to_string();
    if digits.len() % 2 == 1 {
        digits.push('F');
    }
    let token = format!("tok{n:016}");
    let mut app = Vec::new();
    app.extend(tlv(&[0x4F], &hex::decode("A0000006022020").unwrap()));
    app.extend(tlv(&[0x50], b"QRISCPM"));
    app.extend(tlv(&[0x5A], &hex::decode(digits).unwrap()));
    app.extend(tlv(&[0x5F, 0x2D], b"iden"));
    app.extend(tlv(&[0x63], &tlv(&[0x9F, 0x74], token.as_bytes())));
    let mut payload = tlv(&[0x85], b"CPV01");
    payload.extend(tlv(&[0x61], &app));
    B64.encode(payload)
}

/// A deliberately plain SNAP client, written from docs/protocol.md, not from tapgate's client.
struct Client {
    http: reqwest::Client,
    base: String,
    signer: RsaSigner,
    cfg: SimConfig,
    token: Option<String>,
    ext: AtomicU64,
    qr_seq: AtomicU64,
}

struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["responseCode"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Client {
    fn new(sim: &SimHandle, cfg: &SimConfig) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: sim.base_url(),
            signer: RsaSigner::from_pem(DOC_KEY).unwrap(),
            cfg: cfg.clone(),
            token: None,
            ext: AtomicU64::new(1),
            qr_seq: AtomicU64::new(1),
        }
    }

    fn ts(&self) -> String {
        sign::timestamp(&self.cfg.clock.now())
    }

    fn next_ext(&self) -> String {
        format!("{:032}", self.ext.fetch_add(1, Ordering::SeqCst))
    }

    fn qr(&self, pan: &str) -> String {
        qr(pan, self.qr_seq.fetch_add(1, Ordering::SeqCst))
    }

    async fn token_raw(&self, ts: &str, sig: &str, client: &str, body: &str) -> Answer {
        let r = self
            .http
            .post(format!("{}{}", self.base, self.cfg.paths.token))
            .header("Content-Type", "application/json")
            .header("X-TIMESTAMP", ts)
            .header("X-CLIENT-KEY", client)
            .header("X-SIGNATURE", sig)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        Answer {
            status: r.status().as_u16(),
            text: r.text().await.unwrap(),
        }
    }

    async fn login(&mut self) -> Answer {
        let ts = self.ts();
        let sig = self.signer.sign_b2b(&self.cfg.client_id, &ts);
        let a = self
            .token_raw(
                &ts,
                &sig,
                &self.cfg.client_id.clone(),
                r#"{"grantType":"client_credentials"}"#,
            )
            .await;
        self.token = a.json()["accessToken"].as_str().map(str::to_string);
        a
    }

    /// All transaction headers for `body` on `path`, correctly signed.
    fn headers(&self, path: &str, body: &[u8]) -> Vec<(String, String)> {
        let token = self.token.clone().unwrap_or_default();
        let ts = self.ts();
        let sig =
            sign::transaction_signature(&self.cfg.client_secret, "POST", path, &token, body, &ts);
        let h = [
            ("Content-Type", "application/json".to_string()),
            ("Authorization", format!("Bearer {token}")),
            ("X-TIMESTAMP", ts),
            ("X-SIGNATURE", sig),
            ("X-PARTNER-ID", self.cfg.partner_id.clone()),
            ("X-EXTERNAL-ID", self.next_ext()),
            (
                "CHANNEL-ID",
                self.cfg.channel_id.clone().unwrap_or_default(),
            ),
            ("ORIGIN", "gate-lbb-01.example".to_string()),
            ("X-IP-ADDRESS", "10.20.0.11".to_string()),
            ("X-DEVICE-ID", "LBB-IN-01".to_string()),
            ("X-LATITUDE", "-6.289367".to_string()),
            ("X-LONGITUDE", "106.774196".to_string()),
        ];
        h.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    async fn send(
        &self,
        path: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Answer, reqwest::Error> {
        let mut rb = self.http.post(format!("{}{path}", self.base));
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let r = rb.body(body).send().await?;
        Ok(Answer {
            status: r.status().as_u16(),
            text: r.text().await?,
        })
    }

    /// Signs and sends `body` (minified once, those bytes signed and sent).
    async fn call(&self, service: Service, body: &Value) -> Result<Answer, reqwest::Error> {
        let path = self.path(service);
        let bytes = serde_json::to_vec(body).unwrap();
        let h = self.headers(&path, &bytes);
        self.send(&path, h, bytes).await
    }

    fn path(&self, service: Service) -> String {
        match service {
            Service::Token => self.cfg.paths.token.clone(),
            Service::Payment => self.cfg.paths.payment.clone(),
            Service::Query => self.cfg.paths.query.clone(),
            Service::Refund => self.cfg.paths.refund.clone(),
        }
    }

    fn payment_body(&self, partner_ref: &str, qr_content: &str, value: &str) -> Value {
        json!({
            "partnerReferenceNo": partner_ref,
            "qrContent": qr_content,
            "amount": {"value": value, "currency": "IDR"},
            "merchantId": self.cfg.merchant_id,
            "terminalId": "LBB-IN-01",
            "scannerInfo": {"deviceId": "LBB-IN-01", "deviceIp": "10.20.0.11"},
            "additionalInfo": {"tapType": "IN", "stationId": "LBB", "gateId": "LBB-IN-01"},
        })
    }

    async fn pay(
        &self,
        partner_ref: &str,
        pan: &str,
        value: &str,
    ) -> Result<Answer, reqwest::Error> {
        let body = self.payment_body(partner_ref, &self.qr(pan), value);
        self.call(Service::Payment, &body).await
    }

    /// A payment whose `additionalInfo` is `info` (the tap markers).
    async fn tap(&self, partner_ref: &str, pan: &str, value: &str, info: Value) -> Answer {
        let mut body = self.payment_body(partner_ref, &self.qr(pan), value);
        body["additionalInfo"] = info;
        self.call(Service::Payment, &body).await.unwrap()
    }

    async fn query(&self, partner_ref: &str) -> Answer {
        let body = json!({
            "originalPartnerReferenceNo": partner_ref,
            "serviceCode": "60",
            "merchantId": self.cfg.merchant_id,
        });
        self.call(Service::Query, &body).await.unwrap()
    }

    async fn refund(
        &self,
        reference: &str,
        partner_refund_no: &str,
        value: &str,
    ) -> Result<Answer, reqwest::Error> {
        let body = json!({
            "merchantId": self.cfg.merchant_id,
            "originalReferenceNo": reference,
            "partnerRefundNo": partner_refund_no,
            "refundAmount": {"value": value, "currency": "IDR"},
            "reason": "gate did not open",
        });
        self.call(Service::Refund, &body).await
    }
}

async fn start(cfg: SimConfig) -> (SimHandle, Client) {
    let sim = Simulator::start(cfg.clone(), loopback()).await.unwrap();
    let mut client = Client::new(&sim, &cfg);
    let a = client.login().await;
    assert_eq!(a.code(), "2007300", "{}", a.text);
    (sim, client)
}

fn manual_clock() -> (ManualClock, SimConfig) {
    let clock = ManualClock::new("2026-11-22T02:15:00Z".parse().unwrap(), jakarta());
    let mut cfg = SimConfig::demo();
    cfg.clock = Arc::new(clock.clone());
    (clock, cfg)
}

fn assert_clean(stats: &SimStats) {
    assert_eq!(stats.protocol_violations(), 0, "{:#?}", stats.recent);
    assert_eq!(stats.unknown_fields, 0, "{:#?}", stats.recent);
}

#[tokio::test]
async fn token_happy_path_with_the_documentation_key() {
    let sim = Simulator::start(SimConfig::demo(), loopback())
        .await
        .unwrap();
    let mut c = Client::new(&sim, &SimConfig::demo());
    let a = c.login().await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["responseCode"], "2007300");
    assert_eq!(v["tokenType"], "Bearer");
    assert_eq!(v["expiresIn"], json!("900"));
    assert!(v["accessToken"].as_str().unwrap().len() >= 32);
    let s = sim.stats();
    assert_eq!((s.token_requests, s.tokens_issued), (1, 1));
    assert_clean(&s);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_refuses_bad_signature_client_and_timestamps() {
    let (clock, cfg) = manual_clock();
    let sim = Simulator::start(cfg.clone(), loopback()).await.unwrap();
    let c = Client::new(&sim, &cfg);
    let ts = c.ts();
    let body = r#"{"grantType":"client_credentials"}"#;
    // Signed over another timestamp: RSA verification must fail.
    let other = sign::timestamp(
        &clock
            .now()
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap(),
    );
    let sig = c.signer.sign_b2b("tapgate-demo", &other);
    let a = c.token_raw(&ts, &sig, "tapgate-demo", body).await;
    assert_eq!((a.status, a.code().as_str()), (401, "4017300"));
    assert_eq!(sim.stats().signature_failures, 1);

    let sig = c.signer.sign_b2b("someone-else", &ts);
    let a = c.token_raw(&ts, &sig, "someone-else", body).await;
    assert_eq!(a.code(), "4017300");

    let utc = clock
        .now()
        .timestamp()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let sig = c.signer.sign_b2b("tapgate-demo", &utc);
    let a = c.token_raw(&utc, &sig, "tapgate-demo", body).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "4007301"),
        "{}",
        a.text
    );

    let sig = c.signer.sign_b2b("tapgate-demo", &ts);
    clock.advance_ms(301_000);
    let a = c.token_raw(&ts, &sig, "tapgate-demo", body).await;
    assert_eq!(a.code(), "4017300", "stale timestamp: {}", a.text);

    let ts = c.ts();
    let sig = c.signer.sign_b2b("tapgate-demo", &ts);
    let a = c
        .token_raw(&ts, &sig, "tapgate-demo", r#"{"grantType":"password"}"#)
        .await;
    assert_eq!(a.code(), "4007301");
    let a = c.token_raw(&ts, &sig, "tapgate-demo", r#"{}"#).await;
    assert_eq!(a.code(), "4007302");

    let s = sim.stats();
    assert_eq!(s.signature_failures, 1);
    assert_eq!(s.header_failures, 3);
    assert_eq!(s.body_failures, 2);
    assert_eq!(s.tokens_issued, 0);
}

#[tokio::test]
async fn a_correct_payment_lands_in_the_ledger_and_causes_no_rejection() {
    let (sim, c) = start(SimConfig::demo()).await;
    let a = c.pay("LBB-0001", PAN_BRI, "14000.00").await.unwrap();
    assert_eq!(
        (a.status, a.code().as_str()),
        (200, "2006000"),
        "{}",
        a.text
    );
    let v = a.json();
    let reference = v["referenceNo"].as_str().unwrap().to_string();
    assert_eq!(v["partnerReferenceNo"], "LBB-0001");

    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 1);
    let e = &ledger[0];
    assert_eq!(e.reference_no.as_deref(), Some(reference.as_str()));
    assert_eq!((e.amount, e.status), (14000, PaymentStatus::Succeeded));
    assert_eq!(e.masked_pan, "93600002*******2952");
    assert_eq!(e.nns, "93600002");
    assert_eq!(e.tap.tap_type.as_deref(), Some("IN"));
    assert_eq!(e.tap.station_id.as_deref(), Some("LBB"));
    assert_eq!(e.tap.gate_id.as_deref(), Some("LBB-IN-01"));
    assert_eq!(e.net_charged(), 14000);
    assert!(!serde_json::to_string(&ledger).unwrap().contains(PAN_BRI));

    let q = c.query("LBB-0001").await;
    assert_eq!(q.code(), "2006100", "{}", q.text);
    assert_eq!(q.json()["latestTransactionStatus"], "00");
    assert_eq!(q.json()["originalReferenceNo"], json!(reference));
    let q = c.query("LBB-9999").await;
    assert_eq!((q.status, q.code().as_str()), (404, "4046101"));

    let s = sim.stats();
    assert_eq!(
        (s.payment_requests, s.payments_accepted, s.query_requests),
        (1, 1, 2)
    );
    assert_clean(&s);
}

#[tokio::test]
async fn hmac_must_cover_the_raw_bytes_received() {
    let (sim, c) = start(SimConfig::demo()).await;
    let path = c.cfg.paths.payment.clone();
    let body = c.payment_body("LBB-0002", &c.qr(PAN_BRI), "3000.00");
    let minified = serde_json::to_vec(&body).unwrap();
    // Signed over the minified bytes, sent pretty-printed: same JSON, other bytes.
    let h = c.headers(&path, &minified);
    let a = c
        .send(&path, h, serde_json::to_vec_pretty(&body).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.code().as_str()),
        (401, "4016000"),
        "{}",
        a.text
    );
    // Signed with the wrong secret.
    let ts = c.ts();
    let mut h = c.headers(&path, &minified);
    let token = c.token.clone().unwrap();
    let bad = sign::transaction_signature("not-the-secret", "POST", &path, &token, &minified, &ts);
    for (k, v) in h.iter_mut() {
        match k.as_str() {
            "X-SIGNATURE" => *v = bad.clone(),
            "X-TIMESTAMP" => *v = ts.clone(),
            _ => {}
        }
    }
    let a = c.send(&path, h, minified.clone()).await.unwrap();
    assert_eq!(a.code(), "4016000");
    assert_eq!(sim.stats().signature_failures, 2);
    assert!(sim.ledger().is_empty());
    // The same body, correctly signed, goes through.
    let a = c
        .send(&path, c.headers(&path, &minified), minified)
        .await
        .unwrap();
    assert_eq!(a.code(), "2006000", "{}", a.text);
}

#[tokio::test]
async fn every_mandatory_header_is_required() {
    let (sim, c) = start(SimConfig::demo()).await;
    let path = c.cfg.paths.payment.clone();
    for (i, name) in MANDATORY.iter().enumerate() {
        let body =
            serde_json::to_vec(&c.payment_body(&format!("H-{i}"), &c.qr(PAN_BRI), "3000.00"))
                .unwrap();
        let h: Vec<_> = c
            .headers(&path, &body)
            .into_iter()
            .filter(|(k, _)| k != name)
            .collect();
        let a = c.send(&path, h, body).await.unwrap();
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "4006002"),
            "without {name}: {}",
            a.text
        );
        assert!(a.json()["responseMessage"]
            .as_str()
            .unwrap()
            .contains(&name.to_ascii_uppercase()));
    }
    let s = sim.stats();
    assert_eq!(s.header_failures, MANDATORY.len() as u64);
    assert!(sim.ledger().is_empty());
    // Present but wrong: partner, channel, coordinates, external id format, bearer form.
    for (name, value, want) in [
        ("X-PARTNER-ID", "SOMEONE", "4016000"),
        ("CHANNEL-ID", "00000", "4016000"),
        ("X-LATITUDE", "south", "4006001"),
        ("X-IP-ADDRESS", "gate-1", "4006001"),
        ("X-EXTERNAL-ID", "abc-123", "4006001"),
        ("Authorization", "Basic xyz", "4016001"),
        ("Content-Type", "text/plain", "4006001"),
    ] {
        let body = serde_json::to_vec(&c.payment_body("H-bad", &c.qr(PAN_BRI), "3000.00")).unwrap();
        let mut h = c.headers(&path, &body);
        for (k, v) in h.iter_mut() {
            if k == name {
                *v = value.to_string();
            }
        }
        let a = c.send(&path, h, body).await.unwrap();
        assert_eq!(a.code(), want, "{name}={value}: {}", a.text);
    }
    assert_eq!(sim.stats().header_failures, MANDATORY.len() as u64 + 7);
}

#[tokio::test]
async fn an_external_id_is_used_once_a_day() {
    let (sim, c) = start(SimConfig::demo()).await;
    let path = c.cfg.paths.payment.clone();
    let b1 = serde_json::to_vec(&c.payment_body("X-1", &c.qr(PAN_BRI), "3000.00")).unwrap();
    let h1 = c.headers(&path, &b1);
    let ext = h1
        .iter()
        .find(|(k, _)| k == "X-EXTERNAL-ID")
        .unwrap()
        .1
        .clone();
    assert_eq!(c.send(&path, h1, b1).await.unwrap().code(), "2006000");
    let b2 = serde_json::to_vec(&c.payment_body("X-2", &c.qr(PAN_BRI), "3000.00")).unwrap();
    let mut h2 = c.headers(&path, &b2);
    for (k, v) in h2.iter_mut() {
        if k == "X-EXTERNAL-ID" {
            *v = ext.clone();
        }
    }
    let a = c.send(&path, h2, b2).await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (409, "4096000"));
    assert_eq!(sim.stats().external_id_reuses, 1);
    assert_eq!(sim.ledger().len(), 1);
}

#[tokio::test]
async fn amounts_and_fields_are_checked() {
    let (sim, c) = start(SimConfig::demo()).await;
    for (value, want) in [
        ("14000", "4006001"),
        ("14000.50", "4006001"),
        ("Rp14.000", "4006001"),
        ("0.00", "4046013"),
    ] {
        let a = c.pay("A-1", PAN_BRI, value).await.unwrap();
        assert_eq!(a.code(), want, "{value}: {}", a.text);
    }
    let mut body = c.payment_body("A-2", &c.qr(PAN_BRI), "3000.00");
    body["amount"]["currency"] = json!("USD");
    assert_eq!(
        c.call(Service::Payment, &body).await.unwrap().code(),
        "4006001"
    );
    body["amount"] = json!({"value": "3000.00"});
    assert_eq!(
        c.call(Service::Payment, &body).await.unwrap().code(),
        "4006002"
    );
    let mut body = c.payment_body("A-3", &c.qr(PAN_BRI), "3000.00");
    body.as_object_mut().unwrap().remove("merchantId");
    assert_eq!(
        c.call(Service::Payment, &body).await.unwrap().code(),
        "4006002"
    );
    body["merchantId"] = json!("SOMEONE-ELSE");
    let a = c.call(Service::Payment, &body).await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (404, "4046008"));
    // A misspelt optional field is not refused but is counted.
    let mut body = c.payment_body("A-4", &c.qr(PAN_BRI), "3000.00");
    body["scanerInfo"] = json!({});
    assert_eq!(
        c.call(Service::Payment, &body).await.unwrap().code(),
        "2006000"
    );
    let s = sim.stats();
    assert_eq!(s.unknown_fields, 1);
    assert!(s.recent.iter().any(|n| n.detail == "scanerInfo"));
    assert_eq!(s.body_failures, 6);
    assert_eq!((s.amount_failures, s.merchant_failures), (1, 1));
    assert_eq!(sim.ledger().len(), 1);
}

#[tokio::test]
async fn qr_content_must_decode_and_is_single_use() {
    let (sim, c) = start(SimConfig::demo()).await;
    let fixtures: Value = serde_json::from_str(include_str!("fixtures/cpm-payloads.json")).unwrap();
    let not_qris = fixtures
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "E1_emvco_example_not_qris")
        .unwrap()["payload"]
        .as_str()
        .unwrap()
        .to_string();
    for (i, bad) in ["hQVDUFYgarbage!!", "not base64 at all", not_qris.as_str()]
        .iter()
        .enumerate()
    {
        let body = c.payment_body(&format!("Q-{i}"), bad, "3000.00");
        let a = c.call(Service::Payment, &body).await.unwrap();
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "4006001"),
            "{}",
            a.text
        );
    }
    assert_eq!(sim.stats().qr_failures, 3);
    // A real payload from the fixtures pays once; the same text again is declined.
    let real = fixtures[0]["payload"].as_str().unwrap();
    let body = c.payment_body("Q-ok", real, "3000.00");
    assert_eq!(
        c.call(Service::Payment, &body).await.unwrap().code(),
        "2006000"
    );
    let body = c.payment_body("Q-again", real, "3000.00");
    let a = c.call(Service::Payment, &body).await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (403, "4036000"));
    // The same partnerReferenceNo with a fresh payload is a duplicate.
    let a = c.pay("Q-ok", PAN_BRI, "3000.00").await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (409, "4096001"));
    let s = sim.stats();
    assert_eq!((s.qr_reuses, s.duplicate_references), (1, 1));
    assert_eq!(sim.ledger().len(), 1);
    assert_eq!(sim.ledger()[0].nns, "93600002");
}

#[tokio::test]
async fn a_declined_pan_is_declined_and_queries_as_failed() {
    let (sim, c) = start(SimConfig::demo()).await;
    sim.decline_pan(PAN_GOPAY, "4036014");
    let a = c.pay("D-1", PAN_GOPAY, "14000.00").await.unwrap();
    assert_eq!(
        (a.status, a.code().as_str()),
        (403, "4036014"),
        "{}",
        a.text
    );
    assert_eq!(a.json()["responseMessage"], "Insufficient Funds");
    assert!(a.json().get("referenceNo").is_none());
    let e = sim.entry("D-1").unwrap();
    assert_eq!(
        (e.status, e.decline_code.as_deref()),
        (PaymentStatus::Declined, Some("4036014"))
    );
    assert_eq!((e.nns.as_str(), e.net_charged()), ("93600914", 0));
    assert_eq!(c.query("D-1").await.json()["latestTransactionStatus"], "06");
    // Other PANs still pay; lifting the decline lets the PAN pay again.
    assert_eq!(
        c.pay("D-2", PAN_BRI, "3000.00").await.unwrap().code(),
        "2006000"
    );
    sim.decline_pan(PAN_GOPAY, "");
    assert_eq!(
        c.pay("D-3", PAN_GOPAY, "3000.00").await.unwrap().code(),
        "2006000"
    );
    assert_eq!(sim.stats().declines, 1);
    assert_clean(&sim.stats());
}

#[tokio::test]
async fn the_issuer_model_delays_silences_and_declines_payments_over_http() {
    // A narrow distribution (200/210/220 ms): even a draw four deviations low is 177 ms.
    let mut cfg = SimConfig::demo();
    cfg.issuer = Some(IssuerModel {
        latency: Some(Latency::new(200, 210, 220).unwrap()),
        decline_rate: 1.0,
        seed: 5,
        ..IssuerModel::default()
    });
    let (sim, c) = start(cfg).await;
    let t = Instant::now();
    let a = c.pay("IM-1", PAN_BRI, "3000.00").await.unwrap();
    let waited = t.elapsed();
    assert_eq!(
        (a.status, a.code().as_str()),
        (403, "4036014"),
        "{}",
        a.text
    );
    assert!(waited >= Duration::from_millis(170), "{waited:?}");
    let e = sim.entry("IM-1").unwrap();
    assert_eq!(
        (e.status, e.decline_code.as_deref()),
        (PaymentStatus::Declined, Some("4036014"))
    );
    // Queries are not delayed.
    let t = Instant::now();
    assert_eq!(
        c.query("IM-1").await.json()["latestTransactionStatus"],
        "06"
    );
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );

    // No answer in time: the payment is held, unknown to a query meanwhile, then lands.
    sim.set_issuer_model(Some(IssuerModel {
        no_answer: 1.0,
        no_answer_ms: 600,
        ..IssuerModel::default()
    }))
    .unwrap();
    let t = Instant::now();
    let (paid, during) = tokio::join!(c.pay("IM-2", PAN_BRI, "3000.00"), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.query("IM-2").await
    });
    assert_eq!(during.code(), "4046101", "{}", during.text);
    assert_eq!(paid.unwrap().code(), "2006000");
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        c.query("IM-2").await.json()["latestTransactionStatus"],
        "00"
    );

    // Removed: answered at once, not declined. A bad model is refused and changes nothing.
    sim.set_issuer_model(None).unwrap();
    let bad = IssuerModel {
        decline_rate: 2.0,
        ..IssuerModel::default()
    };
    assert!(sim.set_issuer_model(Some(bad.clone())).is_err());
    let t = Instant::now();
    assert_eq!(
        c.pay("IM-3", PAN_BRI, "3000.00").await.unwrap().code(),
        "2006000"
    );
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(sim.stats().declines, 1);
    assert_clean(&sim.stats());

    let mut cfg = SimConfig::demo();
    cfg.issuer = Some(bad);
    let err = Simulator::start(cfg, loopback()).await.err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn tokens_expire() {
    let (clock, cfg) = manual_clock();
    let (sim, mut c) = start(cfg).await;
    assert_eq!(
        c.pay("T-1", PAN_BRI, "3000.00").await.unwrap().code(),
        "2006000"
    );
    clock.advance_ms(900_000);
    let a = c.pay("T-2", PAN_BRI, "3000.00").await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (401, "4016001"));
    c.token = Some("made-up".into());
    assert_eq!(
        c.pay("T-3", PAN_BRI, "3000.00").await.unwrap().code(),
        "4016001"
    );
    assert_eq!(sim.stats().token_failures, 2);
    c.login().await;
    assert_eq!(
        c.pay("T-4", PAN_BRI, "3000.00").await.unwrap().code(),
        "2006000"
    );
    assert_eq!(sim.ledger().len(), 2);
}

#[tokio::test]
async fn a_dropped_connection_gives_the_client_no_answer() {
    let (sim, c) = start(SimConfig::demo()).await;
    sim.push_fault(Fault::Drop { applied: true });
    sim.push_fault(Fault::Drop { applied: false });
    assert_eq!(sim.queued_faults(), 2);

    let e = c
        .pay("DR-applied", PAN_BRI, "14000.00")
        .await
        .err()
        .expect("no HTTP answer");
    assert!(e.is_request() && !e.is_status(), "{e:?}");
    let e = c
        .pay("DR-lost", PAN_BRI, "14000.00")
        .await
        .err()
        .expect("no HTTP answer");
    assert!(e.is_request(), "{e:?}");

    // Applied: the money moved although the client never heard; the query tells.
    let applied = sim.entry("DR-applied").unwrap();
    assert_eq!(
        (applied.status, applied.fault.as_deref()),
        (PaymentStatus::Succeeded, Some("drop"))
    );
    assert_eq!(
        c.query("DR-applied").await.json()["latestTransactionStatus"],
        "00"
    );
    // Not applied: nothing happened.
    assert!(sim.entry("DR-lost").is_none());
    assert_eq!(c.query("DR-lost").await.code(), "4046101");
    assert_eq!(sim.stats().faults_injected, 2);
    assert_clean(&sim.stats());
}

#[tokio::test]
async fn a_raw_client_sees_the_connection_close_without_a_byte() {
    let (sim, c) = start(SimConfig::demo()).await;
    sim.push_fault(Fault::Drop { applied: false });
    let body = serde_json::to_vec(&c.payment_body("RAW-1", &c.qr(PAN_BRI), "3000.00")).unwrap();
    let path = c.cfg.paths.payment.clone();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
        sim.addr(),
        body.len()
    );
    for (k, v) in c.headers(&path, &body) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    // EOF or a reset, never an HTTP status line.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("the simulator closes the connection");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));

    // The same raw request without a fault gets a real answer (the check above can fail).
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let req = req.replacen("Content-Length", "Connection: close\r\nContent-Length", 1);
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    // The external id was not consumed by the dropped attempt (nothing was applied).
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn garbage_and_server_errors_applied_or_not() {
    let (sim, c) = start(SimConfig::demo()).await;
    sim.push_fault(Fault::Garbage { applied: true });
    sim.push_fault(Fault::Garbage { applied: false });
    sim.push_fault(Fault::ServerError { applied: true });
    sim.push_fault(Fault::GatewayTimeout { applied: false });

    for r in ["G-applied", "G-lost"] {
        let a = c.pay(r, PAN_BRI, "3000.00").await.unwrap();
        assert_eq!(a.status, 200);
        assert!(
            serde_json::from_str::<Value>(&a.text).is_err(),
            "{}",
            a.text
        );
        assert!(a.text.starts_with('{'));
    }
    let a = c.pay("S-applied", PAN_BRI, "3000.00").await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (500, "5006001"));
    let a = c.pay("S-lost", PAN_BRI, "3000.00").await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (504, "5046000"));

    let refs: Vec<_> = sim
        .ledger()
        .into_iter()
        .map(|e| (e.partner_reference_no, e.fault))
        .collect();
    assert_eq!(
        refs,
        vec![
            ("G-applied".to_string(), Some("garbage".to_string())),
            ("S-applied".to_string(), Some("server_error".to_string())),
        ]
    );
    assert_eq!(
        c.query("G-applied").await.json()["latestTransactionStatus"],
        "00"
    );
    assert_eq!(c.query("S-lost").await.code(), "4046101");
}

#[tokio::test]
async fn accepted_payment_is_pending_then_succeeds() {
    let (clock, mut cfg) = manual_clock();
    cfg.pending_ms = 5000;
    let (sim, c) = start(cfg).await;
    sim.push_fault(Fault::Accepted);
    let a = c.pay("P-1", PAN_BRI, "14000.00").await.unwrap();
    assert_eq!(
        (a.status, a.code().as_str()),
        (202, "2026000"),
        "{}",
        a.text
    );
    assert_eq!(sim.entry("P-1").unwrap().status, PaymentStatus::Pending);
    let q = c.query("P-1").await;
    assert_eq!(q.json()["latestTransactionStatus"], "03", "{}", q.text);
    assert!(q.json().get("paidTime").is_none());
    // Not refundable while pending.
    let reference = sim.entry("P-1").unwrap().reference_no.unwrap();
    assert_eq!(
        c.refund(&reference, "RF-P-1", "14000.00")
            .await
            .unwrap()
            .code(),
        "4038015"
    );
    clock.advance_ms(4_999);
    assert_eq!(c.query("P-1").await.json()["latestTransactionStatus"], "03");
    clock.advance_ms(1);
    let q = c.query("P-1").await;
    assert_eq!(q.json()["latestTransactionStatus"], "00");
    assert!(q.json()["paidTime"].as_str().is_some());
    assert_eq!(sim.entry("P-1").unwrap().status, PaymentStatus::Succeeded);

    // A declined PAN accepted with a 202 resolves to failed.
    sim.decline_pan(PAN_GOPAY, "4036005");
    sim.push_fault(Fault::Accepted);
    assert_eq!(
        c.pay("P-2", PAN_GOPAY, "14000.00").await.unwrap().status,
        202
    );
    assert_eq!(c.query("P-2").await.json()["latestTransactionStatus"], "03");
    clock.advance_ms(5_000);
    assert_eq!(c.query("P-2").await.json()["latestTransactionStatus"], "06");
}

#[tokio::test]
async fn a_delay_holds_the_answer_back() {
    let (sim, c) = start(SimConfig::demo()).await;
    sim.push_fault(Fault::Delay { ms: 200 });
    let t = Instant::now();
    let a = c.pay("W-1", PAN_BRI, "3000.00").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(a.code(), "2006000");
    // A client that gives up still leaves a payment behind once the delay is over.
    sim.push_fault(Fault::Delay { ms: 300 });
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let body = serde_json::to_vec(&c.payment_body("W-2", &c.qr(PAN_BRI), "3000.00")).unwrap();
    let path = c.cfg.paths.payment.clone();
    let mut rb = impatient.post(format!("{}{path}", c.base));
    for (k, v) in c.headers(&path, &body) {
        rb = rb.header(k, v);
    }
    assert!(rb.body(body).send().await.unwrap_err().is_timeout());
    let mut found = None;
    for _ in 0..200 {
        found = sim.entry("W-2");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(found.map(|e| e.status), Some(PaymentStatus::Succeeded));
}

#[tokio::test]
async fn refunds_are_idempotent_and_bounded() {
    let (sim, c) = start(SimConfig::demo()).await;
    let a = c.pay("R-1", PAN_BRI, "14000.00").await.unwrap();
    let reference = a.json()["referenceNo"].as_str().unwrap().to_string();

    let first = c.refund(&reference, "RF-1", "4000.00").await.unwrap();
    assert_eq!(first.code(), "2008000", "{}", first.text);
    let again = c.refund(&reference, "RF-1", "4000.00").await.unwrap();
    assert_eq!(again.code(), "2008000");
    assert_eq!(again.json()["refundNo"], first.json()["refundNo"]);
    assert_eq!(c.query("R-1").await.json()["latestTransactionStatus"], "00");
    // The same partnerRefundNo for another amount is refused, not refunded.
    let a = c.refund(&reference, "RF-1", "5000.00").await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (409, "4098001"));
    // More than what is left.
    assert_eq!(
        c.refund(&reference, "RF-2", "10001.00")
            .await
            .unwrap()
            .code(),
        "4048013"
    );
    // Unknown payment.
    assert_eq!(
        c.refund("SIMREF9999999999", "RF-3", "1000.00")
            .await
            .unwrap()
            .code(),
        "4048001"
    );
    // The rest, with its answer lost on the way back: the retry gets the same refund.
    sim.push_fault_on(Service::Refund, Fault::Drop { applied: true });
    assert!(c.refund(&reference, "RF-4", "10000.00").await.is_err());
    let retry = c.refund(&reference, "RF-4", "10000.00").await.unwrap();
    assert_eq!(retry.code(), "2008000");

    let e = sim.entry("R-1").unwrap();
    assert_eq!(e.refunds.len(), 2);
    assert_eq!(
        (e.refunded, e.status, e.net_charged()),
        (14000, PaymentStatus::Refunded, 0)
    );
    assert_eq!(e.refunds[1].fault.as_deref(), Some("drop"));
    assert_eq!(c.query("R-1").await.json()["latestTransactionStatus"], "04");
    let s = sim.stats();
    assert_eq!((s.refunds_made, s.refund_replays), (2, 2));
    assert_clean(&s);
}

#[tokio::test]
async fn refund_replay_can_answer_inconsistent_request() {
    let mut cfg = SimConfig::demo();
    cfg.refund_replay = RefundReplay::Inconsistent;
    let (sim, c) = start(cfg).await;
    let a = c.pay("RI-1", PAN_BRI, "3000.00").await.unwrap();
    let reference = a.json()["referenceNo"].as_str().unwrap().to_string();
    assert_eq!(
        c.refund(&reference, "RF-1", "3000.00")
            .await
            .unwrap()
            .code(),
        "2008000"
    );
    let a = c.refund(&reference, "RF-1", "3000.00").await.unwrap();
    assert_eq!((a.status, a.code().as_str()), (404, "4048018"));
    assert_eq!(sim.entry("RI-1").unwrap().refunds.len(), 1);
}

#[tokio::test]
async fn the_control_api_over_http() {
    let (sim, c) = start(SimConfig::demo()).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/sim/{p}", sim.base_url());
    let post = |p: &str, body: Value| {
        http.post(url(p))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(
        post("decline", json!({"pan": PAN_GOPAY, "code": "4036007"}))
            .await
            .unwrap()
            .status(),
        204
    );
    let r = post(
        "faults",
        json!({"fault": {"kind": "server_error", "applied": false}, "count": 2}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(sim.queued_faults(), 2);
    assert_eq!(
        http.delete(url("faults")).send().await.unwrap().status(),
        204
    );
    assert_eq!(sim.queued_faults(), 0);

    assert_eq!(
        c.pay("C-1", PAN_GOPAY, "3000.00").await.unwrap().code(),
        "4036007"
    );
    assert_eq!(
        c.pay("C-2", PAN_BRI, "3000.00").await.unwrap().code(),
        "2006000"
    );

    let ledger: Vec<LedgerEntry> = serde_json::from_str(
        &http
            .get(url("ledger"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ledger, sim.ledger());
    assert_eq!(ledger.len(), 2);
    let stats: SimStats = serde_json::from_str(
        &http
            .get(url("stats"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats.declines, 1);
    assert_eq!(stats.payments_accepted, 1);

    let mix = serde_json::to_value(FaultMix::chaos(1.0, 0)).unwrap();
    assert_eq!(
        post("random", json!({"seed": 3, "mix": mix}))
            .await
            .unwrap()
            .status(),
        204
    );
    let before = sim.stats().faults_injected;
    let _ = c.pay("C-3", PAN_BRI, "3000.00").await;
    assert_eq!(sim.stats().faults_injected, before + 1);
    // Unknown paths answer in SNAP style.
    let r = http
        .post(format!("{}/v1.0/qr/nope", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Outcome class of a payment call, as a client would see it.
fn class(r: &Result<Answer, reqwest::Error>) -> String {
    match r {
        Err(_) => "no-answer".into(),
        Ok(a) => match serde_json::from_str::<Value>(&a.text) {
            Ok(v) => format!("{} {}", a.status, v["responseCode"].as_str().unwrap_or("?")),
            Err(_) => format!("{} garbage", a.status),
        },
    }
}

#[tokio::test]
async fn random_faults_are_reproducible_and_the_ledger_tells_the_truth() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (sim, c) = start(SimConfig::demo()).await;
        sim.set_random_faults(42, FaultMix::chaos(0.6, 1));
        let mut seen = Vec::new();
        for i in 0..40 {
            let r = format!("RND-{i}");
            let out = c.pay(&r, PAN_BRI, "3000.00").await;
            let cls = class(&out);
            // Whatever the client saw, the query (fault-free: queries are not in the mix)
            // and the ledger agree on whether money moved.
            let q = c.query(&r).await;
            let entry = sim.entry(&r);
            match entry.as_ref().map(|e| e.status) {
                Some(PaymentStatus::Succeeded) => {
                    assert_eq!(q.json()["latestTransactionStatus"], "00")
                }
                Some(PaymentStatus::Pending) => {
                    assert_eq!(q.json()["latestTransactionStatus"], "03")
                }
                None => assert_eq!(q.code(), "4046101", "{cls}"),
                other => panic!("{other:?}"),
            }
            if cls == "200 2006000" {
                assert_eq!(entry.map(|e| e.status), Some(PaymentStatus::Succeeded));
            }
            seen.push(cls);
        }
        assert_clean(&sim.stats());
        runs.push(seen);
        sim.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
    let distinct: std::collections::BTreeSet<_> = runs[0].iter().collect();
    assert!(distinct.len() >= 4, "{distinct:?}");
}

#[tokio::test]
async fn custom_paths_and_shutdown() {
    let mut cfg = SimConfig::demo();
    cfg.paths.payment = "/finpay/qris-tap/v1.0/qr/qr-cpm-payment".into();
    let (sim, c) = start(cfg.clone()).await;
    assert_eq!(
        c.pay("CP-1", PAN_BRI, "3000.00").await.unwrap().code(),
        "2006000"
    );
    let old = c
        .http
        .post(format!("{}/v1.0/qr/qr-cpm-payment", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 404);
    let addr = sim.addr();
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    cfg.paths.query = cfg.paths.payment.clone();
    let e = Simulator::start(cfg, loopback()).await.err().unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn system_clock_config_accepts_wita_timestamps() {
    let mut cfg = SimConfig::demo();
    cfg.clock = Arc::new(SystemClock::new(jiff::tz::TimeZone::fixed(
        jiff::tz::offset(8),
    )));
    let (sim, c) = start(cfg).await;
    assert_eq!(
        c.pay("MKS-1", PAN_BRI, "3000.00").await.unwrap().code(),
        "2006000"
    );
    assert!(c.ts().ends_with("+08:00"));
    assert_clean(&sim.stats());
}

/// The ledger's per-passenger view over HTTP, as another process (a line-wide test) reads it.
async fn passengers_over_http(sim: &SimHandle) -> (Value, Passengers) {
    let text = reqwest::get(format!("{}/sim/ledger/passengers", sim.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let raw: Value = serde_json::from_str(&text).unwrap();
    (raw, serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn holds_finalized_or_released_leave_each_passenger_paying_the_tap_out() {
    let (sim, c) = start(SimConfig::demo()).await;
    let ok = |a: &Answer| {
        assert_eq!(a.code().get(..3), Some("200"), "{}", a.text);
        a.json()["referenceNo"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // A journey whose tap-out names its tap-in: the hold is finalized at the tap-out amount.
    let in1 = ok(&c
        .tap(
            "BLM-IN-1",
            PAN_BRI,
            "9000.00",
            json!({"tapType": "IN", "stationId": "BLM"}),
        )
        .await);
    ok(&c
        .tap(
            "ASN-OUT-1",
            PAN_BRI,
            "3000.00",
            json!({"tapType": "OUT", "stationId": "ASN",
                   "tapInPartnerReferenceNo": "BLM-IN-1", "tapInReferenceNo": in1}),
        )
        .await);
    assert_eq!(
        sim.entry("BLM-IN-1").unwrap().hold,
        HoldState::Finalized {
            by: "ASN-OUT-1".into()
        }
    );
    // The hold still queries as paid; it can no longer be refunded.
    assert_eq!(
        c.query("BLM-IN-1").await.json()["latestTransactionStatus"],
        "00"
    );
    let a = c.refund(&in1, "RBLM-IN-1", "9000.00").await.unwrap();
    assert_eq!(
        (a.status, a.code().as_str()),
        (403, "4038015"),
        "{}",
        a.text
    );
    assert_eq!(sim.entry("BLM-IN-1").unwrap().refunded, 0);

    // A journey whose exit did not know the entry: a plain charge, the hold left standing
    // until its station releases it.
    let in2 = ok(&c
        .tap(
            "BLM-IN-2",
            PAN_GOPAY,
            "9000.00",
            json!({"tapType": "IN", "stationId": "BLM"}),
        )
        .await);
    ok(&c
        .tap(
            "ASN-OUT-2",
            PAN_GOPAY,
            "14000.00",
            json!({"tapType": "OUT", "stationId": "ASN"}),
        )
        .await);
    let (_, mid) = passengers_over_http(&sim).await;
    assert_eq!((mid.totals.holds_open, mid.totals.held), (1, 9000));
    let a = c.refund(&in2, "RBLM-IN-2", "9000.00").await.unwrap();
    assert_eq!(a.code(), "2008000", "{}", a.text);

    let (raw, over_http) = passengers_over_http(&sim).await;
    assert_eq!(over_http, sim.passengers());
    let bri = sim.passenger(PAN_BRI).unwrap();
    let gopay = sim.passenger(PAN_GOPAY).unwrap();
    assert_eq!(
        (bri.net_charged, bri.held, bri.holds_open, bri.payments),
        (3000, 0, 0, 2)
    );
    assert_eq!(
        (
            gopay.net_charged,
            gopay.held,
            gopay.holds_open,
            gopay.payments
        ),
        (14000, 0, 0, 2)
    );
    assert_eq!(over_http.get(&bri.passenger), Some(&bri));
    assert_eq!(over_http.get(&gopay.passenger), Some(&gopay));
    assert_eq!(bri.masked_pan, "93600002*******2952");
    assert_eq!(raw["totals"]["holds_open"], 0);
    assert_eq!(raw["totals"]["held"], 0);
    assert_eq!(raw["totals"]["net_charged"], 17000);
    assert_eq!(raw["passengers"][0]["net_charged"], 3000);
    let text = raw.to_string();
    assert!(
        !text.contains(PAN_BRI) && !text.contains(PAN_GOPAY),
        "{text}"
    );
    assert_clean(&sim.stats());
}
