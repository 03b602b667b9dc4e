//! Reading body fields leniently but strictly: the simulator's own field checks, independent
//! of the client's wire types.

use serde_json::{json, Map, Value};

use super::{reject, Kind, Reject};

/// A body field problem: missing mandatory field (`xx02`) or bad format (`xx01`).
pub(super) enum FieldErr {
    Missing(String),
    Format(String, &'static str),
}

impl FieldErr {
    pub(super) fn into_reject(self) -> Reject {
        match self {
            FieldErr::Missing(f) => reject(
                Kind::Body,
                400,
                "02",
                "Invalid Mandatory Field",
                format!("{f} missing"),
            ),
            FieldErr::Format(f, why) => reject(
                Kind::Body,
                400,
                "01",
                "Invalid Field Format",
                format!("{f}: {why}"),
            ),
        }
    }
}

pub(super) fn req_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<&'a str, FieldErr> {
    opt_str(obj, key, max)?.ok_or_else(|| FieldErr::Missing(key.into()))
}

pub(super) fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<&'a str>, FieldErr> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(FieldErr::Missing(key.into())),
        Some(Value::String(s)) if s.chars().count() > max => {
            Err(FieldErr::Format(key.into(), "too long"))
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldErr::Format(key.into(), "not a string")),
    }
}

pub(super) fn opt_obj<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, FieldErr> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(FieldErr::Format(key.into(), "not an object")),
    }
}

/// An amount object `{"value":"14000.00","currency":"IDR"}`, in whole rupiah.
pub(super) fn opt_amount(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, FieldErr> {
    let Some(a) = opt_obj(obj, key)? else {
        return Ok(None);
    };
    let value = req_str(a, "value", 18).map_err(|e| prefix(e, key))?;
    let currency = req_str(a, "currency", 3).map_err(|e| prefix(e, key))?;
    if currency != "IDR" {
        return Err(FieldErr::Format(format!("{key}.currency"), "not IDR"));
    }
    parse_amount(value).map(Some).ok_or_else(|| {
        FieldErr::Format(format!("{key}.value"), "not digits with two zero decimals")
    })
}

pub(super) fn prefix(e: FieldErr, key: &str) -> FieldErr {
    match e {
        FieldErr::Missing(f) => FieldErr::Missing(format!("{key}.{f}")),
        FieldErr::Format(f, why) => FieldErr::Format(format!("{key}.{f}"), why),
    }
}

/// The strict wire form `"14000.00"`: 1–15 digits, a dot, `00` (IDR has no minor unit).
pub(super) fn parse_amount(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > 15 || frac != "00" {
        return None;
    }
    whole.parse().ok()
}

/// The payment a query or refund names.
pub(super) struct Original<'a> {
    /// `originalPartnerReferenceNo`.
    pub(super) partner: Option<&'a str>,
    /// `originalReferenceNo`.
    pub(super) reference: Option<&'a str>,
}

/// `originalPartnerReferenceNo` and `originalReferenceNo`, at least one of them (`missing`
/// is the field named when both are absent).
pub(super) fn original<'a>(
    obj: &'a Map<String, Value>,
    missing: &str,
) -> Result<Original<'a>, FieldErr> {
    original_refs(obj, false, missing)
}

/// [`original`] for a query, which takes `originalExternalId` too: read between the two and
/// the check that one is there, so that a malformed one is what is answered.
pub(super) fn original_with_external_id<'a>(
    obj: &'a Map<String, Value>,
    missing: &str,
) -> Result<Original<'a>, FieldErr> {
    original_refs(obj, true, missing)
}

fn original_refs<'a>(
    obj: &'a Map<String, Value>,
    external_id: bool,
    missing: &str,
) -> Result<Original<'a>, FieldErr> {
    let partner = opt_str(obj, "originalPartnerReferenceNo", 64)?;
    let reference = opt_str(obj, "originalReferenceNo", 64)?;
    if external_id {
        opt_str(obj, "originalExternalId", 36)?;
    }
    if partner.is_none() && reference.is_none() {
        return Err(FieldErr::Missing(missing.into()));
    }
    Ok(Original { partner, reference })
}

/// An amount in whole rupiah in its wire form, `{"value":"5000.00","currency":"IDR"}`.
pub(super) fn rupiah(amount: u64) -> Value {
    json!({ "value": format!("{amount}.00"), "currency": "IDR" })
}

/// Counts body keys outside `known` (returns their names).
pub(super) fn unknown_keys(obj: &Map<String, Value>, known: &[&str]) -> Vec<String> {
    obj.keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// For the field tests: `good` with one change.
#[cfg(test)]
pub(super) fn changed(
    good: &Value,
    change: &dyn Fn(&mut Map<String, Value>),
) -> Map<String, Value> {
    let mut b = good.as_object().cloned().unwrap_or_default();
    change(&mut b);
    b
}

/// For the field tests: what a parse said, `ok`, `missing <field>` or `format <field>`.
#[cfg(test)]
pub(super) fn verdict<T>(parsed: Result<T, FieldErr>) -> String {
    match parsed {
        Ok(_) => "ok".to_string(),
        Err(FieldErr::Missing(f)) => format!("missing {f}"),
        Err(FieldErr::Format(f, _)) => format!("format {f}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_must_have_two_zero_decimals() {
        assert_eq!(parse_amount("14000.00"), Some(14000));
        assert_eq!(parse_amount("0.00"), Some(0));
        for bad in [
            "14000", "14000.0", "14000.50", "-1.00", ".00", "1,000.00", "1e3.00", " 1.00",
        ] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
    }
}
