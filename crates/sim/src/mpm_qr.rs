//! QRIS MPM strings: the merchant-presented QR a dynamic `qr-mpm-generate` answers with, as
//! the simulator builds it and a wallet reads it.
//!
//! The format is EMVCo's Merchant-Presented Mode: a flat run of `ID LEN VALUE` objects, the ID
//! two digits, the length two digits, the value that many characters; templates (26–51, 62)
//! hold the same structure inside their value. The string ends with `6304` and four upper-case
//! hex digits, the CRC-16/CCITT-FALSE of everything before them including `6304`.
//!
//! What the simulator writes: `00` format `01`; `01` `12` (dynamic: one amount, one use);
//! `26` the acquirer's merchant account (`00` a reverse-domain id, `01` merchant PAN, `02`
//! merchant id, `03` criteria); `51` the national QRIS entry (`00` `ID.CO.QRIS.WWW`, `02`
//! NMID, `03` criteria); `52` MCC `4111` (commuter transport); `53` `360` (rupiah); `54` the
//! amount; `58` `ID`; `59` name; `60` city; `62` additional data (`01` bill number, `05`
//! reference label: the aggregator's `referenceNo`, `07` terminal label); `63` CRC.
//!
//! Only ASCII is accepted: EMV counts lengths in characters and the QRIS fields in use are
//! ASCII, so a non-ASCII string is refused rather than measured wrongly.

use std::fmt::Write as _;

/// Why a string is not a QRIS MPM payload. The text says what was wrong where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MpmQrError {
    /// An object's id or length is not two digits, or its value runs past the end.
    #[error("malformed object at character {at}: {why}")]
    Malformed {
        /// Offset of the object in the (template's) text.
        at: usize,
        /// What was wrong.
        why: &'static str,
    },
    /// Not ASCII.
    #[error("not ASCII")]
    NotAscii,
    /// `00` is not the first object or is not `01`.
    #[error("payload format indicator (00) is not first or not 01")]
    Format,
    /// `63` missing, not last or not four hex digits.
    #[error("CRC (63) missing, not last or not 4 hex digits")]
    CrcField,
    /// The CRC does not match the text.
    #[error("CRC mismatch: the string says {found}, its content gives {computed}")]
    CrcMismatch {
        /// The CRC written in the string.
        found: String,
        /// The CRC of the content.
        computed: String,
    },
    /// A mandatory object is missing or empty.
    #[error("object {0} missing")]
    Missing(&'static str),
    /// An object's value is not what it must be.
    #[error("object {id}: {why}")]
    Value {
        /// The object, e.g. `54` or `62.05`.
        id: &'static str,
        /// What was wrong.
        why: &'static str,
    },
    /// A value to build does not fit its object (too long, empty, not ASCII).
    #[error("cannot build object {id}: {why}")]
    Build {
        /// The object being built.
        id: &'static str,
        /// What was wrong.
        why: &'static str,
    },
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).
pub fn crc16_ccitt_false(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One `ID LEN VALUE` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlv {
    /// The two-digit id.
    pub id: u8,
    /// The value.
    pub value: String,
}

/// Splits `text` into its objects (no CRC check; templates are parsed the same way).
pub fn parse_tlvs(text: &str) -> Result<Vec<Tlv>, MpmQrError> {
    if !text.is_ascii() {
        return Err(MpmQrError::NotAscii);
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let two = |at: usize| -> Option<u8> {
            let s = b.get(at..at + 2)?;
            if s.iter().all(u8::is_ascii_digit) {
                Some((s[0] - b'0') * 10 + (s[1] - b'0'))
            } else {
                None
            }
        };
        let id = two(i).ok_or(MpmQrError::Malformed {
            at: i,
            why: "id is not two digits",
        })?;
        let len = usize::from(two(i + 2).ok_or(MpmQrError::Malformed {
            at: i,
            why: "length is not two digits",
        })?);
        let value = text.get(i + 4..i + 4 + len).ok_or(MpmQrError::Malformed {
            at: i,
            why: "value runs past the end",
        })?;
        out.push(Tlv {
            id,
            value: value.to_string(),
        });
        i += 4 + len;
    }
    Ok(out)
}

fn push(out: &mut String, id: u8, value: &str, name: &'static str) -> Result<(), MpmQrError> {
    if value.is_empty() || value.len() > 99 || !value.is_ascii() {
        return Err(MpmQrError::Build {
            id: name,
            why: "empty, over 99 characters or not ASCII",
        });
    }
    // Writing into a String cannot fail.
    let _ = write!(out, "{id:02}{:02}{value}", value.len());
    Ok(())
}

/// What a dynamic QRIS MPM carries, as the simulator builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpmQrSpec {
    /// The acquirer's reverse-domain id in tag 26.00.
    pub acquirer_domain: String,
    /// The merchant PAN (NNS + merchant number), tag 26.01.
    pub merchant_pan: String,
    /// The merchant id at the acquirer, tag 26.02 (the SNAP `merchantId`).
    pub merchant_id: String,
    /// The QRIS National Merchant ID, tag 51.02.
    pub nmid: String,
    /// Merchant criteria (`UMI`, `UKE`, `UME`, `UBE`), tags 26.03 and 51.03.
    pub criteria: String,
    /// Merchant category code, tag 52.
    pub mcc: String,
    /// Amount in whole rupiah, tag 54.
    pub amount: u64,
    /// Merchant name, tag 59 (at most 25 characters).
    pub merchant_name: String,
    /// Merchant city, tag 60 (at most 15 characters).
    pub merchant_city: String,
    /// Bill number, tag 62.01 (at most 25 characters).
    pub bill_number: Option<String>,
    /// Reference label, tag 62.05: the aggregator's `referenceNo` (at most 25 characters).
    pub reference: String,
    /// Terminal label, tag 62.07 (at most 25 characters).
    pub terminal: Option<String>,
}

