//! The QRIS profile of EMV QR CPM: which objects a QRIS TAP payload must carry, the checks
//! tapgate applies (docs/protocol.md §2, rules 1–6), and the view the rest of the gate uses.
//!
//! The view keeps only what the gate may use: the PAN (printed masked), the NNS, label,
//! language and whether an issuer token is present. The cardholder name (`5F20`) and the issuer
//! URL (`5F50`) are never read into it.

use std::fmt;

use base64::Engine as _;

use super::tlv::{self, Tag, Tlv, TlvError};

/// The QRIS CPM application identifier.
pub const QRIS_AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x06, 0x02, 0x20, 0x20];
/// Every CPM payload's base64 text starts with this (`85 05 "CPV"`).
pub const CPM_TEXT_PREFIX: &str = "hQVDUFY";
/// The payload format indicator tapgate understands.
pub const FORMAT_INDICATOR: &[u8] = b"CPV01";
/// The most characters a payload may have (SNAP `qrContent` is at most 512).
pub const MAX_TEXT_LEN: usize = 512;
/// Every QRIS PAN starts with these digits (the Indonesian National Numbering System prefix).
pub const QRIS_PAN_PREFIX: &str = "9360";
/// The label QRIS wallets send in `50` (compared case-insensitively).
pub const QRIS_LABEL: &str = "QRISCPM";

/// The fewest PAN digits accepted: fewer would leave nothing hidden by the mask (first 8 + last 4).
pub const MIN_PAN_DIGITS: usize = 16;
/// The most PAN digits (ISO/IEC 7812, and what `5A` can hold).
pub const MAX_PAN_DIGITS: usize = 19;

/// Known issuers by NNS (the first 8 PAN digits): the issuer id the aggregator routes on.
const ISSUERS: &[(&str, &str)] = &[
    ("93600002", "BRI"),
    ("93600008", "Mandiri"),
    ("93600009", "BNI"),
    ("93600014", "BCA"),
    ("93600777", "Finpay"),
    ("93600912", "OVO"),
    ("93600914", "GoPay"),
    ("93600915", "DANA"),
    ("93600918", "ShopeePay"),
];

/// The issuer's name for an NNS, from the table tapgate knows; `None` for others (they are still
/// valid: the aggregator routes on the NNS, not on this table).
pub fn issuer_name(nns: &str) -> Option<&'static str> {
    ISSUERS
        .iter()
        .find(|(n, _)| *n == nns)
        .map(|(_, name)| *name)
}

/// A primary account number: 16–19 decimal digits. `Debug` and `Display` print the masked form
/// only (first 8 and last 4 digits), so it can sit in structs that get logged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pan(String);

impl Pan {
    /// The full digits. For keyed hashing and the aggregator only; never log or store them.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// First 8 and last 4 digits, the rest as `*`: `93600002*******2952`.
    pub fn masked(&self) -> String {
        mask_digits(&self.0)
    }

    /// The first 8 digits: the issuer's National Numbering System id.
    pub fn nns(&self) -> &str {
        self.0.get(..8).unwrap_or(&self.0)
    }

    /// The passenger key: lower-case hex of HMAC-SHA256 over the digits with a per-installation
    /// secret. Stable for one account at one installation, so tap-in and tap-out link by it
    /// (never by the payload text, which changes every tap); useless elsewhere without the key.
    pub fn keyed_hash(&self, key: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        hex::encode(ring::hmac::sign(&key, self.0.as_bytes()).as_ref())
    }

    /// Whether the digits pass the Luhn check. Real QRIS payloads fail it often; tapgate only
    /// warns.
    pub fn luhn_ok(&self) -> bool {
        let sum: u32 = self
            .0
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 1 {
                    let dd = d * 2;
                    if dd > 9 {
                        dd - 9
                    } else {
                        dd
                    }
                } else {
                    d
                }
            })
            .sum();
        sum % 10 == 0
    }
}

