//! SNAP `responseCode`s: parsing and classification (pure).
//!
//! A code is seven digits: the HTTP status (3), the service code (2, e.g. `60` for
//! `qr-cpm-payment`) and the case (2). What a code means depends on the service that answered
//! it (`404xx18` is a failure for a payment but "already done" for a refund), so each service
//! has its own classification, each naming what tapgate does next (docs/protocol.md §5).
//!
//! The service digits are parsed but never required to match the service that was called:
//! aggregators are known to answer with the service code of a neighbouring API, and the case
//! digits carry the meaning.

use std::fmt;

/// A well-formed `responseCode`: HTTP status, service code, case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseCode {
    http: u16,
    service: u8,
    case: u8,
}

/// Why a `responseCode` is not well-formed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Not exactly seven characters.
    #[error("responseCode has {0} characters, expected 7")]
    Length(usize),
    /// A character other than an ASCII digit.
    #[error("responseCode contains a non-digit")]
    NotDigits,
    /// The first three digits are not an HTTP status (100..=599).
    #[error("responseCode does not start with an HTTP status: {0}")]
    HttpStatus(u16),
}

impl ResponseCode {
    /// Parses a seven-digit code such as `2006000`. Surrounding whitespace is not accepted:
    /// the wire carries the code as an exact string.
    pub fn parse(s: &str) -> Result<ResponseCode, CodeError> {
        let chars = s.chars().count();
        if chars != 7 {
            return Err(CodeError::Length(chars));
        }
        let Ok(digits) = <[u8; 7]>::try_from(s.as_bytes()) else {
            return Err(CodeError::NotDigits);
        };
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(CodeError::NotDigits);
        }
        let [h1, h2, h3, s1, s2, c1, c2] = digits.map(|b| u16::from(b - b'0'));
        let http = h1 * 100 + h2 * 10 + h3;
        if !(100..=599).contains(&http) {
            return Err(CodeError::HttpStatus(http));
        }
        Ok(ResponseCode {
            http,
            service: (s1 * 10 + s2) as u8,
            case: (c1 * 10 + c2) as u8,
        })
    }

    /// Builds a code from its parts; `None` when a part is out of range.
    pub fn new(http: u16, service: u8, case: u8) -> Option<ResponseCode> {
        ((100..=599).contains(&http) && service < 100 && case < 100).then_some(ResponseCode {
            http,
            service,
            case,
        })
    }

    /// The HTTP status part (`404` in `4046018`).
    pub fn http(self) -> u16 {
        self.http
    }

    /// The service part (`60` in `4046018`).
    pub fn service(self) -> u8 {
        self.service
    }

    /// The case part (`18` in `4046018`).
    pub fn case(self) -> u8 {
        self.case
    }

    /// `401xx01` (invalid token) or `401xx03` (token not found): refresh the B2B token once
    /// and retry the request once. Nothing was processed.
    pub fn is_token_invalid(self) -> bool {
        self.http == 401 && matches!(self.case, 1 | 3)
    }

    /// `409xx00`: the `X-EXTERNAL-ID` was seen before today. Nothing was processed; retry once
    /// with a fresh id, and alert (it is our bug or a clash at the aggregator).
    pub fn is_external_id_conflict(self) -> bool {
        self.http == 409 && self.case == 0
    }

    /// `200xx00`.
    pub fn is_success(self) -> bool {
        self.http == 200 && self.case == 0
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}{:02}{:02}", self.http, self.service, self.case)
    }
}

impl std::str::FromStr for ResponseCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResponseCode::parse(s)
    }
}

/// The services tapgate calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// B2B access token (`73`).
    Token,
    /// `qr-cpm-payment` (`60`).
    Payment,
    /// `qr-cpm-query` (`61`).
    Query,
    /// `qr-cpm-refund` (`80`).
    Refund,
}

