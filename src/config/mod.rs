//! Per-station configuration: TOML, typed, strict (unknown keys are errors), defaults in code,
//! a semantic check after parsing, and errors that name the file, line and key.
//!
//! The seams: the types of every table are here; `load.rs` reads a file and resolves what
//! depends on the machine (paths, secrets, the time zone database); `check.rs` refuses values
//! the daemon would trip on; `locate.rs` turns a key path or a parser's byte span into the
//! file's line and the key the person must fix; `tests.rs` drives all of them through
//! [`Config::parse`]. The `[tariff]` and `[policy]` types belong to the fare core
//! ([`crate::fare::settings`]) and are re-exported here.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod check;
mod load;
mod locate;
#[cfg(test)]
mod tests;

pub use check::check_base_url;
// The tariff and policy settings are the fare core's own types: the config composes them.
pub use crate::fare::settings::{
    AntiPassback, PolicyConfig, StaleJourney, TariffConfig, UnknownAtExit, UnreachableAtExit,
    MAX_FARE,
};
pub use load::{config_dir, resolve_secret_path, resolve_time_zone};

/// `[aggregator]`: where and how to reach the QRIS TAP aggregator (BI SNAP).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Scheme, host and optional port, e.g. `https://sandbox.example.co.id`. No trailing path:
    /// path prefixes belong in the `*_path` keys.
    pub base_url: String,
    /// `X-CLIENT-KEY`: the client id the aggregator issued.
    pub client_id: String,
    /// File holding the client secret (HMAC key). Relative paths resolve against
    /// `$CREDENTIALS_DIRECTORY` when set (systemd `LoadCredential=`), else the config's folder.
    pub client_secret_file: PathBuf,
    /// File holding the partner's RSA private key (PEM, PKCS#8 or PKCS#1). Resolved as above.
    pub private_key_file: PathBuf,
    /// `X-PARTNER-ID`.
    pub partner_id: String,
    /// `merchantId` in every request body.
    pub merchant_id: String,
    /// `CHANNEL-ID`.
    pub channel_id: String,
    /// `subMerchantId`, when the aggregator assigned one.
    #[serde(default)]
    pub sub_merchant_id: Option<String>,
    /// `terminalId`; defaults to the lane's device id.
    #[serde(default)]
    pub terminal_id: Option<String>,
    /// `ORIGIN` header; defaults to the base URL's origin.
    #[serde(default)]
    pub origin: Option<String>,
    /// `X-IP-ADDRESS`: the gate's address as the aggregator sees it.
    #[serde(default = "default_device_ip")]
    pub device_ip: String,
    /// TCP + TLS connect timeout, milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Whole-request timeout for queries and refunds, milliseconds. Payments are bounded by
    /// the lane's decision deadline instead (and this, whichever is shorter).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Largest response body read, bytes; larger answers are treated as garbage.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long an unused pooled connection is kept before it is closed, milliseconds.
    #[serde(default = "default_pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
    /// After this long without any call to the aggregator, one light call (a status query of
    /// a reference that does not exist) keeps the pooled connection open, so the next tap
    /// does not open one; milliseconds, 0 turns it off. At most half of
    /// `pool_idle_timeout_ms`.
    #[serde(default = "default_keep_warm_ms")]
    pub keep_warm_ms: u64,
    /// Path of the B2B access-token endpoint.
    #[serde(default = "default_token_path")]
    pub token_path: String,
    /// Path of `qr-cpm-payment` (service 60).
    #[serde(default = "default_payment_path")]
    pub payment_path: String,
    /// Path of `qr-cpm-query` (service 61).
    #[serde(default = "default_query_path")]
    pub query_path: String,
    /// Path of `qr-cpm-refund` (service 80).
    #[serde(default = "default_refund_path")]
    pub refund_path: String,
    /// Path of `qr-mpm-generate` (service 47): a dynamic QR for `[qr]`.
    #[serde(default = "default_mpm_generate_path")]
    pub mpm_generate_path: String,
    /// Path of the merchant's `qr-mpm-query` (service 51).
    #[serde(default = "default_mpm_query_path")]
    pub mpm_query_path: String,
    /// Path of `qr-mpm-refund`.
    #[serde(default = "default_mpm_refund_path")]
    pub mpm_refund_path: String,
}

