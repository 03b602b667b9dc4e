//! A strict SNAP aggregator for the client tests: a raw HTTP/1.1 server on loopback that
//! checks every request the way the aggregator would (RSA token signature, HMAC over the
//! received bytes, every header, external-id freshness) and answers from a script: JSON,
//! garbage, oversize bodies, silence, or a closed connection.
//!
//! Not the acquirer simulator (that is `crates/sim`): this one knows nothing about payments,
//! only about whether a request is well-formed and what to answer next.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tapgate::clock::{Clock, ManualClock};
use tapgate::config::AggregatorConfig;
use tapgate::snap::sign::{self, RsaSigner};
use tapgate::snap::{DeviceContext, SnapClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const DOC_KEY: &str = include_str!("../fixtures/snap-doc-key.pem");
pub const CLIENT_ID: &str = "TAPGATE-MRTJ-SNAP";
pub const SECRET: &str = "s3cr3t-hmac-key-for-tests-only";
pub const PARTNER_ID: &str = "FP-PARTNER-77";
pub const CHANNEL_ID: &str = "95221";
pub const MERCHANT_ID: &str = "FP-MRTJ-0001";
pub const DEVICE_IP: &str = "10.20.3.13";
pub const DEVICE_ID: &str = "BLM-G03";
pub const LATITUDE: f64 = -6.244_167;
pub const LONGITUDE: f64 = 106.800_833;
pub const TOKEN_PATH: &str = "/fp/v1.0/access-token/b2b";
pub const PAY_PATH: &str = "/fp/v1.0/qr/qr-cpm-payment";
pub const QUERY_PATH: &str = "/fp/v1.0/qr/qr-cpm-query";
pub const REFUND_PATH: &str = "/fp/v1.0/qr/qr-cpm-refund";

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// HTTP status and JSON body.
    Json(u16, Value),
    /// HTTP status and raw body bytes.
    Raw(u16, Vec<u8>),
    /// Read the request, never answer; wait for the client to hang up.
    Hang,
    /// Read the request, then close the connection without a byte.
    CloseAfterRead,
    /// A body of this many bytes, announced with Content-Length.
    OversizeDeclared(usize),
    /// A chunked body that never ends (until the client hangs up).
    EndlessChunked,
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub raw_body: Vec<u8>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct Inner {
    scripts: HashMap<String, VecDeque<Reply>>,
    tokens: HashMap<String, jiff::Timestamp>,
    token_counter: u64,
    external_ids: HashSet<String>,
    violations: Vec<String>,
    seen: Vec<Seen>,
    connections: usize,
    expired_token_uses: usize,
}

/// The strict server's state, shared with the test.
pub struct Strict {
    pub clock: ManualClock,
    public_key: Vec<u8>,
    expires_in: Mutex<Value>,
    expected_origin: Mutex<String>,
    token_delay: Mutex<Duration>,
    inner: Mutex<Inner>,
}

impl Strict {
    /// Queues answers for `path`; when the queue is empty the default answer is given.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut inner = self.inner.lock().unwrap();
        inner
            .scripts
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    /// `expiresIn` of the tokens issued from now on (a string or a number).
    pub fn set_expires_in(&self, v: Value) {
        *self.expires_in.lock().unwrap() = v;
    }

    /// The `ORIGIN` header every transaction must carry.
    pub fn expect_origin(&self, origin: &str) {
        *self.expected_origin.lock().unwrap() = origin.to_string();
    }

    /// How long the token endpoint takes to answer.
    pub fn set_token_delay(&self, d: Duration) {
        *self.token_delay.lock().unwrap() = d;
    }

    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        let inner = self.inner.lock().unwrap();
        inner
            .seen
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    pub fn connections(&self) -> usize {
        self.inner.lock().unwrap().connections
    }

    pub fn expired_token_uses(&self) -> usize {
        self.inner.lock().unwrap().expired_token_uses
    }

    fn violation(&self, what: String) {
        self.inner.lock().unwrap().violations.push(what);
    }

    fn now_ts(&self) -> String {
        sign::timestamp(&self.clock.now())
    }

    /// Checks a token request; `Some(reply)` when it must be refused.
    fn check_token_request(&self, seen: &Seen) -> Option<Reply> {
        let mut bad = Vec::new();
        if seen.header("content-type") != "application/json" {
            bad.push(format!(
                "token content-type {:?}",
                seen.header("content-type")
            ));
        }
        if seen.header("x-client-key") != CLIENT_ID {
            bad.push(format!("x-client-key {:?}", seen.header("x-client-key")));
        }
        let ts = seen.header("x-timestamp");
        if ts != self.now_ts() {
            bad.push(format!(
                "token x-timestamp {ts:?}, clock says {}",
                self.now_ts()
            ));
        }
        if !sign::verify_b2b(&self.public_key, CLIENT_ID, ts, seen.header("x-signature")) {
            bad.push("token x-signature does not verify".into());
        }
        if seen.body != json!({"grantType": "client_credentials"}) {
            bad.push(format!("token body {}", seen.body));
        }
        if bad.is_empty() {
            return None;
        }
        for b in bad {
            self.violation(b);
        }
        Some(Reply::Json(
            401,
            json!({"responseCode": "4017300", "responseMessage": "Unauthorized. Signature"}),
        ))
    }

    /// Checks a transaction request; `Some(reply)` when it must be refused.
    fn check_transaction(&self, seen: &Seen) -> Option<Reply> {
        let mut bad = Vec::new();
        let expect = [
            ("content-type", "application/json".to_string()),
            ("x-partner-id", PARTNER_ID.to_string()),
            ("channel-id", CHANNEL_ID.to_string()),
            ("origin", self.expected_origin.lock().unwrap().clone()),
            ("x-ip-address", DEVICE_IP.to_string()),
            ("x-device-id", DEVICE_ID.to_string()),
            ("x-latitude", LATITUDE.to_string()),
            ("x-longitude", LONGITUDE.to_string()),
            ("x-timestamp", self.now_ts()),
        ];
        for (name, want) in expect {
            if seen.header(name) != want {
                bad.push(format!("{name} {:?}, expected {want:?}", seen.header(name)));
            }
        }
        let ext = seen.header("x-external-id").to_string();
        let ext_ok = ext.len() == 32 && ext.bytes().all(|b| b.is_ascii_digit());
        if !ext_ok {
            bad.push(format!("x-external-id {ext:?} is not 32 digits"));
        }
        let Some(token) = seen.header("authorization").strip_prefix("Bearer ") else {
            bad.push("authorization is not Bearer".into());
            for b in bad {
                self.violation(b);
            }
            return Some(Reply::Json(401, json!({"responseCode": "4010003"})));
        };
        let want_sig = sign::transaction_signature(
            SECRET,
            "POST",
            &seen.path,
            token,
            &seen.raw_body,
            seen.header("x-timestamp"),
        );
        if !sign::signatures_equal(&want_sig, seen.header("x-signature")) {
            bad.push("x-signature does not match the HMAC of the received bytes".into());
        }
        let mut inner = self.inner.lock().unwrap();
        if !inner.external_ids.insert(ext.clone()) {
            bad.push(format!("x-external-id {ext} reused"));
        }
        let token_state = inner.tokens.get(token).copied();
        let now = self.clock.now().timestamp();
        let expired = match token_state {
            None => {
                bad.push("bearer token was never issued".into());
                false
            }
            Some(exp) => now >= exp,
        };
        if expired {
            inner.expired_token_uses += 1;
        }
        let refuse = !bad.is_empty();
        inner.violations.extend(bad);
        drop(inner);
        if refuse {
            return Some(Reply::Json(
                401,
                json!({"responseCode": "4010000", "responseMessage": "Unauthorized. strict server"}),
            ));
        }
        if expired {
            // Not a client bug by itself: the aggregator's way of saying "refresh".
            return Some(Reply::Json(
                401,
                json!({"responseCode": "4010001", "responseMessage": "Invalid Token (B2B)"}),
            ));
        }
        None
    }

    fn issue_token(&self) -> Value {
        let expires_in = self.expires_in.lock().unwrap().clone();
        let secs = match &expires_in {
            Value::String(s) => s.parse::<i64>().unwrap_or(900),
            Value::Number(n) => n.as_i64().unwrap_or(900),
            _ => 900,
        };
        let mut inner = self.inner.lock().unwrap();
        inner.token_counter += 1;
        let token = format!(
            "tok-{}-{:08}",
            inner.token_counter,
            inner.token_counter * 7919
        );
        let exp = self
            .clock
            .now()
            .timestamp()
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap();
        inner.tokens.insert(token.clone(), exp);
        json!({"responseCode": "2007300", "responseMessage": "Successful",
               "accessToken": token, "tokenType": "Bearer", "expiresIn": expires_in,
               "additionalInfo": {}})
    }

    fn default_reply(&self, seen: &Seen) -> Reply {
        match seen.path.as_str() {
            PAY_PATH => Reply::Json(
                200,
                json!({"responseCode": "2006000", "responseMessage": "Successful",
                       "referenceNo": format!("FP{}", seen.body["partnerReferenceNo"].as_str().unwrap_or("")),
                       "partnerReferenceNo": seen.body["partnerReferenceNo"],
                       "transactionDate": "2026-11-22T09:15:03+07:00"}),
            ),
            QUERY_PATH => Reply::Json(
                404,
                json!({"responseCode": "4046101", "responseMessage": "Transaction Not Found"}),
            ),
            REFUND_PATH => Reply::Json(
                200,
                json!({"responseCode": "2008000", "responseMessage": "Successful",
                       "refundNo": "FPR-1", "partnerRefundNo": seen.body["partnerRefundNo"]}),
            ),
            _ => Reply::Json(404, json!({"responseCode": "4040000"})),
        }
    }

    fn next_scripted(&self, path: &str) -> Option<Reply> {
        self.inner
            .lock()
            .unwrap()
            .scripts
            .get_mut(path)
            .and_then(VecDeque::pop_front)
    }
}

/// A running strict server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<Strict>,
}