/// What a payment answer means. The variants split first on whether money may have moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentClass {
    /// `200xx00`: paid (or held); record `referenceNo`.
    Success,
    /// The issuer or the aggregator definitely said no on the passenger's side (`403xx**`,
    /// `404xx**` other than merchant set-up, including `404xx13` invalid amount and `404xx18`
    /// inconsistent request). No money moved; show the reason.
    Declined,
    /// `404xx02` routing, `404xx05`, `404xx08` invalid merchant, `404xx16` partner not found,
    /// `404xx17` invalid terminal, `405xx**`: our set-up is wrong. No money moved; alert.
    Misconfigured,
    /// `400xx**`: our request is malformed (our bug). No money moved; alert.
    BadRequest,
    /// `401xx01`/`401xx03`: refresh the token once and retry once.
    TokenInvalid,
    /// Any other `401`: signature, client or clock. No money moved; alert (config or clock).
    Unauthorized,
    /// `409xx00`: reused `X-EXTERNAL-ID`. No money moved; retry once with a new id, alert.
    ExternalIdConflict,
    /// `409xx01`: this `partnerReferenceNo` was already processed: query to learn the outcome,
    /// never re-send.
    AlreadyProcessed,
    /// `429xx**`: throttled. No money moved; back off.
    Throttled,
    /// `202`, `5xx`, `504` and any code tapgate does not recognise: money MAY have moved.
    /// Resolve by query, never re-send.
    Uncertain,
}

/// Classifies the answer to `qr-cpm-payment`.
pub fn classify_payment(code: ResponseCode) -> PaymentClass {
    use PaymentClass::*;
    match (code.http, code.case) {
        (200, 0) => Success,
        (400, _) => BadRequest,
        (401, 1 | 3) => TokenInvalid,
        (401, _) => Unauthorized,
        (403, _) => Declined,
        (404, 2 | 5 | 8 | 16 | 17) => Misconfigured,
        (404, _) => Declined,
        (405, _) => Misconfigured,
        (409, 0) => ExternalIdConflict,
        (409, 1) => AlreadyProcessed,
        (429, _) => Throttled,
        // 202 accepted, 5xx, 504, other 2xx cases, unknown 4xx: the request may have been
        // acted on, so only a query can tell.
        _ => Uncertain,
    }
}

/// What a query answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryClass {
    /// `200xx00`: the body carries `latestTransactionStatus`.
    Found,
    /// `404xx01`: the aggregator has no transaction with this reference.
    NotFound,
    /// `401xx01`/`401xx03`: refresh the token once and retry once.
    TokenInvalid,
    /// `409xx00`: retry once with a new `X-EXTERNAL-ID`.
    ExternalIdConflict,
    /// `202`, `429`, `5xx`, `504`, unrecognised codes: ask again later.
    Unavailable,
    /// Other `4xx` (bad request, auth, merchant): asking again will not help; a person must
    /// look at the configuration or the clock.
    Refused,
}

/// Classifies the answer to `qr-cpm-query`.
pub fn classify_query(code: ResponseCode) -> QueryClass {
    use QueryClass::*;
    match (code.http, code.case) {
        (200, 0) => Found,
        (404, 1) => NotFound,
        (401, 1 | 3) => TokenInvalid,
        (409, 0) => ExternalIdConflict,
        (429, _) => Unavailable,
        (400..=499, _) => Refused,
        _ => Unavailable,
    }
}

/// What a refund answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundClass {
    /// `200xx00`, or `404xx18` (inconsistent request: ASPI's answer to a refund that was
    /// already made under this `partnerRefundNo`).
    Refunded,
    /// `409xx01`: duplicate `partnerRefundNo`. Whether the money went back is learnt by
    /// querying the payment (status `04` refunded).
    AlreadyProcessed,
    /// `401xx01`/`401xx03`: refresh the token once and retry once.
    TokenInvalid,
    /// `409xx00`: retry once with a new `X-EXTERNAL-ID`.
    ExternalIdConflict,
    /// `202`, `429`, `5xx`, `504`, unrecognised codes: try again later with the same
    /// `partnerRefundNo` (it makes the retry safe).
    Unavailable,
    /// Other `4xx`: the refund was definitively refused; a person must look.
    Refused,
}

/// Classifies the answer to `qr-cpm-refund`.
pub fn classify_refund(code: ResponseCode) -> RefundClass {
    use RefundClass::*;
    match (code.http, code.case) {
        (200, 0) | (404, 18) => Refunded,
        (409, 1) => AlreadyProcessed,
        (401, 1 | 3) => TokenInvalid,
        (409, 0) => ExternalIdConflict,
        (429, _) => Unavailable,
        (400..=499, _) => Refused,
        _ => Unavailable,
    }
}

