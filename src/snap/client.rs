//! The SNAP HTTP client: B2B token cache, signed transaction calls, bounded answers.
//!
//! What this layer guarantees, so the layers above can reason about money:
//!
//! - The body is serialized once; the HMAC is computed over those exact bytes and those bytes
//!   are sent.
//! - Every HTTP attempt carries a fresh `X-EXTERNAL-ID` (32 decimal digits: 20 random per
//!   client + a 12-digit counter), so a retry is never mistaken for a replay.
//! - A request is retried only when the aggregator said it did not process it: once after a
//!   `401xx01`/`401xx03` (with a renewed token) and once after a `409xx00` (with a new
//!   external id). Nothing else is ever re-sent here.
//! - [`RawOutcome`] separates "never left the gate" ([`RawOutcome::Unsent`]: TCP connect
//!   failed, no token) from "sent, no usable answer" ([`RawOutcome::NoAnswer`],
//!   [`RawOutcome::Garbled`]), because only the latter can have moved money.
//!
//! Nothing here logs a body: the payment body carries the passenger's `qrContent`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::Value;

use super::codes::{classify_token, ResponseCode, TokenClass};
use super::sign::{self, RsaSigner};
use super::wire::{TokenRequest, TokenResponse};
use crate::clock::Clock;
use crate::config::AggregatorConfig;

/// Where the gate is, sent as the SNAP device-context headers.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceContext {
    /// `X-DEVICE-ID` (and the default `terminalId`): this gate controller's id.
    pub device_id: String,
    /// `X-LATITUDE`: the station's latitude in decimal degrees.
    pub latitude: f64,
    /// `X-LONGITUDE`: the station's longitude in decimal degrees.
    pub longitude: f64,
}

/// Why a SNAP call could not be made. Each variant says what to do next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapError {
    /// The configuration cannot work (bad URL, path or header value). Fatal: fix the config.
    #[error("aggregator configuration: {0}")]
    Config(String),
    /// The TCP or TLS connection could not be opened: nothing left the gate. Retry later.
    #[error("aggregator unreachable: {0}")]
    Unreachable(String),
    /// The aggregator refused to issue a token (client id, key or clock is wrong). A person
    /// must fix the configuration or the clock.
    #[error("access token refused{}: {message}", code_suffix(.response_code))]
    TokenRefused {
        /// The token answer's `responseCode`, when there was one.
        response_code: Option<String>,
        /// What the aggregator or tapgate said.
        message: String,
    },
    /// No usable token answer (timeout, `5xx`, garbage). Retry later.
    #[error("access token unavailable: {0}")]
    TokenUnavailable(String),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}

impl SnapError {
    /// Whether trying again later can succeed without a person changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SnapError::Unreachable(_) | SnapError::TokenUnavailable(_)
        )
    }

    /// The aggregator's `responseCode`, when the error came with one.
    pub fn response_code(&self) -> Option<&str> {
        match self {
            SnapError::TokenRefused { response_code, .. } => response_code.as_deref(),
            _ => None,
        }
    }
}

/// A JSON answer with a well-formed `responseCode`.
#[derive(Clone)]
pub struct Answer {
    /// The HTTP status line's code.
    pub http_status: u16,
    /// The body's `responseCode`.
    pub code: ResponseCode,
    /// The whole body, for the caller's typed view ([`super::wire`]).
    pub body: Value,
    /// The `X-EXTERNAL-ID` of the attempt that got this answer.
    pub external_id: String,
}

impl std::fmt::Debug for Answer {
    // The body stays out of Debug: answers may echo request fields.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("http_status", &self.http_status)
            .field("code", &self.code.to_string())
            .field("external_id", &self.external_id)
            .finish_non_exhaustive()
    }
}

