//! BER-TLV as EMV uses it (EMV Book 3 Annex B): a bounds-checked parser that never panics on
//! outside bytes, and the small encoder the payload builder uses.
//!
//! What the parser accepts:
//! - tags of 1 to 3 bytes (EMV uses 1–2: `5A`, `5F20`, `9F74`); bit 6 of the first byte marks a
//!   constructed object, whose value is parsed as nested TLV with the same rules;
//! - lengths `00`..`7F`, `81 xx` and `82 xx xx` (multi-byte lengths occur in real QRIS payloads);
//!   the indefinite form `80` and longer forms are refused;
//! - `00` bytes between objects (padding), at any level;
//! - nothing left over: every byte of a level belongs to an object or is padding.
//!
//! Errors carry the byte offset (from the start of the parsed buffer) and a reason.

use std::fmt;

/// How deep constructed objects may nest. QRIS goes three deep (`61` > `63` > `9F74`); the
/// bound keeps a hostile payload from driving recursion.
pub const MAX_DEPTH: usize = 8;

/// A BER-TLV tag, stored as its bytes read big-endian (`0x9F74` for `9F 74`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u32);

impl Tag {
    /// `85` Payload Format Indicator.
    pub const PAYLOAD_FORMAT: Tag = Tag(0x85);
    /// `61` Application Template.
    pub const APPLICATION_TEMPLATE: Tag = Tag(0x61);
    /// `62` Common Data Template.
    pub const COMMON_DATA_TEMPLATE: Tag = Tag(0x62);
    /// `63` Application Specific Transparent Template (inside `61`).
    pub const APP_TRANSPARENT_TEMPLATE: Tag = Tag(0x63);
    /// `64` Common Data Transparent Template (inside `62`).
    pub const COMMON_TRANSPARENT_TEMPLATE: Tag = Tag(0x64);
    /// `4F` Application Definition File name (AID).
    pub const AID: Tag = Tag(0x4F);
    /// `50` Application Label.
    pub const LABEL: Tag = Tag(0x50);
    /// `57` Track 2 Equivalent Data.
    pub const TRACK2: Tag = Tag(0x57);
    /// `5A` Application PAN.
    pub const PAN: Tag = Tag(0x5A);
    /// `5F20` Cardholder Name.
    pub const CARDHOLDER_NAME: Tag = Tag(0x5F20);
    /// `5F2D` Language Preference.
    pub const LANGUAGE: Tag = Tag(0x5F2D);
    /// `5F50` Issuer URL.
    pub const ISSUER_URL: Tag = Tag(0x5F50);
    /// `9F25` Last 4 Digits of PAN.
    pub const LAST4: Tag = Tag(0x9F25);
    /// `9F74` issuer token (QRIS).
    pub const ISSUER_TOKEN: Tag = Tag(0x9F74);

    /// The tag's bytes as they go on the wire (`9F74` → `[0x9F, 0x74]`).
    pub fn to_bytes(self) -> Vec<u8> {
        let b = self.0.to_be_bytes();
        let skip = b.iter().take(3).take_while(|&&x| x == 0).count();
        b[skip..].to_vec()
    }

    /// Whether the tag marks a constructed object (bit 6 of its first byte).
    pub fn is_constructed(self) -> bool {
        self.to_bytes().first().is_some_and(|b| b & 0x20 != 0)
    }
}

impl fmt::Display for Tag {
    /// Upper-case hex of the tag bytes, as EMV documents write them: `9F74`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.to_bytes() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

/// One parsed object. The value borrows from the parsed buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag.
    pub tag: Tag,
    /// Offset of the tag's first byte in the parsed buffer.
    pub offset: usize,
    /// The value bytes (for a constructed object: its encoded children).
    pub value: &'a [u8],
    /// For a constructed object, its parsed children; empty for a primitive one.
    pub children: Vec<Tlv<'a>>,
}

impl<'a> Tlv<'a> {
    /// The first direct child with this tag.
    pub fn child(&self, tag: Tag) -> Option<&Tlv<'a>> {
        self.children.iter().find(|c| c.tag == tag)
    }
}

/// Why the bytes are not BER-TLV, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset}: {kind}")]
pub struct TlvError {
    /// Offset from the start of the parsed buffer where the problem was found.
    pub offset: usize,
    /// What is wrong there.
    pub kind: TlvErrorKind,
}

