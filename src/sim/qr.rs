//! The simulator's view of `qrContent`: only the PAN matters to it (routing by NNS, declines by
//! PAN).
//!
//! TEMPORARY: `crate::cpm` is being written on another branch. Until it is merged, this file
//! holds a deliberately small private decoder behind [`pan_of`], the ONE place to switch to
//! `crate::cpm::decode(text).ok().map(|p| p.pan().digits().to_string())` afterwards (and then
//! delete everything below `pan_of`).

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// The QRIS CPM application identifier.
const QRIS_AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x06, 0x02, 0x20, 0x20];

/// The PAN digits of a QRIS CPM payload, or `None` when the text is not one.
pub(crate) fn pan_of(qr: &str) -> Option<String> {
    if qr.len() > 512 || !qr.starts_with("hQVDUFY") {
        return None;
    }
    let b64 = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = b64.decode(qr.as_bytes()).ok()?;
    let top = tlv_list(&bytes)?;
    let (first_tag, first_val) = top.first()?;
    if *first_tag != 0x85 || *first_val != b"CPV01" {
        return None;
    }
    for (tag, value) in &top {
        if *tag != 0x61 {
            continue;
        }
        let inner = tlv_list(value)?;
        let is_qris = inner
            .iter()
            .any(|(t, v)| *t == 0x4F && v.starts_with(&QRIS_AID));
        if !is_qris {
            continue;
        }
        let from_5a = inner
            .iter()
            .find(|(t, _)| *t == 0x5A)
            .map(|(_, v)| hex::encode_upper(v).trim_end_matches('F').to_string());
        let from_57 = inner.iter().find(|(t, _)| *t == 0x57).map(|(_, v)| {
            let h = hex::encode_upper(v);
            h.split('D').next().unwrap_or_default().to_string()
        });
        let pan = match (from_5a, from_57) {
            (Some(a), Some(b)) if a != b => return None,
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => return None,
        };
        let ok =
            pan.starts_with("9360") && pan.len() <= 19 && pan.bytes().all(|b| b.is_ascii_digit());
        return ok.then_some(pan);
    }
    None
}

/// Splits a buffer into BER-TLV objects (tag as up to 4 bytes big-endian, value). Skips `00`
/// padding between objects; `None` on any overrun.
fn tlv_list(mut buf: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    let mut out = Vec::new();
    while let Some((&first, rest)) = buf.split_first() {
        if first == 0x00 {
            buf = rest;
            continue;
        }
        let mut tag = u32::from(first);
        let mut at = 1;
        if first & 0x1F == 0x1F {
            loop {
                let b = *buf.get(at)?;
                at += 1;
                if at > 4 {
                    return None;
                }
                tag = (tag << 8) | u32::from(b);
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let l0 = *buf.get(at)?;
        at += 1;
        let len = match l0 {
            0..=0x7F => usize::from(l0),
            0x81 => {
                let l = usize::from(*buf.get(at)?);
                at += 1;
                l
            }
            0x82 => {
                let l = usize::from(*buf.get(at)?) << 8 | usize::from(*buf.get(at + 1)?);
                at += 2;
                l
            }
            _ => return None,
        };
        let end = at.checked_add(len)?;
        out.push((tag, buf.get(at..end)?));
        buf = buf.get(end..)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        payload: String,
        expect: serde_json::Value,
    }

    #[test]
    fn fixture_payloads_give_their_pan_or_nothing() {
        let cases: Vec<Case> =
            serde_json::from_str(include_str!("../../tests/fixtures/cpm-payloads.json")).unwrap();
        assert!(cases.len() >= 5);
        for c in cases {
            let want = c.expect["pan"].as_str().map(str::to_string);
            assert_eq!(pan_of(&c.payload), want, "{}", c.name);
        }
    }

    #[test]
    fn garbage_is_not_a_payload() {
        for bad in ["", "hQVDUFY", "hQVDUFY!!!!", "aGVsbG8=", "hQVDUFYwMWH/"] {
            assert_eq!(pan_of(bad), None, "{bad:?}");
        }
        assert_eq!(tlv_list(&[0x9F]), None);
        assert_eq!(tlv_list(&[0x5A, 0x05, 0x01]), None);
        assert_eq!(tlv_list(&[0x5A, 0x83, 0, 0, 1]), None);
        assert_eq!(tlv_list(&[0, 0]), Some(vec![]));
    }
}