/// What became of one signed call (after the token and external-id retries).
#[derive(Clone, Debug)]
pub enum RawOutcome {
    /// Nothing was processed by the aggregator: the request never left the gate (connect
    /// failed, no token, unusable config), or it was rejected for its token and no new
    /// token could be had.
    Unsent(SnapError),
    /// The request was sent (or may have been) and no complete answer came back: timeout,
    /// connection lost, answer cut off. Money may have moved.
    NoAnswer {
        /// For logs.
        reason: String,
    },
    /// An answer came, but without a usable `responseCode`: not JSON, not an object, over
    /// the size bound, no or malformed code, a success code under an error status. Money may
    /// have moved.
    Garbled {
        /// The HTTP status.
        http_status: u16,
        /// For logs.
        reason: String,
    },
    /// A JSON answer with a `responseCode`.
    Answered(Answer),
}

impl RawOutcome {
    /// The `responseCode` as text, when there was one.
    pub fn code(&self) -> Option<String> {
        match self {
            RawOutcome::Answered(a) => Some(a.code.to_string()),
            RawOutcome::Unsent(e) => e.response_code().map(str::to_string),
            _ => None,
        }
    }
}

/// Tokens whose lifetime is not given (or is zero) are assumed to live this long; a shorter
/// real lifetime only costs one `401xx01` and a refresh.
const DEFAULT_TOKEN_LIFETIME_S: i64 = 300;
/// Refresh at most this long before expiry...
const MAX_REFRESH_AHEAD_S: i64 = 60;
/// ...and a token is no longer used this close to expiry (clock offset, request latency).
const EXPIRY_GUARD_S: i64 = 5;

#[derive(Clone)]
struct CachedToken {
    value: String,
    refresh_at: jiff::Timestamp,
    usable_until: jiff::Timestamp,
}

/// Signed SNAP calls over one pooled HTTPS client. Cheap to clone (shared state).
#[derive(Clone)]
pub struct SnapClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    token_url: String,
    token_path: String,
    client_id: String,
    client_secret: String,
    signer: RsaSigner,
    clock: Arc<dyn Clock>,
    device: DeviceContext,
    fixed_headers: HeaderMap,
    max_body_bytes: usize,
    timeout: Duration,
    external_prefix: String,
    external_counter: AtomicU64,
    token: StdMutex<Option<CachedToken>>,
    // Held for the whole token request: one refresh at a time, whoever asks.
    refresh: Arc<tokio::sync::Mutex<()>>,
    keep_warm: Option<Duration>,
    activity: Activity,
}

/// When the pooled connection was last used, for [`SnapClient::idle_for`].
struct Activity {
    epoch: tokio::time::Instant,
    /// Milliseconds from `epoch` to the last start or end of an HTTP exchange.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// Marks one HTTP exchange in flight; its end (or the caller giving up on it) counts as use.
struct InFlight<'a>(&'a Activity);

impl<'a> InFlight<'a> {
    fn start(a: &'a Activity) -> InFlight<'a> {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        InFlight(a)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for SnapClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapClient")
            .field("base", &self.inner.base)
            .field("client_id", &self.inner.client_id)
            .field("device", &self.inner.device)
            .finish_non_exhaustive()
    }
}

fn header(name: &'static str, value: &str) -> Result<(HeaderName, HeaderValue), SnapError> {
    let v = HeaderValue::from_str(value)
        .map_err(|_| SnapError::Config(format!("{name} is not a valid header value")))?;
    Ok((HeaderName::from_static(name), v))
}

fn check_path(what: &str, path: &str) -> Result<(), SnapError> {
    let ok = path.starts_with('/')
        && !path.contains(['?', '#'])
        && path.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(SnapError::Config(format!(
            "{what} {path:?} must start with '/' and hold no query, fragment or spaces"
        )))
    }
}

/// `reqwest` errors carry their cause in the source chain; a technician needs all of it.
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// The sizes and timeouts a client cannot work with (the config check refuses them first).
fn check_limits(cfg: &AggregatorConfig) -> Result<(), SnapError> {
    if cfg.max_body_bytes == 0
        || cfg.connect_timeout_ms == 0
        || cfg.request_timeout_ms == 0
        || cfg.pool_idle_timeout_ms == 0
    {
        return Err(SnapError::Config(
            "max_body_bytes and the timeouts must be above zero".into(),
        ));
    }
    if cfg.keep_warm_ms != 0 && !(100..=cfg.pool_idle_timeout_ms / 2).contains(&cfg.keep_warm_ms) {
        return Err(SnapError::Config(
            "keep_warm_ms must be 0 (off) or 100 up to half of pool_idle_timeout_ms".into(),
        ));
    }
    Ok(())
}