fn default_device_ip() -> String {
    "127.0.0.1".into()
}
fn default_connect_timeout_ms() -> u64 {
    1500
}
fn default_request_timeout_ms() -> u64 {
    5000
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_pool_idle_timeout_ms() -> u64 {
    50_000
}
fn default_keep_warm_ms() -> u64 {
    20_000
}
fn default_token_path() -> String {
    "/v1.0/access-token/b2b".into()
}
fn default_payment_path() -> String {
    "/v1.0/qr/qr-cpm-payment".into()
}
fn default_query_path() -> String {
    "/v1.0/qr/qr-cpm-query".into()
}
fn default_refund_path() -> String {
    "/v1.0/qr/qr-cpm-refund".into()
}
fn default_mpm_generate_path() -> String {
    "/v1.0/qr/qr-mpm-generate".into()
}
fn default_mpm_query_path() -> String {
    "/v1.0/qr/qr-mpm-query".into()
}
fn default_mpm_refund_path() -> String {
    "/v1.0/qr/qr-mpm-refund".into()
}

/// The whole station configuration, as read from one TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[station]`: where this gate controller stands.
    pub station: StationConfig,
    /// `[[lane]]`: each gate lane this controller drives (one reader, one relay).
    #[serde(rename = "lane")]
    pub lanes: Vec<LaneConfig>,
    /// `[tariff]`: how fares are computed.
    pub tariff: TariffConfig,
    /// `[policy]`: decision deadline, debounce, anti-passback and friends.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// `[journal]`: where the payment journal lives.
    pub journal: JournalConfig,
    /// `[aggregator]`: the QRIS TAP aggregator.
    pub aggregator: AggregatorConfig,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[reconciler]`: how uncertain payments and owed refunds are driven to a final state.
    #[serde(default)]
    pub reconciler: ReconcilerConfig,
    /// `[[input]]`: gate inputs on GPIO lines (passage sensors, emergency, door, fault).
    #[serde(rename = "input", default)]
    pub inputs: Vec<crate::relay::inputs::GpioInputSpec>,
    /// `[journeys]`: where journeys are matched: this station only, or the whole line.
    #[serde(default)]
    pub journeys: JourneysConfig,
    /// `[display]`: the passenger display's pages; off when absent.
    #[serde(default)]
    pub display: Option<DisplayConfig>,
    /// `[qr]`: a QRIS QR on the passenger display for phones that cannot tap; off when
    /// absent.
    #[serde(default)]
    pub qr: Option<QrConfig>,
}

/// `[qr]`: QRIS MPM at the gate (see [`crate::qr`]). A lane listed here offers, on its
/// screen, a dynamic QR for the fare a gate knows without a tap (at an exit the flat fare or
/// the unknown-entry fare; at an entry of a flat tariff the flat fare); the gate opens once
/// the aggregator reports it paid.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrConfig {
    /// The lanes that offer a QR, by their `[[lane]]` names: exits, and entries of a flat
    /// tariff.
    pub lanes: Vec<String>,
    /// How long a QR can be paid, seconds.
    #[serde(default = "default_qr_validity_seconds")]
    pub validity_seconds: u64,
    /// How often the gate asks the aggregator whether the QR on screen was paid,
    /// milliseconds.
    #[serde(default = "default_qr_poll_ms")]
    pub poll_ms: u64,
    /// How long after a QR's validity ended the reconciler still asks whether it was paid
    /// late (then refunds it), before counting it unpaid, seconds.
    #[serde(default = "default_qr_late_payment_seconds")]
    pub late_payment_seconds: u64,
    /// The path, on the display's address, where the aggregator's payment notification
    /// (`qr-mpm-notify`) is received.
    #[serde(default = "default_qr_notify_path")]
    pub notify_path: String,
    /// The URL sent to the aggregator as `additionalInfo.callback_payment`: where it can reach
    /// `notify_path` (usually through the station's back office). Absent: none is sent, and
    /// the aggregator uses the one registered for the merchant, if any.
    #[serde(default)]
    pub callback_url: Option<String>,
}

fn default_qr_validity_seconds() -> u64 {
    120
}
fn default_qr_poll_ms() -> u64 {
    1000
}
fn default_qr_late_payment_seconds() -> u64 {
    600
}

impl Config {
    /// How long after a QR sale began the aggregator may still report it paid: its validity
    /// and `[qr] late_payment_seconds` (their defaults without `[qr]`), milliseconds.
    pub fn qr_payable_for_ms(&self) -> i64 {
        let (validity, late) = self.qr.as_ref().map_or(
            (
                default_qr_validity_seconds(),
                default_qr_late_payment_seconds(),
            ),
            |q| (q.validity_seconds, q.late_payment_seconds),
        );
        i64::try_from(validity.saturating_add(late).saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}
fn default_qr_notify_path() -> String {
    "/v1.0/qr/qr-mpm-notify".into()
}

/// `[display]`: the pages a kiosk browser on the gate's screen shows (see
/// [`crate::display`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    /// `address:port` the pages are served on (`127.0.0.1:8700`). Loopback only, unless
    /// `allow_remote` is set.
    pub listen: String,
    /// Accept a `listen` address off this machine (a screen driven by another computer). The
    /// pages show what each passenger is told, live: keep them off the station's network.
    #[serde(default)]
    pub allow_remote: bool,
    /// How long a tap's screen stays before the lane goes back to idle, milliseconds.
    #[serde(default = "default_idle_after_ms")]
    pub idle_after_ms: u64,
    /// `[[display.gate]]`: gates with two lanes, each shown on one page.
    #[serde(default, rename = "gate")]
    pub gates: Vec<DisplayGateConfig>,
}

/// `[[display.gate]]`: the two lanes of one gate, shown side by side on `/gate/<name>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayGateConfig {
    /// The gate's name in its page's address (`G3`): letters, digits, `-` or `_`.
    pub name: String,
    /// Its two lanes, left to right as the page shows them.
    pub lanes: Vec<String>,
}

fn default_idle_after_ms() -> u64 {
    4000
}

/// `[journeys] store`: where a tap-out looks for its tap-in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JourneyStoreKind {
    /// This station's journal only (the default; needs no server).
    #[default]
    Local,
    /// The line's PostgreSQL database, shared by every station of the line.
    Postgres,
}