fn mask_digits(d: &str) -> String {
    let n = d.chars().count();
    if n <= 12 {
        return "*".repeat(n);
    }
    d.chars()
        .enumerate()
        .map(|(i, c)| if i < 8 || i >= n - 4 { c } else { '*' })
        .collect()
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

/// A valid QRIS TAP payload, reduced to what the gate may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrisPayload {
    pan: Pan,
    label: Option<String>,
    language: Option<String>,
    has_issuer_token: bool,
    warnings: Vec<String>,
}

impl QrisPayload {
    /// The account number (tag `5A`, or `57` up to the `D` separator).
    pub fn pan(&self) -> &Pan {
        &self.pan
    }

    /// The issuer's NNS: the first 8 PAN digits.
    pub fn nns(&self) -> &str {
        self.pan.nns()
    }

    /// The application label (`50`), non-printable characters replaced by `?`, cut after 16
    /// characters, digits replaced by `#` when there are more than 4 (no account digits).
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The language preference (`5F2D`), e.g. `iden` or `id` (shown like [`Self::label`]).
    pub fn language(&self) -> Option<&str> {
        self.language.as_deref()
    }

    /// Whether the transparent template carries an issuer token (`63`/`9F74`).
    pub fn has_issuer_token(&self) -> bool {
        self.has_issuer_token
    }

    /// Things accepted but worth a technician's look (missing token, Luhn failure, `9F25` not
    /// matching the PAN, unusual label or language). Never contain the full PAN.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Why a payload was rejected. `Display` is the reason a technician reads; [`CpmError::code`]
/// is a stable short id for metrics, JSON and tests. Every variant means the same thing to the
/// gate: a definitive refusal of this tap (no payment is attempted); [`CpmError::next_step`]
/// says whether the passenger should tap again or use another wallet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpmError {
    /// Nothing was read.
    #[error("payload is empty")]
    Empty,
    /// Longer than [`MAX_TEXT_LEN`].
    #[error("payload is {len} characters long; QRIS TAP payloads have at most {MAX_TEXT_LEN}")]
    TooLong {
        /// Characters in the text.
        len: usize,
    },
    /// A merchant-presented QRIS string (`000201...`), e.g. a station's printed QR code.
    #[error(
        "payload is a merchant-presented QRIS code (starts 000201), not a passenger's QRIS TAP \
         payload"
    )]
    MerchantPresented,
    /// A character outside the standard base64 alphabet, or bad padding.
    #[error("payload is not base64: {what} at character {position}")]
    NotBase64 {
        /// 0-based character index.
        position: usize,
        /// What was found there.
        what: String,
    },
    /// Valid base64 that does not begin like a CPM payload.
    #[error("payload is not EMV CPM: it does not start with {CPM_TEXT_PREFIX} (85 05 \"CPV\")")]
    NotCpmPrefix,
    /// The decoded bytes are not BER-TLV.
    #[error("payload is not valid BER-TLV: {0}")]
    Tlv(#[from] TlvError),
    /// The first object is not the Payload Format Indicator.
    #[error("payload is not EMV CPM: first object is {found}, expected 85")]
    FirstObjectNot85 {
        /// The tag found first (or `nothing`).
        found: String,
    },
    /// The format indicator is not `CPV01`.
    #[error("unsupported payload format indicator {found:?}, expected \"CPV01\"")]
    UnsupportedFormat {
        /// The indicator as shown text: non-printable bytes as `?`, at most 16 characters, and
        /// digits as `#` when there are more than 4.
        found: String,
    },
    /// A primitive tag (or `85`/`62`) appears twice in one template.
    #[error("tag {tag} appears twice in {template}")]
    DuplicateTag {
        /// The repeated tag.
        tag: String,
        /// Where: `the top level`, `template 61`, ...
        template: String,
    },
    /// No `61` at all.
    #[error("payload has no application template (61)")]
    NoApplicationTemplate,
    /// Application templates, but none for QRIS.
    #[error(
        "no QRIS AID: found {found}, expected one starting A0000006022020 \
         (a card or wallet for another scheme)"
    )]
    NoQrisAid {
        /// The AIDs present, comma-separated hex (or `none`); at most 4, and anything that
        /// does not look like a registered AID only by its length.
        found: String,
    },
    /// Neither `5A` nor `57`.
    #[error("QRIS application has no account number (neither 5A nor 57)")]
    NoPan,
    /// `5A` is malformed.
    #[error("PAN (5A) is malformed: {0}")]
    BadPan(String),
    /// `57` is malformed.
    #[error("track 2 equivalent (57) is malformed: {0}")]
    BadTrack2(String),
    /// `5A` and `57` carry different account numbers.
    #[error("PAN in 5A ({pan_5a}) and in 57 ({pan_57}) disagree")]
    PanMismatch {
        /// Masked PAN from `5A`.
        pan_5a: String,
        /// Masked PAN from `57`.
        pan_57: String,
    },
    /// The PAN has too few or too many digits.
    #[error("PAN has {digits} digits; QRIS PANs have {MAX_PAN_DIGITS} (accepted: {MIN_PAN_DIGITS}-{MAX_PAN_DIGITS})")]
    PanLength {
        /// Digit count.
        digits: usize,
    },
    /// The PAN is not an Indonesian NNS account.
    #[error("PAN starts {prefix}, not 9360: not an Indonesian QRIS account")]
    NotQrisPan {
        /// The first 4 digits.
        prefix: String,
    },
}