/// The pooled HTTP client: timeouts and pool from `cfg`, no redirects.
fn http_client(cfg: &AggregatorConfig) -> Result<reqwest::Client, SnapError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        // Idle connections are dropped (default 50 s) before the 60 s keep-alive common at
        // load balancers: a connection the far end closes just as a payment is written
        // turns that payment into an Unknown. `aggregator::keep_warm` uses the connection
        // before either timer runs out, so a tap does not open a new one.
        .pool_idle_timeout(Duration::from_millis(cfg.pool_idle_timeout_ms))
        .pool_max_idle_per_host(4)
        // Probes keep NAT and firewall state alive; they reset neither idle timer above.
        .tcp_keepalive(Duration::from_secs(30))
        .tcp_nodelay(true)
        // A redirect of a signed POST would be a misconfiguration, never something to
        // follow: the signature covers the path.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tapgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SnapError::Config(format!("HTTP client: {}", describe(&e))))
}

enum SendFail {
    /// Nothing left the gate.
    NotConnected(String),
    /// The request could not be built (our side).
    Build(String),
    /// Sent or maybe sent; no complete answer.
    Lost(String),
    /// An answer larger than the bound.
    Oversize { http_status: u16 },
}

impl SnapClient {
    /// Builds the client. Fails only on configuration that can never work (URL, paths,
    /// header values, coordinates); no network traffic happens here.
    pub fn new(
        cfg: &AggregatorConfig,
        client_secret: String,
        signer: RsaSigner,
        device: DeviceContext,
        clock: Arc<dyn Clock>,
    ) -> Result<SnapClient, SnapError> {
        let url = reqwest::Url::parse(&cfg.base_url)
            .map_err(|e| SnapError::Config(format!("base_url {:?}: {e}", cfg.base_url)))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(SnapError::Config(format!(
                "base_url {:?} must be http(s)://host[:port]",
                cfg.base_url
            )));
        }
        if url.path() != "/" || url.query().is_some() {
            return Err(SnapError::Config(format!(
                "base_url {:?} must not carry a path; put prefixes in the *_path keys",
                cfg.base_url
            )));
        }
        for (what, p) in [
            ("token_path", &cfg.token_path),
            ("payment_path", &cfg.payment_path),
            ("query_path", &cfg.query_path),
            ("refund_path", &cfg.refund_path),
            ("mpm_generate_path", &cfg.mpm_generate_path),
            ("mpm_query_path", &cfg.mpm_query_path),
            ("mpm_refund_path", &cfg.mpm_refund_path),
        ] {
            check_path(what, p)?;
        }
        if client_secret.is_empty() {
            return Err(SnapError::Config("client secret is empty".into()));
        }
        if device.device_id.is_empty() {
            return Err(SnapError::Config("device id is empty".into()));
        }
        let on_earth = device.latitude.is_finite()
            && device.longitude.is_finite()
            && (-90.0..=90.0).contains(&device.latitude)
            && (-180.0..=180.0).contains(&device.longitude);
        if !on_earth {
            return Err(SnapError::Config(format!(
                "station coordinates {},{} are not a place on Earth",
                device.latitude, device.longitude
            )));
        }
        check_limits(cfg)?;
        let origin = match &cfg.origin {
            Some(o) => o.clone(),
            None => url.origin().ascii_serialization(),
        };
        let mut fixed_headers = HeaderMap::new();
        for (name, value) in [
            ("x-partner-id", cfg.partner_id.as_str()),
            ("channel-id", cfg.channel_id.as_str()),
            ("origin", origin.as_str()),
            ("x-ip-address", cfg.device_ip.as_str()),
            ("x-device-id", device.device_id.as_str()),
            ("x-latitude", &device.latitude.to_string()),
            ("x-longitude", &device.longitude.to_string()),
        ] {
            let (n, v) = header(name, value)?;
            fixed_headers.insert(n, v);
        }
        header("x-client-key", &cfg.client_id)?;

        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let http = http_client(cfg)?;