impl JourneyStoreKind {
    /// The spelling in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            JourneyStoreKind::Local => "local",
            JourneyStoreKind::Postgres => "postgres",
        }
    }
}

/// `[journeys]`: line-wide journeys. With `store = "local"` (the default) every other key is
/// refused (see [`JOURNEYS_POSTGRES_ONLY`]): a line database configured but not switched on
/// would leave the station an island without a word.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "JourneysToml")]
pub struct JourneysConfig {
    /// `local` or `postgres`.
    pub store: JourneyStoreKind,
    /// The line database, a libpq URL or key=value string without a password
    /// (`postgresql://tapgate@line1-db.example:5432/tapgate`). Required with postgres.
    pub url: Option<String>,
    /// File holding the database password. Relative paths resolve like the aggregator's
    /// secrets: under `$CREDENTIALS_DIRECTORY` when set, else beside the config file.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA the database's certificate must chain to; relative paths beside the
    /// config file. Absent: the public web roots bundled in tapgate.
    pub ca_file: Option<PathBuf>,
    /// Budget of the exit's lookup on the tap path, milliseconds (pool wait included).
    pub lookup_timeout_ms: u64,
    /// Budget of the background calls (replication, stale-sweep checks, pruning), ms.
    pub background_timeout_ms: u64,
    /// Budget of opening one connection (TCP, TLS, authentication), ms.
    pub connect_timeout_ms: u64,
    /// Connections kept to the line database.
    pub pool_size: usize,
    /// How often the outbox is pushed to the line database when idle, ms.
    pub replicate_interval_ms: u64,
    /// Closed journeys older than this many days are pruned from the line tables by the
    /// daemon. Absent: the line tables keep everything.
    pub retain_days: Option<u32>,
    /// How long an exit whose entry was unknown keeps being matched against entries that
    /// reach the line late (hours).
    pub converge_hours: u64,
    /// The keys written in the file (for refusing postgres-only keys under `local`).
    written: Vec<&'static str>,
}

/// The `[journeys]` keys that only mean something with `store = "postgres"`.
pub const JOURNEYS_POSTGRES_ONLY: &[&str] = &[
    "url",
    "password_file",
    "ca_file",
    "lookup_timeout_ms",
    "background_timeout_ms",
    "connect_timeout_ms",
    "pool_size",
    "replicate_interval_ms",
    "retain_days",
    "converge_hours",
];

/// Default `[journeys] replicate_interval_ms`.
pub const DEFAULT_REPLICATE_INTERVAL_MS: u64 = 200;
/// Default `[journeys] converge_hours`.
pub const DEFAULT_CONVERGE_HOURS: u64 = 24;