/// What the passenger should do after a rejected payload (the gate itself never pays for one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NextStep {
    /// The bytes look damaged (a read cut short, a mangled record): a fresh tap may work.
    TapAgain,
    /// The payload is well formed but not something this gate can charge (another scheme, a
    /// non-Indonesian account, a merchant QR): tapping again will not help.
    UseAnotherWallet,
}

impl CpmError {
    /// Whether a fresh tap may succeed, for the gate's feedback.
    pub fn next_step(&self) -> NextStep {
        match self {
            CpmError::Empty
            | CpmError::TooLong { .. }
            | CpmError::NotBase64 { .. }
            | CpmError::NotCpmPrefix
            | CpmError::Tlv(_)
            | CpmError::FirstObjectNot85 { .. }
            | CpmError::DuplicateTag { .. }
            | CpmError::NoPan
            | CpmError::BadPan(_)
            | CpmError::BadTrack2(_)
            | CpmError::PanMismatch { .. } => NextStep::TapAgain,
            CpmError::MerchantPresented
            | CpmError::UnsupportedFormat { .. }
            | CpmError::NoApplicationTemplate
            | CpmError::NoQrisAid { .. }
            | CpmError::PanLength { .. }
            | CpmError::NotQrisPan { .. } => NextStep::UseAnotherWallet,
        }
    }

    /// A stable short id: `not_base64`, `no_qris_aid`, ...
    pub fn code(&self) -> &'static str {
        match self {
            CpmError::Empty => "empty",
            CpmError::TooLong { .. } => "too_long",
            CpmError::MerchantPresented => "merchant_presented",
            CpmError::NotBase64 { .. } => "not_base64",
            CpmError::NotCpmPrefix => "not_cpm_prefix",
            CpmError::Tlv(_) => "bad_tlv",
            CpmError::FirstObjectNot85 { .. } => "not_cpm",
            CpmError::UnsupportedFormat { .. } => "unsupported_format",
            CpmError::DuplicateTag { .. } => "duplicate_tag",
            CpmError::NoApplicationTemplate => "no_application_template",
            CpmError::NoQrisAid { .. } => "no_qris_aid",
            CpmError::NoPan => "no_pan",
            CpmError::BadPan(_) => "bad_pan",
            CpmError::BadTrack2(_) => "bad_track2",
            CpmError::PanMismatch { .. } => "pan_mismatch",
            CpmError::PanLength { .. } => "pan_length",
            CpmError::NotQrisPan { .. } => "pan_not_qris",
        }
    }
}