/// What a B2B access-token answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenClass {
    /// `200xx00`: the body carries `accessToken`.
    Issued,
    /// `4xx`: client id, key, signature or clock is wrong; fatal until a person fixes it.
    Refused,
    /// Anything else: try again later.
    Unavailable,
}

/// Classifies the answer to the B2B access-token request.
pub fn classify_token(code: ResponseCode) -> TokenClass {
    match (code.http, code.case) {
        (200, 0) => TokenClass::Issued,
        (429, _) => TokenClass::Unavailable,
        (400..=499, _) => TokenClass::Refused,
        _ => TokenClass::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> ResponseCode {
        ResponseCode::parse(s).unwrap()
    }

    #[test]
    fn parses_parts_and_round_trips() {
        let code = c("4046018");
        assert_eq!((code.http(), code.service(), code.case()), (404, 60, 18));
        assert_eq!(code.to_string(), "4046018");
        assert_eq!(c("2007300").to_string(), "2007300");
        assert_eq!("5008000".parse::<ResponseCode>(), Ok(c("5008000")));
        assert_eq!(
            ResponseCode::new(202, 60, 0)
                .map(|c| c.to_string())
                .as_deref(),
            Some("2026000")
        );
        assert_eq!(ResponseCode::new(600, 60, 0), None);
        assert_eq!(ResponseCode::new(200, 100, 0), None);
        assert_eq!(ResponseCode::new(200, 60, 100), None);
    }

    #[test]
    fn malformed_codes_are_rejected() {
        assert_eq!(ResponseCode::parse(""), Err(CodeError::Length(0)));
        assert_eq!(ResponseCode::parse("200600"), Err(CodeError::Length(6)));
        assert_eq!(ResponseCode::parse("20060000"), Err(CodeError::Length(8)));
        assert_eq!(ResponseCode::parse(" 200600"), Err(CodeError::NotDigits));
        assert_eq!(ResponseCode::parse("200600 "), Err(CodeError::NotDigits));
        assert_eq!(ResponseCode::parse("20060xx"), Err(CodeError::NotDigits));
        assert_eq!(ResponseCode::parse("-200600"), Err(CodeError::NotDigits));
        assert_eq!(
            ResponseCode::parse("２００６０００"),
            Err(CodeError::NotDigits)
        );
        assert_eq!(
            ResponseCode::parse("0006000"),
            Err(CodeError::HttpStatus(0))
        );
        assert_eq!(
            ResponseCode::parse("0996000"),
            Err(CodeError::HttpStatus(99))
        );
        assert_eq!(
            ResponseCode::parse("6006000"),
            Err(CodeError::HttpStatus(600))
        );
        assert_eq!(
            ResponseCode::parse("9999999"),
            Err(CodeError::HttpStatus(999))
        );
        assert!(ResponseCode::parse("1006000").is_ok());
        assert!(ResponseCode::parse("5996000").is_ok());
    }

    #[test]
    fn payment_table() {
        use PaymentClass::*;
        let table = [
            ("2006000", Success),
            ("2006001", Uncertain),
            ("2026000", Uncertain),
            ("4006000", BadRequest),
            ("4006001", BadRequest),
            ("4006002", BadRequest),
            ("4016000", Unauthorized),
            ("4016001", TokenInvalid),
            ("4016002", Unauthorized),
            ("4016003", TokenInvalid),
            ("4016004", Unauthorized),
            ("4036000", Declined),
            ("4036003", Declined),
            ("4036005", Declined),
            ("4036007", Declined),
            ("4036014", Declined),
            ("4036099", Declined),
            ("4046000", Declined),
            ("4046001", Declined),
            ("4046002", Misconfigured),
            ("4046005", Misconfigured),
            ("4046008", Misconfigured),
            ("4046009", Declined),
            ("4046011", Declined),
            ("4046013", Declined),
            ("4046016", Misconfigured),
            ("4046017", Misconfigured),
            ("4046018", Declined),
            ("4056000", Misconfigured),
            ("4056001", Misconfigured),
            ("4096000", ExternalIdConflict),
            ("4096001", AlreadyProcessed),
            ("4096002", Uncertain),
            ("4136000", Uncertain),
            ("4296000", Throttled),
            ("5006000", Uncertain),
            ("5006001", Uncertain),
            ("5006002", Uncertain),
            ("5026000", Uncertain),
            ("5036000", Uncertain),
            ("5046000", Uncertain),
            ("3026000", Uncertain),
            ("1006000", Uncertain),
        ];
        for (code, want) in table {
            assert_eq!(classify_payment(c(code)), want, "{code}");
        }
        // The service digits never change the verdict.
        assert_eq!(classify_payment(c("4046818")), Declined);
        assert_eq!(classify_payment(c("2004700")), Success);
    }

    #[test]
    fn query_table() {
        use QueryClass::*;
        let table = [
            ("2006100", Found),
            ("2006101", Unavailable),
            ("2026100", Unavailable),
            ("4006101", Refused),
            ("4016100", Refused),
            ("4016101", TokenInvalid),
            ("4016103", TokenInvalid),
            ("4036105", Refused),
            ("4046101", NotFound),
            ("4046108", Refused),
            ("4046118", Refused),
            ("4096100", ExternalIdConflict),
            ("4096101", Refused),
            ("4296100", Unavailable),
            ("5006100", Unavailable),
            ("5006101", Unavailable),
            ("5046100", Unavailable),
            ("3016100", Unavailable),
        ];
        for (code, want) in table {
            assert_eq!(classify_query(c(code)), want, "{code}");
        }
    }

    #[test]
    fn refund_table() {
        use RefundClass::*;
        let table = [
            ("2008000", Refunded),
            ("2008001", Unavailable),
            ("2028000", Unavailable),
            ("4008001", Refused),
            ("4008002", Refused),
            ("4018000", Refused),
            ("4018001", TokenInvalid),
            ("4018003", TokenInvalid),
            ("4038000", Refused),
            ("4038014", Refused),
            ("4048001", Refused),
            ("4048013", Refused),
            ("4048018", Refunded),
            ("4098000", ExternalIdConflict),
            ("4098001", AlreadyProcessed),
            ("4298000", Unavailable),
            ("5008000", Unavailable),
            ("5048000", Unavailable),
        ];
        for (code, want) in table {
            assert_eq!(classify_refund(c(code)), want, "{code}");
        }
    }

    #[test]
    fn inconsistent_request_depends_on_service() {
        let code = c("4046018");
        assert_eq!(classify_payment(code), PaymentClass::Declined);
        assert_eq!(classify_refund(code), RefundClass::Refunded);
        assert_eq!(classify_query(code), QueryClass::Refused);
    }

    #[test]
    fn token_table() {
        use TokenClass::*;
        for (code, want) in [
            ("2007300", Issued),
            ("2007301", Unavailable),
            ("4007300", Refused),
            ("4007301", Refused),
            ("4017300", Refused),
            ("4017301", Refused),
            ("4297300", Unavailable),
            ("5007300", Unavailable),
            ("5047300", Unavailable),
        ] {
            assert_eq!(classify_token(c(code)), want, "{code}");
        }
    }

    #[test]
    fn retry_predicates() {
        assert!(c("4017301").is_token_invalid());
        assert!(c("4016003").is_token_invalid());
        assert!(!c("4016000").is_token_invalid());
        assert!(!c("4036001").is_token_invalid());
        assert!(c("4096000").is_external_id_conflict());
        assert!(!c("4096001").is_external_id_conflict());
        assert!(c("2006000").is_success());
        assert!(!c("2026000").is_success());
    }

    #[test]
    fn every_well_formed_code_classifies_without_panic() {
        for http in 100..=599u16 {
            for case in [0u8, 1, 3, 13, 18, 99] {
                let code = ResponseCode::new(http, 60, case).unwrap();
                assert_eq!(ResponseCode::parse(&code.to_string()), Ok(code));
                let pay = classify_payment(code);
                // Money may only be called "not moved" for 4xx answers; everything outside
                // 200xx00 and 4xx must stay uncertain.
                let no_money_claim = (400..500).contains(&http) || (http == 200 && case == 0);
                if !no_money_claim {
                    assert_eq!(pay, PaymentClass::Uncertain, "{code}");
                }
                let _ = (
                    classify_query(code),
                    classify_refund(code),
                    classify_token(code),
                );
            }
        }
    }
}
