//! Per-station configuration: TOML, typed, strict (unknown keys are errors), defaults in code,
//! a semantic check after parsing, and errors that name the file, line and key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

// The tariff and policy settings are the fare core's own types: the config composes them.
pub use crate::fare::settings::{
    AntiPassback, PolicyConfig, StaleJourney, TariffConfig, UnknownAtExit, UnreachableAtExit,
};

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

/// Resolves a secret file path: relative paths go under `$CREDENTIALS_DIRECTORY` when set,
/// else under `base` (the config file's folder).
pub fn resolve_secret_path(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(path),
        _ => base.join(path),
    }
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

/// The largest fare, whole rupiah: one QRIS transaction is capped at Rp10,000,000, and a
/// larger number is a typo (an extra zero, or cents where rupiah were meant).
pub const MAX_FARE: u64 = 10_000_000;

/// The shortest `reconciler.interval_ms`: the reconciler polls the journal this often while
/// idle, and at 0 it spins. Measured idle (`tapgate run`, debug build, this repo's 2-core test
/// machine): 0 ms 28 % of a core, 20 ms 6 %, 50 ms 3 %, 1000 ms 0.2 %. 50 is the fastest the
/// test suite uses.
pub const MIN_RECONCILER_INTERVAL_MS: u64 = 50;

/// Resolves an IANA time zone name: the system's database first (operators keep it current),
/// then the copy bundled in the binary (controller images often ship without tzdata).
pub fn resolve_time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if let Ok(tz) = jiff::tz::TimeZone::get(name) {
        return Ok(tz);
    }
    jiff::tz::TimeZoneDatabase::bundled()
        .get(name)
        .map_err(|_| {
            let system = std::env::var_os("TZDIR")
                .map(|d| format!("TZDIR={}", PathBuf::from(d).display()))
                .unwrap_or_else(|| "/usr/share/zoneinfo".into());
            format!(
                "unknown time zone {name:?}: neither the time zone database built into tapgate \
                 nor the system's ({system}) has it; use an IANA name such as Asia/Jakarta \
                 (WIB), Asia/Makassar (WITA) or Asia/Jayapura (WIT)"
            )
        })
}

