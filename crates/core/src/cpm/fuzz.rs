//! The bodies of the fuzz targets, and the privacy check they share with the tests.
//!
//! `fuzz/fuzz_targets/*.rs` (libFuzzer, `cargo +nightly fuzz run <target>`) and
//! `tests/fuzz_corpus.rs` (stable, part of `cargo test`) call these same functions, so a
//! crash found by one replays in the other. Each target panics when a promise is broken and
//! returns quietly otherwise; none does I/O.

use crate::cpm::tlv::{self, Tlv};
use crate::nfc::qris_tap::{read_qr_content, MAX_PAYLOAD_CHARS, MAX_RECORDS};
use crate::nfc::{ApduChannel, ChannelError};

/// A fuzz target's body: panics when a promise is broken.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/Cargo.toml` names its binaries.
pub const TARGETS: [(&str, Target); 3] = [
    ("cpm_decode", cpm_decode),
    ("tlv_parse", tlv_parse),
    ("qris_tap", qris_tap),
];

/// The shortest run of PAN digits that counts as a leak when it covers a digit the mask hides.
/// Shorter runs occur by chance in any text with numbers; this one does not in tapgate's
/// output (its numbers are lengths, offsets and codes of at most 5 digits).
pub const LEAK_RUN: usize = 6;

/// Where `text` shows more of `pan` than its mask does (first 8 and last 4 digits): the first
/// run of at least [`LEAK_RUN`] consecutive PAN digits found in `text` that covers a hidden
/// digit. `None` when there is none.
pub fn pan_leak<'a>(text: &str, pan: &'a str) -> Option<&'a str> {
    pan_run_in(text, pan, LEAK_RUN)
}

/// As [`pan_leak`] with runs of at least `run` digits. Runs longer than 8 digits are what the
/// mask never shows at all (its longest part is the 8-digit NNS); a check over text full of
/// unrelated numbers (timings, references) uses `run = 9` so that chance never matches.
pub fn pan_run_in<'a>(text: &str, pan: &'a str, run: usize) -> Option<&'a str> {
    let n = pan.len();
    if n < 13 || run == 0 || run > n || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hidden = 8..n - 4;
    let (nns, last4) = (&pan[..8], &pan[n - 4..]);
    (0..=n - run).find_map(|start| {
        let end = start + run;
        let covers_hidden = start < hidden.end && end > hidden.start;
        let window = &pan[start..end];
        // Digits that the shown parts spell as well (a PAN repeating its own NNS) tell
        // nothing the mask does not.
        let shown_anyway = nns.contains(window) || last4.contains(window);
        (covers_hidden && !shown_anyway && text.contains(window)).then_some(window)
    })
}