/// The reason part of a [`TlvError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlvErrorKind {
    /// The buffer ends inside a multi-byte tag.
    #[error("tag cut short (the data ends inside it)")]
    TruncatedTag,
    /// A tag runs past 3 bytes (EMV tags have 1 or 2).
    #[error("tag longer than 3 bytes")]
    TagTooLong,
    /// The buffer ends before or inside the length field.
    #[error("length of tag {tag} missing (the data ends)")]
    TruncatedLength {
        /// The tag whose length is missing.
        tag: Tag,
    },
    /// `80`: indefinite length, not allowed in EMV.
    #[error("tag {tag} uses the indefinite length form 80, not allowed in EMV")]
    IndefiniteLength {
        /// The tag.
        tag: Tag,
    },
    /// `83` or longer length forms.
    #[error("tag {tag} uses length form {first:02X}; only 00-7F, 81 xx and 82 xx xx are allowed")]
    UnsupportedLength {
        /// The tag.
        tag: Tag,
        /// The first length byte.
        first: u8,
    },
    /// The length says more bytes than remain.
    #[error("tag {tag} claims {len} value bytes but only {available} remain")]
    ValueOverrun {
        /// The tag.
        tag: Tag,
        /// The declared length.
        len: usize,
        /// Bytes actually left at this level.
        available: usize,
    },
    /// Constructed objects nest deeper than [`MAX_DEPTH`].
    #[error("objects nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Parses a whole buffer as a sequence of BER-TLV objects (with `00` padding between them),
/// recursing into constructed objects. Fails unless every byte is accounted for.
pub fn parse(buf: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    parse_level(buf, 0, 0)
}

fn parse_level(buf: &[u8], base: usize, depth: usize) -> Result<Vec<Tlv<'_>>, TlvError> {
    if depth > MAX_DEPTH {
        return Err(TlvError {
            offset: base,
            kind: TlvErrorKind::TooDeep,
        });
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        if buf[pos] == 0x00 {
            pos += 1;
            continue;
        }
        let start = pos;
        let err = |at: usize, kind| TlvError {
            offset: base + at,
            kind,
        };

        // Tag.
        let first = buf[pos];
        let mut tag = u32::from(first);
        pos += 1;
        if first & 0x1F == 0x1F {
            loop {
                let Some(&b) = buf.get(pos) else {
                    return Err(err(start, TlvErrorKind::TruncatedTag));
                };
                if pos - start >= 3 {
                    return Err(err(start, TlvErrorKind::TagTooLong));
                }
                tag = (tag << 8) | u32::from(b);
                pos += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let tag = Tag(tag);

        // Length.
        let len_at = pos;
        let Some(&l0) = buf.get(pos) else {
            return Err(err(len_at, TlvErrorKind::TruncatedLength { tag }));
        };
        pos += 1;
        let len = match l0 {
            0x00..=0x7F => usize::from(l0),
            0x80 => return Err(err(len_at, TlvErrorKind::IndefiniteLength { tag })),
            0x81 | 0x82 => {
                let n = usize::from(l0 & 0x7F);
                let Some(bytes) = buf.get(pos..pos + n) else {
                    return Err(err(len_at, TlvErrorKind::TruncatedLength { tag }));
                };
                pos += n;
                bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
            }
            _ => {
                return Err(err(
                    len_at,
                    TlvErrorKind::UnsupportedLength { tag, first: l0 },
                ))
            }
        };

        // Value.
        let available = buf.len() - pos;
        if len > available {
            return Err(err(
                len_at,
                TlvErrorKind::ValueOverrun {
                    tag,
                    len,
                    available,
                },
            ));
        }
        let value = &buf[pos..pos + len];
        let children = if tag.is_constructed() {
            parse_level(value, base + pos, depth + 1)?
        } else {
            Vec::new()
        };
        out.push(Tlv {
            tag,
            offset: base + start,
            value,
            children,
        });
        pos += len;
    }
    Ok(out)
}

/// Which length form the encoder writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LengthForm {
    /// The shortest form that fits (what most wallets send).
    #[default]
    Shortest,
    /// Always `81 xx` when the length fits one byte (some wallets do this), else `82 xx xx`.
    Long81,
    /// Always `82 xx xx`.
    Long82,
}

/// The largest value the encoder can describe (`82 FF FF`).
pub const MAX_ENCODABLE_LEN: usize = 0xFFFF;

/// Appends one object to `out`. Values longer than [`MAX_ENCODABLE_LEN`] are cut to that
/// length: the format cannot carry more, and the builder only makes small payloads.
pub fn encode_into(out: &mut Vec<u8>, tag: Tag, value: &[u8], form: LengthForm) {
    let value = &value[..value.len().min(MAX_ENCODABLE_LEN)];
    out.extend_from_slice(&tag.to_bytes());
    let len = value.len();
    let [_, _, hi, lo] = (len as u32).to_be_bytes();
    match form {
        LengthForm::Shortest if len < 0x80 => out.push(lo),
        LengthForm::Shortest | LengthForm::Long81 if len <= 0xFF => {
            out.extend_from_slice(&[0x81, lo])
        }
        _ => out.extend_from_slice(&[0x82, hi, lo]),
    }
    out.extend_from_slice(value);
}

