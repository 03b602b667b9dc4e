//! A simulated passenger wallet: pays a merchant-presented QRIS through the aggregator's
//! Linkage H2H API, as a linked wallet app's backend would, and checks the payment's status.
//!
//! [`Wallet::pay`] reads the QR (amount, merchant, reference), takes a B2B token
//! (`access-token/b2b`, RSA) and a B2B2C customer token (`access-token/b2b2c`, the linked
//! customer's `authCode`), and sends `qr-mpm-payment` with every Linkage header
//! (`Authorization`, `Authorization-Customer`, `X-TIMESTAMP`, `X-PARTNER-ID`, HMAC
//! `X-SIGNATURE`, `X-EXTERNAL-ID`, `CHANNEL-ID`, `ORIGIN`, `X-IP-ADDRESS`, `X-DEVICE-ID`,
//! `X-LATITUDE`, `X-LONGITUDE`); [`Wallet::query`] sends `qr-mpm-query` with `serviceCode`
//! `54`. The steps are public too ([`Wallet::payment_call`] builds a signed call,
//! [`Wallet::send`] sends it), so a test can take a header away and see the refusal.
//!
//! The simulator has one partner, so the wallet signs with the same credentials as the gate
//! (a real wallet is a partner of its own). It has no QR-verification step: the wallet sends
//! `VRF` + the QR's reference as `verificationId`. It speaks plain HTTP only, like the
//! simulator.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::clock::{Clock, SystemClock};
use crate::mpm_qr::{self, MpmQr, MpmQrError};
use crate::snap::sign::{self, RsaSigner};
use crate::SimPaths;

