//! The decoder against damaged input: every truncation of every valid payload (text and
//! bytes), and a few thousand seeded random mutations. A deterministic loop (fixed seed), so a
//! failure reproduces; whatever comes back must respect the decoder's promises.

use base64::Engine as _;
use tapgate::cpm::build::{payload_bytes, PanField, PayloadSpec};
use tapgate::cpm::tlv::{LengthForm, Tag};
use tapgate::cpm::{decode, decode_bytes, decode_report, QrisPayload};

mod common;
use common::SplitMix;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn corpus() -> Vec<Vec<u8>> {
    let mut out = common::fixture_payloads();
    let pan = "9360091800001234567";
    out.push(payload_bytes(
        &PayloadSpec::new(pan)
            .with_private_tag(Tag(0x9F76), b"\x01\x02")
            .with_name("SITI"),
    ));
    out.push(payload_bytes(&PayloadSpec {
        pan_field: PanField::Both,
        padding: 2,
        last4: Some("4567".into()),
        ..PayloadSpec::new(pan)
    }));
    out.push(payload_bytes(&PayloadSpec {
        length_form: LengthForm::Long82,
        ..PayloadSpec::new(pan)
    }));
    out.push(payload_bytes(
        &PayloadSpec::new(pan).with_token(&[0xAB; 150]),
    ));
    out
}

/// What any accepted payload must satisfy, however it was mangled.
fn check_promises(p: &QrisPayload, text: Option<&str>) {
    let digits = p.pan().digits();
    assert!(digits.starts_with("9360"), "{digits}");
    assert!((16..=19).contains(&digits.len()));
    assert!(digits.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(p.nns(), &digits[..8]);
    assert!(!format!("{p:?}").contains(digits));
    assert!(p.warnings().iter().all(|w| !w.contains(digits)));
    if let Some(text) = text {
        let json = serde_json::to_string(&decode_report(text)).unwrap();
        assert!(!json.contains(digits), "{json}");
    }
}

#[test]
fn every_truncation_is_rejected_without_panicking() {
    let (mut checked, mut valid_texts) = (0, 0);
    for full in corpus() {
        let whole_ok = decode_bytes(&full).is_ok();
        let trailing_pad = full.last() == Some(&0);
        for cut in 0..full.len() {
            let part = &full[..cut];
            let r = decode_bytes(part);
            // A cut can only leave a valid payload if it removed nothing but padding.
            if !trailing_pad {
                assert!(r.is_err(), "byte prefix of {cut} accepted");
            }
            let _ = decode(&b64(part));
            checked += 2;
        }
        let text = b64(&full);
        let text_ok = decode(&text).is_ok();
        // The text adds rules (prefix, length) to the bytes' rules, never removes any.
        assert!(!text_ok || whole_ok);
        valid_texts += usize::from(text_ok);
        for cut in 0..text.len() {
            let r = decode(&text[..cut]);
            // Dropping only the optional '=' padding leaves the same bytes.
            let same_bytes = cut >= text.trim_end_matches('=').len();
            if !trailing_pad && text_ok && !same_bytes {
                assert!(r.is_err(), "text prefix of {cut} accepted");
            }
            checked += 1;
        }
    }
    assert!(checked > 2000, "{checked}");
    assert_eq!(
        valid_texts, 7,
        "4 fixtures and 3 built payloads are valid text"
    );
}

#[test]
fn seeded_random_mutations_never_panic_and_keep_the_promises() {
    let corpus = corpus();
    let mut rng = SplitMix(0x7A9_6A7E);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..6000 {
        let mut bytes = corpus[rng.below(corpus.len())].clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len().max(1));
            match rng.below(6) {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
                1 if !bytes.is_empty() => bytes[at] = rng.next() as u8,
                2 => bytes.insert(at.min(bytes.len()), rng.next() as u8),
                3 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                4 if !bytes.is_empty() => {
                    // Lengths are where parsers break: push one to an extreme.
                    bytes[at] = [0x00, 0x7F, 0x80, 0x81, 0x82, 0x83, 0xFF][rng.below(7)];
                }
                _ => {
                    let end = (at + 1 + rng.below(8)).min(bytes.len());
                    let copy = bytes[at.min(end)..end].to_vec();
                    bytes.splice(at.min(bytes.len())..at.min(bytes.len()), copy);
                }
            }
        }
        match decode_bytes(&bytes) {
            Ok(p) => {
                accepted += 1;
                check_promises(&p, None);
            }
            Err(e) => {
                rejected += 1;
                assert!(!e.to_string().is_empty() && !e.code().is_empty());
            }
        }
        let text = b64(&bytes);
        if let Ok(p) = decode(&text) {
            check_promises(&p, Some(&text));
        }

        // Text-level damage: replace, drop or insert one character.
        let mut text: Vec<char> = b64(&corpus[rng.below(corpus.len())]).chars().collect();
        let at = rng.below(text.len());
        let c = char::from_u32(rng.below(0x250) as u32).unwrap_or('?');
        match rng.below(3) {
            0 => text[at] = c,
            1 => {
                text.remove(at);
            }
            _ => text.insert(at, c),
        }
        let text: String = text.into_iter().collect();
        if let Ok(p) = decode(&text) {
            check_promises(&p, Some(&text));
        }
    }
    // The loop must exercise both sides, or it tests nothing.
    assert!(accepted > 100, "accepted {accepted}");
    assert!(rejected > 1000, "rejected {rejected}");
}