/// The folder relative paths in the config file at `path` resolve against: absolute and
/// without `..`, so that the answer does not depend on the current directory and one journal
/// has one name.
pub fn config_dir(path: &Path) -> PathBuf {
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

impl Config {
    /// Reads, parses and checks a config file; relative paths in it are resolved beside the
    /// file (secrets: under `$CREDENTIALS_DIRECTORY` when set), so that the same file means
    /// the same journal from any current directory. Every command that takes a config goes
    /// through here: what `check-config` accepts, `run` accepts.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        let mut cfg = Config::parse(&text, path)?;
        cfg.resolve_paths(&config_dir(path));
        cfg.check_files()
            .map_err(|(key, message)| located(&text, path, key, message))?;
        Ok(cfg)
    }

    /// Parses and checks config text; `path` is only used in errors. Paths stay as written
    /// (see [`Config::load`] for their resolution) and the file system is not consulted.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        cfg.check()
            .map_err(|(key, message)| located(text, path, key, message))?;
        Ok(cfg)
    }

    /// Makes every relative path absolute: beside the config file (`base`), secrets under
    /// `$CREDENTIALS_DIRECTORY` when set (see [`resolve_secret_path`]).
    pub fn resolve_paths(&mut self, base: &Path) {
        let beside = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.journal.path = beside(&self.journal.path);
        if let Some(k) = &self.journal.passenger_key_file {
            self.journal.passenger_key_file = Some(beside(k));
        }
        let a = &mut self.aggregator;
        a.client_secret_file = resolve_secret_path(&a.client_secret_file, base);
        a.private_key_file = resolve_secret_path(&a.private_key_file, base);
    }

    /// Checks against the file system what opening would trip on later (paths resolved).
    fn check_files(&self) -> Result<(), (String, String)> {
        let j = &self.journal.path;
        if j.is_dir() {
            return Err((
                "journal.path".into(),
                format!(
                    "{} is a directory; name the journal file in it (e.g. {})",
                    j.display(),
                    j.join("journal.db").display()
                ),
            ));
        }
        if let Some(parent) = j.parent() {
            if parent.exists() && !parent.is_dir() {
                return Err((
                    "journal.path".into(),
                    format!("{} is not a directory", parent.display()),
                ));
            }
        }
        let key = self.journal.passenger_key_path();
        if key.is_dir() {
            return Err((
                "journal.passenger_key_file".into(),
                format!("{} is a directory, not a key file", key.display()),
            ));
        }
        Ok(())
    }

    /// The station's time zone (checked by [`Config::parse`]).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        resolve_time_zone(&self.station.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// The lane called `name`.
    pub fn lane(&self, name: &str) -> Option<&LaneConfig> {
        self.lanes.iter().find(|l| l.name == name)
    }

    /// Semantic checks of every key: returns (key path, message) for the first problem.
    /// Anything the daemon, the SNAP client, the HTTP stack, the metrics endpoint or the
    /// journal would refuse at start is refused here first.
    fn check(&self) -> Result<(), (String, String)> {
        self.check_station()?;
        self.check_lanes()?;
        self.check_inputs()?;
        self.check_tariff()?;
        self.check_policy()?;
        self.check_journal()?;
        self.check_aggregator()?;
        self.check_metrics()?;
        self.check_reconciler()
    }

    fn check_station(&self) -> Result<(), (String, String)> {
        let s = &self.station;
        if s.id.is_empty() || s.id.len() > 16 || !s.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(("station.id".into(), "must be 1-16 letters or digits".into()));
        }
        text_value("station.name", &s.name, 128)?;
        if !(-90.0..=90.0).contains(&s.latitude) {
            return Err(("station.latitude".into(), "must be within -90..90".into()));
        }
        if !(-180.0..=180.0).contains(&s.longitude) {
            return Err((
                "station.longitude".into(),
                "must be within -180..180".into(),
            ));
        }
        resolve_time_zone(&s.timezone).map_err(|e| ("station.timezone".to_string(), e))?;
        Ok(())
    }

    fn check_lanes(&self) -> Result<(), (String, String)> {
        if self.lanes.is_empty() {
            return Err(("lane".into(), "at least one [[lane]] is needed".into()));
        }
        for (i, lane) in self.lanes.iter().enumerate() {
            let k = |key: &str| format!("lane[{i}].{key}");
            if lane.name.is_empty()
                || lane.name.len() > 32
                || !lane
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err((k("name"), "must be 1-32 letters, digits, - or _".into()));
            }
            if self.lanes[..i].iter().any(|l| l.name == lane.name) {
                return Err((k("name"), format!("lane {:?} is defined twice", lane.name)));
            }
            if let Some(id) = &lane.device_id {
                header_value(&k("device_id"), id, 64)?;
            }
            // The default device id goes in a header too.
            header_value(&k("name"), &lane.device_id(&self.station), 64)?;
            match &lane.relay {
                RelayConfig::Gpio(spec) => check_gpio_relay(&k("relay"), spec)?,
                RelayConfig::Recording if !self.station.bench => {
                    return Err((
                        k("relay"),
                        format!(
                            "lane {:?} has the recording relay (the default when `relay` is \
                             absent): it takes fares and drives no gate. Give it a gpio relay, \
                             or, on a bench or certification rig only, set `bench = true` in \
                             [station]",
                            lane.name
                        ),
                    ));
                }
                RelayConfig::Recording => {}
            }
            if let CardSourceConfig::Pcsc {
                reader,
                tap_deadline_ms,
                ..
            } = &lane.card_source
            {
                if reader.trim().is_empty() {
                    return Err((k("card_source.reader"), "reader pattern is empty".into()));
                }
                text_value(&k("card_source.reader"), reader, 256)?;
                in_range(
                    &k("card_source.tap_deadline_ms"),
                    *tap_deadline_ms,
                    100..=30_000,
                )?;
            }
        }
        Ok(())
    }

    fn check_inputs(&self) -> Result<(), (String, String)> {
        for (i, input) in self.inputs.iter().enumerate() {
            let k = |key: &str| format!("input[{i}].{key}");
            if let Some(lane) = &input.lane {
                if self.lane(lane).is_none() {
                    return Err((k("lane"), format!("no [[lane]] named {lane:?}")));
                }
            }
            in_range(&k("debounce_ms"), input.debounce_ms, 0..=1000)?;
            if let Err(e) = input.validate() {
                let key = if input.role == crate::relay::inputs::InputRole::Passage
                    && input.lane.is_none()
                {
                    "lane"
                } else {
                    line_key(input.line.is_some(), input.chip.is_some())
                };
                return Err((k(key), e.to_string()));
            }
        }
        Ok(())
    }

    fn check_tariff(&self) -> Result<(), (String, String)> {
        let fare_ok = |f: u64| (1..=MAX_FARE).contains(&f);
        let fare_msg = || format!("fares are whole rupiah, 1..={MAX_FARE}");
        match &self.tariff {
            TariffConfig::Flat { fare } => {
                if !fare_ok(*fare) {
                    return Err(("tariff.fare".into(), fare_msg()));
                }
            }
            TariffConfig::Matrix { stations, fares } => {
                for (i, code) in stations.iter().enumerate() {
                    if code.is_empty()
                        || code.len() > 16
                        || !code.bytes().all(|b| b.is_ascii_alphanumeric())
                    {
                        return Err((
                            format!("tariff.stations[{i}]"),
                            "station codes are 1-16 letters or digits".into(),
                        ));
                    }
                    if stations[..i].contains(code) {
                        return Err((
                            format!("tariff.stations[{i}]"),
                            format!("{code:?} is listed twice"),
                        ));
                    }
                }
                if !stations.contains(&self.station.id) {
                    return Err((
                        "tariff.stations".into(),
                        format!("does not list this station ({})", self.station.id),
                    ));
                }
                let n = stations.len();
                let square = format!("must be a {n}x{n} matrix (one row and column per station)");
                if fares.len() != n {
                    return Err(("tariff.fares".into(), square));
                }
                for (i, row) in fares.iter().enumerate() {
                    if row.len() != n {
                        return Err((format!("tariff.fares[{i}]"), square));
                    }
                    if !row.iter().all(|f| fare_ok(*f)) {
                        return Err((format!("tariff.fares[{i}]"), fare_msg()));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_policy(&self) -> Result<(), (String, String)> {
        let p = &self.policy;
        in_range(
            "policy.decision_deadline_ms",
            p.decision_deadline_ms,
            100..=30_000,
        )?;
        in_range("policy.debounce_ms", p.debounce_ms, 0..=600_000)?;
        in_range("policy.max_trip_minutes", p.max_trip_minutes, 1..=43_200)?;
        in_range(
            "policy.passage_window_ms",
            p.passage_window_ms,
            100..=600_000,
        )?;
        Ok(())
    }

    fn check_journal(&self) -> Result<(), (String, String)> {
        let j = &self.journal;
        path_value("journal.path", &j.path)?;
        if j.path.file_name().is_none() || j.path.as_os_str().to_string_lossy().ends_with('/') {
            return Err((
                "journal.path".into(),
                "must name a file (e.g. /var/lib/tapgate/journal.db)".into(),
            ));
        }
        if let Some(k) = &j.passenger_key_file {
            path_value("journal.passenger_key_file", k)?;
        }
        Ok(())
    }

    fn check_aggregator(&self) -> Result<(), (String, String)> {
        let a = &self.aggregator;
        check_base_url(&a.base_url).map_err(|m| ("aggregator.base_url".to_string(), m))?;
        for (key, v) in [
            ("aggregator.client_id", &a.client_id),
            ("aggregator.partner_id", &a.partner_id),
            ("aggregator.channel_id", &a.channel_id),
        ] {
            header_value(key, v, 256)?;
        }
        text_value("aggregator.merchant_id", &a.merchant_id, 64)?;
        if let Some(v) = &a.sub_merchant_id {
            text_value("aggregator.sub_merchant_id", v, 64)?;
        }
        if let Some(v) = &a.terminal_id {
            text_value("aggregator.terminal_id", v, 64)?;
        }
        if let Some(v) = &a.origin {
            header_value("aggregator.origin", v, 256)?;
        }
        if a.device_ip.parse::<std::net::IpAddr>().is_err() {
            return Err((
                "aggregator.device_ip".into(),
                format!("{:?} is not an IP address", a.device_ip),
            ));
        }
        path_value("aggregator.client_secret_file", &a.client_secret_file)?;
        path_value("aggregator.private_key_file", &a.private_key_file)?;
        in_range(
            "aggregator.connect_timeout_ms",
            a.connect_timeout_ms,
            1..=60_000,
        )?;
        in_range(
            "aggregator.request_timeout_ms",
            a.request_timeout_ms,
            1..=600_000,
        )?;
        if a.connect_timeout_ms >= a.request_timeout_ms {
            return Err((
                "aggregator.connect_timeout_ms".into(),
                "must be shorter than request_timeout_ms (a slow connect would count as an unknown outcome)".into(),
            ));
        }
        in_range(
            "aggregator.max_body_bytes",
            a.max_body_bytes as u64,
            1024..=16 * 1024 * 1024,
        )?;
        for (key, v) in [
            ("aggregator.token_path", &a.token_path),
            ("aggregator.payment_path", &a.payment_path),
            ("aggregator.query_path", &a.query_path),
            ("aggregator.refund_path", &a.refund_path),
        ] {
            let ok = v.starts_with('/')
                && !v.contains(['?', '#'])
                && v.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err((
                    key.into(),
                    "must start with / and hold no query, fragment, spaces or non-ASCII \
                     characters"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    fn check_metrics(&self) -> Result<(), (String, String)> {
        if let Some(listen) = &self.metrics.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err((
                    "metrics.listen".into(),
                    format!("{listen:?} is not an address:port such as 127.0.0.1:9464"),
                ));
            }
        }
        Ok(())
    }

    fn check_reconciler(&self) -> Result<(), (String, String)> {
        let r = &self.reconciler;
        in_range(
            "reconciler.interval_ms",
            r.interval_ms,
            MIN_RECONCILER_INTERVAL_MS..=60_000,
        )?;
        in_range(
            "reconciler.backoff_base_ms",
            r.backoff_base_ms,
            1..=3_600_000,
        )?;
        in_range(
            "reconciler.backoff_cap_ms",
            r.backoff_cap_ms,
            r.backoff_base_ms..=86_400_000,
        )?;
        in_range("reconciler.max_attempts", r.max_attempts.into(), 1..=10_000)?;
        in_range(
            "reconciler.attention_after_minutes",
            r.attention_after_minutes,
            1..=525_600,
        )?;
        in_range(
            "reconciler.not_found_after_seconds",
            r.not_found_after_seconds,
            0..=604_800,
        )?;
        Ok(())
    }
}

/// `key` must lie in `range`.
fn in_range(
    key: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), (String, String)> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err((
            key.into(),
            format!("{value} is outside {}..={}", range.start(), range.end()),
        ))
    }
}

/// Free text that ends up in logs and request bodies: not empty, no control characters.
fn text_value(key: &str, v: &str, max: usize) -> Result<(), (String, String)> {
    if v.trim().is_empty() {
        return Err((key.into(), "must not be empty".into()));
    }
    if v.chars().any(char::is_control) {
        return Err((
            key.into(),
            "must not hold control characters (CR, LF, tab, escape)".into(),
        ));
    }
    if v.len() > max {
        return Err((key.into(), format!("is longer than {max} bytes")));
    }
    Ok(())
}

/// A value sent as an HTTP header: what the HTTP stack would refuse when building the
/// request (CR, LF and other control characters), refused here instead.
fn header_value(key: &str, v: &str, max: usize) -> Result<(), (String, String)> {
    text_value(key, v, max)?;
    if reqwest::header::HeaderValue::from_str(v).is_err() || !v.is_ascii() {
        return Err((
            key.into(),
            "is sent as an HTTP header: printable ASCII only".into(),
        ));
    }
    Ok(())
}

/// A file path: not empty, no NUL or line breaks (which only ever come from a mangled edit).
fn path_value(key: &str, p: &Path) -> Result<(), (String, String)> {
    let s = p.as_os_str().to_string_lossy();
    if s.trim().is_empty() {
        return Err((key.into(), "must not be empty".into()));
    }
    if s.chars().any(char::is_control) {
        return Err((key.into(), "must not hold control characters".into()));
    }
    Ok(())
}

/// `base_url`: https://host[:port] with nothing else; plain http only to this machine (the
/// simulator), because the access token and every signed payment would cross the network in
/// clear text.
pub fn check_base_url(base_url: &str) -> Result<(), String> {
    let shape = "must be https://host[:port] with no path, query or fragment (paths go in the \
                 *_path keys)";
    let url = url::Url::parse(base_url).map_err(|e| format!("{e}: {shape}"))?;
    let host = match url.host() {
        Some(h) if matches!(url.scheme(), "https" | "http") => h,
        _ => return Err(shape.into()),
    };
    let bare = url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && !base_url.trim_end_matches('/').ends_with('?');
    if !bare || base_url.trim_end_matches('/').matches('/').count() > 2 {
        return Err(shape.into());
    }
    if url.scheme() == "http" {
        let loopback = match host {
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
            url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        };
        if !loopback {
            return Err(format!(
                "plain http to {host} would send the access token and signed payments in clear \
                 text: use https (http is accepted only to 127.0.0.1, ::1 or localhost, for the \
                 simulator)"
            ));
        }
    }
    Ok(())
}

/// The key a GPIO line reference error is about.
fn line_key(has_line: bool, has_chip: bool) -> &'static str {
    match (has_line, has_chip) {
        (false, true) => "offset",
        _ => "line",
    }
}

/// A gpio relay's keys, each named on its own.
fn check_gpio_relay(
    at: &str,
    spec: &crate::relay::gpio::GpioRelaySpec,
) -> Result<(), (String, String)> {
    in_range(&format!("{at}.pulse_ms"), spec.pulse_ms, 20..=5_000)?;
    in_range(&format!("{at}.gap_ms"), spec.gap_ms, 20..=2_000)?;
    in_range(
        &format!("{at}.hold_timeout_ms"),
        spec.hold_timeout_ms,
        500..=60_000,
    )?;
    spec.validate().map_err(|e| {
        (
            format!(
                "{at}.{}",
                line_key(spec.line.is_some(), spec.chip.is_some())
            ),
            e.to_string(),
        )
    })
}

/// A semantic error at `key`, with the line and column of that key in `text`.
fn located(text: &str, path: &Path, key: String, message: String) -> ConfigError {
    let (line, column) = Locator::new(text)
        .offset_of(&key)
        .map(|o| line_col(text, o))
        .unzip();
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        key: Some(key),
        message,
    }
}

/// Turns a toml/serde error into file:line:column with the key the person must fix.
fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    // serde's words for a key beside `kind = "none"` / `"recording"`.
    let message = e
        .message()
        .trim()
        .replace("there are no fields", "this kind takes no other key");
    let loc = Locator::new(text);
    let mut key = match e.span() {
        Some(span) if loc.doc.is_some() => loc.key_at(span.start),
        // The text is not TOML at all: the key is whatever is left of `=` on that line.
        Some(span) => key_on_line(text, span.start),
        None => None,
    };
    // Values inside tagged tables (`kind = ...`) arrive without their own span: find the
    // value the message quotes among the table's keys.
    if let (Some(k), Some(v)) = (&key, quoted_value(&message)) {
        if let Some(inner) = loc.value_under(k, &v) {
            key = Some(inner);
        }
    }
    // serde names the field it missed or did not know; the span is the table around it.
    let field = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .filter(|f| !f.is_empty());
    // A whole missing section is missing from the top, whatever span serde gave.
    let top_level = ["station", "lane", "tariff", "journal", "aggregator"];
    if let Some(f) = field.filter(|f| {
        top_level.contains(f) && message.starts_with("missing") && loc.offset_of_exact(f).is_none()
    }) {
        key = Some(f.to_string());
    }
    if let Some(f) = field {
        let ends_with_field = key
            .as_deref()
            .is_some_and(|k| k == f || k.ends_with(&format!(".{f}")));
        if !ends_with_field {
            key = Some(match key {
                Some(k) if !k.is_empty() => format!("{k}.{f}"),
                _ => f.to_string(),
            });
        }
    }
    let offset = key
        .as_deref()
        .and_then(|k| loc.offset_of_exact(k))
        .or_else(|| e.span().map(|s| s.start));
    let (line, column) = offset.map(|o| line_col(text, o)).unzip();
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        key,
        message,
    }
}