/// Decodes and checks a QRIS TAP payload as read from the phone (or a QR code): rules 1–6 of
/// docs/protocol.md §2. The text itself is not kept; the caller holds it byte-for-byte for
/// `qrContent`.
pub fn decode(text: &str) -> Result<QrisPayload, CpmError> {
    check_text(text)?;
    let bytes = base64_engine()
        .decode(text)
        .map_err(|e| base64_error(text, e))?;
    decode_bytes(&bytes)
}

/// The checks after base64 (rules 2–6), on the decoded bytes. Exposed for fuzzing and tests.
pub fn decode_bytes(bytes: &[u8]) -> Result<QrisPayload, CpmError> {
    let objects = tlv::parse(bytes)?;
    let (apps, common) = top_level(&objects)?;
    let mut warnings = Vec::new();
    let app = qris_application(&apps, &mut warnings)?;
    no_duplicates(app)?;
    let app_transparent = app.child(Tag::APP_TRANSPARENT_TEMPLATE);
    if let Some(t) = app_transparent {
        no_duplicates(t)?;
    }
    let common_transparent = common.and_then(|c| c.child(Tag::COMMON_TRANSPARENT_TEMPLATE));
    if let Some(c) = common {
        no_duplicates(c)?;
    }
    if let Some(t) = common_transparent {
        no_duplicates(t)?;
    }

    // Data elements may sit in the application template or the common data template; the
    // application's own copy wins.
    let field = |tag: Tag| -> Option<&[u8]> {
        app.child(tag)
            .or_else(|| common.and_then(|c| c.child(tag)))
            .map(|t| t.value)
    };

    let pan = pan_of(field(Tag::PAN), field(Tag::TRACK2), &mut warnings)?;
    if let Some(last4) = field(Tag::LAST4) {
        check_last4(&pan, last4, &mut warnings);
    }

    let label = field(Tag::LABEL).map(|v| shown(v, MAX_SHOWN_CHARS));
    match &label {
        Some(l) if l.eq_ignore_ascii_case(QRIS_LABEL) => {}
        Some(l) => warnings.push(format!("label is {l:?}, expected {QRIS_LABEL:?}")),
        None => warnings.push("no application label (50)".into()),
    }
    let language = field(Tag::LANGUAGE).map(|v| shown(v, MAX_SHOWN_CHARS));
    if let Some(lang) = &language {
        if lang != "iden" && lang != "id" {
            warnings.push(format!("language is {lang:?}, expected \"iden\" or \"id\""));
        }
    }

    let has_issuer_token = [app_transparent, common_transparent]
        .into_iter()
        .flatten()
        .any(|t| {
            t.child(Tag::ISSUER_TOKEN)
                .is_some_and(|tok| !tok.value.is_empty())
        });
    if !has_issuer_token {
        warnings.push(
            "no issuer token (63/9F74): the issuer may decline; accepted until the aggregator \
             says it is mandatory"
                .into(),
        );
    }

    Ok(QrisPayload {
        pan,
        label,
        language,
        has_issuer_token,
        warnings,
    })
}

