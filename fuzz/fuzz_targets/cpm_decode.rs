//! The CPM decoder on arbitrary bytes, both as payload text and as decoded BER-TLV. Whatever it
//! accepts must hold a QRIS PAN and never expose it in Debug output or the JSON report.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn check(p: &tapgate::cpm::QrisPayload) {
    let digits = p.pan().digits();
    assert!(digits.starts_with("9360") && (16..=19).contains(&digits.len()));
    assert!(!format!("{p:?}").contains(digits));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = tapgate::cpm::decode_bytes(data) {
        check(&p);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = tapgate::cpm::decode(text) {
            check(&p);
            let report = tapgate::cpm::decode_report(text);
            assert!(report.valid);
            assert!(!format!("{report:?}").contains(p.pan().digits()));
        }
    }
});