/// The value an "invalid value" / "unknown variant" message quotes, as written in TOML.
fn quoted_value(message: &str) -> Option<String> {
    for prefix in [
        "unknown variant `",
        "integer `",
        "floating point `",
        "boolean `",
    ] {
        if let Some(rest) = message.split(prefix).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    message
        .split("string \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string)
}

/// For text the TOML parser rejects: the dotted key written on the line at `offset`, under
/// the table header in force there (`[[lane]]` headers counted for the index).
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let name = line.split_once('=')?.0.trim();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    let before = text.get(..start)?;
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    for l in before.lines().map(str::trim) {
        if let Some(h) = l.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            let h = h.trim().to_string();
            let n = counts.entry(h.clone()).or_insert(0);
            table = format!("{h}[{n}]");
            *n += 1;
        } else if let Some(h) = l.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = h.trim().to_string();
        }
    }
    Some(join(&table, name))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Maps dotted key paths (`lane[1].relay.pulse_ms`) to places in the text and back, from the
/// spans the TOML parser keeps.
struct Locator<'a> {
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

/// One step of a key path: a name and, for arrays, an index.
fn split_path(key: &str) -> Vec<(&str, Vec<usize>)> {
    key.split('.')
        .map(|seg| {
            let mut parts = seg.split('[');
            let name = parts.next().unwrap_or(seg);
            let idx = parts
                .filter_map(|p| p.trim_end_matches(']').parse().ok())
                .collect();
            (name, idx)
        })
        .collect()
}

