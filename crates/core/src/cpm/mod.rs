//! EMV QR CPM payload decoding with the QRIS profile checks: pure code, no I/O.
//!
//! A QRIS TAP payload is the base64 text of BER-TLV objects (docs/protocol.md §2). The pipeline is:
//!
//! 1. [`qris::decode`] (re-exported as [`decode`]) checks the text (base64, `hQVDUFY` prefix,
//!    at most 512 characters), parses the bytes with [`tlv::parse`], finds the QRIS application
//!    template (AID `A0000006022020`) and extracts the PAN from `5A` or `57`;
//! 2. the result, [`QrisPayload`], holds only what the gate may use: the PAN (whose `Debug` and
//!    `Display` print it masked), the NNS, label, language, whether an issuer token (`9F74`) is
//!    present, and warnings. The cardholder name and issuer URL are never read into it, and
//!    the text itself stays with the caller, who forwards it byte-for-byte as `qrContent`;
//! 3. a rejection is a [`CpmError`] whose `Display` is a reason a technician can act on and
//!    whose [`CpmError::code`] is a stable id.
//!
//! [`decode_report`] is the same decode in the shape `tapgate decode --json` prints, and
//! [`build::payload`] makes payloads (valid or deliberately odd) for tests and the demo;
//! [`fuzz`] holds the fuzz targets' bodies (libFuzzer and `cargo test` run the same code).

pub mod build;
pub mod fuzz;
pub mod qris;
pub mod tlv;

pub use qris::{decode, decode_bytes, issuer_name, CpmError, NextStep, Pan, QrisPayload};

/// The result of decoding one payload, for people and scripts (`tapgate decode --json`).
/// Carries the masked PAN only, never the full one, the name, or the payload text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DecodeReport {
    /// Whether tapgate would accept the payload.
    pub valid: bool,
    /// The issuer's NNS (first 8 PAN digits), when valid.
    pub nns: Option<String>,
    /// The issuer's name, when the NNS is in tapgate's table.
    pub issuer: Option<&'static str>,
    /// The PAN as first 8 + last 4 digits, when valid.
    pub pan_masked: Option<String>,
    /// The application label (`50`).
    pub label: Option<String>,
    /// The language preference (`5F2D`).
    pub language: Option<String>,
    /// Whether `63`/`9F74` (issuer token) is present.
    pub has_issuer_token: bool,
    /// Accepted oddities worth a look.
    pub warnings: Vec<String>,
    /// Why the payload was rejected, when invalid.
    pub error: Option<String>,
    /// The stable code of the rejection ([`CpmError::code`]), when invalid.
    pub error_code: Option<&'static str>,
    /// Whether tapping again may help ([`CpmError::next_step`]), when invalid.
    pub next_step: Option<NextStep>,
}

impl DecodeReport {
    /// The report as `tapgate decode` prints it for a person, one item per line.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if self.valid {
            let _ = writeln!(out, "valid QRIS TAP payload");
            let _ = writeln!(out, "  issuer NNS  {}", self.nns.as_deref().unwrap_or("-"));
            let _ = writeln!(
                out,
                "  issuer      {}",
                self.issuer.unwrap_or("(not in table)")
            );
            let _ = writeln!(
                out,
                "  PAN         {}",
                self.pan_masked.as_deref().unwrap_or("-")
            );
            let _ = writeln!(
                out,
                "  label       {}",
                self.label.as_deref().unwrap_or("-")
            );
            for w in &self.warnings {
                let _ = writeln!(out, "  warning     {w}");
            }
        } else {
            let _ = writeln!(
                out,
                "rejected: {}",
                self.error.as_deref().unwrap_or("invalid")
            );
        }
        out
    }
}

/// Decodes `text` and describes the outcome, valid or not.
pub fn decode_report(text: &str) -> DecodeReport {
    match decode(text) {
        Ok(p) => DecodeReport {
            valid: true,
            nns: Some(p.nns().to_string()),
            issuer: issuer_name(p.nns()),
            pan_masked: Some(p.pan().masked()),
            label: p.label().map(str::to_string),
            language: p.language().map(str::to_string),
            has_issuer_token: p.has_issuer_token(),
            warnings: p.warnings().to_vec(),
            error: None,
            error_code: None,
            next_step: None,
        },
        Err(e) => DecodeReport {
            valid: false,
            nns: None,
            issuer: None,
            pan_masked: None,
            label: None,
            language: None,
            has_issuer_token: false,
            warnings: Vec::new(),
            error: Some(e.to_string()),
            error_code: Some(e.code()),
            next_step: Some(e.next_step()),
        },
    }
}
