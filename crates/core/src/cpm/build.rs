//! Builds QRIS TAP payloads for tests, the demo and the virtual phone: valid ones shaped like
//! real wallets' (BRI, GoPay, OVO, ShopeePay...), and deliberately odd ones (track 2 only,
//! disagreeing PANs, padding, long lengths, private tags, trailing garbage).
//!
//! ```
//! use tapgate_core::cpm::build::{payload, PayloadSpec};
//! let text = payload(&PayloadSpec::new("9360091430100531720").with_token(b"tap-0001"));
//! let p = tapgate_core::cpm::decode(&text).unwrap();
//! assert_eq!(p.nns(), "93600914");
//! ```

use base64::Engine as _;

use super::qris::QRIS_AID;
use super::tlv::{encode_into, LengthForm, Tag};

/// Where the account number goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PanField {
    /// `5A` only (what most wallets send).
    #[default]
    Pan5A,
    /// `57` (track 2 equivalent) only.
    Track2,
    /// Both `5A` and `57`.
    Both,
}

/// What to put in a payload. Start from [`PayloadSpec::new`] and change fields (they are public)
/// or use the `with_*` helpers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadSpec {
    /// The PAN digits (QRIS: 19 digits starting `9360`). Non-digits are written as-is, nibble
    /// by nibble, which makes a deliberately malformed `5A`.
    pub pan: String,
    /// Which tag(s) carry the PAN.
    pub pan_field: PanField,
    /// PAN digits to write in `57` instead of [`Self::pan`] (for a 5A/57 disagreement).
    pub track2_pan: Option<String>,
    /// The AID in `4F`.
    pub aid: Vec<u8>,
    /// `50` application label; `None` leaves it out.
    pub label: Option<String>,
    /// `5F2D` language; `None` leaves it out.
    pub language: Option<String>,
    /// `5F20` cardholder name; `None` leaves it out.
    pub name: Option<String>,
    /// `5F50` issuer URL; `None` leaves it out.
    pub issuer_url: Option<String>,
    /// `9F25` last 4 digits as written (4 digits); `None` leaves it out.
    pub last4: Option<String>,
    /// `9F74` bytes inside `63`; `None` leaves out the whole `63` template.
    pub issuer_token: Option<Vec<u8>>,
    /// Extra objects written inside `61` after the standard ones (e.g. ShopeePay's `9F76`);
    /// also how to make a duplicate tag.
    pub private_tags: Vec<(Tag, Vec<u8>)>,
    /// AIDs of other applications, each written as its own `61` before the QRIS one.
    pub other_apps: Vec<Vec<u8>>,
    /// `00` bytes written between objects (top level and inside `61`).
    pub padding: usize,
    /// The length form of every object.
    pub length_form: LengthForm,
    /// The `85` value (`CPV01`).
    pub format_indicator: Vec<u8>,
    /// Raw bytes appended after the last object, before base64.
    pub trailing: Vec<u8>,
}

impl PayloadSpec {
    /// A valid QRIS TAP payload for this PAN: AID, label `QRISCPM`, language `iden`, PAN in
    /// `5A`, and a fixed 8-byte issuer token. Use [`Self::with_token`] to make each tap fresh.
    pub fn new(pan: &str) -> PayloadSpec {
        PayloadSpec {
            pan: pan.to_string(),
            pan_field: PanField::Pan5A,
            track2_pan: None,
            aid: QRIS_AID.to_vec(),
            label: Some("QRISCPM".into()),
            language: Some("iden".into()),
            name: None,
            issuer_url: None,
            last4: None,
            issuer_token: Some(b"4b8890f5".to_vec()),
            private_tags: Vec::new(),
            other_apps: Vec::new(),
            padding: 0,
            length_form: LengthForm::Shortest,
            format_indicator: b"CPV01".to_vec(),
            trailing: Vec::new(),
        }
    }

    /// Sets the `9F74` issuer token (a fresh one per tap, like a real wallet).
    pub fn with_token(mut self, token: &[u8]) -> PayloadSpec {
        self.issuer_token = Some(token.to_vec());
        self
    }

    /// Leaves out `63`/`9F74`.
    pub fn without_token(mut self) -> PayloadSpec {
        self.issuer_token = None;
        self
    }

    /// Sets the cardholder name (`5F20`).
    pub fn with_name(mut self, name: &str) -> PayloadSpec {
        self.name = Some(name.to_string());
        self
    }