impl Default for JourneysConfig {
    fn default() -> Self {
        JourneysToml::default().into()
    }
}

/// The TOML shape of [`JourneysConfig`]: every key optional, so that the config knows which
/// were written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JourneysToml {
    #[serde(default)]
    store: JourneyStoreKind,
    url: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    lookup_timeout_ms: Option<u64>,
    background_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    pool_size: Option<usize>,
    replicate_interval_ms: Option<u64>,
    retain_days: Option<u32>,
    converge_hours: Option<u64>,
}

impl From<JourneysToml> for JourneysConfig {
    fn from(t: JourneysToml) -> Self {
        use crate::line::{
            DEFAULT_BACKGROUND_TIMEOUT_MS, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_LOOKUP_TIMEOUT_MS,
            DEFAULT_POOL_SIZE,
        };
        let written = [
            ("url", t.url.is_some()),
            ("password_file", t.password_file.is_some()),
            ("ca_file", t.ca_file.is_some()),
            ("lookup_timeout_ms", t.lookup_timeout_ms.is_some()),
            ("background_timeout_ms", t.background_timeout_ms.is_some()),
            ("connect_timeout_ms", t.connect_timeout_ms.is_some()),
            ("pool_size", t.pool_size.is_some()),
            ("replicate_interval_ms", t.replicate_interval_ms.is_some()),
            ("retain_days", t.retain_days.is_some()),
            ("converge_hours", t.converge_hours.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        JourneysConfig {
            store: t.store,
            url: t.url,
            password_file: t.password_file,
            ca_file: t.ca_file,
            lookup_timeout_ms: t.lookup_timeout_ms.unwrap_or(DEFAULT_LOOKUP_TIMEOUT_MS),
            background_timeout_ms: t
                .background_timeout_ms
                .unwrap_or(DEFAULT_BACKGROUND_TIMEOUT_MS),
            connect_timeout_ms: t.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
            pool_size: t.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
            replicate_interval_ms: t
                .replicate_interval_ms
                .unwrap_or(DEFAULT_REPLICATE_INTERVAL_MS),
            retain_days: t.retain_days,
            converge_hours: t.converge_hours.unwrap_or(DEFAULT_CONVERGE_HOURS),
            written,
        }
    }
}

impl JourneysConfig {
    /// Whether journeys are matched line-wide (`store = "postgres"`).
    pub fn is_line(&self) -> bool {
        self.store == JourneyStoreKind::Postgres
    }

    /// The line store's settings for station `station_id`; `None` with `store = "local"`.
    /// Paths are as resolved by [`Config::load`] (as written after [`Config::parse`]).
    pub fn line_settings(&self, station_id: &str) -> Option<crate::line::LineSettings> {
        if !self.is_line() {
            return None;
        }
        // `url` is required with postgres (checked); an empty one is refused by the line
        // store's own check, never taken for "local".
        let mut s =
            crate::line::LineSettings::new(self.url.clone().unwrap_or_default(), station_id);
        s.password_file = self.password_file.clone();
        s.ca_file = self.ca_file.clone();
        s.lookup_timeout_ms = self.lookup_timeout_ms;
        s.background_timeout_ms = self.background_timeout_ms;
        s.connect_timeout_ms = self.connect_timeout_ms;
        s.pool_size = self.pool_size;
        Some(s)
    }

    /// How often the replicator pushes the outbox when idle.
    pub fn replicate_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.replicate_interval_ms)
    }

    /// How long an unknown-entry exit keeps being matched against late entries.
    pub fn converge_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.converge_hours * 3600)
    }

    /// The postgres-only keys written in the file (the first one refuses a `local` store).
    fn postgres_keys_written(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.written.iter().copied()
    }
}