impl MpmQrSpec {
    /// The QRIS string, CRC included.
    pub fn build(&self) -> Result<String, MpmQrError> {
        let limit = |v: &str, max: usize, id: &'static str| {
            if v.len() > max {
                Err(MpmQrError::Build {
                    id,
                    why: "too long",
                })
            } else {
                Ok(())
            }
        };
        limit(&self.merchant_name, 25, "59")?;
        limit(&self.merchant_city, 15, "60")?;
        limit(&self.reference, 25, "62.05")?;
        let mut acct = String::new();
        push(&mut acct, 0, &self.acquirer_domain, "26.00")?;
        push(&mut acct, 1, &self.merchant_pan, "26.01")?;
        push(&mut acct, 2, &self.merchant_id, "26.02")?;
        push(&mut acct, 3, &self.criteria, "26.03")?;
        let mut qris = String::new();
        push(&mut qris, 0, "ID.CO.QRIS.WWW", "51.00")?;
        push(&mut qris, 2, &self.nmid, "51.02")?;
        push(&mut qris, 3, &self.criteria, "51.03")?;
        let mut extra = String::new();
        if let Some(b) = &self.bill_number {
            limit(b, 25, "62.01")?;
            push(&mut extra, 1, b, "62.01")?;
        }
        push(&mut extra, 5, &self.reference, "62.05")?;
        if let Some(t) = &self.terminal {
            limit(t, 25, "62.07")?;
            push(&mut extra, 7, t, "62.07")?;
        }
        let mut s = String::new();
        push(&mut s, 0, "01", "00")?;
        push(&mut s, 1, "12", "01")?;
        push(&mut s, 26, &acct, "26")?;
        push(&mut s, 51, &qris, "51")?;
        push(&mut s, 52, &self.mcc, "52")?;
        push(&mut s, 53, "360", "53")?;
        push(&mut s, 54, &self.amount.to_string(), "54")?;
        push(&mut s, 58, "ID", "58")?;
        push(&mut s, 59, &self.merchant_name, "59")?;
        push(&mut s, 60, &self.merchant_city, "60")?;
        push(&mut s, 62, &extra, "62")?;
        s.push_str("6304");
        let crc = crc16_ccitt_false(s.as_bytes());
        let _ = write!(s, "{crc:04X}");
        Ok(s)
    }
}

/// A merchant account information template (tags 26–51).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantAccount {
    /// The template's tag (26–51).
    pub tag: u8,
    /// Sub-tag 00: globally unique (reverse-domain) id.
    pub domain: Option<String>,
    /// Sub-tag 01: merchant PAN.
    pub merchant_pan: Option<String>,
    /// Sub-tag 02: merchant id (in 51: the NMID).
    pub merchant_id: Option<String>,
    /// Sub-tag 03: merchant criteria.
    pub criteria: Option<String>,
}