    /// Adds an object inside `61`.
    pub fn with_private_tag(mut self, tag: Tag, value: &[u8]) -> PayloadSpec {
        self.private_tags.push((tag, value.to_vec()));
        self
    }
}

/// The base64 text of the payload `spec` describes.
pub fn payload(spec: &PayloadSpec) -> String {
    base64::engine::general_purpose::STANDARD.encode(payload_bytes(spec))
}

/// The BER-TLV bytes of the payload `spec` describes (before base64).
pub fn payload_bytes(spec: &PayloadSpec) -> Vec<u8> {
    let form = spec.length_form;
    let pad = |out: &mut Vec<u8>| out.resize(out.len() + spec.padding, 0);

    let mut app = Vec::new();
    encode_into(&mut app, Tag::AID, &spec.aid, form);
    pad(&mut app);
    if let Some(label) = &spec.label {
        encode_into(&mut app, Tag::LABEL, label.as_bytes(), form);
    }
    if matches!(spec.pan_field, PanField::Pan5A | PanField::Both) {
        encode_into(&mut app, Tag::PAN, &bcd_padded(&spec.pan), form);
        pad(&mut app);
    }
    if matches!(spec.pan_field, PanField::Track2 | PanField::Both) {
        let pan = spec.track2_pan.as_deref().unwrap_or(&spec.pan);
        // PAN, separator, expiry YYMM, service code 201, then F pad to whole bytes.
        encode_into(
            &mut app,
            Tag::TRACK2,
            &bcd_padded(&format!("{pan}D3012201")),
            form,
        );
    }
    if let Some(name) = &spec.name {
        encode_into(&mut app, Tag::CARDHOLDER_NAME, name.as_bytes(), form);
    }
    if let Some(lang) = &spec.language {
        encode_into(&mut app, Tag::LANGUAGE, lang.as_bytes(), form);
    }
    if let Some(url) = &spec.issuer_url {
        encode_into(&mut app, Tag::ISSUER_URL, url.as_bytes(), form);
    }
    if let Some(last4) = &spec.last4 {
        encode_into(&mut app, Tag::LAST4, &bcd_padded(last4), form);
    }
    for (tag, value) in &spec.private_tags {
        encode_into(&mut app, *tag, value, form);
    }
    if let Some(token) = &spec.issuer_token {
        let mut t = Vec::new();
        encode_into(&mut t, Tag::ISSUER_TOKEN, token, form);
        encode_into(&mut app, Tag::APP_TRANSPARENT_TEMPLATE, &t, form);
    }

    let mut out = Vec::new();
    encode_into(&mut out, Tag::PAYLOAD_FORMAT, &spec.format_indicator, form);
    pad(&mut out);
    for aid in &spec.other_apps {
        let mut other = Vec::new();
        encode_into(&mut other, Tag::AID, aid, form);
        encode_into(&mut out, Tag::APPLICATION_TEMPLATE, &other, form);
    }
    encode_into(&mut out, Tag::APPLICATION_TEMPLATE, &app, form);
    pad(&mut out);
    out.extend_from_slice(&spec.trailing);
    out
}

/// Digits (and `D`) as packed nibbles, `F`-padded to a whole byte. Other characters become
/// their low nibble, which is how the builder makes malformed fields on purpose.
fn bcd_padded(s: &str) -> Vec<u8> {
    let mut nibbles: Vec<u8> = s
        .bytes()
        .map(|c| match c {
            b'0'..=b'9' => c - b'0',
            b'D' | b'd' => 0xD,
            other => other & 0x0F,
        })
        .collect();
    if nibbles.len() % 2 == 1 {
        nibbles.push(0xF);
    }
    nibbles
        .chunks_exact(2)
        .map(|p| p.iter().fold(0u8, |acc, n| (acc << 4) | n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_valid_and_round_trips() {
        let text = payload(&PayloadSpec::new("9360000211219862952"));
        assert!(text.starts_with("hQVDUFY"));
        let p = crate::cpm::decode(&text).unwrap();
        assert_eq!(p.pan().digits(), "9360000211219862952");
        assert_eq!(p.label(), Some("QRISCPM"));
        assert_eq!(p.language(), Some("iden"));
        assert!(p.has_issuer_token());
    }

    #[test]
    fn bcd_packs_and_pads() {
        assert_eq!(bcd_padded("123"), vec![0x12, 0x3F]);
        assert_eq!(bcd_padded("12D4"), vec![0x12, 0xD4]);
    }
}
