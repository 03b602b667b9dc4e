//! The B2B access-token endpoint.

use jiff::{Timestamp, Zoned};
use rand::distr::Alphanumeric;
use rand::Rng as _;
use serde_json::{json, Value};

use super::auth::header;
use super::fields::{req_str, unknown_keys, FieldErr};
use super::{reject, Engine, Kind, Reject, Reply, SimRequest};
use crate::faults::Service;
use crate::snap::sign;

impl Engine {
    /// A token call: the partner's RSA signature over client id and timestamp, then a new token.
    pub(super) fn token(
        &mut self,
        req: &SimRequest<'_>,
        now: &Zoned,
    ) -> Result<(Reply, bool), Reject> {
        let h = req.headers;
        for name in ["content-type", "x-timestamp", "x-client-key", "x-signature"] {
            if header(h, name).is_none() {
                return Err(reject(
                    Kind::Header,
                    400,
                    "02",
                    "Invalid Mandatory Field",
                    name.to_ascii_uppercase(),
                ));
            }
        }
        let ts_text = header(h, "x-timestamp").unwrap_or_default();
        let client = header(h, "x-client-key").unwrap_or_default();
        let sig = header(h, "x-signature").unwrap_or_default();
        self.check_content_type(h)?;
        let ts = self.timestamp(ts_text)?;
        if client != self.cfg.client_id {
            return Err(reject(
                Kind::Header,
                401,
                "00",
                "Unauthorized.",
                "unknown X-CLIENT-KEY",
            ));
        }
        self.check_fresh(ts, now)?;
        if !sign::verify_b2b(&self.cfg.partner_public_key_der, client, ts_text, sig) {
            return Err(reject(
                Kind::Signature,
                401,
                "00",
                "Unauthorized.",
                "X-SIGNATURE does not verify",
            ));
        }
        let body = match serde_json::from_slice::<Value>(req.body) {
            Ok(Value::Object(o)) => o,
            _ => {
                return Err(reject(
                    Kind::Body,
                    400,
                    "00",
                    "Bad Request",
                    "body is not a JSON object",
                ))
            }
        };
        let unknown = unknown_keys(&body, &["grantType", "additionalInfo"]);
        self.warn_unknown(Service::Token, unknown);
        let grant = req_str(&body, "grantType", 64).map_err(FieldErr::into_reject)?;
        if grant != "client_credentials" {
            return Err(
                FieldErr::Format("grantType".into(), "not client_credentials").into_reject(),
            );
        }
        let token: String = (&mut self.rng)
            .sample_iter(Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        let now_ts = now.timestamp();
        self.tokens.retain(|_, exp| *exp > now_ts);
        let ttl = i64::try_from(self.cfg.token_ttl_secs).unwrap_or(i64::MAX / 2);
        let expires = now_ts
            .checked_add(jiff::SignedDuration::from_secs(ttl))
            .unwrap_or(Timestamp::MAX);
        self.tokens.insert(token.clone(), expires);
        self.stats.tokens_issued += 1;
        let expires_in = if self.cfg.expires_in_as_number {
            json!(self.cfg.token_ttl_secs)
        } else {
            json!(self.cfg.token_ttl_secs.to_string())
        };
        let body = json!({
            "responseCode": "2007300",
            "responseMessage": "Successful",
            "accessToken": token,
            "tokenType": "Bearer",
            "expiresIn": expires_in,
        });
        Ok((Reply { status: 200, body }, true))
    }
}