/// `[reconciler]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// How often the background reconciler looks for due work, milliseconds.
    #[serde(default = "default_rec_interval_ms")]
    pub interval_ms: u64,
    /// First retry delay; doubles per attempt (full jitter), milliseconds.
    #[serde(default = "default_rec_base_ms")]
    pub backoff_base_ms: u64,
    /// Longest retry delay, milliseconds.
    #[serde(default = "default_rec_cap_ms")]
    pub backoff_cap_ms: u64,
    /// Attempts before an operation goes to ATTENTION.
    #[serde(default = "default_rec_attempts")]
    pub max_attempts: u32,
    /// Age after which a non-final operation goes to ATTENTION, minutes.
    #[serde(default = "default_rec_age_min")]
    pub attention_after_minutes: u64,
    /// A payment the aggregator does not know (`404xx01`) counts as never made only once it
    /// is older than this, seconds: the aggregator may not have indexed it yet.
    #[serde(default = "default_rec_not_found_s")]
    pub not_found_after_seconds: u64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval_ms: default_rec_interval_ms(),
            backoff_base_ms: default_rec_base_ms(),
            backoff_cap_ms: default_rec_cap_ms(),
            max_attempts: default_rec_attempts(),
            attention_after_minutes: default_rec_age_min(),
            not_found_after_seconds: default_rec_not_found_s(),
        }
    }
}

fn default_rec_interval_ms() -> u64 {
    1000
}
fn default_rec_base_ms() -> u64 {
    2000
}
fn default_rec_cap_ms() -> u64 {
    300_000
}
fn default_rec_attempts() -> u32 {
    30
}
fn default_rec_age_min() -> u64 {
    24 * 60
}
fn default_rec_not_found_s() -> u64 {
    120
}

/// `[station]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// Short station code, also the tariff's key (`BLM`). Letters and digits only.
    pub id: String,
    /// Human name (`Blok M`), for logs.
    pub name: String,
    /// WGS84 latitude, sent as `X-LATITUDE`.
    pub latitude: f64,
    /// WGS84 longitude, sent as `X-LONGITUDE`.
    pub longitude: f64,
    /// IANA time zone for `X-TIMESTAMP` (`Asia/Jakarta`, `Asia/Makassar`, `Asia/Jayapura`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A bench, certification or demo rig: lanes may use the recording relay, which takes
    /// fares without driving a gate. Refused otherwise (a lane that charges and opens
    /// nothing traps or frees passengers at random).
    #[serde(default)]
    pub bench: bool,
}

fn default_timezone() -> String {
    "Asia/Jakarta".into()
}

/// `[[lane]]`: one gate lane.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    /// Lane name used in logs, metrics and the CLI (`in-1`). Unique per station.
    pub name: String,
    /// `in` (entry: holds the maximum fare) or `out` (exit: settles the fare).
    pub direction: crate::fare::Direction,
    /// `X-DEVICE-ID` and the gate id sent to the aggregator; defaults to `<station>-<lane>`.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Where taps come from.
    #[serde(default)]
    pub card_source: CardSourceConfig,
    /// What opens the gate.
    #[serde(default)]
    pub relay: RelayConfig,
}

impl LaneConfig {
    /// The device id, defaulted from the station and lane names.
    pub fn device_id(&self, station: &StationConfig) -> String {
        self.device_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", station.id, self.name))
    }
}

/// `[lane.card_source]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "CardSourceToml")]
pub enum CardSourceConfig {
    /// No reader: taps only arrive through `tapgate tap`.
    #[default]
    None,
    /// A PC/SC reader through pcscd.
    Pcsc {
        /// Reader name pattern: a substring, or a glob with `*` (`ACS ACR1252*PICC*`);
        /// case is ignored.
        reader: String,
        /// Budget for the whole APDU exchange with one phone, milliseconds.
        #[serde(default = "default_tap_read_ms")]
        tap_deadline_ms: u64,
        /// Reader LED/buzzer commands for passenger feedback.
        #[serde(default)]
        feedback: FeedbackConfig,
    },
}

/// Which vendor LED/buzzer command set the lane's reader understands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackConfig {
    /// Send nothing (the default).
    #[default]
    Off,
    /// ACR122U-style `FF 00 40` pseudo-APDUs.
    Acr122u,
    /// ACR1252U-class CCID escape commands (needs escape enabled in libccid).
    Acr1252u,
}

impl FeedbackConfig {
    /// The reader service's model.
    pub fn model(self) -> crate::nfc::feedback::FeedbackModel {
        use crate::nfc::feedback::FeedbackModel;
        match self {
            FeedbackConfig::Off => FeedbackModel::Off,
            FeedbackConfig::Acr122u => FeedbackModel::Acr122u,
            FeedbackConfig::Acr1252u => FeedbackModel::Acr1252u,
        }
    }
}

fn default_tap_read_ms() -> u64 {
    1500
}

