//! Per-station configuration: TOML, typed, strict (unknown keys are errors), defaults in code,
//! a semantic check after parsing, and errors that name the file, line and key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
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

/// `[lane.relay]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum RelayConfig {
    /// Records commands instead of driving hardware (bench, demo, certification runs).
    #[default]
    Recording,
    /// A relay on a GPIO line (character device, uAPI v2).
    Gpio(crate::relay::gpio::GpioRelaySpec),
}

/// `[tariff]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum TariffConfig {
    /// One fare for every trip (bus rapid transit).
    Flat {
        /// The fare, whole rupiah.
        fare: u64,
    },
    /// Station-to-station matrix: `fares[i][j]` is the fare from `stations[i]` to `stations[j]`.
    Matrix {
        /// Station codes in matrix order; must include this station's id.
        stations: Vec<String>,
        /// Square matrix of whole-rupiah fares; the diagonal is the same-station exit fare.
        fares: Vec<Vec<u64>>,
    },
}

/// What to do with a tap-in while the passenger already has an open journey.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AntiPassback {
    /// Refuse the tap-in; staff resolve it.
    #[default]
    Refuse,
    /// Close the old journey at the maximum fare (its hold stands), then accept the tap-in.
    CloseAtMaxFare,
}

/// What an exit gate does when the payment's outcome is unknown at the deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownAtExit {
    /// Let the passenger out; the reconciler settles the money later.
    #[default]
    Open,
    /// Keep the gate shut; the passenger taps again.
    KeepClosed,
}

/// What the reconciler does with a tap-in that never saw a tap-out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleJourney {
    /// Close it at the maximum fare (the hold is kept).
    #[default]
    MaxFare,
    /// Release it: refund the hold.
    Release,
}

/// `[policy]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// How long the gate waits for the aggregator before telling the passenger to try again;
    /// a success arriving later is refunded (tap-in). Milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub decision_deadline_ms: u64,
    /// The same passenger at the same lane within this window is the same tap. Milliseconds.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Tap-in while a journey is open.
    #[serde(default)]
    pub anti_passback: AntiPassback,
    /// Exit gate behaviour when the outcome is unknown at the deadline.
    #[serde(default)]
    pub unknown_at_exit: UnknownAtExit,
    /// A journey open longer than this is stale. Minutes.
    #[serde(default = "default_max_trip_minutes")]
    pub max_trip_minutes: u64,
    /// What happens to a stale journey.
    #[serde(default)]
    pub stale_journey: StaleJourney,
    /// A paid open with no passage reported within this window is logged ("nobody passed").
    /// Milliseconds; only meaningful with a passage input.
    #[serde(default = "default_passage_window_ms")]
    pub passage_window_ms: u64,
}

fn default_passage_window_ms() -> u64 {
    8000
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            decision_deadline_ms: default_deadline_ms(),
            debounce_ms: default_debounce_ms(),
            anti_passback: AntiPassback::default(),
            unknown_at_exit: UnknownAtExit::default(),
            max_trip_minutes: default_max_trip_minutes(),
            stale_journey: StaleJourney::default(),
            passage_window_ms: default_passage_window_ms(),
        }
    }
}