pub fn start_clock() -> ManualClock {
    let start: jiff::Timestamp = "2026-11-22T02:15:02Z".parse().unwrap();
    ManualClock::new(start, jiff::tz::TimeZone::fixed(jiff::tz::offset(7)))
}

impl Server {
    pub async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let public_key = RsaSigner::from_pem(DOC_KEY).unwrap().public_key_der();
        let state = Arc::new(Strict {
            clock: start_clock(),
            public_key,
            expires_in: Mutex::new(json!("900")),
            expected_origin: Mutex::new("https://gate-origin.example".into()),
            token_delay: Mutex::new(Duration::ZERO),
            inner: Mutex::new(Inner::default()),
        });
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                st.inner.lock().unwrap().connections += 1;
                tokio::spawn(serve(st.clone(), sock));
            }
        });
        Server { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `[aggregator]` section a gate would have for this server.
    pub fn config(&self) -> AggregatorConfig {
        config_for(&self.base_url())
    }

    pub fn client(&self) -> SnapClient {
        self.client_with(self.config(), SECRET)
    }

    pub fn client_with(&self, cfg: AggregatorConfig, secret: &str) -> SnapClient {
        SnapClient::new(
            &cfg,
            secret.to_string(),
            RsaSigner::from_pem(DOC_KEY).unwrap(),
            device(),
            Arc::new(self.state.clock.clone()),
        )
        .unwrap()
    }
}