/// Rules 2 and 3: the format indicator first, then the application templates and at most one
/// common data template (unknown top-level objects skipped).
fn top_level<'a>(
    objects: &'a [Tlv<'a>],
) -> Result<(Vec<&'a Tlv<'a>>, Option<&'a Tlv<'a>>), CpmError> {
    let mut top = objects.iter();
    let first = top.next().ok_or_else(|| CpmError::FirstObjectNot85 {
        found: "nothing".into(),
    })?;
    if first.tag != Tag::PAYLOAD_FORMAT {
        return Err(CpmError::FirstObjectNot85 {
            found: first.tag.to_string(),
        });
    }
    if first.value != FORMAT_INDICATOR {
        return Err(CpmError::UnsupportedFormat {
            found: shown(first.value, MAX_SHOWN_CHARS),
        });
    }
    let mut apps = Vec::new();
    let mut common = None;
    for obj in top {
        match obj.tag {
            Tag::APPLICATION_TEMPLATE => apps.push(obj),
            Tag::COMMON_DATA_TEMPLATE if common.is_none() => common = Some(obj),
            Tag::PAYLOAD_FORMAT | Tag::COMMON_DATA_TEMPLATE => {
                return Err(CpmError::DuplicateTag {
                    tag: obj.tag.to_string(),
                    template: "the top level".into(),
                })
            }
            // Unknown top-level objects are skipped (rule: unknown tags anywhere).
            _ => {}
        }
    }
    if apps.is_empty() {
        return Err(CpmError::NoApplicationTemplate);
    }
    Ok((apps, common))
}

/// Rule 4: the first application template whose AID is QRIS's. Foreign AIDs are named only in
/// a form that cannot carry an account number.
fn qris_application<'a>(
    apps: &[&'a Tlv<'a>],
    warnings: &mut Vec<String>,
) -> Result<&'a Tlv<'a>, CpmError> {
    let mut qris_apps = apps.iter().filter(|a| {
        a.child(Tag::AID)
            .is_some_and(|aid| aid.value.starts_with(&QRIS_AID))
    });
    let Some(app) = qris_apps.next() else {
        let mut found: Vec<String> = apps
            .iter()
            .filter_map(|a| a.child(Tag::AID))
            .map(|aid| shown_aid(aid.value))
            .collect();
        if found.len() > MAX_SHOWN_AIDS {
            let more = found.len() - MAX_SHOWN_AIDS;
            found.truncate(MAX_SHOWN_AIDS);
            found.push(format!("{more} more"));
        }
        return Err(CpmError::NoQrisAid {
            found: if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            },
        });
    };
    if qris_apps.next().is_some() {
        warnings.push("more than one QRIS application template; using the first".to_string());
    }
    Ok(app)
}

/// Rule 5: the PAN from 5A and/or 57 (they must agree), a QRIS PAN of a plausible length.
fn pan_of(
    pan_5a: Option<&[u8]>,
    track2: Option<&[u8]>,
    warnings: &mut Vec<String>,
) -> Result<Pan, CpmError> {
    let pan_5a = pan_5a.map(pan_from_5a).transpose()?;
    let pan_57 = track2.map(pan_from_57).transpose()?;
    let digits = match (pan_5a, pan_57) {
        (Some(a), Some(b)) if a != b => {
            return Err(CpmError::PanMismatch {
                pan_5a: mask_digits(&a),
                pan_57: mask_digits(&b),
            })
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => return Err(CpmError::NoPan),
    };
    if !digits.starts_with(QRIS_PAN_PREFIX) {
        return Err(CpmError::NotQrisPan {
            prefix: digits.chars().take(4).collect(),
        });
    }
    if !(MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&digits.len()) {
        return Err(CpmError::PanLength {
            digits: digits.len(),
        });
    }
    let pan = Pan(digits);
    if pan.0.len() != MAX_PAN_DIGITS {
        warnings.push(format!(
            "PAN has {} digits; QRIS PANs usually have {MAX_PAN_DIGITS}",
            pan.0.len()
        ));
    }
    if !pan.luhn_ok() {
        warnings.push("PAN fails the Luhn check (common in real QRIS payloads; accepted)".into());
    }
    Ok(pan)
}

/// 9F25 against the PAN's last four digits: advisory only.
fn check_last4(pan: &Pan, last4: &[u8], warnings: &mut Vec<String>) {
    let actual = pan.0.get(pan.0.len() - 4..).unwrap_or_default();
    // Only a 2-byte 9F25 is ever shown: longer ones seen in the field hold the whole PAN.
    if last4.len() == 2 {
        let stated = hex::encode_upper(last4);
        if stated != actual {
            warnings.push(format!(
                "9F25 says the PAN ends {stated} but it ends {actual} (common in real \
                 payloads; accepted)"
            ));
        }
    } else {
        warnings.push(format!(
            "9F25 is {} bytes, expected 2 (the PAN's last 4 digits); its value is not shown \
             (it may hold the whole PAN; accepted)",
            last4.len()
        ));
    }
}

fn base64_engine() -> base64::engine::GeneralPurpose {
    // Padding is optional on input: some encoders drop it, and the text goes to the aggregator
    // exactly as read either way.
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config)
}

