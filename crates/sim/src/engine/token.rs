//! The B2B access-token endpoint.

use jiff::Zoned;
use serde_json::json;

use super::fields::{req_str, FieldErr};
use super::{json_object, Engine, Reject, Reply, SimRequest};
use crate::faults::Service;

impl Engine {
    /// A token call: the partner's RSA signature over client id and timestamp, then a new token.
    pub(super) fn token(
        &mut self,
        req: &SimRequest<'_>,
        now: &Zoned,
    ) -> Result<(Reply, bool), Reject> {
        self.check_token_request(req.headers, now)?;
        let body = json_object(req.body)?;
        let grant = self.read_fields(
            Service::Token,
            &body,
            &["grantType", "additionalInfo"],
            |b| req_str(b, "grantType", 64),
        )?;
        if grant != "client_credentials" {
            return Err(
                FieldErr::Format("grantType".into(), "not client_credentials").into_reject(),
            );
        }
        let (token, expires) = self.new_token(now);
        let now_ts = now.timestamp();
        self.tokens.retain(|_, exp| *exp > now_ts);
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