fn default_deadline_ms() -> u64 {
    1500
}
fn default_debounce_ms() -> u64 {
    3000
}
fn default_max_trip_minutes() -> u64 {
    240
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

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        cfg.check().map_err(|(key, message)| {
            let (line, column) = locate_key(text, &key).unzip();
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                key: Some(key),
                message,
            }
        })?;
        Ok(cfg)
    }

    /// The station's time zone (checked by [`Config::parse`]).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.station.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// The lane called `name`.
    pub fn lane(&self, name: &str) -> Option<&LaneConfig> {
        self.lanes.iter().find(|l| l.name == name)
    }

    /// Semantic checks: returns (key path, message) for the first problem.
    fn check(&self) -> Result<(), (String, String)> {
        let s = &self.station;
        if s.id.is_empty() || s.id.len() > 16 || !s.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(("station.id".into(), "must be 1-16 letters or digits".into()));
        }
        if !(-90.0..=90.0).contains(&s.latitude) {
            return Err(("station.latitude".into(), "must be within -90..90".into()));
        }
        if !(-180.0..=180.0).contains(&s.longitude) {
            return Err((
                "station.longitude".into(),
                "must be within -180..180".into(),
            ));
        }
        if jiff::tz::TimeZone::get(&s.timezone).is_err() {
            return Err((
                "station.timezone".into(),
                format!("unknown time zone {:?} (e.g. Asia/Jakarta)", s.timezone),
            ));
        }
        if self.lanes.is_empty() {
            return Err(("lane".into(), "at least one [[lane]] is needed".into()));
        }
        for (i, lane) in self.lanes.iter().enumerate() {
            if lane.name.is_empty()
                || !lane
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err((
                    format!("lane[{i}].name"),
                    "must be letters, digits, - or _".into(),
                ));
            }
            if self.lanes[..i].iter().any(|l| l.name == lane.name) {
                return Err((
                    format!("lane[{i}].name"),
                    format!("lane {:?} is defined twice", lane.name),
                ));
            }
            if let RelayConfig::Gpio(spec) = &lane.relay {
                spec.validate()
                    .map_err(|e| (format!("lane[{i}].relay"), e.to_string()))?;
            }
            if let CardSourceConfig::Pcsc { reader, .. } = &lane.card_source {
                if reader.trim().is_empty() {
                    return Err((
                        format!("lane[{i}].card_source.reader"),
                        "reader pattern is empty".into(),
                    ));
                }
            }
        }
        for (i, input) in self.inputs.iter().enumerate() {
            input
                .validate()
                .map_err(|e| (format!("input[{i}].line"), e.to_string()))?;
            if let Some(lane) = &input.lane {
                if self.lane(lane).is_none() {
                    return Err((
                        format!("input[{i}].lane"),
                        format!("no [[lane]] named {lane:?}"),
                    ));
                }
            }
        }
        match &self.tariff {
            TariffConfig::Flat { fare } => {
                if *fare == 0 {
                    return Err(("tariff.fare".into(), "must be above zero".into()));
                }
            }
            TariffConfig::Matrix { stations, fares } => {
                if !stations.contains(&s.id) {
                    return Err((
                        "tariff.stations".into(),
                        format!("does not list this station ({})", s.id),
                    ));
                }
                if fares.len() != stations.len() || fares.iter().any(|r| r.len() != stations.len())
                {
                    return Err((
                        "tariff.fares".into(),
                        format!(
                            "must be a {n}x{n} matrix (one row and column per station)",
                            n = stations.len()
                        ),
                    ));
                }
                if fares.iter().flatten().any(|f| *f == 0) {
                    return Err(("tariff.fares".into(), "fares must be above zero".into()));
                }
            }
        }
        let p = &self.policy;
        if !(100..=30_000).contains(&p.decision_deadline_ms) {
            return Err((
                "policy.decision_deadline_ms".into(),
                "must be between 100 and 30000".into(),
            ));
        }
        if p.max_trip_minutes == 0 {
            return Err((
                "policy.max_trip_minutes".into(),
                "must be above zero".into(),
            ));
        }
        let a = &self.aggregator;
        let scheme_ok = a.base_url.starts_with("https://") || a.base_url.starts_with("http://");
        if !scheme_ok || a.base_url.trim_end_matches('/').matches('/').count() > 2 {
            return Err((
                "aggregator.base_url".into(),
                "must be scheme://host[:port] with no path (paths go in the *_path keys)".into(),
            ));
        }
        for (key, v) in [
            ("aggregator.client_id", &a.client_id),
            ("aggregator.partner_id", &a.partner_id),
            ("aggregator.merchant_id", &a.merchant_id),
            ("aggregator.channel_id", &a.channel_id),
        ] {
            if v.trim().is_empty() {
                return Err((key.into(), "must not be empty".into()));
            }
        }
        for (key, v) in [
            ("aggregator.token_path", &a.token_path),
            ("aggregator.payment_path", &a.payment_path),
            ("aggregator.query_path", &a.query_path),
            ("aggregator.refund_path", &a.refund_path),
        ] {
            if !v.starts_with('/') {
                return Err((key.into(), "must start with /".into()));
            }
        }
        if a.connect_timeout_ms == 0 || a.request_timeout_ms == 0 {
            return Err((
                "aggregator.request_timeout_ms".into(),
                "timeouts must be above zero".into(),
            ));
        }
        if a.connect_timeout_ms >= a.request_timeout_ms {
            return Err((
                "aggregator.connect_timeout_ms".into(),
                "must be shorter than request_timeout_ms (a slow connect would count as an unknown outcome)".into(),
            ));
        }
        Ok(())
    }
}