/// Rule 1 on the text, before any decoding, with the most useful message first.
fn check_text(text: &str) -> Result<(), CpmError> {
    if text.is_empty() {
        return Err(CpmError::Empty);
    }
    let len = text.chars().count();
    if len > MAX_TEXT_LEN {
        return Err(CpmError::TooLong { len });
    }
    if text.starts_with("000201") {
        return Err(CpmError::MerchantPresented);
    }
    let body_end = text.trim_end_matches('=').len();
    for (position, c) in text.chars().enumerate() {
        let ok =
            c.is_ascii_alphanumeric() || c == '+' || c == '/' || (c == '=' && position >= body_end);
        if !ok {
            return Err(CpmError::NotBase64 {
                position,
                what: describe_char(c),
            });
        }
    }
    // Padding is optional, but when present it must complete the last group.
    if text.len() - body_end > 2 || (body_end != text.len() && text.len() % 4 != 0) {
        return Err(CpmError::NotBase64 {
            position: body_end,
            what: "'=' padding that does not complete the last group".into(),
        });
    }
    if !text.starts_with(CPM_TEXT_PREFIX) {
        return Err(CpmError::NotCpmPrefix);
    }
    Ok(())
}

fn base64_error(text: &str, e: base64::DecodeError) -> CpmError {
    use base64::DecodeError as D;
    let (position, what) = match e {
        D::InvalidByte(at, b) => (at, describe_char(char::from(b))),
        D::InvalidLength(_) => (
            text.len(),
            format!(
                "a length of {} characters (cannot end a base64 group)",
                text.len()
            ),
        ),
        D::InvalidLastSymbol(at, b) => (
            at,
            format!("{:?} (stray bits in the last group)", char::from(b)),
        ),
        D::InvalidPadding => (
            text.trim_end_matches('=').len(),
            "bad '=' padding".to_string(),
        ),
    };
    CpmError::NotBase64 { position, what }
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\n' | '\r' => "a line break".into(),
        '\t' => "a tab".into(),
        c if c.is_ascii_graphic() => format!("{c:?}"),
        c => format!("U+{:04X}", u32::from(c)),
    }
}

/// Bytes as text for messages and the view: printable ASCII kept, anything else `?` (no log
/// injection through a label).
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7F).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// The most characters of a payload field shown in the view or a message (EMV labels have at
/// most 16).
const MAX_SHOWN_CHARS: usize = 16;
/// The most AIDs named in a rejection.
const MAX_SHOWN_AIDS: usize = 4;
/// The most decimal digits a shown field may keep: more could be account digits.
const MAX_SHOWN_DIGITS: usize = 4;

/// A payload field (label, language, format indicator) as text fit for the view, a message or
/// a log: [`printable`], at most `max` characters (a cut is marked `...`), and when it holds
/// more than [`MAX_SHOWN_DIGITS`] digits every digit becomes `#`, so that no field can carry
/// account digits past the mask, whatever a wallet puts in it.
fn shown(bytes: &[u8], max: usize) -> String {
    let mut s = printable(bytes.get(..max).unwrap_or(bytes));
    if bytes.len() > max {
        s.push_str("...");
    }
    if s.bytes().filter(u8::is_ascii_digit).count() > MAX_SHOWN_DIGITS {
        s = s
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
    }
    s
}

