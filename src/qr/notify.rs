//! The aggregator's payment notification (`qr-mpm-notify`, service 52), checked and answered
//! as SNAP specifies. Pure: headers and body in, a verdict and the answer out.
//!
//! A notification is trusted only when its `X-SIGNATURE` is the HMAC-SHA512, keyed with the
//! partner's client secret, of `POST:<path>:<token>:<hex sha256(body)>:<X-TIMESTAMP>`, where
//! `<token>` is the bearer token of its `Authorization` header; its `X-TIMESTAMP` within
//! [`MAX_SKEW`] of the gate's clock; and its `X-PARTNER-ID` ours. Even then it only tells the
//! gate to ask: the sale (or the reconciler) queries the QR at once, and the query's answer
//! is what opens the gate or refunds. A lost notification costs at most one poll interval.

use std::time::Duration;

use serde_json::{json, Value};

use crate::snap::sign;

/// How far a notification's `X-TIMESTAMP` may be from the gate's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Largest notification body read.
pub const MAX_BODY: usize = 16 * 1024;

/// What the gate knows to check a notification with.
#[derive(Clone)]
pub struct NotifyKeys {
    /// The partner's client secret (HMAC key).
    pub client_secret: String,
    /// Our `X-PARTNER-ID`.
    pub partner_id: String,
}

impl std::fmt::Debug for NotifyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyKeys")
            .field("partner_id", &self.partner_id)
            .finish_non_exhaustive()
    }
}

/// A checked notification: the QR it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notified {
    /// `originalPartnerReferenceNo`: our reference of the QR.
    pub partner_reference_no: String,
    /// `originalReferenceNo`, when given.
    pub reference_no: Option<String>,
    /// `latestTransactionStatus`, when given.
    pub status: Option<String>,
}

/// Why a notification was refused, and the SNAP answer that says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotifyRejection {
    /// A mandatory header or field is missing: `400xx02`.
    #[error("missing {0}")]
    Missing(String),
    /// A field is malformed: `400xx01`.
    #[error("malformed {0}")]
    Malformed(String),
    /// The signature, timestamp or partner does not check out: `401xx00`.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
}

/// A SNAP answer: HTTP status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyAnswer {
    /// The HTTP status.
    pub status: u16,
    /// `{"responseCode", "responseMessage"}`.
    pub body: Value,
}

impl NotifyAnswer {
    fn new(status: u16, case: &str, message: String) -> NotifyAnswer {
        NotifyAnswer {
            status,
            body: json!({
                "responseCode": format!("{status}52{case}"),
                "responseMessage": message,
            }),
        }
    }

    /// `2005200`: received.
    pub fn ok() -> NotifyAnswer {
        NotifyAnswer::new(200, "00", "Successful".into())
    }

    /// `4045201`: no QR sale of that reference at this gate.
    pub fn not_found() -> NotifyAnswer {
        NotifyAnswer::new(404, "01", "Transaction Not Found".into())
    }

    /// `5005201`: the gate could not take it now; the aggregator may send it again.
    pub fn internal() -> NotifyAnswer {
        NotifyAnswer::new(500, "01", "Internal Server Error".into())
    }

    /// The answer to a refused notification.
    pub fn rejected(r: &NotifyRejection) -> NotifyAnswer {
        match r {
            NotifyRejection::Missing(what) => {
                NotifyAnswer::new(400, "02", format!("Invalid Mandatory Field {{{what}}}"))
            }
            NotifyRejection::Malformed(what) => {
                NotifyAnswer::new(400, "01", format!("Invalid Field Format {{{what}}}"))
            }
            NotifyRejection::Unauthorized(why) => {
                NotifyAnswer::new(401, "00", format!("Unauthorized. {why}"))
            }
        }
    }
}