fn contains(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator {
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    /// Where `key` is written, or else the nearest enclosing key or table that is (a missing
    /// key is reported at its table).
    fn offset_of(&self, key: &str) -> Option<usize> {
        self.walk(key).map(|(o, _)| o)
    }

    /// Where `key` itself is written, if it is.
    fn offset_of_exact(&self, key: &str) -> Option<usize> {
        self.walk(key).filter(|(_, full)| *full).map(|(o, _)| o)
    }

    fn walk(&self, key: &str) -> Option<(usize, bool)> {
        let doc = self.doc.as_ref()?;
        let mut table: &dyn toml_edit::TableLike = doc.as_table();
        let mut best: Option<usize> = None;
        let steps = split_path(key);
        for (n, (name, indices)) in steps.iter().enumerate() {
            let Some((k, item)) = table.get_key_value(name) else {
                return best.map(|b| (b, false));
            };
            best = k.span().map(|s| s.start).or(best);
            // Where the indices lead: a table (of an array of tables or inline) or a value.
            let mut next: Option<&dyn toml_edit::TableLike> = item.as_table_like();
            let mut value: Option<&toml_edit::Value> = item.as_value();
            for (d, i) in indices.iter().enumerate() {
                let aot = if d == 0 {
                    item.as_array_of_tables()
                } else {
                    None
                };
                if let Some(t) = aot.and_then(|aot| aot.get(*i)) {
                    if let Some(s) = t.span() {
                        best = Some(s.start);
                    }
                    next = Some(t);
                    value = None;
                } else if let Some(v) = value.and_then(|v| v.as_array()).and_then(|a| a.get(*i)) {
                    if let Some(s) = v.span() {
                        best = Some(s.start);
                    }
                    next = v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike);
                    value = Some(v);
                } else {
                    return best.map(|b| (b, false));
                }
            }
            if n + 1 == steps.len() {
                return best.map(|b| (b, true));
            }
            match next {
                Some(t) => table = t,
                None => return best.map(|b| (b, false)),
            }
        }
        best.map(|b| (b, false))
    }

    /// The path of the one value under `key` (a table or array) written as `value`.
    fn value_under(&self, key: &str, value: &str) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut found = Vec::new();
        collect_values(doc.as_table(), "", &mut found);
        let mut hits = found.into_iter().filter(|(p, v)| {
            (p.starts_with(&format!("{key}.")) || p.starts_with(&format!("{key}["))) && v == value
        });
        match (hits.next(), hits.next()) {
            (Some((p, _)), None) => Some(p),
            _ => None,
        }
    }

    /// The dotted path of the key or value written at `offset`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut best = None;
        find_in(doc.as_table(), "", offset, &mut best);
        best
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Depth-first search for the deepest key whose name or value covers `offset`.
fn find_in(
    table: &dyn toml_edit::TableLike,
    prefix: &str,
    offset: usize,
    best: &mut Option<String>,
) {
    for (name, _) in table.iter() {
        let Some((k, item)) = table.get_key_value(name) else {
            continue;
        };
        let path = join(prefix, name);
        if contains(k.span(), offset) {
            *best = Some(path);
            return;
        }
        match item {
            toml_edit::Item::Table(t) => {
                if contains(t.span(), offset) {
                    *best = Some(path.clone());
                }
                find_in(t, &path, offset, best);
            }
            toml_edit::Item::ArrayOfTables(aot) => {
                for (i, t) in aot.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if contains(t.span(), offset) {
                        *best = Some(p.clone());
                    }
                    find_in(t, &p, offset, best);
                }
            }
            toml_edit::Item::Value(v) => {
                if contains(v.span(), offset) {
                    *best = Some(path.clone());
                    find_in_value(v, &path, offset, best);
                }
            }
            toml_edit::Item::None => {}
        }
    }
}

/// Every scalar value with its path and its text (strings unquoted).
fn collect_values(table: &dyn toml_edit::TableLike, prefix: &str, out: &mut Vec<(String, String)>) {
    for (name, item) in table.iter() {
        let path = join(prefix, name);
        match item {
            toml_edit::Item::Table(t) => collect_values(t, &path, out),
            toml_edit::Item::ArrayOfTables(aot) => {
                for (i, t) in aot.iter().enumerate() {
                    collect_values(t, &format!("{path}[{i}]"), out);
                }
            }
            toml_edit::Item::Value(v) => collect_value(v, &path, out),
            toml_edit::Item::None => {}
        }
    }
}

fn collect_value(v: &toml_edit::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        toml_edit::Value::InlineTable(t) => collect_values(t, path, out),
        toml_edit::Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                collect_value(e, &format!("{path}[{i}]"), out);
            }
        }
        toml_edit::Value::String(s) => out.push((path.to_string(), s.value().clone())),
        toml_edit::Value::Integer(n) => out.push((path.to_string(), n.value().to_string())),
        toml_edit::Value::Float(f) => out.push((path.to_string(), f.value().to_string())),
        toml_edit::Value::Boolean(b) => out.push((path.to_string(), b.value().to_string())),
        toml_edit::Value::Datetime(d) => out.push((path.to_string(), d.value().to_string())),
    }
}