/// Another application's AID for a rejection message: in hex when it looks like a registered
/// AID, else only its length. Registered: at most 16 bytes, a first nibble A-F (an account
/// number starts with a decimal digit), and no run of more than 8 digits once its leading
/// zeros are dropped (`A0000000031010` is shown, a PAN behind an `A` is not).
fn shown_aid(aid: &[u8]) -> String {
    let text = hex::encode_upper(aid);
    let longest_run = text
        .split(|c: char| !c.is_ascii_digit())
        .map(|run| run.trim_start_matches('0').len())
        .max()
        .unwrap_or(0);
    match aid.first() {
        Some(&b) if aid.len() <= 16 && b >= 0xA0 && longest_run <= 8 => text,
        _ => format!("a {}-byte value that is not a registered AID", aid.len()),
    }
}

fn no_duplicates(template: &Tlv) -> Result<(), CpmError> {
    let prims: Vec<Tag> = template
        .children
        .iter()
        .filter(|c| !c.tag.is_constructed())
        .map(|c| c.tag)
        .collect();
    for (i, tag) in prims.iter().enumerate() {
        if prims[..i].contains(tag) {
            return Err(CpmError::DuplicateTag {
                tag: tag.to_string(),
                template: format!("template {}", template.tag),
            });
        }
    }
    Ok(())
}

/// `5A`: compressed numeric, at most 10 bytes, padded with trailing `F` nibbles.
fn pan_from_5a(v: &[u8]) -> Result<String, CpmError> {
    if v.is_empty() || v.len() > 10 {
        return Err(CpmError::BadPan(format!(
            "{} bytes, expected 1 to 10",
            v.len()
        )));
    }
    let mut digits = String::with_capacity(20);
    let mut padding = false;
    for (i, n) in nibbles(v).enumerate() {
        match n {
            0..=9 if !padding => digits.push(char::from(b'0' + n)),
            0xF => padding = true,
            _ if padding => {
                return Err(CpmError::BadPan(format!(
                    "digit after F padding at nibble {i}"
                )))
            }
            _ => {
                return Err(CpmError::BadPan(format!(
                    "non-digit nibble {n:X} at nibble {i}"
                )))
            }
        }
    }
    if digits.is_empty() {
        return Err(CpmError::BadPan("no digits".into()));
    }
    Ok(digits)
}

/// `57`: PAN digits, `D`, expiry, service code, discretionary data, maybe one `F` pad.
fn pan_from_57(v: &[u8]) -> Result<String, CpmError> {
    if v.len() > 19 {
        return Err(CpmError::BadTrack2(format!(
            "{} bytes, expected at most 19",
            v.len()
        )));
    }
    let mut digits = String::with_capacity(20);
    for (i, n) in nibbles(v).enumerate() {
        match n {
            0..=9 => digits.push(char::from(b'0' + n)),
            0xD if !digits.is_empty() => return Ok(digits),
            _ => {
                return Err(CpmError::BadTrack2(format!(
                    "nibble {n:X} at {i} before the D separator"
                )))
            }
        }
    }
    Err(CpmError::BadTrack2("no D separator after the PAN".into()))
}

