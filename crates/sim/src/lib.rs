//! The acquirer simulator: a real HTTP server on loopback that answers like the QRIS TAP
//! aggregator (BI SNAP) and checks what it would check.
//!
//! Used by `tapgate demo`, `tapgate sim` and the test suites. It is an independent reading of
//! the wire (its own lenient JSON handling, not the client's types), so a client mistake shows
//! up as a counted rejection in [`SimStats`] instead of passing silently.
//!
//! What it does:
//! - B2B token: `X-CLIENT-KEY`, `X-TIMESTAMP` (format, Indonesian offset, freshness), RSA
//!   `X-SIGNATURE` against the partner's public key, `grantType`.
//! - Payment, query, refund: the mandatory headers, the bearer token, the HMAC-SHA512 over the
//!   raw body bytes as received, `X-EXTERNAL-ID` (digits, ≤36, once a day), the body fields,
//!   amounts (`"14000.00"`, IDR), the merchant, a decodable single-use `qrContent`.
//! - A [ledger](LedgerEntry) of every payment and refund: idempotent refunds, query statuses,
//!   holds (a tap-in reserves, a tap-out naming it finalizes it, a refund releases it) and
//!   [what each passenger paid](summarize_passengers).
//! - [Faults](Fault): delays, 500/504/202, dropped connections and cut bodies, applied or not,
//!   queued one-shot or drawn from a seeded [`FaultMix`].
//! - [Issuers under load](IssuerModel): each payment's answer time drawn from a distribution
//!   fitted to p50/p95/p99, a share never answered in time, a random decline rate; seeded.
//!
//! Controls are in-process ([`SimHandle`]) and over HTTP under `/sim/*` for other processes:
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /sim/ledger` | | `[LedgerEntry]` |
//! | `GET /sim/ledger/passengers` | | [`Passengers`]: net charge and open holds per passenger |
//! | `GET /sim/stats` | | `SimStats` (with `connections_accepted` and `token_requests`) |
//! | `POST /sim/decline` | `{"pan":"9360…","code":"4036014"}` (empty code lifts it) | 204 |
//! | `POST /sim/faults` | `{"fault":{"kind":"drop","applied":true},"service":"payment","count":2}` | 204 |
//! | `DELETE /sim/faults` | | 204 (queue and random mode cleared) |
//! | `POST /sim/random` | `{"seed":7,"mix":FaultMix}` | 204 |
//! | `GET /sim/ledger/mpm` | | [`MpmLedger`]: generated QRs, Linkage payments, refunds, notifications |
//! | `GET /sim/linkage/customers` | | `[LinkedCustomer]` (balances now) |
//! | `POST /sim/linkage/customers` | `{"balance":50000}` | the new [`LinkedCustomer`] with its `authCode` |
//! | `POST /sim/mpm/notifications` | `{"drop":true}` | 204 (later notifications lost, or sent again) |
//! | `POST /sim/mpm/late` | `{"accept":true}` | 204 (later payments after a QR's validity succeed, marked late) |
//!
//! QRIS MPM and Linkage (see [`mpm`] and [`linkage`]): the merchant's `qr-mpm-generate`,
//! `qr-mpm-query` and `qr-mpm-refund`, the payment notification to the merchant's callback,
//! and the wallet's B2B2C customer token, Linkage `qr-mpm-payment` and `qr-mpm-query`, all on
//! [`SimPaths`]; a [wallet client](wallet::Wallet) pays a QR through them.
//!
//! The `/sim/*` API has no authentication: bind the simulator to loopback only.

// Functions stay short enough to read at once; tests may tell a longer story.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod engine;
mod faults;
mod issuer;
mod ledger;
pub mod linkage;
pub mod mpm;
pub mod mpm_qr;
mod passengers;
mod qr;
mod server;
pub mod vphone;
pub mod wallet;

// The core's modules under their usual names, so the simulator reads like the rest of
// tapgate (`crate::snap::sign`, `crate::cpm`).
use tapgate_core::{clock, cpm, snap};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

pub use engine::{Note, SimStats};
pub use faults::{Fault, FaultMix, Service, WeightedFault};
pub use issuer::{IssuerModel, Latency};
pub use ledger::{
    mask_pan, HoldReference, HoldState, LedgerEntry, PaymentStatus, RefundEntry, TapInfo,
};
pub use linkage::{LinkedCustomer, DEMO_AUTH_CODE};
pub use mpm::{MpmConfig, MpmEntry, MpmLedger, MpmStats, MpmStatus, NotifyState};
pub use passengers::{summarize_passengers, Passenger, PassengerTotals, Passengers};

use crate::clock::{Clock, SystemClock};
use engine::Engine;

/// The documentation key the demo configuration signs with (published with a SNAP example;
/// never a production key).
/// The demo partner's RSA private key: a published documentation key (the SNAP signature
/// vectors'), safe to embed, never to be used for anything real.
pub const DEMO_PRIVATE_KEY_PEM: &str = include_str!("../../../tests/fixtures/snap-doc-key.pem");
/// The demo partner's client secret.
pub const DEMO_CLIENT_SECRET: &str = "demo-secret-not-for-production";
use DEMO_PRIVATE_KEY_PEM as DEMO_KEY_PEM;

/// The endpoint paths, as the client sends them (with any provider prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimPaths {
    /// B2B access token.
    pub token: String,
    /// `qr-cpm-payment`.
    pub payment: String,
    /// `qr-cpm-query`.
    pub query: String,
    /// `qr-cpm-refund`.
    pub refund: String,
    /// QRIS MPM `qr-mpm-generate` (merchant).
    pub mpm_generate: String,
    /// QRIS MPM `qr-mpm-query` (merchant).
    pub mpm_query: String,
    /// QRIS MPM `qr-mpm-refund` (merchant).
    pub mpm_refund: String,
    /// B2B2C customer token (wallet, Linkage).
    pub customer_token: String,
    /// Linkage `qr-mpm-payment` (wallet).
    pub linkage_payment: String,
    /// Linkage `qr-mpm-query` (wallet). May equal [`SimPaths::mpm_query`]: a call with
    /// `Authorization-Customer` or body `serviceCode` `54` is then the wallet's.
    pub linkage_query: String,
}

impl Default for SimPaths {
    /// The SNAP paths without a provider prefix (the gate's config defaults too).
    fn default() -> Self {
        SimPaths {
            token: "/v1.0/access-token/b2b".into(),
            payment: "/v1.0/qr/qr-cpm-payment".into(),
            query: "/v1.0/qr/qr-cpm-query".into(),
            refund: "/v1.0/qr/qr-cpm-refund".into(),
            mpm_generate: "/v1.0/qr/qr-mpm-generate".into(),
            mpm_query: "/v1.0/qr/qr-mpm-query".into(),
            mpm_refund: "/v1.0/qr/qr-mpm-refund".into(),
            customer_token: "/v1.0/access-token/b2b2c".into(),
            linkage_payment: "/v1.0/qr/qr-mpm-payment".into(),
            linkage_query: "/v1.0/qr/qr-mpm-query".into(),
        }
    }
}

impl SimPaths {
    fn check(&self) -> Result<(), String> {
        let all = [
            &self.token,
            &self.payment,
            &self.query,
            &self.refund,
            &self.mpm_generate,
            &self.mpm_query,
            &self.mpm_refund,
            &self.customer_token,
            &self.linkage_payment,
            &self.linkage_query,
        ];
        for (i, p) in all.iter().enumerate() {
            if !p.starts_with('/') || p.starts_with("/sim/") || p.contains(['?', '#', ' ']) {
                return Err(format!(
                    "simulator path {p:?} must start with / and not with /sim/"
                ));
            }
            // The merchant's and the wallet's query may share one path (told apart by the call).
            // linkage_query comes last: anything else equal to mpm_query was refused before.
            let shared_query = i == all.len() - 1 && *p == &self.mpm_query;
            if all[..i].contains(p) && !shared_query {
                return Err(format!("simulator path {p:?} is given twice"));
            }
        }
        Ok(())
    }
}

/// How a second, identical refund (same `partnerRefundNo`, reference and amount) is answered.
/// Never with a second refund.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefundReplay {
    /// The first refund's answer again (`2008000`, same `refundNo`).
    #[default]
    SameResult,
    /// `4048018` Inconsistent Request, as some aggregators answer.
    Inconsistent,
}

/// What the simulated aggregator knows about its one partner, and how strict it is.
#[derive(Clone)]
pub struct SimConfig {
    /// The expected `X-CLIENT-KEY`.
    pub client_id: String,
    /// The HMAC key of transaction signatures.
    pub client_secret: String,
    /// The partner's RSA public key, PKCS#1 `RSAPublicKey` DER
    /// ([`crate::snap::sign::rsa_public_key_from_pem`] reads PEMs).
    pub partner_public_key_der: Vec<u8>,
    /// The expected `X-PARTNER-ID`.
    pub partner_id: String,
    /// The only `merchantId` accepted.
    pub merchant_id: String,
    /// The expected `CHANNEL-ID`; any value when `None`.
    pub channel_id: Option<String>,
    /// Endpoint paths.
    pub paths: SimPaths,
    /// Access-token lifetime, seconds (`expiresIn`).
    pub token_ttl_secs: u64,
    /// How far `X-TIMESTAMP` may be from the simulator's clock, seconds.
    pub timestamp_skew_secs: u64,
    /// The UTC offsets (hours) an `X-TIMESTAMP` may carry: WIB, WITA, WIT by default.
    pub allowed_utc_offsets_hours: Vec<i8>,
    /// How long a payment accepted with a 202 stays pending (`03`), milliseconds.
    pub pending_ms: u64,
    /// How an identical refund is answered the second time.
    pub refund_replay: RefundReplay,
    /// Answer `expiresIn` as a number instead of Finpay's string.
    pub expires_in_as_number: bool,
    /// Spell the query answer's key `originalPartnerReferanceNo`, as the aggregator's own
    /// documentation does, to check that the client reads it leniently.
    pub misspelled_partner_reference: bool,
    /// How the issuers answer payments (latency, silence, declines); instant and never
    /// declining when `None`. Changed later by [`SimHandle::set_issuer_model`].
    pub issuer: Option<IssuerModel>,
    /// The aggregator's clock: token expiry, timestamp freshness, the external-id day,
    /// pending time. A [`crate::clock::ManualClock`] makes these testable without sleeping.
    pub clock: Arc<dyn Clock>,
    /// QRIS MPM and Linkage: the merchant in the QRs, validity, notifications, late payments.
    pub mpm: MpmConfig,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<secret>")
            .field("partner_id", &self.partner_id)
            .field("merchant_id", &self.merchant_id)
            .field("channel_id", &self.channel_id)
            .field("paths", &self.paths)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("timestamp_skew_secs", &self.timestamp_skew_secs)
            .field("pending_ms", &self.pending_ms)
            .field("issuer", &self.issuer)
            .field("mpm", &self.mpm)
            .finish_non_exhaustive()
    }
}

/// `Asia/Jakarta`, or a fixed +07:00 when the system has no time zone database.
pub fn jakarta() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Jakarta")
        .unwrap_or_else(|_| jiff::tz::TimeZone::fixed(jiff::tz::offset(7)))
}

impl SimConfig {
    /// The configuration matching `config/demo.toml`: client `tapgate-demo`, secret
    /// `demo-secret-not-for-production`, the published documentation key, partner
    /// `TAPGATE-DEMO`, merchant `MRT-JKT-DEMO`, channel `95221`, default paths.
    pub fn demo() -> SimConfig {
        // The key is compiled in and covered by a test; should it ever fail to load, every
        // token request is refused as a bad signature, which is loud enough.
        let key = crate::snap::sign::rsa_public_key_from_pem(DEMO_KEY_PEM).unwrap_or_default();
        SimConfig {
            client_id: "tapgate-demo".into(),
            client_secret: DEMO_CLIENT_SECRET.into(),
            partner_public_key_der: key,
            partner_id: "TAPGATE-DEMO".into(),
            merchant_id: "MRT-JKT-DEMO".into(),
            channel_id: Some("95221".into()),
            paths: SimPaths::default(),
            token_ttl_secs: 900,
            timestamp_skew_secs: 300,
            allowed_utc_offsets_hours: vec![7, 8, 9],
            pending_ms: 3000,
            refund_replay: RefundReplay::SameResult,
            expires_in_as_number: false,
            misspelled_partner_reference: false,
            issuer: None,
            clock: Arc::new(SystemClock::new(jakarta())),
            mpm: MpmConfig::default(),
        }
    }
}

/// State shared by the server tasks and the handle.
pub(crate) struct Shared {
    engine: Mutex<Engine>,
}

impl Shared {
    /// The engine; a panic elsewhere while holding the lock must not take the simulator down.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and serves until the handle is shut down or
    /// dropped. Fails on a bind error or invalid paths (`InvalidInput`).
    pub async fn start(cfg: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
        cfg.paths
            .check()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        if let Some(m) = &cfg.issuer {
            m.check()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine::new(cfg)),
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(server::accept_loop(listener, shared.clone(), stopped));
        tracing::info!(%addr, "acquirer simulator listening");
        Ok(SimHandle {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }
}

/// A running simulator. Dropping it stops the server (abruptly); [`SimHandle::shutdown`]
/// waits until it has stopped.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the `base_url` for an aggregator config.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every payment recorded, oldest first, statuses as of now.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.shared.lock().ledger()
    }

    /// The payment recorded under `partner_reference_no`.
    pub fn entry(&self, partner_reference_no: &str) -> Option<LedgerEntry> {
        self.ledger()
            .into_iter()
            .find(|e| e.partner_reference_no == partner_reference_no)
    }

    /// Each passenger's net charge and open holds, as of now.
    pub fn passengers(&self) -> Passengers {
        summarize_passengers(&self.ledger())
    }

    /// The passenger who paid with `pan`, if any payment of theirs is recorded.
    pub fn passenger(&self, pan: &str) -> Option<Passenger> {
        let key = self.shared.lock().passenger_key(pan);
        self.passengers()
            .passengers
            .into_iter()
            .find(|p| p.passenger == key)
    }

    /// Counters of requests and rejections, and of the TCP connections accepted
    /// ([`SimStats::connections_accepted`]) and token fetches ([`SimStats::token_requests`]):
    /// what a client's connection discipline costs.
    pub fn stats(&self) -> SimStats {
        self.shared.lock().stats()
    }

    /// Declines every later payment from `pan` with `code` (e.g. `4036014` insufficient
    /// funds); an empty `code` lifts the decline.
    pub fn decline_pan(&self, pan: &str, code: &str) {
        self.shared.lock().decline_pan(pan, code);
    }

    /// Queues `f` for the next payment call (after faults already queued).
    pub fn push_fault(&self, f: Fault) {
        self.push_fault_on(Service::Payment, f);
    }

    /// Queues `f` for the next call to `service`.
    pub fn push_fault_on(&self, service: Service, f: Fault) {
        self.shared.lock().faults.push(service, f);
    }

    /// Draws a fault for every call to the mix's services from a generator seeded with `seed`
    /// (queued faults go first). Replaces any earlier mix.
    pub fn set_random_faults(&self, seed: u64, p: FaultMix) {
        self.shared.lock().faults.set_random(seed, p);
    }

    /// Sets how the issuers answer later payments (reseeding the draws), or with `None` makes
    /// them answer at once and decline nothing. Refused when the model does not pass
    /// [`IssuerModel::check`].
    pub fn set_issuer_model(&self, model: Option<IssuerModel>) -> Result<(), String> {
        if let Some(m) = &model {
            m.check()?;
        }
        self.shared.lock().faults.set_issuer(model);
        Ok(())
    }

    /// Forgets queued faults and turns the random mode off (the issuer model stays).
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// How many queued one-shot faults have not been used yet.
    pub fn queued_faults(&self) -> usize {
        self.shared.lock().faults.queued_len()
    }

    /// Every generated QRIS MPM QR and Linkage payment, statuses as of now.
    pub fn mpm_ledger(&self) -> MpmLedger {
        self.shared.lock().mpm_ledger()
    }

    /// The QR generated under the merchant's `partner_reference_no`.
    pub fn mpm_entry(&self, partner_reference_no: &str) -> Option<MpmEntry> {
        self.mpm_ledger()
            .qrs
            .into_iter()
            .find(|e| e.partner_reference_no == partner_reference_no)
    }

    /// Links a new wallet customer holding `balance` rupiah; its `auth_code` gets a customer
    /// token for Linkage payments.
    pub fn link_customer(&self, balance: u64) -> LinkedCustomer {
        self.shared.lock().link_customer(balance)
    }

    /// The linked customer `customer_id`, balance as of now.
    pub fn customer(&self, customer_id: &str) -> Option<LinkedCustomer> {
        self.shared
            .lock()
            .customers()
            .into_iter()
            .find(|c| c.customer_id == customer_id)
    }

    /// Loses every later payment notification (`true`), or sends them again (`false`).
    pub fn drop_notifications(&self, on: bool) {
        self.shared.lock().set_drop_notifications(on);
    }

    /// Lets later payments after a QR's validity succeed, marked late (`true`), or refuses
    /// them as expired (`false`, the default).
    pub fn accept_late_payments(&self, on: bool) {
        self.shared.lock().set_accept_late_payments(on);
    }

    /// Stops accepting, closes every connection (requests in flight get no answer) and waits
    /// for the server task to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Runs a simulator on `addr` until the process ends (for `tapgate sim`). Returns only on a
/// bind error or invalid paths.
pub async fn serve_forever(cfg: SimConfig, addr: SocketAddr) -> std::io::Result<()> {
    let mut handle = Simulator::start(cfg, addr).await?;
    if let Some(task) = handle.task.take() {
        let _ = task.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_loads_the_documentation_key() {
        let cfg = SimConfig::demo();
        assert!(!cfg.partner_public_key_der.is_empty());
        let signer = crate::snap::sign::RsaSigner::from_pem(DEMO_KEY_PEM).unwrap();
        assert_eq!(signer.public_key_der(), cfg.partner_public_key_der);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("demo-secret"), "{dbg}");
    }

    #[test]
    fn paths_are_checked() {
        assert!(SimPaths::default().check().is_ok());
        let mut p = SimPaths::default();
        p.query = p.payment.clone();
        assert!(p.check().is_err());
        p.query = "/sim/ledger".into();
        assert!(p.check().is_err());
        p.query = "v1/query".into();
        assert!(p.check().is_err());
        // Only the two MPM queries may share a path.
        let mut p = SimPaths::default();
        assert_eq!(p.mpm_query, p.linkage_query);
        p.linkage_payment = p.mpm_generate.clone();
        assert!(p.check().is_err());
        let mut p = SimPaths::default();
        p.mpm_refund = p.mpm_query.clone();
        assert!(p.check().is_err());
    }
}