/// Checks one notification received at `path`. `header` returns a header's value by its
/// lower-case name; `now` is the gate's clock.
pub fn verify(
    keys: &NotifyKeys,
    path: &str,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<Notified, NotifyRejection> {
    let need = |name: &str, shown: &str| {
        header(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| NotifyRejection::Missing(shown.into()))
    };
    let ts = need("x-timestamp", "X-TIMESTAMP")?;
    let signature = need("x-signature", "X-SIGNATURE")?;
    let partner = need("x-partner-id", "X-PARTNER-ID")?;
    need("x-external-id", "X-EXTERNAL-ID")?;
    let auth = need("authorization", "Authorization")?;
    let token = auth
        .strip_prefix("Bearer ")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| NotifyRejection::Malformed("Authorization".into()))?;
    let at: jiff::Timestamp = ts
        .parse()
        .map_err(|_| NotifyRejection::Malformed("X-TIMESTAMP".into()))?;
    let skew = now.duration_since(at).unsigned_abs();
    if skew > MAX_SKEW {
        return Err(NotifyRejection::Unauthorized("Timestamp out of range"));
    }
    let expected = sign::transaction_signature(&keys.client_secret, "POST", path, token, body, &ts);
    if !sign::signatures_equal(&expected, &signature) {
        return Err(NotifyRejection::Unauthorized("Invalid Signature"));
    }
    if partner != keys.partner_id {
        return Err(NotifyRejection::Unauthorized("Unknown Partner"));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|_| NotifyRejection::Malformed("body".into()))?;
    let text = |k: &str| -> Result<Option<String>, NotifyRejection> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Ok(Some(s.clone())),
            Some(_) => Err(NotifyRejection::Malformed(k.into())),
        }
    };
    let partner_reference_no = text("originalPartnerReferenceNo")?
        .ok_or_else(|| NotifyRejection::Missing("originalPartnerReferenceNo".into()))?;
    Ok(Notified {
        partner_reference_no,
        reference_no: text("originalReferenceNo")?,
        status: text("latestTransactionStatus")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const PATH: &str = "/v1.0/qr/qr-mpm-notify";

    fn keys() -> NotifyKeys {
        NotifyKeys {
            client_secret: "s3cret".into(),
            partner_id: "TAPGATE01".into(),
        }
    }

    fn now() -> jiff::Timestamp {
        "2026-12-02T06:00:00Z".parse().expect("time")
    }

    fn signed(body: &[u8]) -> HashMap<String, String> {
        let ts = "2026-12-02T13:00:10+07:00";
        let sig = sign::transaction_signature("s3cret", "POST", PATH, "tok", body, ts);
        [
            ("x-timestamp", ts),
            ("x-signature", sig.as_str()),
            ("x-partner-id", "TAPGATE01"),
            ("x-external-id", "123"),
            ("authorization", "Bearer tok"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn check(h: &HashMap<String, String>, body: &[u8]) -> Result<Notified, NotifyRejection> {
        verify(&keys(), PATH, |k| h.get(k).cloned(), body, now())
    }

    const BODY: &[u8] =
        br#"{"originalPartnerReferenceNo":"TQ1","originalReferenceNo":"R1","latestTransactionStatus":"00"}"#;

    #[test]
    fn a_signed_notification_names_its_qr() {
        let n = check(&signed(BODY), BODY).expect("verified");
        assert_eq!(n.partner_reference_no, "TQ1");
        assert_eq!(n.reference_no.as_deref(), Some("R1"));
        assert_eq!(n.status.as_deref(), Some("00"));
        assert_eq!(NotifyAnswer::ok().body["responseCode"], "2005200");
    }

    #[test]
    fn each_missing_header_is_named() {
        for (name, shown) in [
            ("x-timestamp", "X-TIMESTAMP"),
            ("x-signature", "X-SIGNATURE"),
            ("x-partner-id", "X-PARTNER-ID"),
            ("x-external-id", "X-EXTERNAL-ID"),
            ("authorization", "Authorization"),
        ] {
            let mut h = signed(BODY);
            h.remove(name);
            let e = check(&h, BODY).expect_err(name);
            assert_eq!(e, NotifyRejection::Missing(shown.into()));
            assert_eq!(
                NotifyAnswer::rejected(&e).body["responseCode"],
                "4005202",
                "{name}"
            );
        }
    }

    #[test]
    fn a_changed_body_token_partner_or_old_timestamp_is_refused() {
        let tampered = br#"{"originalPartnerReferenceNo":"TQ2"}"#;
        assert_eq!(
            check(&signed(BODY), tampered),
            Err(NotifyRejection::Unauthorized("Invalid Signature"))
        );
        let mut h = signed(BODY);
        h.insert("authorization".into(), "Bearer other".into());
        assert_eq!(
            check(&h, BODY),
            Err(NotifyRejection::Unauthorized("Invalid Signature"))
        );
        let mut h = signed(BODY);
        h.insert("x-partner-id".into(), "SOMEONE".into());
        assert_eq!(
            check(&h, BODY),
            Err(NotifyRejection::Unauthorized("Unknown Partner"))
        );
        let late = verify(
            &keys(),
            PATH,
            |k| signed(BODY).get(k).cloned(),
            BODY,
            now() + jiff::SignedDuration::from_secs(400),
        );
        assert_eq!(
            late,
            Err(NotifyRejection::Unauthorized("Timestamp out of range"))
        );
        let e = late.expect_err("late");
        assert_eq!(NotifyAnswer::rejected(&e).status, 401);
        assert_eq!(NotifyAnswer::rejected(&e).body["responseCode"], "4015200");
    }

    #[test]
    fn a_body_without_the_reference_or_not_json_is_refused() {
        for body in [
            &b"{}"[..],
            b"not json",
            br#"{"originalPartnerReferenceNo":7}"#,
        ] {
            let e = check(&signed(body), body).expect_err("refused");
            assert!(
                matches!(
                    e,
                    NotifyRejection::Missing(_) | NotifyRejection::Malformed(_)
                ),
                "{e}"
            );
        }
    }
}