/// The TOML shape of [`CardSourceConfig`]: `none` is an empty table here, so that a key
/// beside `kind = "none"` is an unknown key (a unit variant would swallow it silently).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
enum CardSourceToml {
    None {},
    Pcsc {
        reader: String,
        #[serde(default = "default_tap_read_ms")]
        tap_deadline_ms: u64,
        #[serde(default)]
        feedback: FeedbackConfig,
    },
}

impl From<CardSourceToml> for CardSourceConfig {
    fn from(t: CardSourceToml) -> Self {
        match t {
            CardSourceToml::None {} => CardSourceConfig::None,
            CardSourceToml::Pcsc {
                reader,
                tap_deadline_ms,
                feedback,
            } => CardSourceConfig::Pcsc {
                reader,
                tap_deadline_ms,
                feedback,
            },
        }
    }
}

/// `[lane.relay]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "RelayToml")]
pub enum RelayConfig {
    /// Records commands instead of driving hardware (bench, demo, certification runs). Only
    /// accepted with `station.bench = true`.
    #[default]
    Recording,
    /// A relay on a GPIO line (character device, uAPI v2).
    Gpio(crate::relay::gpio::GpioRelaySpec),
}

/// The TOML shape of [`RelayConfig`]: `recording` is an empty table, so that keys beside
/// `kind = "recording"` (a gpio relay's `line` under the wrong kind) are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
enum RelayToml {
    Recording {},
    Gpio(crate::relay::gpio::GpioRelaySpec),
}

impl From<RelayToml> for RelayConfig {
    fn from(t: RelayToml) -> Self {
        match t {
            RelayToml::Recording {} => RelayConfig::Recording,
            RelayToml::Gpio(spec) => RelayConfig::Gpio(spec),
        }
    }
}

/// `[journal]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// SQLite file of the payment journal (`/var/lib/tapgate/journal.db`).
    pub path: PathBuf,
    /// File holding the per-installation key that hashes PANs into passenger keys. Created
    /// (random, mode 0600) beside the journal when missing.
    #[serde(default)]
    pub passenger_key_file: Option<PathBuf>,
    /// Retention: final operations (and their closed journeys) whose last change is older
    /// than this many days are exported to CSV and then deleted from the journal. Absent:
    /// the journal keeps everything.
    #[serde(default)]
    pub retain_days: Option<u32>,
    /// Where retention writes its CSV exports; defaulted to `pruned/` beside the journal.
    #[serde(default)]
    pub export_dir: Option<PathBuf>,
    /// Operations deleted per retention transaction (the journal lock is released between
    /// batches, so a tap waits for at most one batch).
    #[serde(default = "default_prune_batch")]
    pub prune_batch: u32,
}

fn default_prune_batch() -> u32 {
    100
}

impl JournalConfig {
    /// The passenger key file, defaulted to `passenger.key` beside the journal.
    pub fn passenger_key_path(&self) -> PathBuf {
        self.passenger_key_file.clone().unwrap_or_else(|| {
            self.path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("passenger.key")
        })
    }

    /// The retention export folder, defaulted to `pruned/` beside the journal.
    pub fn export_dir_path(&self) -> PathBuf {
        self.export_dir.clone().unwrap_or_else(|| {
            self.path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("pruned")
        })
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` for Prometheus text metrics; off when absent. Keep it on localhost.
    #[serde(default)]
    pub listen: Option<String>,
}

/// A configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted key path (`lane[2].direction`), when known.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The shortest `reconciler.interval_ms`: the reconciler polls the journal this often while
/// idle, and at 0 it spins. Measured idle (`tapgate run`, debug build, this repo's 2-core test
/// machine): 0 ms 28 % of a core, 20 ms 6 %, 50 ms 3 %, 1000 ms 0.2 %. 50 is the fastest the
/// test suite uses.
pub const MIN_RECONCILER_INTERVAL_MS: u64 = 50;

impl Config {
    /// The station's time zone (checked by [`Config::parse`]).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        resolve_time_zone(&self.station.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// The lane called `name`.
    pub fn lane(&self, name: &str) -> Option<&LaneConfig> {
        self.lanes.iter().find(|l| l.name == name)
    }

    /// Whether the passenger key file must already exist (never be generated): on a line
    /// (`[journeys] store = "postgres"`) the key is a line credential, the same file at every
    /// gate, and a gate that made up its own would match no journey of any other station.
    pub fn passenger_key_must_exist(&self) -> bool {
        self.journeys.is_line()
    }
}
