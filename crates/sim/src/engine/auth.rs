//! Who may call: headers, `X-TIMESTAMP`, the bearer token, the HMAC signature and
//! `X-EXTERNAL-ID` of a transaction call.

use axum::http::HeaderMap;
use jiff::{Timestamp, Zoned};

use super::{missing_header, reject, unauthorized, Engine, Kind, Reject, SimRequest};
use crate::snap::sign;

/// The transaction headers docs/protocol.md §3 makes mandatory, lower-case.
const MANDATORY_HEADERS: [&str; 12] = [
    "content-type",
    "authorization",
    "x-timestamp",
    "x-signature",
    "x-partner-id",
    "x-external-id",
    "channel-id",
    "origin",
    "x-ip-address",
    "x-device-id",
    "x-latitude",
    "x-longitude",
];

pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Checks `YYYY-MM-DDTHH:MM:SS±HH:MM` exactly, with an offset in `allowed_hours`.
pub(crate) fn parse_timestamp(s: &str, allowed_hours: &[i8]) -> Result<Timestamp, &'static str> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 25
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 | 22 => *c == b':',
            19 => *c == b'+' || *c == b'-',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err("not YYYY-MM-DDTHH:MM:SS+HH:MM");
    }
    let ts: Timestamp = s.parse().map_err(|_| "not a valid date and time")?;
    let hours: i8 = s[20..22].parse().map_err(|_| "bad offset")?;
    let hours = if b[19] == b'-' { -hours } else { hours };
    if &s[23..25] != "00" || !allowed_hours.contains(&hours) {
        return Err("offset is not a local Indonesian offset");
    }
    Ok(ts)
}

impl Engine {
    /// `X-TIMESTAMP` parsed, or the rejection a SNAP aggregator gives a malformed one.
    pub(super) fn timestamp(&self, text: &str) -> Result<jiff::Timestamp, Reject> {
        parse_timestamp(text, &self.cfg.allowed_utc_offsets_hours).map_err(|why| {
            reject(
                Kind::Header,
                400,
                "01",
                "Invalid Field Format",
                format!("X-TIMESTAMP: {why}"),
            )
        })
    }

    pub(super) fn check_content_type(&self, h: &HeaderMap) -> Result<(), Reject> {
        let ct = header(h, "content-type").unwrap_or_default();
        if ct.to_ascii_lowercase().starts_with("application/json") {
            Ok(())
        } else {
            Err(reject(
                Kind::Header,
                400,
                "01",
                "Invalid Field Format",
                "Content-Type is not application/json",
            ))
        }
    }

    pub(super) fn check_fresh(&self, ts: Timestamp, now: &Zoned) -> Result<(), Reject> {
        let skew = (now.timestamp().as_second() - ts.as_second()).unsigned_abs();
        if skew > self.cfg.timestamp_skew_secs {
            return Err(unauthorized(
                Kind::Header,
                format!("X-TIMESTAMP is {skew} s away from the aggregator's clock"),
            ));
        }
        Ok(())
    }

    /// The headers of a token request (B2B or B2B2C), in the order an aggregator checks
    /// them: all four present, the content type, `X-TIMESTAMP`, our `X-CLIENT-KEY`, the
    /// clock skew, then the partner's RSA signature over client key and timestamp.
    pub(super) fn check_token_request(&self, h: &HeaderMap, now: &Zoned) -> Result<(), Reject> {
        for name in ["content-type", "x-timestamp", "x-client-key", "x-signature"] {
            if header(h, name).is_none() {
                return Err(missing_header(name));
            }
        }
        let get = |n: &str| header(h, n).unwrap_or_default();
        self.check_content_type(h)?;
        let ts = self.timestamp(get("x-timestamp"))?;
        if get("x-client-key") != self.cfg.client_id {
            return Err(unauthorized(Kind::Header, "unknown X-CLIENT-KEY"));
        }
        self.check_fresh(ts, now)?;
        let signed = sign::verify_b2b(
            &self.cfg.partner_public_key_der,
            get("x-client-key"),
            get("x-timestamp"),
            get("x-signature"),
        );
        if !signed {
            return Err(unauthorized(Kind::Signature, "X-SIGNATURE does not verify"));
        }
        Ok(())
    }

    /// Headers, token, HMAC and `X-EXTERNAL-ID` of a transaction call, in the order an
    /// aggregator checks them (the first failure is the one answered).
    pub(super) fn authorize(&mut self, req: &SimRequest<'_>, now: &Zoned) -> Result<(), Reject> {
        let h = req.headers;
        let get = |n: &str| header(h, n).unwrap_or_default();
        let ts = self.check_transaction_headers(h)?;
        let token = self.check_bearer(get("authorization"), now)?;
        self.check_partner(h)?;
        self.check_fresh(ts, now)?;
        self.check_hmac(req, token, get("x-timestamp"))?;
        self.record_external_id(get("x-external-id"), now)
    }