        let base = cfg.base_url.trim_end_matches('/').to_string();
        let mut rng = rand::rng();
        let external_prefix = format!(
            "{:010}{:010}",
            rand::Rng::random_range(&mut rng, 0..10_000_000_000u64),
            rand::Rng::random_range(&mut rng, 0..10_000_000_000u64)
        );
        Ok(SnapClient {
            inner: Arc::new(Inner {
                http,
                token_url: format!("{base}{}", cfg.token_path),
                token_path: cfg.token_path.clone(),
                base,
                client_id: cfg.client_id.clone(),
                client_secret,
                signer,
                clock,
                device,
                fixed_headers,
                max_body_bytes: cfg.max_body_bytes,
                timeout,
                external_prefix,
                external_counter: AtomicU64::new(0),
                token: StdMutex::new(None),
                refresh: Arc::new(tokio::sync::Mutex::new(())),
                keep_warm: (cfg.keep_warm_ms > 0).then(|| Duration::from_millis(cfg.keep_warm_ms)),
                activity: Activity::new(),
            }),
        })
    }

    /// The device context given at construction.
    pub fn device(&self) -> &DeviceContext {
        &self.inner.device
    }

    /// `keep_warm_ms`: how long the connection may sit unused before a light call keeps it
    /// open; `None` when keeping warm is off.
    pub fn keep_warm_after(&self) -> Option<Duration> {
        self.inner.keep_warm
    }

    /// How long no HTTP exchange has been in flight (since the last one started or ended);
    /// `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        let a = &self.inner.activity;
        if a.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = a.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(
            now.saturating_sub(a.last_ms.load(Ordering::Relaxed)),
        ))
    }

    /// How long until the cached token is due for refresh (zero when there is none or it is
    /// due now), by the client's clock.
    pub fn token_refresh_in(&self) -> Duration {
        let now = self.inner.clock.now().timestamp();
        match self.token_cache().as_ref() {
            Some(t) if now < t.refresh_at => now
                .duration_until(t.refresh_at)
                .try_into()
                .unwrap_or(Duration::ZERO),
            _ => Duration::ZERO,
        }
    }

    /// Makes sure a token that is not due for refresh is cached, fetching one if needed
    /// (waiting for a refresh already in flight rather than starting another). For `doctor`,
    /// and worth calling from a periodic tick so that taps never wait for a token.
    pub async fn ensure_token(&self) -> Result<(), SnapError> {
        if self.fresh_token().is_some() {
            return Ok(());
        }
        self.refresh_token(None).await.map(|_| ())
    }

    /// One signed `POST` of `body` to `path` (a configured path such as
    /// `/v1.0/qr/qr-cpm-payment`), with the token and external-id retries described in the
    /// module docs.
    pub async fn post(&self, path: &str, body: &Value) -> RawOutcome {
        if let Err(e) = check_path("path", path) {
            return RawOutcome::Unsent(e);
        }
        let bytes = match serde_json::to_vec(body) {
            Ok(b) => b,
            Err(e) => return RawOutcome::Unsent(SnapError::Config(format!("body: {e}"))),
        };
        let url = format!("{}{path}", self.inner.base);
        let mut token = match self.usable_token().await {
            Ok(t) => t,
            Err(e) => return RawOutcome::Unsent(e),
        };
        let (mut token_retried, mut id_retried) = (false, false);
        loop {
            let outcome = self.attempt(path, &url, &bytes, &token).await;
            let RawOutcome::Answered(answer) = &outcome else {
                return outcome;
            };
            if answer.code.is_token_invalid() && !token_retried {
                token_retried = true;
                tracing::info!(path, code = %answer.code, "token rejected; renewing it and retrying once");
                token = match self.refresh_token(Some(&token)).await {
                    Ok(t) => t,
                    Err(e) => return RawOutcome::Unsent(e),
                };
                continue;
            }
            if answer.code.is_external_id_conflict() && !id_retried {
                id_retried = true;
                tracing::warn!(path, external_id = %answer.external_id,
                    "X-EXTERNAL-ID reported as reused; retrying once with a new one");
                continue;
            }
            return outcome;
        }
    }

    /// The keys a notification from the aggregator is checked with (its signature is keyed
    /// with our client secret).
    pub(crate) fn notify_keys(&self, partner_id: &str) -> crate::qr::NotifyKeys {
        crate::qr::NotifyKeys {
            client_secret: self.inner.client_secret.clone(),
            partner_id: partner_id.to_string(),
        }
    }

    fn next_external_id(&self) -> String {
        let n = self.inner.external_counter.fetch_add(1, Ordering::Relaxed) % 1_000_000_000_000;
        format!("{}{n:012}", self.inner.external_prefix)
    }

    async fn attempt(&self, path: &str, url: &str, bytes: &[u8], token: &str) -> RawOutcome {
        let ts = sign::timestamp(&self.inner.clock.now());
        let signature =
            sign::transaction_signature(&self.inner.client_secret, "POST", path, token, bytes, &ts);
        let external_id = self.next_external_id();
        let mut headers = self.inner.fixed_headers.clone();
        for (name, value) in [
            ("x-timestamp", ts.as_str()),
            ("x-signature", signature.as_str()),
            ("x-external-id", external_id.as_str()),
            ("authorization", &format!("Bearer {token}")),
        ] {
            match header(name, value) {
                Ok((n, v)) => {
                    headers.insert(n, v);
                }
                Err(e) => return RawOutcome::Unsent(e),
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let started = Instant::now();
        let result = self.send(url, headers, bytes.to_vec()).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let (http_status, body) = match result {
            Ok(r) => r,
            Err(SendFail::NotConnected(reason)) => {
                tracing::warn!(path, %external_id, elapsed_ms, %reason, "not connected; nothing sent");
                return RawOutcome::Unsent(SnapError::Unreachable(reason));
            }
            Err(SendFail::Build(reason)) => return RawOutcome::Unsent(SnapError::Config(reason)),
            Err(SendFail::Lost(reason)) => {
                tracing::warn!(path, %external_id, elapsed_ms, %reason, "no answer");
                return RawOutcome::NoAnswer { reason };
            }
            Err(SendFail::Oversize { http_status }) => {
                let reason = format!(
                    "answer larger than {} bytes (HTTP {http_status})",
                    self.inner.max_body_bytes
                );
                tracing::warn!(path, %external_id, elapsed_ms, %reason, "garbled answer");
                return RawOutcome::Garbled {
                    http_status,
                    reason,
                };
            }
        };
        let outcome = interpret(http_status, &body, external_id.clone());
        match &outcome {
            RawOutcome::Answered(a) => {
                tracing::debug!(path, %external_id, elapsed_ms, http_status, code = %a.code, "answer")
            }
            RawOutcome::Garbled { reason, .. } => {
                tracing::warn!(path, %external_id, elapsed_ms, http_status, %reason, "garbled answer")
            }
            _ => {}
        }
        outcome
    }

    /// Sends and reads the answer, at most `max_body_bytes`, in chunks.
    async fn send(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), SendFail> {
        let _in_flight = InFlight::start(&self.inner.activity);
        let sent = self
            .inner
            .http
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            // A failed connect means no byte of the request left the gate (pooled
            // connections that die idle are retried by hyper before anything is written).
            Err(e) if e.is_connect() => return Err(SendFail::NotConnected(describe(&e))),
            Err(e) if e.is_builder() => return Err(SendFail::Build(describe(&e))),
            Err(e) => return Err(SendFail::Lost(describe(&e))),
        };
        let http_status = resp.status().as_u16();
        let max = self.inner.max_body_bytes;
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(SendFail::Oversize { http_status });
        }
        let mut buf = Vec::with_capacity(declared.unwrap_or(1024).min(max as u64) as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > max {
                        return Err(SendFail::Oversize { http_status });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok((http_status, buf)),
                Err(e) => {
                    return Err(SendFail::Lost(format!(
                        "answer cut off (HTTP {http_status}): {}",
                        describe(&e)
                    )))
                }
            }
        }
    }

    /// The cached token when it is not yet due for refresh.
    fn fresh_token(&self) -> Option<String> {
        let now = self.inner.clock.now().timestamp();
        self.token_cache()
            .as_ref()
            .filter(|t| now < t.refresh_at)
            .map(|t| t.value.clone())
    }

    /// A token to send now. Inside the refresh window the cached token is still used and a
    /// background refresh starts (the tap does not wait for it); past it, the caller waits
    /// for the (single) refresh.
    async fn usable_token(&self) -> Result<String, SnapError> {
        let now = self.inner.clock.now().timestamp();
        let cached = self.token_cache().clone();
        if let Some(t) = cached {
            if now < t.refresh_at {
                return Ok(t.value);
            }
            if now < t.usable_until {
                self.spawn_refresh();
                return Ok(t.value);
            }
        }
        self.refresh_token(None).await
    }

    fn spawn_refresh(&self) {
        let Ok(guard) = self.inner.refresh.clone().try_lock_owned() else {
            return; // a refresh is already in flight
        };
        let me = self.clone();
        tokio::spawn(async move {
            if me.fresh_token().is_none() {
                match me.fetch_token().await {
                    Ok(t) => me.store(t),
                    Err(e) => tracing::warn!(error = %e, "background token refresh failed"),
                }
            }
            drop(guard);
        });
    }

    /// Single-flight refresh. `rejected` is a token the aggregator just refused: a cached
    /// token equal to it is not reused even if it looks fresh.
    async fn refresh_token(&self, rejected: Option<&str>) -> Result<String, SnapError> {
        let _guard = self.inner.refresh.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(t) = self.fresh_token() {
            if rejected != Some(t.as_str()) {
                return Ok(t);
            }
        }
        let t = self.fetch_token().await?;
        let value = t.value.clone();
        self.store(t);
        Ok(value)
    }

    fn store(&self, t: CachedToken) {
        *self.token_cache() = Some(t);
    }

    /// The token cache. A thread that panicked while holding the lock cannot have left it
    /// half-written (it only ever holds a whole token or none), so a poisoned lock is used as
    /// it is: giving up on it would silently fetch a new token for every call.
    fn token_cache(&self) -> MutexGuard<'_, Option<CachedToken>> {
        self.inner
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn fetch_token(&self) -> Result<CachedToken, SnapError> {
        let issued = self.inner.clock.now();
        let ts = sign::timestamp(&issued);
        let signature = self.inner.signer.sign_b2b(&self.inner.client_id, &ts);
        let body = serde_json::to_vec(&TokenRequest {
            grant_type: "client_credentials",
        })
        .map_err(|e| SnapError::Config(format!("token body: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in [
            ("x-timestamp", ts.as_str()),
            ("x-client-key", self.inner.client_id.as_str()),
            ("x-signature", signature.as_str()),
        ] {
            let (n, v) = header(name, value)?;
            headers.insert(n, v);
        }
        let started = Instant::now();
        let (http_status, bytes) = match self.send(&self.inner.token_url, headers, body).await {
            Ok(r) => r,
            Err(SendFail::NotConnected(r)) => return Err(SnapError::Unreachable(r)),
            Err(SendFail::Build(r)) => return Err(SnapError::Config(r)),
            Err(SendFail::Lost(r)) => return Err(SnapError::TokenUnavailable(r)),
            Err(SendFail::Oversize { http_status }) => {
                return Err(SnapError::TokenUnavailable(format!(
                    "answer larger than {} bytes (HTTP {http_status})",
                    self.inner.max_body_bytes
                )))
            }
        };
        let garbled = |why: &str| SnapError::TokenUnavailable(format!("HTTP {http_status}: {why}"));
        let parsed: TokenResponse = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => serde_json::from_value(v).unwrap_or_default(),
            _ => return Err(garbled("answer is not a JSON object")),
        };
        let code_text = parsed
            .response_code
            .clone()
            .ok_or_else(|| garbled("answer has no responseCode"))?;
        let code =
            ResponseCode::parse(&code_text).map_err(|e| garbled(&format!("responseCode: {e}")))?;
        let message = parsed.response_message.clone().unwrap_or_default();
        match classify_token(code) {
            TokenClass::Issued => {}
            TokenClass::Refused => {
                tracing::error!(path = %self.inner.token_path, %code, %message,
                    "access token refused: check client id, private key and clock");
                return Err(SnapError::TokenRefused {
                    response_code: Some(code_text),
                    message,
                });
            }
            TokenClass::Unavailable => {
                return Err(SnapError::TokenUnavailable(format!("{code}: {message}")))
            }
        }
        if !(200..300).contains(&http_status) {
            return Err(garbled(&format!(
                "success code {code} under an error status"
            )));
        }
        let value = parsed
            .access_token
            .filter(|t| !t.is_empty() && HeaderValue::from_str(&format!("Bearer {t}")).is_ok())
            .ok_or_else(|| garbled("answer has no usable accessToken"))?;
        let lifetime = parsed
            .expires_in
            .filter(|s| *s > 0)
            .map(|s| s.min(i64::MAX as u64 / 2) as i64)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME_S);
        let ahead = (lifetime / 4).min(MAX_REFRESH_AHEAD_S);
        let guard = EXPIRY_GUARD_S.min(lifetime / 10);
        let at = |secs: i64| {
            issued
                .timestamp()
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .unwrap_or(jiff::Timestamp::MAX)
        };
        tracing::info!(
            lifetime_s = lifetime,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "access token issued"
        );
        Ok(CachedToken {
            value,
            refresh_at: at(lifetime - ahead),
            usable_until: at(lifetime - guard),
        })
    }

    /// The configured whole-request timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }
}