fn nibbles(v: &[u8]) -> impl Iterator<Item = u8> + '_ {
    v.iter().flat_map(|b| [b >> 4, b & 0x0F])
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q1: &str = "hQVDUFYwMWFmTwegAAAGAiAgUAdRUklTQ1BNWgqTYAACESGYYpUvXyARUkVORFkgTVVIQVJESUFOVE9fLQRpZGVuX1AYcm11aGFyZGlhbnRvQGhvdG1haWwuY29tnyUCYpVjC590CDRiODg5MGY1";

    #[test]
    fn q1_decodes_and_keeps_no_name() {
        let p = decode(Q1).unwrap();
        assert_eq!(p.pan().digits(), "9360000211219862952");
        assert_eq!(p.nns(), "93600002");
        assert_eq!(p.pan().masked(), "93600002*******2952");
        assert_eq!(format!("{:?}", p.pan()), "Pan(93600002*******2952)");
        assert_eq!(p.pan().to_string(), "93600002*******2952");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("9360000211219862952"), "{dbg}");
        assert!(!dbg.contains("RENDY"), "{dbg}");
        assert!(!dbg.contains("hotmail"), "{dbg}");
        assert!(
            p.warnings().iter().any(|w| w.contains("9F25")),
            "{:?}",
            p.warnings()
        );
    }

    #[test]
    fn keyed_hash_depends_on_key_and_digits() {
        let a = Pan("9360000211219862952".into());
        let b = Pan("9360000211219862953".into());
        assert_eq!(a.keyed_hash(b"k1"), a.keyed_hash(b"k1"));
        assert_ne!(a.keyed_hash(b"k1"), a.keyed_hash(b"k2"));
        assert_ne!(a.keyed_hash(b"k1"), b.keyed_hash(b"k1"));
        assert_eq!(a.keyed_hash(b"k1").len(), 64);
        // RFC 4231 test case 2 shape: HMAC-SHA256("Jefe", ...) checks we use the real HMAC.
        let p = Pan("what do ya want for nothing?".into());
        assert_eq!(
            p.keyed_hash(b"Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn luhn() {
        assert!(Pan("4111111111111111".into()).luhn_ok());
        assert!(!Pan("4111111111111112".into()).luhn_ok());
        assert!(Pan("79927398713".into()).luhn_ok());
    }

    #[test]
    fn masking_never_shows_more_than_12_digits() {
        assert_eq!(mask_digits("1234567890123456"), "12345678****3456");
        assert_eq!(mask_digits("123456789012"), "************");
    }

    #[test]
    fn track2_and_5a_parsing() {
        assert_eq!(
            pan_from_5a(&hex::decode("9360000211219862952F").unwrap()).unwrap(),
            "9360000211219862952"
        );
        assert_eq!(pan_from_5a(&[0x12, 0xF3]).unwrap_err().code(), "bad_pan");
        assert_eq!(pan_from_5a(&[0x1A]).unwrap_err().code(), "bad_pan");
        assert_eq!(pan_from_5a(&[0xFF]).unwrap_err().code(), "bad_pan");
        assert_eq!(
            pan_from_57(&hex::decode("9360000211219862952D3012201F").unwrap()).unwrap(),
            "9360000211219862952"
        );
        assert_eq!(pan_from_57(&[0x12, 0x34]).unwrap_err().code(), "bad_track2");
        assert_eq!(pan_from_57(&[0xD1]).unwrap_err().code(), "bad_track2");
    }

    #[test]
    fn text_checks_name_the_problem() {
        let e = decode("hQVDUFY wMQ==").unwrap_err();
        assert_eq!(
            e.to_string(),
            "payload is not base64: a space at character 7"
        );
        let e = decode("hQVDUFYwMQ=").unwrap_err();
        assert_eq!(e.code(), "not_base64");
        assert_eq!(
            decode("hQVDUFYwMQ").unwrap_err().code(),
            "no_application_template"
        );
        assert_eq!(decode("hQVDUFYwMQ===").unwrap_err().code(), "not_base64");
        assert_eq!(decode("hQ=VDUFYwMQ=").unwrap_err().code(), "not_base64");
        assert_eq!(decode("WgqTYAAC").unwrap_err().code(), "not_cpm_prefix");
        assert_eq!(
            decode("00020101021126650013ID.CO.QRIS.WWW")
                .unwrap_err()
                .code(),
            "merchant_presented"
        );
        assert_eq!(decode("").unwrap_err().code(), "empty");
    }

    #[test]
    fn next_step_separates_damage_from_wrong_wallet() {
        let cut = &Q1[..100];
        assert_eq!(decode(cut).unwrap_err().next_step(), NextStep::TapAgain);
        let not_qris = "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=";
        assert_eq!(
            decode(not_qris).unwrap_err().next_step(),
            NextStep::UseAnotherWallet
        );
    }
}