    /// Every mandatory header present, the content type, and well-formed `X-TIMESTAMP`,
    /// `X-IP-ADDRESS` and coordinates. Returns the timestamp.
    fn check_transaction_headers(&self, h: &HeaderMap) -> Result<Timestamp, Reject> {
        if let Some(missing) = MANDATORY_HEADERS.iter().find(|n| header(h, n).is_none()) {
            return Err(missing_header(missing));
        }
        let get = |n: &str| header(h, n).unwrap_or_default();
        self.check_content_type(h)?;
        let ts = self.timestamp(get("x-timestamp"))?;
        if get("x-ip-address").parse::<std::net::IpAddr>().is_err() {
            return Err(reject(
                Kind::Header,
                400,
                "01",
                "Invalid Field Format",
                "X-IP-ADDRESS is not an IP address",
            ));
        }
        for (name, limit) in [("x-latitude", 90.0), ("x-longitude", 180.0)] {
            let ok = get(name)
                .parse::<f64>()
                .is_ok_and(|v| v.is_finite() && v.abs() <= limit);
            if !ok {
                return Err(reject(
                    Kind::Header,
                    400,
                    "01",
                    "Invalid Field Format",
                    format!("{} is not a coordinate", name.to_ascii_uppercase()),
                ));
            }
        }
        Ok(ts)
    }

    /// The token of an `Authorization: Bearer <token>` header, when it was issued here and
    /// has not expired.
    fn check_bearer<'a>(&self, authorization: &'a str, now: &Zoned) -> Result<&'a str, Reject> {
        let Some(token) = authorization.strip_prefix("Bearer ") else {
            return Err(reject(
                Kind::Header,
                401,
                "01",
                "Invalid Token (B2B)",
                "Authorization is not `Bearer <token>`",
            ));
        };
        let token = token.trim();
        match self.tokens.get(token) {
            Some(exp) if *exp > now.timestamp() => Ok(token),
            Some(_) => Err(reject(
                Kind::Token,
                401,
                "01",
                "Invalid Token (B2B)",
                "token expired",
            )),
            None => Err(reject(
                Kind::Token,
                401,
                "01",
                "Invalid Token (B2B)",
                "token unknown",
            )),
        }
    }

    /// `X-PARTNER-ID` and, when one is configured, `CHANNEL-ID` are ours.
    fn check_partner(&self, h: &HeaderMap) -> Result<(), Reject> {
        let get = |n: &str| header(h, n).unwrap_or_default();
        if get("x-partner-id") != self.cfg.partner_id {
            return Err(unauthorized(Kind::Header, "unknown X-PARTNER-ID"));
        }
        if let Some(ch) = &self.cfg.channel_id {
            if get("channel-id") != ch {
                return Err(unauthorized(Kind::Header, "unexpected CHANNEL-ID"));
            }
        }
        Ok(())
    }

    /// `X-SIGNATURE` is the HMAC over the body bytes exactly as received.
    fn check_hmac(&self, req: &SimRequest<'_>, token: &str, ts_text: &str) -> Result<(), Reject> {
        let expected = sign::transaction_signature(
            &self.cfg.client_secret,
            "POST",
            req.path,
            token,
            req.body,
            ts_text,
        );
        if !sign::signatures_equal(
            &expected,
            header(req.headers, "x-signature").unwrap_or_default(),
        ) {
            return Err(unauthorized(
                Kind::Signature,
                "X-SIGNATURE does not match the body",
            ));
        }
        Ok(())
    }

    /// `X-EXTERNAL-ID` is 1–36 digits and new today; remembers it (and forgets older days
    /// than yesterday).
    fn record_external_id(&mut self, ext: &str, now: &Zoned) -> Result<(), Reject> {
        if ext.len() > 36 || !ext.bytes().all(|b| b.is_ascii_digit()) {
            return Err(reject(
                Kind::Header,
                400,
                "01",
                "Invalid Field Format",
                "X-EXTERNAL-ID is not 1-36 digits",
            ));
        }
        let today = now.date();
        self.external_ids
            .retain(|d, _| *d >= today.yesterday().unwrap_or(today));
        if !self
            .external_ids
            .entry(today)
            .or_default()
            .insert(ext.to_string())
        {
            return Err(reject(
                Kind::ExternalId,
                409,
                "00",
                "Conflict",
                "X-EXTERNAL-ID already used today",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_need_seconds_and_a_local_offset() {
        let ok = [7, 8, 9];
        assert!(parse_timestamp("2026-11-22T09:15:02+07:00", &ok).is_ok());
        assert!(parse_timestamp("2026-11-22T10:15:02+08:00", &ok).is_ok());
        for bad in [
            "2026-11-22T02:15:02Z",
            "2026-11-22T02:15:02+00:00",
            "2026-11-22T09:15:02.123+07:00",
            "2026-11-22 09:15:02+07:00",
            "2026-11-22T09:15+07:00",
            "2026-13-22T09:15:02+07:00",
            "2026-11-22T09:15:02+07:30",
        ] {
            assert!(parse_timestamp(bad, &ok).is_err(), "{bad}");
        }
        let a = parse_timestamp("2026-11-22T09:15:02+07:00", &ok).unwrap();
        let b = parse_timestamp("2026-11-22T10:15:02+08:00", &ok).unwrap();
        assert_eq!(a, b);
    }
}