/// A QRIS MPM string read back: what a wallet shows and pays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpmQr {
    /// `true` for a dynamic QR (`01` = `12`): one amount, one payment.
    pub dynamic: bool,
    /// Merchant account templates 26–51, in order.
    pub accounts: Vec<MerchantAccount>,
    /// Tag 52.
    pub mcc: Option<String>,
    /// Tag 53 (`360` for rupiah).
    pub currency: String,
    /// Tag 54 in whole rupiah; `None` on a static QR where the payer types it.
    pub amount: Option<u64>,
    /// Tag 58.
    pub country: String,
    /// Tag 59.
    pub merchant_name: String,
    /// Tag 60.
    pub merchant_city: String,
    /// Tag 62.01.
    pub bill_number: Option<String>,
    /// Tag 62.05.
    pub reference_label: Option<String>,
    /// Tag 62.07.
    pub terminal_label: Option<String>,
}

impl MpmQr {
    /// The reference to pay against: the reference label (62.05), else the bill number.
    pub fn reference(&self) -> Option<&str> {
        self.reference_label
            .as_deref()
            .or(self.bill_number.as_deref())
    }

    /// The acquirer's merchant id: sub-tag 02 of the first account template that is not the
    /// national QRIS entry (51).
    pub fn merchant_id(&self) -> Option<&str> {
        self.accounts
            .iter()
            .filter(|a| a.tag != 51)
            .find_map(|a| a.merchant_id.as_deref())
    }

    /// The merchant PAN of the first account template that has one.
    pub fn merchant_pan(&self) -> Option<&str> {
        self.accounts.iter().find_map(|a| a.merchant_pan.as_deref())
    }

    /// The NMID from the national template (51.02).
    pub fn nmid(&self) -> Option<&str> {
        self.accounts
            .iter()
            .find(|a| a.tag == 51)
            .and_then(|a| a.merchant_id.as_deref())
    }
}

/// Reads and checks a QRIS MPM string: the object structure, `00` first and `01`, `63` last
/// with a matching CRC, the mandatory objects (`53`, `58`, `59`, `60`, an account template)
/// and the amount's form. Unknown objects are skipped.
pub fn parse(text: &str) -> Result<MpmQr, MpmQrError> {
    let objs = parse_tlvs(text)?;
    if objs.first().map(|o| (o.id, o.value.as_str())) != Some((0, "01")) {
        return Err(MpmQrError::Format);
    }
    let crc_ok = objs
        .last()
        .is_some_and(|o| o.id == 63 && o.value.len() == 4);
    if !crc_ok || text.len() < 8 {
        return Err(MpmQrError::CrcField);
    }
    let (body, found) = text.split_at(text.len() - 4);
    let computed = format!("{:04X}", crc16_ccitt_false(body.as_bytes()));
    if !found.eq_ignore_ascii_case(&computed) {
        return Err(MpmQrError::CrcMismatch {
            found: found.to_string(),
            computed,
        });
    }
    let get = |id: u8| objs.iter().find(|o| o.id == id).map(|o| o.value.clone());
    let mut accounts = Vec::new();
    for o in objs.iter().filter(|o| (26..=51).contains(&o.id)) {
        let subs = parse_tlvs(&o.value)?;
        let sub = |id: u8| subs.iter().find(|s| s.id == id).map(|s| s.value.clone());
        accounts.push(MerchantAccount {
            tag: o.id,
            domain: sub(0),
            merchant_pan: sub(1),
            merchant_id: sub(2),
            criteria: sub(3),
        });
    }
    if accounts.is_empty() {
        return Err(MpmQrError::Missing("26-51"));
    }
    let amount = match get(54) {
        None => None,
        Some(v) => Some(parse_qr_amount(&v).ok_or(MpmQrError::Value {
            id: "54",
            why: "not a rupiah amount (digits, optionally .00)",
        })?),
    };
    let extra = match get(62) {
        Some(v) => parse_tlvs(&v)?,
        None => Vec::new(),
    };
    let extra_get = |id: u8| extra.iter().find(|s| s.id == id).map(|s| s.value.clone());
    let need = |id: u8, name: &'static str| get(id).ok_or(MpmQrError::Missing(name));
    Ok(MpmQr {
        dynamic: get(1).as_deref() == Some("12"),
        accounts,
        mcc: get(52),
        currency: need(53, "53")?,
        amount,
        country: need(58, "58")?,
        merchant_name: need(59, "59")?,
        merchant_city: need(60, "60")?,
        bill_number: extra_get(1),
        reference_label: extra_get(5),
        terminal_label: extra_get(7),
    })
}