fn find_in_value(v: &toml_edit::Value, path: &str, offset: usize, best: &mut Option<String>) {
    match v {
        toml_edit::Value::InlineTable(t) => find_in(t, path, offset, best),
        toml_edit::Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                if contains(e.span(), offset) {
                    let p = format!("{path}[{i}]");
                    *best = Some(p.clone());
                    find_in_value(e, &p, offset, best);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/tapgate.toml");
    const DEMO: &str = include_str!("../config/demo.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("station.toml"))
    }

    #[test]
    fn shipped_configs_parse() {
        let c = parse(EXAMPLE).expect("annotated example");
        assert_eq!(c.station.id, "DKA");
        assert_eq!(c.lanes.len(), 2);
        assert_eq!(c.aggregator.payment_path, "/v1.0/qr/qr-cpm-payment");
        let d = parse(DEMO).expect("demo");
        assert_eq!(d.lanes[1].direction, crate::fare::Direction::Out);
        assert_eq!(d.policy.decision_deadline_ms, 800);
        for (name, text, lanes) in [
            (
                "entry-only",
                include_str!("../config/entry-only-brt.toml"),
                2,
            ),
            ("exit-only", include_str!("../config/exit-only-krl.toml"), 3),
            (
                "gate array",
                include_str!("../config/gate-array-distance.toml"),
                4,
            ),
        ] {
            let c = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.lanes.len(), lanes, "{name}");
        }
        assert_eq!(c.inputs.len(), 2);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = DEMO.replace("debounce_ms = 3000", "debounce_ms = 3000\ndebounse_ms = 10");
        let e = parse(&text).expect_err("typo must be rejected");
        let line = text
            .lines()
            .position(|l| l.starts_with("debounse_ms"))
            .map(|i| i + 1);
        assert_eq!(e.line, line);
        assert_eq!(e.key.as_deref(), Some("policy.debounse_ms"));
        assert!(e.message.contains("unknown field"), "{}", e.message);
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("station.toml:{}:", line.unwrap_or(0))),
            "{shown}"
        );
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = DEMO.replace(
            "decision_deadline_ms = 800",
            "decision_deadline_ms = \"fast\"",
        );
        let e = parse(&text).expect_err("string for a number");
        let line = text
            .lines()
            .position(|l| l.starts_with("decision_deadline_ms"))
            .map(|i| i + 1);
        assert_eq!(e.line, line);
    }

    #[test]
    fn bad_direction_is_rejected_with_its_line() {
        let text = DEMO.replace("direction = \"out\"", "direction = \"sideways\"");
        let e = parse(&text).expect_err("bad enum");
        assert!(
            e.message.contains("sideways") || e.message.contains("unknown variant"),
            "{}",
            e.message
        );
        let line = text
            .lines()
            .position(|l| l.contains("sideways"))
            .map(|i| i + 1);
        assert_eq!(e.line, line);
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let text = DEMO.replace("decision_deadline_ms = 800", "decision_deadline_ms = 5");
        let e = parse(&text).expect_err("deadline too short");
        assert_eq!(e.key.as_deref(), Some("policy.decision_deadline_ms"));
        let line = text
            .lines()
            .position(|l| l.starts_with("decision_deadline_ms"))
            .map(|i| i + 1);
        assert_eq!(e.line, line);

        let text = DEMO.replace("name = \"out-1\"", "name = \"in-1\"");
        let e = parse(&text).expect_err("duplicate lane");
        assert_eq!(e.key.as_deref(), Some("lane[1].name"));
        let second = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("name = \"in-1\""))
            .nth(1)
            .map(|(i, _)| i + 1);
        assert_eq!(e.line, second);

        let text = DEMO.replace(
            "base_url = \"http://127.0.0.1:8600\"",
            "base_url = \"http://h/v1.0\"",
        );
        let e = parse(&text).expect_err("path in base url");
        assert_eq!(e.key.as_deref(), Some("aggregator.base_url"));
        assert!(e.line.is_some());

        let text = DEMO.replace("id = \"BLM\"", "id = \"XYZ\"");
        let e = parse(&text).expect_err("station not in matrix");
        assert_eq!(e.key.as_deref(), Some("tariff.stations"));
    }

    #[test]
    fn missing_section_is_named() {
        let text: String = DEMO
            .split("[aggregator]")
            .next()
            .unwrap_or_default()
            .to_string();
        let e = parse(&text).expect_err("no aggregator");
        assert!(e.message.contains("aggregator"), "{}", e.message);
    }

    #[test]
    fn gpio_relays_and_inputs_parse_strictly() {
        let text = DEMO.replacen(
            "relay = { kind = \"recording\" }",
            "relay = { kind = \"gpio\", line = \"GATE1_RELAY\", active_low = true, pulse_ms = 400 }",
            1,
        ) + "\n[[input]]\nrole = \"emergency\"\nline = \"FIRE_ALARM\"\nactive_low = true\n";
        let c = parse(&text).expect("gpio relay and input");
        match &c.lanes[0].relay {
            RelayConfig::Gpio(spec) => {
                assert_eq!(spec.line.as_deref(), Some("GATE1_RELAY"));
                assert!(spec.active_low);
                assert_eq!(spec.pulse_ms, 400);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.inputs.len(), 1);

        let typo = DEMO.replacen(
            "relay = { kind = \"recording\" }",
            "relay = { kind = \"gpio\", line = \"GATE1_RELAY\", pulse = 400 }",
            1,
        );
        let e = parse(&typo).expect_err("unknown relay key");
        assert!(e.message.contains("pulse"), "{}", e.message);
        assert!(e.line.is_some());

        let bad_lane =
            DEMO.to_string() + "\n[[input]]\nrole = \"passage\"\nlane = \"in-9\"\nline = \"P\"\n";
        let e = parse(&bad_lane).expect_err("input for a missing lane");
        assert_eq!(e.key.as_deref(), Some("input[0].lane"));
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn secrets_resolve_against_the_config_folder() {
        let p = resolve_secret_path(Path::new("/abs/key.pem"), Path::new("/etc/tapgate"));
        assert_eq!(p, PathBuf::from("/abs/key.pem"));
    }

    /// The `n`-th (0-based) line that starts with `marker`.
    fn nth_line_of(text: &str, marker: &str, n: usize) -> Option<usize> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with(marker))
            .nth(n)
            .map(|(i, _)| i + 1)
    }

    /// One bad config: `(old, new)` edits of the annotated example, the key the error must
    /// name, and the line it must point at (the first line starting with `at`, its `nth`).
    struct Bad {
        edits: &'static [(&'static str, &'static str)],
        key: &'static str,
        at: &'static str,
        nth: usize,
    }

    const fn bad(
        edits: &'static [(&'static str, &'static str)],
        key: &'static str,
        at: &'static str,
    ) -> Bad {
        Bad {
            edits,
            key,
            at,
            nth: 0,
        }
    }

    const GPIO1: &str = "relay = { kind = \"gpio\", line = \"GATE1_RELAY\", active_low = false, mode = \"pulse\", pulse_ms = 300, gap_ms = 200 }";
    const OUT_RELAY: &str = "relay = { kind = \"gpio\", line = \"GATE2_RELAY\" }";
    const OUT_READER: &str =
        "card_source = { kind = \"pcsc\", reader = \"ACS ACR1252 1S CL Reader PICC 01*\" }";

    /// Every example of issue 9 item 6 and every key of the annotated example: the error
    /// names the key the person must fix, at its line.
    #[test]
    fn every_bad_key_is_named_with_its_line() {
        let cases: &[Bad] = &[
            // Serde-level errors: wrong type, range, enum, unknown and missing keys.
            bad(
                &[("pulse_ms = 300, ", "pulse_ms = -1, ")],
                "lane[0].relay.pulse_ms",
                GPIO1.split("pulse_ms").next().unwrap_or(""),
            ),
            bad(
                &[("client_id = \"YOUR-CLIENT-ID\"\n", "")],
                "aggregator.client_id",
                "[aggregator]",
            ),
            bad(
                &[("path = \"/var/lib/tapgate/journal.db\"\n", "")],
                "journal.path",
                "[journal]",
            ),
            bad(&[("id = \"DKA\"\n", "")], "station.id", "[station]"),
            Bad {
                edits: &[("direction = \"out\"\n", "")],
                key: "lane[1].direction",
                at: "[[lane]]",
                nth: 1,
            },
            Bad {
                edits: &[("direction = \"out\"", "direction = \"sideways\"")],
                key: "lane[1].direction",
                at: "direction = \"sideways\"",
                nth: 0,
            },
            bad(
                &[(
                    "decision_deadline_ms = 1500",
                    "decision_deadline_ms = \"fast\"",
                )],
                "policy.decision_deadline_ms",
                "decision_deadline_ms =",
            ),
            bad(
                &[("debounce_ms = 3000", "debounce_ms = -5")],
                "policy.debounce_ms",
                "debounce_ms = -5",
            ),
            bad(
                &[("anti_passback = \"refuse\"", "anti_passback = \"maybe\"")],
                "policy.anti_passback",
                "anti_passback =",
            ),
            bad(
                &[("unknown_at_exit = \"open\"", "unknown_at_exit = \"ajar\"")],
                "policy.unknown_at_exit",
                "unknown_at_exit =",
            ),
            bad(
                &[("stale_journey = \"max_fare\"", "stale_journey = \"forget\"")],
                "policy.stale_journey",
                "stale_journey =",
            ),
            bad(
                &[("feedback = \"off\"", "feedback = \"blinky\"")],
                "lane[0].card_source.feedback",
                "card_source =",
            ),
            bad(
                &[("mode = \"pulse\", ", "mode = \"wiggle\", ")],
                "lane[0].relay.mode",
                "relay =",
            ),
            bad(
                &[("bias = \"pull_up\"", "bias = \"pull_sideways\"")],
                "input[0].bias",
                "bias =",
            ),
            bad(
                &[("bias = \"pull_up\"", "pull = \"up\"")],
                "input[0].pull",
                "pull =",
            ),
            bad(
                &[("interval_ms = 1000", "interval_ms = 1000\nintervall_ms = 5")],
                "reconciler.intervall_ms",
                "intervall_ms",
            ),
            bad(&[("[metrics]", "[metric]")], "metric", "[metric]"),
            bad(
                &[("latitude = -6.2008", "latitude = \"south\"")],
                "station.latitude",
                "latitude =",
            ),
            bad(
                &[("max_body_bytes = 65536", "max_body_bytes = -1")],
                "aggregator.max_body_bytes",
                "max_body_bytes =",
            ),
            bad(
                &[(
                    "fares = [\n  [3000, 6000, 7000, 8000],",
                    "fares = [\n  [3000, 6000, -7000, 8000],",
                )],
                "tariff.fares[0][2]",
                "[3000, 6000, -7000",
            ),
            bad(&[("[6000, 3000, 3000, 3000],", "[6000, 3000, 3000.5, 3000],")], "tariff.fares[1][2]", "[6000, 3000, 3000.5"),
            // Keys beside kind = "none" / "recording" are refused, not swallowed.
            Bad {
                edits: &[(
                    OUT_READER,
                    "card_source = { kind = \"none\", reader = \"ACS*\" }",
                )],
                key: "lane[1].card_source.reader",
                at: "card_source = { kind = \"none\"",
                nth: 0,
            },
            Bad {
                edits: &[
                    (
                        OUT_RELAY,
                        "relay = { kind = \"recording\", line = \"GATE2_RELAY\" }",
                    ),
                    ("bench = false", "bench = true"),
                ],
                key: "lane[1].relay.line",
                at: "relay = { kind = \"recording\"",
                nth: 0,
            },
            // A recording relay (written, or the default when absent) needs station.bench.
            Bad {
                edits: &[(OUT_RELAY, "relay = { kind = \"recording\" }")],
                key: "lane[1].relay",
                at: "relay = { kind = \"recording\" }",
                nth: 0,
            },
            Bad {
                edits: &[(OUT_RELAY, "")],
                key: "lane[1].relay",
                at: "[[lane]]",
                nth: 1,
            },
            // Semantic checks, each key by name.
            bad(
                &[("id = \"DKA\"", "id = \"D-KA\"")],
                "station.id",
                "id = \"D-KA\"",
            ),
            bad(
                &[("name = \"Dukuh Atas\"", "name = \"Dukuh\\nAtas\"")],
                "station.name",
                "name = \"Dukuh",
            ),
            bad(
                &[("latitude = -6.2008", "latitude = 100.0")],
                "station.latitude",
                "latitude =",
            ),
            bad(
                &[("longitude = 106.8228", "longitude = nan")],
                "station.longitude",
                "longitude =",
            ),
            bad(
                &[(
                    "timezone = \"Asia/Jakarta\"",
                    "timezone = \"Asia/Jakartaa\"",
                )],
                "station.timezone",
                "timezone =",
            ),
            Bad {
                edits: &[("name = \"out-1\"", "name = \"in-1\"")],
                key: "lane[1].name",
                at: "name = \"in-1\"",
                nth: 1,
            },
            Bad {
                edits: &[("name = \"out-1\"", "name = \"out 1\"")],
                key: "lane[1].name",
                at: "name = \"out 1\"",
                nth: 0,
            },
            bad(
                &[(
                    "device_id = \"DKA-G01\"",
                    "device_id = \"DKA\\r\\nX-Evil: 1\"",
                )],
                "lane[0].device_id",
                "device_id =",
            ),
            bad(
                &[("tap_deadline_ms = 1500", "tap_deadline_ms = 0")],
                "lane[0].card_source.tap_deadline_ms",
                "card_source =",
            ),
            Bad {
                edits: &[(
                    OUT_READER,
                    "card_source = { kind = \"pcsc\", reader = \" \" }",
                )],
                key: "lane[1].card_source.reader",
                at: "card_source = { kind = \"pcsc\", reader = \" \"",
                nth: 0,
            },
            bad(
                &[("pulse_ms = 300, ", "pulse_ms = 10, ")],
                "lane[0].relay.pulse_ms",
                "relay =",
            ),
            bad(
                &[("gap_ms = 200 }", "gap_ms = 5000 }")],
                "lane[0].relay.gap_ms",
                "relay =",
            ),
            bad(
                &[("line = \"GATE1_RELAY\", ", "")],
                "lane[0].relay.line",
                "relay =",
            ),
            bad(
                &[(
                    "fares = [\n  [3000, 6000, 7000, 8000],",
                    "fares = [\n  [3000, 6000, 1000000000000000, 8000],",
                )],
                "tariff.fares[0]",
                "[3000, 6000, 1000000000000000",
            ),
            bad(
                &[("[7000, 3000, 3000, 3000],", "[7000, 3000, 3000],")],
                "tariff.fares[2]",
                "[7000, 3000, 3000],",
            ),
            bad(
                &[("[8000, 3000, 3000, 3000],", "[8000, 3000, 3000, 0],")],
                "tariff.fares[3]",
                "[8000, 3000, 3000, 0]",
            ),
            bad(
                &[(
                    "stations = [\"BLM\", \"STB\", \"DKA\", \"BHI\"]",
                    "stations = [\"BLM\", \"BLM\", \"DKA\", \"BHI\"]",
                )],
                "tariff.stations[1]",
                "stations =",
            ),
            bad(
                &[(
                    "stations = [\"BLM\", \"STB\", \"DKA\", \"BHI\"]",
                    "stations = [\"BLM\", \"STB\", \"DKI\", \"BHI\"]",
                )],
                "tariff.stations",
                "stations =",
            ),
            bad(
                &[("decision_deadline_ms = 1500", "decision_deadline_ms = 5")],
                "policy.decision_deadline_ms",
                "decision_deadline_ms =",
            ),
            bad(
                &[("max_trip_minutes = 240", "max_trip_minutes = 0")],
                "policy.max_trip_minutes",
                "max_trip_minutes =",
            ),
            bad(
                &[("passage_window_ms = 8000", "passage_window_ms = 0")],
                "policy.passage_window_ms",
                "passage_window_ms =",
            ),
            bad(
                &[("debounce_ms = 3000", "debounce_ms = 18446744073709551615")],
                "policy.debounce_ms",
                "debounce_ms = 1844",
            ),
            bad(
                &[(
                    "path = \"/var/lib/tapgate/journal.db\"",
                    "path = \"/var/lib/tapgate/\"",
                )],
                "journal.path",
                "path = \"/var/lib/tapgate/\"",
            ),
            bad(
                &[(
                    "passenger_key_file = \"/var/lib/tapgate/passenger.key\"",
                    "passenger_key_file = \"\"",
                )],
                "journal.passenger_key_file",
                "passenger_key_file =",
            ),
            bad(
                &[(
                    "base_url = \"https://sandbox.aggregator.example\"",
                    "base_url = \"https://sandbox.aggregator.example/?x=1\"",
                )],
                "aggregator.base_url",
                "base_url =",
            ),
            bad(
                &[(
                    "base_url = \"https://sandbox.aggregator.example\"",
                    "base_url = \"https://sandbox.aggregator.example#top\"",
                )],
                "aggregator.base_url",
                "base_url =",
            ),
            bad(
                &[(
                    "base_url = \"https://sandbox.aggregator.example\"",
                    "base_url = \"https://user:pw@sandbox.aggregator.example\"",
                )],
                "aggregator.base_url",
                "base_url =",
            ),
            bad(
                &[(
                    "base_url = \"https://sandbox.aggregator.example\"",
                    "base_url = \"https://sandbox.aggregator.example/v1.0\"",
                )],
                "aggregator.base_url",
                "base_url =",
            ),
            bad(
                &[(
                    "base_url = \"https://sandbox.aggregator.example\"",
                    "base_url = \"ftp://sandbox.aggregator.example\"",
                )],
                "aggregator.base_url",
                "base_url =",
            ),
            bad(
                &[(
                    "base_url = \"https://sandbox.aggregator.example\"",
                    "base_url = \"http://sandbox.aggregator.example\"",
                )],
                "aggregator.base_url",
                "base_url =",
            ),
            bad(
                &[(
                    "base_url = \"https://sandbox.aggregator.example\"",
                    "base_url = \"http://10.20.1.1:8600\"",
                )],
                "aggregator.base_url",
                "base_url =",
            ),
            bad(
                &[(
                    "client_id = \"YOUR-CLIENT-ID\"",
                    "client_id = \"ID\\r\\nX-Evil: 1\"",
                )],
                "aggregator.client_id",
                "client_id =",
            ),
            bad(
                &[("partner_id = \"YOUR-PARTNER-ID\"", "partner_id = \"P\\n\"")],
                "aggregator.partner_id",
                "partner_id =",
            ),
            bad(
                &[("channel_id = \"95221\"", "channel_id = \"\"")],
                "aggregator.channel_id",
                "channel_id =",
            ),
            bad(
                &[(
                    "merchant_id = \"YOUR-MERCHANT-ID\"",
                    "merchant_id = \"M\\u001b[2J\"",
                )],
                "aggregator.merchant_id",
                "merchant_id =",
            ),
            bad(
                &[("sub_merchant_id = \"DKA\"", "sub_merchant_id = \"\"")],
                "aggregator.sub_merchant_id",
                "sub_merchant_id =",
            ),
            bad(
                &[("# terminal_id = \"DKA-G01\"", "terminal_id = \"T\\r\"")],
                "aggregator.terminal_id",
                "terminal_id =",
            ),
            bad(
                &[(
                    "# origin = \"https://gates.operator.example\"",
                    "origin = \"https://o.example\\r\\nX: y\"",
                )],
                "aggregator.origin",
                "origin =",
            ),
            bad(
                &[("device_ip = \"10.20.1.11\"", "device_ip = \"gate one\"")],
                "aggregator.device_ip",
                "device_ip =",
            ),
            bad(
                &[(
                    "client_secret_file = \"aggregator-client-secret\"",
                    "client_secret_file = \"\"",
                )],
                "aggregator.client_secret_file",
                "client_secret_file =",
            ),
            bad(
                &[("connect_timeout_ms = 1500", "connect_timeout_ms = 0")],
                "aggregator.connect_timeout_ms",
                "connect_timeout_ms =",
            ),
            bad(
                &[("request_timeout_ms = 5000", "request_timeout_ms = 1000")],
                "aggregator.connect_timeout_ms",
                "connect_timeout_ms =",
            ),
            bad(
                &[("max_body_bytes = 65536", "max_body_bytes = 0")],
                "aggregator.max_body_bytes",
                "max_body_bytes =",
            ),
            bad(
                &[(
                    "payment_path = \"/v1.0/qr/qr-cpm-payment\"",
                    "payment_path = \"/v1.0/qr/qr cpm-payment\"",
                )],
                "aggregator.payment_path",
                "payment_path =",
            ),
            bad(
                &[(
                    "query_path = \"/v1.0/qr/qr-cpm-query\"",
                    "query_path = \"v1.0/qr/qr-cpm-query\"",
                )],
                "aggregator.query_path",
                "query_path =",
            ),
            bad(
                &[(
                    "refund_path = \"/v1.0/qr/qr-cpm-refund\"",
                    "refund_path = \"/v1.0/refund?x=1\"",
                )],
                "aggregator.refund_path",
                "refund_path =",
            ),
            bad(
                &[(
                    "token_path = \"/v1.0/access-token/b2b\"",
                    "token_path = \"/v1.0/tokén\"",
                )],
                "aggregator.token_path",
                "token_path =",
            ),
            bad(
                &[("listen = \"127.0.0.1:9464\"", "listen = \"localhost:9464\"")],
                "metrics.listen",
                "listen =",
            ),
            bad(
                &[("listen = \"127.0.0.1:9464\"", "listen = \"9464\"")],
                "metrics.listen",
                "listen =",
            ),
            bad(
                &[("interval_ms = 1000", "interval_ms = 0")],
                "reconciler.interval_ms",
                "interval_ms =",
            ),
            bad(
                &[("backoff_base_ms = 2000", "backoff_base_ms = 0")],
                "reconciler.backoff_base_ms",
                "backoff_base_ms =",
            ),
            bad(
                &[("backoff_cap_ms = 300000", "backoff_cap_ms = 1000")],
                "reconciler.backoff_cap_ms",
                "backoff_cap_ms =",
            ),
            bad(
                &[("max_attempts = 30", "max_attempts = 0")],
                "reconciler.max_attempts",
                "max_attempts =",
            ),
            bad(
                &[(
                    "attention_after_minutes = 1440",
                    "attention_after_minutes = 0",
                )],
                "reconciler.attention_after_minutes",
                "attention_after_minutes =",
            ),
            bad(
                &[(
                    "not_found_after_seconds = 120",
                    "not_found_after_seconds = 99999999",
                )],
                "reconciler.not_found_after_seconds",
                "not_found_after_seconds =",
            ),
            bad(
                &[("debounce_ms = 20", "debounce_ms = 5000")],
                "input[0].debounce_ms",
                "debounce_ms = 5000",
            ),
            bad(
                &[("line = \"FIRE_ALARM\"\n", "")],
                "input[0].line",
                "[[input]]",
            ),
            Bad {
                edits: &[(
                    "lane = \"in-1\"\nline = \"GATE1_PASSAGE\"",
                    "lane = \"in-9\"\nline = \"GATE1_PASSAGE\"",
                )],
                key: "input[1].lane",
                at: "lane = \"in-9\"",
                nth: 0,
            },
            Bad {
                edits: &[(
                    "lane = \"in-1\"\nline = \"GATE1_PASSAGE\"",
                    "line = \"GATE1_PASSAGE\"",
                )],
                key: "input[1].lane",
                at: "[[input]]",
                nth: 1,
            },
            // Keys the cases above leave out, so that every key of the example is covered.
            bad(&[("bench = false", "bench = \"yes\"")], "station.bench", "bench ="),
            Bad { edits: &[(OUT_RELAY, "relay = { kind = \"gpio\", chip = \"gpiochip0\" }")], key: "lane[1].relay.offset", at: "relay = { kind = \"gpio\", chip", nth: 0 },
            Bad { edits: &[(OUT_RELAY, "relay = { kind = \"gpio\", line = \"G2\", mode = \"hold_until_passage\", hold_timeout_ms = 100 }")], key: "lane[1].relay.hold_timeout_ms", at: "relay = { kind = \"gpio\", line = \"G2\"", nth: 0 },
            Bad { edits: &[(OUT_RELAY, "relay = { kind = \"gpio\", line = \"G2\", active_low = 1 }")], key: "lane[1].relay.active_low", at: "relay = { kind = \"gpio\", line = \"G2\"", nth: 0 },
            Bad { edits: &[(OUT_RELAY, "relay = { kind = \"solenoid\" }")], key: "lane[1].relay.kind", at: "relay = { kind = \"solenoid\"", nth: 0 },
            Bad { edits: &[(OUT_READER, "card_source = { kind = \"usb\" }")], key: "lane[1].card_source.kind", at: "card_source = { kind = \"usb\"", nth: 0 },
            bad(&[("kind = \"matrix\"\nstations", "kind = \"zone\"\nstations")], "tariff.kind", "kind = \"zone\""),
            bad(&[("kind = \"matrix\"\nstations", "kind = \"flat\"\nfare = 0\nstations")], "tariff.stations", "stations ="),
            bad(&[("role = \"emergency\"", "role = \"smoke\"")], "input[0].role", "role = \"smoke\""),
            bad(&[("active_low = true\n# Kernel", "active_low = \"yes\"\n# Kernel")], "input[0].active_low", "active_low = \"yes\""),
            Bad { edits: &[("line = \"GATE1_PASSAGE\"", "chip = \"gpiochip0\"")], key: "input[1].offset", at: "[[input]]", nth: 1 },
        ];
        let mut failures = Vec::new();
        for c in cases {
            let mut text = EXAMPLE.to_string();
            for (old, new) in c.edits {
                assert!(text.contains(old), "edit {old:?} does not apply");
                text = text.replacen(old, new, 1);
            }
            let want_line = nth_line_of(&text, c.at, c.nth);
            assert!(
                want_line.is_some(),
                "{}: no line starts with {:?}",
                c.key,
                c.at
            );
            match parse(&text) {
                Ok(_) => failures.push(format!("{}: accepted", c.key)),
                Err(e) => {
                    let shown = e.to_string();
                    let want = format!("station.toml:{}:", want_line.unwrap_or(0));
                    if e.key.as_deref() != Some(c.key)
                        || e.line != want_line
                        || !shown.starts_with(&want)
                        || !shown.contains(&format!("key `{}`", c.key))
                    {
                        failures.push(format!("{}: want line {want_line:?}, got {shown}", c.key));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} wrong:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn flat_fares_are_bounded() {
        let flat = |fare: &str| {
            let start = EXAMPLE.find("kind = \"matrix\"\nstations").unwrap_or(0);
            let end = EXAMPLE.find("[policy]").unwrap_or(0);
            format!(
                "{}kind = \"flat\"\nfare = {fare}\n\n{}",
                &EXAMPLE[..start],
                &EXAMPLE[end..]
            )
        };
        assert!(parse(&flat("3500")).is_ok());
        assert!(parse(&flat(&MAX_FARE.to_string())).is_ok());
        for bad in ["0", "1000000000000000", "10000001"] {
            let text = flat(bad);
            let e = parse(&text).expect_err(bad);
            assert_eq!(e.key.as_deref(), Some("tariff.fare"), "{bad}: {e}");
            let line = text
                .lines()
                .position(|l| l.starts_with("fare ="))
                .map(|i| i + 1);
            assert_eq!(e.line, line, "{bad}: {e}");
        }
    }

    #[test]
    fn a_missing_section_is_named_alone_even_when_the_file_starts_with_a_table() {
        let text = &DEMO[DEMO.find("[station]").unwrap_or(0)..];
        for section in ["[aggregator]", "[journal]"] {
            let start = text.find(section).unwrap_or(0);
            let end = text[start + 1..]
                .find("\n[")
                .map_or(text.len(), |e| start + 1 + e + 1);
            let cut = format!("{}{}", &text[..start], &text[end..]);
            let e = parse(&cut).expect_err(section);
            let name = section.trim_matches(|c| c == '[' || c == ']');
            assert_eq!(e.key.as_deref(), Some(name), "{e}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://aggregator.example",
            "https://aggregator.example:8443/",
            "http://127.0.0.1:8600",
            "http://127.9.9.9",
            "http://[::1]:8600",
            "http://localhost:8600",
            "http://LOCALHOST",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://aggregator.example",
            "http://10.0.0.1:8600",
            "http://[fe80::1]",
            "http://localhost.evil.example",
            "http://128.0.0.1",
            "http://0.0.0.0:8600",
        ] {
            let e = check_base_url(bad).expect_err(bad);
            assert!(e.contains("clear text"), "{bad}: {e}");
        }
    }

    #[test]
    fn reconciler_interval_has_a_floor() {
        for (v, ok) in [
            (0, false),
            (1, false),
            (MIN_RECONCILER_INTERVAL_MS - 1, false),
            (MIN_RECONCILER_INTERVAL_MS, true),
            (1000, true),
        ] {
            let text = EXAMPLE.replace("interval_ms = 1000", &format!("interval_ms = {v}"));
            match parse(&text) {
                Ok(c) => {
                    assert!(ok, "interval_ms = {v} accepted");
                    assert_eq!(c.reconciler.interval_ms, v);
                }
                Err(e) => {
                    assert!(!ok, "interval_ms = {v}: {e}");
                    assert_eq!(e.key.as_deref(), Some("reconciler.interval_ms"));
                    assert!(
                        e.message.contains(&MIN_RECONCILER_INTERVAL_MS.to_string()),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn bench_allows_recording_relays() {
        let text = EXAMPLE
            .replace(
                "relay = { kind = \"gpio\", line = \"GATE2_RELAY\" }",
                "relay = { kind = \"recording\" }",
            )
            .replace("bench = false", "bench = true");
        let c = parse(&text).expect("bench rig");
        assert!(matches!(c.lanes[1].relay, RelayConfig::Recording));
        let none = text.replace(
            "card_source = { kind = \"pcsc\", reader = \"ACS ACR1252 1S CL Reader PICC 01*\" }",
            "card_source = { kind = \"none\" }",
        );
        let c = parse(&none).expect("kind none alone");
        assert!(matches!(c.lanes[1].card_source, CardSourceConfig::None));
    }

    #[test]
    fn relative_paths_resolve_beside_the_config() {
        let mut c = parse(DEMO).expect("demo");
        c.resolve_paths(Path::new("/etc/tapgate"));
        assert_eq!(
            c.journal.path,
            PathBuf::from("/etc/tapgate/demo-journal.db")
        );
        assert_eq!(
            c.journal.passenger_key_path(),
            PathBuf::from("/etc/tapgate/passenger.key")
        );
        let mut c = parse(EXAMPLE).expect("example");
        c.resolve_paths(Path::new("/elsewhere"));
        assert_eq!(c.journal.path, PathBuf::from("/var/lib/tapgate/journal.db"));
        assert_eq!(
            config_dir(Path::new("station.toml")),
            std::env::current_dir().unwrap().canonicalize().unwrap()
        );
    }

    #[test]
    fn indonesian_zones_resolve_from_the_bundled_database() {
        for name in ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"] {
            let tz = jiff::tz::TimeZoneDatabase::bundled()
                .get(name)
                .unwrap_or_else(|e| panic!("{name} not bundled: {e}"));
            assert_eq!(tz.iana_name(), Some(name));
        }
        let e = resolve_time_zone("Asia/Atlantis").expect_err("no such zone");
        assert!(
            e.contains("built into tapgate") && e.contains("Asia/Jakarta"),
            "{e}"
        );
    }
}