pub fn device() -> DeviceContext {
    DeviceContext {
        device_id: DEVICE_ID.into(),
        latitude: LATITUDE,
        longitude: LONGITUDE,
    }
}

pub fn config_for(base_url: &str) -> AggregatorConfig {
    let text = format!(
        r#"
base_url = "{base_url}"
client_id = "{CLIENT_ID}"
client_secret_file = "secret"
private_key_file = "key.pem"
partner_id = "{PARTNER_ID}"
merchant_id = "{MERCHANT_ID}"
channel_id = "{CHANNEL_ID}"
origin = "https://gate-origin.example"
device_ip = "{DEVICE_IP}"
connect_timeout_ms = 1000
request_timeout_ms = 3000
max_body_bytes = 4096
token_path = "{TOKEN_PATH}"
payment_path = "{PAY_PATH}"
query_path = "{QUERY_PATH}"
refund_path = "{REFUND_PATH}"
"#
    );
    toml::from_str(&text).unwrap()
}

/// A loopback address with nothing listening: connecting is refused.
pub async fn dead_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads one request; `None` at end of stream.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[body_start..body_start + len].to_vec();
    buf.drain(..body_start + len);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn write_response(sock: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body).await
}

async fn wait_for_hangup(sock: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = sock.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

async fn serve(st: Arc<Strict>, mut sock: TcpStream) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let seen = Seen {
            path: req.path.clone(),
            headers: req.headers,
            raw_body: req.body,
            body,
        };
        st.inner.lock().unwrap().seen.push(seen.clone());
        if req.method != "POST" {
            st.violation(format!("method {} on {}", req.method, seen.path));
        }
        let reply = if seen.path == TOKEN_PATH {
            let delay = *st.token_delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match st.check_token_request(&seen) {
                Some(refusal) => refusal,
                None => st
                    .next_scripted(TOKEN_PATH)
                    .unwrap_or_else(|| Reply::Json(200, st.issue_token())),
            }
        } else {
            match st.check_transaction(&seen) {
                Some(refusal) => refusal,
                None => st
                    .next_scripted(&seen.path)
                    .unwrap_or_else(|| st.default_reply(&seen)),
            }
        };
        let written = match reply {
            Reply::Json(status, v) => {
                write_response(&mut sock, status, v.to_string().as_bytes()).await
            }
            Reply::Raw(status, bytes) => write_response(&mut sock, status, &bytes).await,
            Reply::Hang => {
                wait_for_hangup(&mut sock).await;
                return;
            }
            Reply::CloseAfterRead => return,
            Reply::OversizeDeclared(n) => {
                let mut body = br#"{"responseCode":"2006000","pad":""#.to_vec();
                body.resize(n - 2, b'x');
                body.extend_from_slice(b"\"}");
                write_response(&mut sock, 200, &body).await
            }
            Reply::EndlessChunked => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("400\r\n{}\r\n", " ".repeat(0x400));
                while sock.write_all(chunk.as_bytes()).await.is_ok() {}
                return;
            }
        };
        if written.is_err() {
            return;
        }
    }
}
