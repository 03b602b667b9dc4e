//! The simulator's view of `qrContent`: only the PAN matters to it (routing by NNS, declines by
//! PAN).

/// The PAN digits of a QRIS CPM payload, or `None` when the text is not one.
pub(crate) fn pan_of(qr: &str) -> Option<String> {
    crate::cpm::decode(qr)
        .ok()
        .map(|p| p.pan().digits().to_string())
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
            serde_json::from_str(include_str!("../../../tests/fixtures/cpm-payloads.json"))
                .unwrap();
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
    }
}
