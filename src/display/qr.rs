//! The QR code a phone without QRIS TAP scans: drawn here as an SVG document, inline in the
//! page (no image files, nothing fetched).

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// `content` as an SVG QR code, one unit per module with the standard quiet zone; the page
/// scales it. Error correction M: what QRIS merchant-presented codes use, and the density a
/// phone camera reads from a gate's screen at arm's length.
pub fn svg(content: &str) -> Result<String, String> {
    let code = QrCode::with_error_correction_level(content.as_bytes(), EcLevel::M)
        .map_err(|e| e.to_string())?;
    let doc = code
        .render::<svg::Color>()
        .quiet_zone(true)
        .module_dimensions(1, 1)
        .build();
    // The XML declaration has no place inside an HTML document.
    Ok(match doc.find("<svg") {
        Some(at) => doc[at..].to_string(),
        None => doc,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_code_is_an_inline_svg_scaled_by_its_view_box() {
        let s = super::svg("00020101021226670016COM.EXAMPLE").expect("svg");
        assert!(
            s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{s}"
        );
        assert!(s.contains("viewBox=\"0 0 "), "{s}");
        assert!(!s.contains("<?xml"));
    }
}