/// Why a wallet step failed.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The base URL or a callback is not `http://host[:port][/path]`.
    #[error("URL {url:?}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What was wrong.
        why: &'static str,
    },
    /// The QR is not a QRIS MPM string.
    #[error("not a QRIS MPM: {0}")]
    Qr(#[from] MpmQrError),
    /// The QR lacks what a payment needs.
    #[error("the QR has no {0}: a dynamic QRIS from the gate carries it")]
    QrIncomplete(&'static str),
    /// The private key does not load.
    #[error("private key: {0}")]
    Key(String),
    /// No HTTP answer: connection, timeout, or an unreadable body.
    #[error("{0}")]
    Http(String),
    /// The aggregator answered, but not with success.
    #[error("{step} refused: HTTP {status}, {code} {message}")]
    Refused {
        /// Which step.
        step: &'static str,
        /// HTTP status.
        status: u16,
        /// `responseCode`.
        code: String,
        /// `responseMessage`.
        message: String,
    },
    /// A success answer without a field the wallet needs.
    #[error("{step} answer has no {field}")]
    Answer {
        /// Which step.
        step: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

/// `http://host[:port]` and the path after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host[:port]` as written (the `Host` header).
    pub authority: String,
    /// The path, `/` at least (query string included if any).
    pub path: String,
}

impl HttpUrl {
    /// Reads an `http://` URL; `https://` is refused (the simulator speaks no TLS).
    pub fn parse(url: &str) -> Result<HttpUrl, WalletError> {
        let bad = |why| WalletError::Url {
            url: url.to_string(),
            why,
        };
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .and_then(|_| url.get(7..))
            .ok_or_else(|| bad("not http:// (the simulator speaks plain HTTP only)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return Err(bad("no host, or credentials in the URL"));
        }
        Ok(HttpUrl {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// `host:port` to connect to (port 80 when none is written).
    fn connect_to(&self) -> String {
        let has_port = self
            .authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if has_port {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        }
    }
}

/// POSTs `body` to `url` with `headers` on a fresh HTTP/1.1 connection: the status and up to
/// 1 MiB of answer, or why there was none within `timeout`.
pub(crate) async fn post(
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), WalletError> {
    let u = HttpUrl::parse(url)?;
    let exchange = async {
        let http = |e: String| WalletError::Http(format!("{url}: {e}"));
        let stream = tokio::net::TcpStream::connect(u.connect_to())
            .await
            .map_err(|e| http(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::post(u.path.as_str()).header("host", u.authority.as_str());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| WalletError::Http(format!("{url}: no answer within {timeout:?}")))?
}

/// Who the wallet is at the aggregator, and which customer it pays for.
#[derive(Clone)]
pub struct WalletCredentials {
    /// `X-CLIENT-KEY` of the token requests.
    pub client_id: String,
    /// The partner's RSA private key (PEM), for the token signatures.
    pub private_key_pem: String,
    /// The HMAC key of transaction signatures.
    pub client_secret: String,
    /// `X-PARTNER-ID`.
    pub partner_id: String,
    /// `CHANNEL-ID` (at most 5 characters).
    pub channel_id: String,
    /// The linked customer's authorization code (exchanged for the customer token).
    pub auth_code: String,
}

impl std::fmt::Debug for WalletCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletCredentials")
            .field("client_id", &self.client_id)
            .field("partner_id", &self.partner_id)
            .field("channel_id", &self.channel_id)
            .finish_non_exhaustive()
    }
}

impl WalletCredentials {
    /// The demo partner's credentials ([`crate::SimConfig::demo`]) and the demo customer.
    pub fn demo() -> WalletCredentials {
        WalletCredentials {
            client_id: "tapgate-demo".into(),
            private_key_pem: crate::DEMO_PRIVATE_KEY_PEM.into(),
            client_secret: crate::DEMO_CLIENT_SECRET.into(),
            partner_id: "TAPGATE-DEMO".into(),
            channel_id: "95221".into(),
            auth_code: crate::DEMO_AUTH_CODE.into(),
        }
    }
}

/// The paths the wallet calls (the simulator's defaults unless changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletPaths {
    /// B2B token.
    pub token: String,
    /// B2B2C customer token.
    pub customer_token: String,
    /// Linkage `qr-mpm-payment`.
    pub payment: String,
    /// Linkage `qr-mpm-query`.
    pub query: String,
}

impl From<&SimPaths> for WalletPaths {
    fn from(p: &SimPaths) -> Self {
        WalletPaths {
            token: p.token.clone(),
            customer_token: p.customer_token.clone(),
            payment: p.linkage_payment.clone(),
            query: p.linkage_query.clone(),
        }
    }
}

impl Default for WalletPaths {
    fn default() -> Self {
        WalletPaths::from(&SimPaths::default())
    }
}

/// The phone's context headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// `X-IP-ADDRESS`.
    pub ip: String,
    /// `X-DEVICE-ID`.
    pub device_id: String,
    /// `X-LATITUDE`.
    pub latitude: String,
    /// `X-LONGITUDE`.
    pub longitude: String,
    /// `ORIGIN`.
    pub origin: String,
}

impl Default for Device {
    /// A phone at Jakarta's Bundaran HI.
    fn default() -> Self {
        Device {
            ip: "10.20.30.40".into(),
            device_id: "SIM-WALLET-PHONE-1".into(),
            latitude: "-6.1950".into(),
            longitude: "106.8230".into(),
            origin: "sim-wallet".into(),
        }
    }
}

/// The two tokens a Linkage call carries.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// B2B access token (`Authorization`).
    pub b2b: String,
    /// B2B2C customer token (`Authorization-Customer`).
    pub customer: String,
}

/// A signed request, ready to send; headers may be changed (the signature then no longer
/// matches if the body or timestamp is).
#[derive(Clone, Debug)]
pub struct SignedCall {
    /// The path as signed.
    pub path: String,
    /// Every header, names as sent.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes signed.
    pub body: Vec<u8>,
}

impl SignedCall {
    /// The call without header `name` (any case).
    pub fn without(mut self, name: &str) -> SignedCall {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    /// The call with header `name` set to `value` (replacing it).
    pub fn with_header(self, name: &str, value: &str) -> SignedCall {
        let mut c = self.without(name);
        c.headers.push((name.to_string(), value.to_string()));
        c
    }
}

/// An HTTP answer with a JSON body (`Null` when it was not JSON).
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// `responseCode`, empty when absent.
    pub fn code(&self) -> &str {
        self.body["responseCode"].as_str().unwrap_or_default()
    }

    fn field(&self, step: &'static str, field: &'static str) -> Result<String, WalletError> {
        self.body[field]
            .as_str()
            .map(str::to_string)
            .ok_or(WalletError::Answer { step, field })
    }

    fn success(self, step: &'static str) -> Result<Answer, WalletError> {
        if self.status == 200 && self.code().starts_with("200") {
            return Ok(self);
        }
        Err(WalletError::Refused {
            step,
            status: self.status,
            code: self.code().to_string(),
            message: self.body["responseMessage"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// A QR the wallet paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paid {
    /// The wallet's `partnerReferenceNo`.
    pub partner_reference_no: String,
    /// The aggregator's `referenceNo` of the payment.
    pub reference_no: String,
    /// The QR's reference (`reffFlag`).
    pub qr_reference_no: String,
    /// `merchantId` paid.
    pub merchant_id: String,
    /// Whole rupiah.
    pub amount: u64,
    /// `transactionDate`.
    pub transaction_date: String,
}

/// A payment's status as Linkage query reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletStatus {
    /// `latestTransactionStatus` (`00` success, `04` refunded, `06` failed, ...).
    pub latest_transaction_status: String,
    /// `transactionStatusDesc`.
    pub description: String,
}

/// A simulated wallet talking to one aggregator.
pub struct Wallet {
    base: HttpUrl,
    creds: WalletCredentials,
    signer: RsaSigner,
    paths: WalletPaths,
    device: Device,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

/// `n` random decimal digits.
fn digits(n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
        .collect()
}

impl Wallet {
    /// A wallet for the aggregator at `base_url` (`http://host:port`, optionally with a path
    /// prefix that every path gets), on the default paths, device and clock (Jakarta), with a
    /// 10 s timeout per call.
    pub fn new(base_url: &str, creds: WalletCredentials) -> Result<Wallet, WalletError> {
        let base = HttpUrl::parse(base_url)?;
        let signer = RsaSigner::from_pem(&creds.private_key_pem)
            .map_err(|e| WalletError::Key(e.to_string()))?;
        Ok(Wallet {
            base,
            creds,
            signer,
            paths: WalletPaths::default(),
            device: Device::default(),
            clock: Arc::new(SystemClock::new(crate::jakarta())),
            timeout: Duration::from_secs(10),
        })
    }

    /// The same wallet on other paths.
    pub fn with_paths(mut self, paths: WalletPaths) -> Wallet {
        self.paths = paths;
        self
    }

    /// The same wallet on another phone.
    pub fn with_device(mut self, device: Device) -> Wallet {
        self.device = device;
        self
    }

    /// The same wallet on another clock (timestamps follow it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Wallet {
        self.clock = clock;
        self
    }

    fn path(&self, p: &str) -> String {
        format!("{}{p}", self.base.path.trim_end_matches('/'))
    }

    /// Sends a call; any HTTP answer is returned as is.
    pub async fn send(&self, call: &SignedCall) -> Result<Answer, WalletError> {
        let url = format!("http://{}{}", self.base.authority, call.path);
        let (status, body) = post(&url, &call.headers, call.body.clone(), self.timeout).await?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        })
    }

    /// The headers of an RSA-signed token request.
    fn token_call(&self, path: &str, body: &Value) -> SignedCall {
        let ts = sign::timestamp(&self.clock.now());
        let sig = self.signer.sign_b2b(&self.creds.client_id, &ts);
        SignedCall {
            path: self.path(path),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-TIMESTAMP".into(), ts),
                ("X-CLIENT-KEY".into(), self.creds.client_id.clone()),
                ("X-SIGNATURE".into(), sig),
            ],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// A B2B token.
    pub async fn b2b_token(&self) -> Result<String, WalletError> {
        let call = self.token_call(
            &self.paths.token,
            &json!({ "grantType": "client_credentials" }),
        );
        self.send(&call)
            .await?
            .success("b2b token")?
            .field("b2b token", "accessToken")
    }

    /// A customer token for the credentials' `auth_code`.
    pub async fn customer_token(&self) -> Result<String, WalletError> {
        let call = self.token_call(
            &self.paths.customer_token,
            &json!({ "grantType": "authorization_code", "authCode": self.creds.auth_code }),
        );
        self.send(&call)
            .await?
            .success("customer token")?
            .field("customer token", "accessToken")
    }

    /// Both tokens.
    pub async fn tokens(&self) -> Result<Tokens, WalletError> {
        Ok(Tokens {
            b2b: self.b2b_token().await?,
            customer: self.customer_token().await?,
        })
    }

    /// A signed Linkage transaction call with every header.
    pub fn transaction_call(&self, path: &str, tokens: &Tokens, body: &Value) -> SignedCall {
        let path = self.path(path);
        let body = serde_json::to_vec(body).unwrap_or_default();
        let ts = sign::timestamp(&self.clock.now());
        let sig = sign::transaction_signature(
            &self.creds.client_secret,
            "POST",
            &path,
            &tokens.b2b,
            &body,
            &ts,
        );
        let d = &self.device;
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("Authorization", format!("Bearer {}", tokens.b2b)),
            (
                "Authorization-Customer",
                format!("Bearer {}", tokens.customer),
            ),
            ("X-TIMESTAMP", ts),
            ("X-SIGNATURE", sig),
            ("X-PARTNER-ID", self.creds.partner_id.clone()),
            ("X-EXTERNAL-ID", digits(32)),
            ("CHANNEL-ID", self.creds.channel_id.clone()),
            ("ORIGIN", d.origin.clone()),
            ("X-IP-ADDRESS", d.ip.clone()),
            ("X-DEVICE-ID", d.device_id.clone()),
            ("X-LATITUDE", d.latitude.clone()),
            ("X-LONGITUDE", d.longitude.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        SignedCall {
            path,
            headers,
            body,
        }
    }

    /// The payment body for `qr` under the wallet's `partner_reference_no`.
    pub fn payment_body(qr: &MpmQr, partner_reference_no: &str) -> Result<Value, WalletError> {
        let amount = qr.amount.ok_or(WalletError::QrIncomplete("amount (54)"))?;
        let reference = qr
            .reference()
            .ok_or(WalletError::QrIncomplete("reference (62.05)"))?;
        let merchant = qr
            .merchant_id()
            .ok_or(WalletError::QrIncomplete("merchant id (26.02)"))?;
        Ok(json!({
            "partnerReferenceNo": partner_reference_no,
            "merchantId": merchant,
            "amount": { "value": format!("{amount}.00"), "currency": "IDR" },
            "feeAmount": { "value": "0.00", "currency": "IDR" },
            "verificationId": format!("VRF{reference}"),
            "additionalInfo": { "reffFlag": reference },
        }))
    }

    /// A signed `qr-mpm-payment` for `qr_content`, with a fresh `partnerReferenceNo`.
    pub fn payment_call(
        &self,
        qr_content: &str,
        tokens: &Tokens,
    ) -> Result<SignedCall, WalletError> {
        let qr = mpm_qr::parse(qr_content)?;
        let body = Self::payment_body(&qr, &format!("WLT{}", digits(20)))?;
        Ok(self.transaction_call(&self.paths.payment, tokens, &body))
    }

    /// Reads the QR and pays it: tokens, then `qr-mpm-payment`.
    pub async fn pay(&self, qr_content: &str) -> Result<Paid, WalletError> {
        let qr = mpm_qr::parse(qr_content)?;
        let tokens = self.tokens().await?;
        let call = self.payment_call(qr_content, &tokens)?;
        let body: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
        let answer = self.send(&call).await?.success("payment")?;
        Ok(Paid {
            partner_reference_no: body["partnerReferenceNo"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            reference_no: answer.field("payment", "referenceNo")?,
            qr_reference_no: body["additionalInfo"]["reffFlag"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            merchant_id: body["merchantId"].as_str().unwrap_or_default().to_string(),
            amount: qr.amount.unwrap_or_default(),
            transaction_date: answer.field("payment", "transactionDate")?,
        })
    }

    /// A signed Linkage `qr-mpm-query` for a payment.
    pub fn query_call(&self, paid: &Paid, tokens: &Tokens) -> SignedCall {
        let body = json!({
            "originalReferenceNo": paid.reference_no,
            "originalPartnerReferenceNo": paid.partner_reference_no,
            "serviceCode": "54",
            "merchantId": paid.merchant_id,
        });
        self.transaction_call(&self.paths.query, tokens, &body)
    }

    /// The payment's status now.
    pub async fn query(&self, paid: &Paid) -> Result<WalletStatus, WalletError> {
        let tokens = self.tokens().await?;
        let answer = self
            .send(&self.query_call(paid, &tokens))
            .await?
            .success("query")?;
        Ok(WalletStatus {
            latest_transaction_status: answer.field("query", "latestTransactionStatus")?,
            description: answer
                .field("query", "transactionStatusDesc")
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http() {
        let u = HttpUrl::parse("http://127.0.0.1:8600").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:8600", "/")
        );
        assert_eq!(u.connect_to(), "127.0.0.1:8600");
        let u = HttpUrl::parse("HTTP://gate.local/pg/notify?x=1").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("gate.local", "/pg/notify?x=1")
        );
        assert_eq!(u.connect_to(), "gate.local:80");
        for bad in ["https://a", "ftp://a", "http://", "http://u@h/", "h", ""] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn calls_lose_and_replace_headers() {
        let c = SignedCall {
            path: "/".into(),
            headers: vec![("X-DEVICE-ID".into(), "a".into())],
            body: vec![],
        };
        assert!(c.clone().without("x-device-id").headers.is_empty());
        assert_eq!(
            c.with_header("x-device-id", "b").headers,
            [("x-device-id".to_string(), "b".to_string())]
        );
    }
}