/// Turns a toml/serde error into file:line:column with the key it names.
fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let (line, column, key) = match e.span() {
        Some(span) => {
            let (l, c) = line_col(text, span.start);
            let snippet = text.get(span.clone()).unwrap_or("").trim();
            let key = if !snippet.is_empty()
                && snippet.len() < 64
                && snippet
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                Some(snippet.to_string())
            } else {
                table_at(text, span.start)
            };
            (Some(l), Some(c), key)
        }
        None => (None, None, None),
    };
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        key,
        message: e.message().trim().to_string(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The `[table]` header in force at `offset`.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset).unwrap_or(text);
    before.lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').to_string())
    })
}

/// Finds the line and column of a dotted key path such as `lane[1].relay.kind` or
/// `policy.debounce_ms` in the text, by walking table headers. Best effort: semantic errors
/// still name the key when the line cannot be found.
fn locate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    // Split `lane[1].card_source.reader` into table path ["lane[1]", "card_source"] and leaf.
    let parts: Vec<&str> = key.split('.').collect();
    let (leaf, tables) = parts.split_last()?;
    let mut want: Vec<(String, Option<usize>)> = Vec::new();
    for t in tables {
        match t.split_once('[') {
            Some((name, idx)) => {
                want.push((name.to_string(), idx.trim_end_matches(']').parse().ok()));
            }
            None => want.push((t.to_string(), None)),
        }
    }
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut current: Vec<(String, Option<usize>)> = Vec::new();
    let leaf_name = leaf.split('[').next().unwrap_or(leaf);
    for (n, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(h) = l.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            let h = h.trim().to_string();
            let c = counts.entry(h.clone()).or_insert(0);
            let idx = *c;
            *c += 1;
            current = h.split('.').map(|p| (p.trim().to_string(), None)).collect();
            if let Some(first) = current.first_mut() {
                first.1 = Some(idx);
            }
            if tables.is_empty() && h == leaf_name {
                return Some((n + 1, 1));
            }
            continue;
        }
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.split(']').next()) {
            let h = h.trim();
            let mut new: Vec<(String, Option<usize>)> = Vec::new();
            for (i, p) in h.split('.').enumerate() {
                let idx = if i == 0 && counts.contains_key(p) {
                    counts.get(p).map(|c| c.saturating_sub(1))
                } else {
                    None
                };
                new.push((p.trim().to_string(), idx));
            }
            current = new;
            continue;
        }
        let key_here = l.split('=').next().map(str::trim).unwrap_or("");
        if l.contains('=') && key_here == *leaf && matches_path(&current, &want) {
            let col = raw.len() - raw.trim_start().len() + 1;
            return Some((n + 1, col));
        }
        // Inline tables: `card_source = { kind = "pcsc", reader = "..." }`.
        if l.contains('=')
            && want.len() == current.len() + 1
            && matches_path(&current, &want[..current.len()])
        {
            if let Some(last) = want.last() {
                if key_here == last.0 && l.contains(&format!("{leaf} ")) {
                    let col = raw.find(leaf).map_or(1, |c| c + 1);
                    return Some((n + 1, col));
                }
            }
        }
    }
    None
}

fn matches_path(current: &[(String, Option<usize>)], want: &[(String, Option<usize>)]) -> bool {
    current.len() == want.len()
        && current
            .iter()
            .zip(want)
            .all(|(c, w)| c.0 == w.0 && (w.1.is_none() || c.1 == w.1))
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
        assert_eq!(e.key.as_deref(), Some("debounse_ms"));
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
}