/// Turns a complete answer into a [`RawOutcome`]: JSON object with a well-formed
/// `responseCode`, or garbled.
fn interpret(http_status: u16, body: &[u8], external_id: String) -> RawOutcome {
    let garbled = |reason: String| RawOutcome::Garbled {
        http_status,
        reason,
    };
    let value: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return garbled(format!("HTTP {http_status}: answer is not a JSON object")),
        Err(_) if body.is_empty() => return garbled(format!("HTTP {http_status}: empty answer")),
        Err(_) => return garbled(format!("HTTP {http_status}: answer is not JSON")),
    };
    let code = match value.get("responseCode") {
        Some(Value::String(s)) => ResponseCode::parse(s),
        Some(Value::Number(n)) => ResponseCode::parse(&n.to_string()),
        _ => return garbled(format!("HTTP {http_status}: answer has no responseCode")),
    };
    let code = match code {
        Ok(c) => c,
        Err(e) => return garbled(format!("HTTP {http_status}: responseCode: {e}")),
    };
    // Some gateways answer every call with HTTP 200 and put the verdict in the body, so the
    // body's code decides; but a success code under an error status contradicts itself.
    if code.is_success() && !(200..300).contains(&http_status) {
        return garbled(format!(
            "HTTP {http_status} contradicts responseCode {code}"
        ));
    }
    if code.http() != http_status {
        tracing::debug!(http_status, %code, "HTTP status and responseCode differ; using the code");
    }
    RawOutcome::Answered(Answer {
        http_status,
        code,
        body: value,
        external_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(o: &RawOutcome) -> &'static str {
        match o {
            RawOutcome::Unsent(_) => "unsent",
            RawOutcome::NoAnswer { .. } => "no-answer",
            RawOutcome::Garbled { .. } => "garbled",
            RawOutcome::Answered(_) => "answered",
        }
    }

    #[test]
    fn interpret_answers() {
        let ok = interpret(
            200,
            br#"{"responseCode":"2006000","referenceNo":"X"}"#,
            "1".into(),
        );
        assert_eq!(kind(&ok), "answered");
        assert_eq!(ok.code().as_deref(), Some("2006000"));
        let numeric = interpret(403, br#"{"responseCode":4036014}"#, "1".into());
        assert_eq!(numeric.code().as_deref(), Some("4036014"));
        // The body's code decides even under HTTP 200.
        let decline_in_200 = interpret(200, br#"{"responseCode":"4036014"}"#, "1".into());
        assert_eq!(decline_in_200.code().as_deref(), Some("4036014"));
        for (status, body) in [
            (200, &b""[..]),
            (200, b"<html>bad gateway</html>"),
            (200, b"[1,2]"),
            (200, b"\"2006000\""),
            (200, br#"{"responseMessage":"ok"}"#),
            (200, br#"{"responseCode":"200600"}"#),
            (200, br#"{"responseCode":null}"#),
            (500, br#"{"responseCode":"2006000"}"#),
            (200, br#"{"responseCode":"2006000""#),
        ] {
            let o = interpret(status, body, "1".into());
            assert_eq!(kind(&o), "garbled", "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn interpret_survives_every_truncation_and_byte_flip() {
        let good = br#"{"responseCode":"2006000","referenceNo":"FP1","amount":{"value":"1.00"}}"#;
        for end in 0..good.len() {
            let o = interpret(200, &good[..end], "1".into());
            assert_eq!(kind(&o), "garbled", "prefix {end}");
        }
        for i in 0..good.len() {
            for flip in [0x01u8, 0x20, 0x80, 0xff] {
                let mut b = good.to_vec();
                b[i] ^= flip;
                let o = interpret(200, &b, "1".into());
                assert!(matches!(kind(&o), "garbled" | "answered"));
            }
        }
    }

    #[test]
    fn snap_error_next_steps() {
        assert!(SnapError::Unreachable("x".into()).is_transient());
        assert!(SnapError::TokenUnavailable("x".into()).is_transient());
        assert!(!SnapError::Config("x".into()).is_transient());
        let refused = SnapError::TokenRefused {
            response_code: Some("4017300".into()),
            message: "Unauthorized. Signature".into(),
        };
        assert!(!refused.is_transient());
        assert_eq!(refused.response_code(), Some("4017300"));
        assert_eq!(
            refused.to_string(),
            "access token refused (4017300): Unauthorized. Signature"
        );
    }

    /// A client on the demo config, talking to a fresh acquirer simulator on loopback.
    async fn demo_client() -> (SnapClient, crate::sim::SimHandle) {
        let sim = crate::sim::Simulator::start(
            crate::sim::SimConfig::demo(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let text = include_str!("../../config/demo.toml");
        let mut cfg = crate::config::Config::parse(text, std::path::Path::new("demo.toml"))
            .unwrap()
            .aggregator;
        cfg.base_url = sim.base_url();
        let client = SnapClient::new(
            &cfg,
            crate::sim::DEMO_CLIENT_SECRET.to_string(),
            RsaSigner::from_pem(crate::sim::DEMO_PRIVATE_KEY_PEM).unwrap(),
            DeviceContext {
                device_id: "BLM-G01".into(),
                latitude: -6.2443,
                longitude: 106.7982,
            },
            Arc::new(crate::clock::SystemClock::new(crate::sim::jakarta())),
        )
        .unwrap();
        (client, sim)
    }

    /// Panics on another thread while holding the token-cache lock, poisoning it.
    fn poison_token_cache(client: &SnapClient) {
        let inner = client.inner.clone();
        let panicked = std::thread::spawn(move || {
            let _held = inner.token.lock();
            panic!("deliberate panic while holding the token cache");
        })
        .join();
        assert!(panicked.is_err());
        assert!(client.inner.token.is_poisoned());
    }

    #[tokio::test]
    async fn token_cache_survives_a_poisoned_lock() {
        let (client, sim) = demo_client().await;
        // Poisoned while empty: the first call fetches a token, and it is cached.
        poison_token_cache(&client);
        client.ensure_token().await.unwrap();
        client.ensure_token().await.unwrap();
        assert_eq!(sim.stats().tokens_issued, 1, "the token was not cached");
        // Poisoned while holding a token: later calls still reuse it.
        poison_token_cache(&client);
        client.ensure_token().await.unwrap();
        let body = serde_json::json!({
            "originalPartnerReferenceNo": "TGBLM-NONE", "serviceCode": "60",
            "merchantId": "MRT-JKT-DEMO"
        });
        let answer = client.post("/v1.0/qr/qr-cpm-query", &body).await;
        assert_eq!(answer.code().as_deref(), Some("4046101"), "{answer:?}");
        let stats = sim.stats();
        assert_eq!(
            (
                stats.tokens_issued,
                stats.token_requests,
                stats.protocol_violations()
            ),
            (1, 1, 0),
            "{:?}",
            stats.recent
        );
    }
}