/// `cpm_decode`: the decoder on arbitrary bytes, as BER-TLV and (when UTF-8) as payload text.
/// Whatever it accepts holds a QRIS PAN; no view, warning, report or error it produces shows
/// more than the masked PAN, and the report never repeats the payload text.
pub fn cpm_decode(data: &[u8]) {
    match crate::cpm::decode_bytes(data) {
        Ok(p) => check_payload(&p),
        Err(e) => check_error(&e),
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let report = crate::cpm::decode_report(text);
    match crate::cpm::decode(text) {
        Ok(p) => {
            check_payload(&p);
            assert!(report.valid);
            let digits = p.pan().digits();
            for out in [format!("{report:?}"), json(&report)] {
                assert_no_leak(&out, digits);
            }
        }
        Err(e) => {
            check_error(&e);
            assert!(!report.valid);
        }
    }
    // The payload text (`qrContent`) is never repeated. Only a payload-like text counts: any
    // other input may be spelled from the report's own words.
    if text.len() >= 24 && text.starts_with(crate::cpm::qris::CPM_TEXT_PREFIX) {
        for out in [format!("{report:?}"), json(&report)] {
            assert!(!out.contains(text), "payload text in the report: {out}");
        }
    }
}

/// `tlv_parse`: the BER-TLV parser on arbitrary bytes: no panic, and every object it returns
/// lies inside the input at the offset it claims.
pub fn tlv_parse(data: &[u8]) {
    fn walk(data: &[u8], objs: &[Tlv<'_>]) {
        for o in objs {
            assert!(o.offset < data.len());
            assert!(o.value.len() <= data.len() - o.offset);
            walk(data, &o.children);
        }
    }
    if let Ok(objs) = tlv::parse(data) {
        walk(data, &objs);
    }
}

/// `qris_tap`: the APDU exchange against a phone whose answers are the input split on `|`, one
/// answer per command. No panic, never more than SELECT + [`MAX_RECORDS`] READ RECORDs, any
/// text returned is printable ASCII of at most [`MAX_PAYLOAD_CHARS`] characters, and an error
/// is short whatever the phone sent (it never repeats the records).
pub fn qris_tap(data: &[u8]) {
    struct FuzzPhone<'a> {
        answers: std::slice::Split<'a, u8, fn(&u8) -> bool>,
        sent: usize,
    }
    impl ApduChannel for FuzzPhone<'_> {
        fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>, ChannelError> {
            self.sent += 1;
            self.answers
                .next()
                .map(<[u8]>::to_vec)
                .ok_or(ChannelError::CardRemoved)
        }
    }
    let is_sep: fn(&u8) -> bool = |b| *b == b'|';
    let mut phone = FuzzPhone {
        answers: data.split(is_sep),
        sent: 0,
    };
    match read_qr_content(&mut phone) {
        Ok(text) => {
            assert!(text.len() <= MAX_PAYLOAD_CHARS);
            assert!(text.bytes().all(|b| (0x20..0x7F).contains(&b)));
        }
        Err(e) => {
            // Built from the step, the status word and counts only: short whatever the phone
            // sent (record data, which is the payload, is never echoed).
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(shown.len() <= 120, "error grew with the input: {shown}");
            }
        }
    }
    assert!(phone.sent <= 1 + usize::from(MAX_RECORDS));
}

fn json(report: &crate::cpm::DecodeReport) -> String {
    serde_json::to_string(report).unwrap_or_else(|e| panic!("report does not serialize: {e}"))
}

fn check_payload(p: &crate::cpm::QrisPayload) {
    let digits = p.pan().digits();
    assert!(digits.starts_with(crate::cpm::qris::QRIS_PAN_PREFIX));
    assert!((16..=19).contains(&digits.len()));
    assert!(digits.bytes().all(|b| b.is_ascii_digit()));
    assert_no_leak(&format!("{p:?}"), digits);
    assert_no_leak(&p.pan().to_string(), digits);
    for w in p.warnings() {
        assert_no_leak(w, digits);
    }
    for field in [p.label(), p.language()].into_iter().flatten() {
        assert_no_leak(field, digits);
    }
}

/// A rejection names no account: nothing in its text may look like one (a run of more than 8
/// digits) except another scheme's AID, which is shown only when it looks registered.
fn check_error(e: &crate::cpm::CpmError) {
    if matches!(e, crate::cpm::CpmError::NoQrisAid { .. }) {
        return;
    }
    for out in [e.to_string(), format!("{e:?}")] {
        let longest = out
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest <= 8, "a digit run of {longest} in an error: {out}");
    }
}

fn assert_no_leak(out: &str, digits: &str) {
    if let Some(run) = pan_leak(out, digits) {
        panic!("PAN digits {run} (more than the mask shows) in: {out}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_is_a_run_past_the_mask() {
        let pan = "9360001417451180859";
        assert_eq!(pan_leak("93600014*******0859", pan), None);
        assert_eq!(pan_leak("PAN 9360001417451180859F", pan), Some("000141"));
        // Hidden digits alone, and a run crossing from the NNS into them.
        assert_eq!(pan_leak("x 1745118 y", pan), Some("174511"));
        assert_eq!(pan_leak("936000141", pan), Some("000141"));
        // The shown parts, even together, are not a leak.
        assert_eq!(pan_leak("93600014 0859 936000", pan), None);
        assert_eq!(pan_run_in("x 1745118 y", pan, 9), None);
        assert_eq!(pan_run_in("x 141745118 y", pan, 9), Some("141745118"));
        // A PAN whose hidden digits repeat its NNS: the mask itself is no leak.
        let pan = "9360001415360001459";
        assert_eq!(pan_leak("Pan(93600014*******1459)", pan), None);
        assert_eq!(pan_leak("1415360001", pan), Some("141536"));
    }
}
