//! CSV export of fare operations (RFC 4180), for reconciliation in a spreadsheet.

use std::io::{self, Write};

use super::model::OpRow;

/// The header line's columns, in order.
pub const CSV_COLUMNS: [&str; 24] = [
    "partner_reference_no",
    "kind",
    "lane",
    "direction",
    "station_id",
    "amount",
    "pan_key",
    "pan_masked",
    "nns",
    "state",
    "reference_no",
    "response_code",
    "gate_opened",
    "reason",
    "attempts",
    "next_attempt_at_ms",
    "refund_no",
    "refund_amount",
    "created_at_ms",
    "created_at",
    "updated_at_ms",
    "journey_id",
    "fast_opened",
    "channel",
];

/// Writes `rows` as CSV with a header line: CRLF line ends, fields quoted when they hold a
/// comma, quote, CR or LF. Amounts are whole rupiah; `created_at` is RFC 3339 UTC (for people
/// matching against settlement reports), next to the exact `created_at_ms`. Empty fields are
/// unknown values.
pub fn write_csv(rows: &[OpRow], w: &mut dyn Write) -> io::Result<()> {
    write_record(w, CSV_COLUMNS.iter().map(|c| (*c).to_owned()))?;
    for r in rows {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let created = jiff::Timestamp::from_millisecond(r.created_at_ms)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let fields = [
            r.partner_reference_no.clone(),
            r.kind.as_str().to_owned(),
            r.lane.clone(),
            r.direction.as_str().to_owned(),
            r.station_id.clone(),
            r.amount.0.to_string(),
            r.pan_key.clone(),
            r.pan_masked.clone(),
            r.nns.clone(),
            r.state.as_str().to_owned(),
            opt(&r.reference_no),
            opt(&r.response_code),
            r.gate_opened
                .map_or_else(String::new, |g| u8::from(g).to_string()),
            opt(&r.reason),
            r.attempts.to_string(),
            r.next_attempt_at_ms
                .map_or_else(String::new, |v| v.to_string()),
            opt(&r.refund_no),
            r.refund_amount
                .map_or_else(String::new, |v| v.0.to_string()),
            r.created_at_ms.to_string(),
            created,
            r.updated_at_ms.to_string(),
            r.journey_id.map_or_else(String::new, |v| v.to_string()),
            u8::from(r.fast_opened).to_string(),
            r.channel.as_str().to_owned(),
        ];
        write_record(w, fields.into_iter())?;
    }
    w.flush()
}

fn write_record(w: &mut dyn Write, fields: impl Iterator<Item = String>) -> io::Result<()> {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        if f.contains([',', '"', '\r', '\n']) {
            w.write_all(b"\"")?;
            w.write_all(f.replace('"', "\"\"").as_bytes())?;
            w.write_all(b"\"")?;
        } else {
            w.write_all(f.as_bytes())?;
        }
    }
    w.write_all(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        let mut out = Vec::new();
        write_record(
            &mut out,
            ["plain", "a,b", "say \"hi\"", "two\nlines", ""]
                .iter()
                .map(|s| (*s).to_owned()),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }
}
