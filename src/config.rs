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