/// One object as a fresh buffer; see [`encode_into`].
pub fn encode(tag: Tag, value: &[u8], form: LengthForm) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 5);
    encode_into(&mut out, tag, value, form);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn tags_print_and_classify() {
        assert_eq!(Tag(0x9F74).to_string(), "9F74");
        assert_eq!(Tag(0x5A).to_string(), "5A");
        assert_eq!(Tag(0x9F74).to_bytes(), vec![0x9F, 0x74]);
        assert!(Tag(0x61).is_constructed());
        assert!(Tag(0x63).is_constructed());
        assert!(!Tag(0x85).is_constructed());
        assert!(!Tag(0x5F20).is_constructed());
        assert!(!Tag(0x9F74).is_constructed());
    }

    #[test]
    fn parses_nested_with_padding_and_long_lengths() {
        // 85 CPV01, padding, 61 with 81-form length holding 5A, 63{9F74}, trailing padding.
        let buf = h("85 05 4350563031 00 00 61 81 0E 5A 02 1234 63 82 00 06 9F74 03 AABBCC 00");
        let objs = parse(&buf).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].tag, Tag(0x85));
        assert_eq!(objs[0].value, b"CPV01");
        let t = &objs[1];
        assert_eq!(t.tag, Tag(0x61));
        assert_eq!(t.offset, 9);
        assert_eq!(t.child(Tag(0x5A)).unwrap().value, &[0x12, 0x34]);
        let tok = t.child(Tag(0x63)).unwrap().child(Tag(0x9F74)).unwrap();
        assert_eq!(tok.value, &[0xAA, 0xBB, 0xCC]);
        assert_eq!(tok.offset, 20);
    }

    #[test]
    fn errors_carry_offset_and_reason() {
        let e = parse(&h("85 05 4350")).unwrap_err();
        assert_eq!(e.offset, 1);
        assert!(matches!(
            e.kind,
            TlvErrorKind::ValueOverrun {
                len: 5,
                available: 2,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "byte 1: tag 85 claims 5 value bytes but only 2 remain"
        );

        let e = parse(&h("5A 01 12 9F")).unwrap_err();
        assert_eq!((e.offset, e.kind), (3, TlvErrorKind::TruncatedTag));

        let e = parse(&h("5A")).unwrap_err();
        assert_eq!(e.kind, TlvErrorKind::TruncatedLength { tag: Tag(0x5A) });

        let e = parse(&h("5A 82 00")).unwrap_err();
        assert_eq!(e.kind, TlvErrorKind::TruncatedLength { tag: Tag(0x5A) });

        let e = parse(&h("5A 80 00 00")).unwrap_err();
        assert_eq!(e.kind, TlvErrorKind::IndefiniteLength { tag: Tag(0x5A) });

        let e = parse(&h("5A 83 00 00 01 00")).unwrap_err();
        assert_eq!(
            e.kind,
            TlvErrorKind::UnsupportedLength {
                tag: Tag(0x5A),
                first: 0x83
            }
        );

        let e = parse(&h("9F 81 81 81 01 00")).unwrap_err();
        assert_eq!(e.kind, TlvErrorKind::TagTooLong);

        // The offset of an error inside a constructed object counts from the outer buffer.
        let e = parse(&h("61 04 5A 05 12 34")).unwrap_err();
        assert_eq!(e.offset, 3);
    }

    #[test]
    fn nesting_is_bounded() {
        let mut buf = vec![];
        for _ in 0..=MAX_DEPTH + 1 {
            buf = encode(Tag(0x61), &buf, LengthForm::Shortest);
        }
        assert_eq!(parse(&buf).unwrap_err().kind, TlvErrorKind::TooDeep);
    }

    #[test]
    fn encoder_round_trips_every_form() {
        for form in [LengthForm::Shortest, LengthForm::Long81, LengthForm::Long82] {
            for len in [0usize, 1, 127, 128, 255, 256, 1000] {
                let value = vec![0x42; len];
                let enc = encode(Tag(0x9F74), &value, form);
                let objs = parse(&enc).unwrap();
                assert_eq!(objs.len(), 1);
                assert_eq!(objs[0].value.len(), len, "{form:?} {len}");
            }
        }
        assert_eq!(encode(Tag(0x5A), &[1], LengthForm::Shortest), h("5A 01 01"));
        assert_eq!(
            encode(Tag(0x5A), &[1], LengthForm::Long81),
            h("5A 81 01 01")
        );
        assert_eq!(
            encode(Tag(0x5A), &[1], LengthForm::Long82),
            h("5A 82 00 01 01")
        );
        assert_eq!(
            encode(Tag(0x5A), &[0; 200], LengthForm::Shortest)[..3],
            h("5A 81 C8")
        );
    }
}