/// Tag 54: whole rupiah, written `3000` or `3000.00` (rupiah has no minor unit in use).
fn parse_qr_amount(v: &str) -> Option<u64> {
    let whole = match v.split_once('.') {
        Some((w, "00" | "0")) => w,
        Some(_) => return None,
        None => v,
    };
    if whole.is_empty() || whole.len() > 13 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    whole.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MpmQrSpec {
        MpmQrSpec {
            acquirer_domain: "ID.CO.SIMULATOR.WWW".into(),
            merchant_pan: "936007770000000001".into(),
            merchant_id: "MRT-JKT-DEMO".into(),
            nmid: "ID1026123456789".into(),
            criteria: "UBE".into(),
            mcc: "4111".into(),
            amount: 14000,
            merchant_name: "MRT JAKARTA DEMO".into(),
            merchant_city: "JAKARTA".into(),
            bill_number: None,
            reference: "SIMMPM0000000001".into(),
            terminal: Some("LBB-G1".into()),
        }
    }

    #[test]
    fn crc_is_ccitt_false() {
        // The catalogue check value of CRC-16/CCITT-FALSE.
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
        assert_eq!(crc16_ccitt_false(b""), 0xFFFF);
    }

    #[test]
    fn a_built_qr_reads_back() {
        let text = spec().build().unwrap();
        assert!(text.starts_with("000201010212"), "{text}");
        assert!(text.contains("5303360"), "{text}");
        assert!(text.contains("540514000"), "{text}");
        let qr = parse(&text).unwrap();
        assert!(qr.dynamic);
        assert_eq!(qr.amount, Some(14000));
        assert_eq!(qr.reference(), Some("SIMMPM0000000001"));
        assert_eq!(qr.merchant_id(), Some("MRT-JKT-DEMO"));
        assert_eq!(qr.merchant_pan(), Some("936007770000000001"));
        assert_eq!(qr.nmid(), Some("ID1026123456789"));
        assert_eq!(qr.terminal_label.as_deref(), Some("LBB-G1"));
        assert_eq!((qr.currency.as_str(), qr.country.as_str()), ("360", "ID"));
        assert_eq!(qr.merchant_name, "MRT JAKARTA DEMO");
        assert_eq!(qr.mcc.as_deref(), Some("4111"));
    }

    #[test]
    fn a_changed_character_breaks_the_crc() {
        let text = spec().build().unwrap();
        let tampered = text.replacen("540514000", "540515000", 1);
        assert!(matches!(
            parse(&tampered),
            Err(MpmQrError::CrcMismatch { .. })
        ));
        let lower = format!(
            "{}{}",
            &text[..text.len() - 4],
            text[text.len() - 4..].to_ascii_lowercase()
        );
        assert!(parse(&lower).is_ok());
    }

    #[test]
    fn malformed_strings_are_refused_without_panicking() {
        let good = spec().build().unwrap();
        for (bad, want) in [
            ("", "format"),
            ("0002", "malformed"),
            ("000201", "crc"),
            ("0002016304", "malformed"),
            ("00020163040000", "crc mismatch"),
            ("0099", "malformed"),
            ("000299", "format"),
            ("0x0201", "malformed"),
            ("000201é", "ascii"),
        ] {
            let e = parse(bad).unwrap_err();
            let got = match e {
                MpmQrError::Format => "format",
                MpmQrError::CrcField => "crc",
                MpmQrError::CrcMismatch { .. } => "crc mismatch",
                MpmQrError::Malformed { .. } => "malformed",
                MpmQrError::NotAscii => "ascii",
                _ => "other",
            };
            assert_eq!(got, want, "{bad:?}: {e}");
        }
        // Every prefix of a good string is refused, none panics.
        for n in 0..good.len() {
            assert!(parse(&good[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn amounts_are_whole_rupiah() {
        assert_eq!(parse_qr_amount("3000"), Some(3000));
        assert_eq!(parse_qr_amount("3000.00"), Some(3000));
        for bad in ["", "3000.50", "-1", "3e3", "1.2.3"] {
            assert_eq!(parse_qr_amount(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_that_do_not_fit_are_not_built() {
        let mut s = spec();
        s.merchant_name = "X".repeat(26);
        assert!(s.build().is_err());
        let mut s = spec();
        s.reference = String::new();
        assert!(s.build().is_err());
        let mut s = spec();
        s.merchant_city = "KOTA É".into();
        assert!(s.build().is_err());
    }
}
