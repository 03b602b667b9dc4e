//! The published vectors (tests/fixtures/cpm-payloads.json) and payloads beyond them, built
//! with `cpm::build` or by hand, through the public decoder API.

use base64::Engine as _;
use tapgate::cpm::build::{payload, payload_bytes, PanField, PayloadSpec};
use tapgate::cpm::tlv::{LengthForm, Tag};
use tapgate::cpm::{decode, decode_bytes, decode_report, issuer_name, CpmError};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A 19-digit PAN with `prefix` (15 digits given... any length < 19) and a correct Luhn digit.
fn luhn_pan(prefix: &str) -> String {
    let mut body = prefix.to_string();
    while body.len() < 18 {
        body.push('7');
    }
    for d in 0..10 {
        let cand = format!("{body}{d}");
        let sum: u32 = cand
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let v = u32::from(b - b'0');
                if i % 2 == 1 {
                    (v * 2) / 10 + (v * 2) % 10
                } else {
                    v
                }
            })
            .sum();
        if sum % 10 == 0 {
            return cand;
        }
    }
    unreachable!()
}

#[test]
fn every_fixture_gets_its_expected_verdict() {
    let raw = std::fs::read_to_string("tests/fixtures/cpm-payloads.json").unwrap();
    let cases: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["payload"].as_str().unwrap();
        let expect = &case["expect"];
        let got = decode(text);
        if expect["valid"].as_bool().unwrap() {
            let p = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.nns(), expect["nns"].as_str().unwrap(), "{name}");
            assert_eq!(p.pan().digits(), expect["pan"].as_str().unwrap(), "{name}");
            assert_eq!(p.pan().nns(), p.nns(), "{name}");
            assert_eq!(p.label(), expect["label"].as_str(), "{name}");
            assert_eq!(
                p.has_issuer_token(),
                expect["has_9F74"].as_bool().unwrap(),
                "{name}"
            );
            assert!(issuer_name(p.nns()).is_some(), "{name}");
            let report = decode_report(text);
            assert!(report.valid && report.error.is_none(), "{name}");
        } else {
            let e = got.expect_err(name);
            let why = expect["why"].as_str().unwrap().to_lowercase();
            assert!(
                e.to_string().to_lowercase().contains(&why),
                "{name}: {e} should say {why}"
            );
            let report = decode_report(text);
            assert!(!report.valid);
            assert_eq!(report.error.as_deref(), Some(e.to_string().as_str()));
            assert_eq!(report.error_code, Some(e.code()));
        }
    }
}

#[test]
fn fixture_details() {
    // Q1: BRI, with a 9F25 that does not match the PAN's last digits (accepted, warned).
    let q1 = "hQVDUFYwMWFmTwegAAAGAiAgUAdRUklTQ1BNWgqTYAACESGYYpUvXyARUkVORFkgTVVIQVJESUFOVE9fLQRpZGVuX1AYcm11aGFyZGlhbnRvQGhvdG1haWwuY29tnyUCYpVjC590CDRiODg5MGY1";
    let p = decode(q1).unwrap();
    assert_eq!(issuer_name(p.nns()), Some("BRI"));
    assert_eq!(p.language(), Some("iden"));
    assert!(p.warnings().iter().any(|w| w.contains("9F25")));
    assert!(p.warnings().iter().all(|w| !w.contains(p.pan().digits())));

    // M2: BCA, 9F25 agrees with the PAN, binary token.
    let m2 = "hQVDUFYwMWFQTwegAAAGAiAgUAdRUklTQ1BNWgqTYAAUF0URgIWfXyAOU0VORFkgQUdVU1RJQU5fLQRpZGVunyUCCFljE590EMl/VZmz53/iKI8rM1dUcFs=";
    let p = decode(m2).unwrap();
    assert_eq!(issuer_name(p.nns()), Some("BCA"));
    assert!(
        p.warnings().iter().all(|w| !w.contains("9F25")),
        "{:?}",
        p.warnings()
    );

    // M3: DANA, language "id".
    let m3 = "hQVDUFYwMWFbTwegAAAGAiAgUAdRUklTQ1BNWgqTYAkVMCcQV0FPXyAOU0VORFkgQUdVU1RJQU5fLQJpZF9QB0RBTkEuSURjG590GDI4MTAxMjAyMTU1Nzk2NDA2NjczMTE4MQ==";
    let p = decode(m3).unwrap();
    assert_eq!(p.language(), Some("id"));
    assert!(p.warnings().iter().all(|w| !w.contains("language")));

    // E2: two non-QRIS applications; the message lists them.
    let e2 = "hQVDUFYwMWETTwegAAAAVVVVUAhQcm9kdWN0MWETTwegAAAAZmZmUAhQcm9kdWN0MmJJWggSNFZ4kBI0WF8gDkNBUkRIT0xERVIvRU1WXy0IcnVlc2RlZW5kIZ8QBwYBCgMAAACfJghYT9OF+iNLzJ82AgABnzcEbVjvEw==";
    let e = decode(e2).unwrap_err();
    assert_eq!(e.code(), "no_qris_aid");
    assert!(
        e.to_string().contains("A0000000555555, A0000000666666"),
        "{e}"
    );
}

#[test]
fn other_wallets_decode_with_their_issuer() {
    for (prefix, issuer) in [
        ("93600912", "OVO"),
        ("93600008", "Mandiri"),
        ("93600777", "Finpay"),
        ("93600009", "BNI"),
        ("93600915", "DANA"),
    ] {
        let pan = luhn_pan(prefix);
        let text = payload(&PayloadSpec::new(&pan).with_name("SENDY AGUSTIAN"));
        let p = decode(&text).unwrap();
        assert_eq!(p.pan().digits(), pan);
        assert_eq!(p.nns(), prefix);
        assert_eq!(issuer_name(p.nns()), Some(issuer));
        assert!(p.warnings().is_empty(), "{issuer}: {:?}", p.warnings());
    }
    assert_eq!(issuer_name("93609999"), None);
}

#[test]
fn shopeepay_private_tag_inside_61_is_skipped() {
    let pan = luhn_pan("93600918");
    let spec = PayloadSpec::new(&pan).with_private_tag(Tag(0x9F76), b"\x01\x02\x03\x04");
    let p = decode(&payload(&spec)).unwrap();
    assert_eq!(issuer_name(p.nns()), Some("ShopeePay"));
    assert!(p.has_issuer_token());
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    // And an unknown constructed object at the top level is skipped too.
    let mut bytes = payload_bytes(&spec);
    bytes.extend_from_slice(&[0x70, 0x03, 0x9F, 0x01, 0x00]);
    assert_eq!(decode(&b64(&bytes)).unwrap().pan().digits(), pan);
}

#[test]
fn multi_byte_lengths_decode() {
    let pan = luhn_pan("93600002");
    for form in [LengthForm::Long81, LengthForm::Long82] {
        let spec = PayloadSpec {
            length_form: form,
            ..PayloadSpec::new(&pan)
        };
        let text = payload(&spec);
        // With long forms the prefix changes (85 81 05 ...): such a payload is not CPM text.
        assert_eq!(decode(&text).unwrap_err().code(), "not_cpm_prefix");
        // The bytes themselves are fine once the prefix rule is out of the way.
        assert_eq!(
            decode_bytes(&payload_bytes(&spec)).unwrap().pan().digits(),
            pan
        );
    }
    // The realistic case: 85 in short form, a 61 longer than 127 bytes (81 form) because of a
    // long issuer token, and 82 form inside it.
    let mut bytes = payload_bytes(&PayloadSpec::new(&pan).with_token(&[0x5A; 200]));
    assert_eq!(&bytes[7..9], &[0x61, 0x81]);
    let p = decode(&b64(&bytes)).unwrap();
    assert!(p.has_issuer_token());
    // Hand-made: the label in 82 form inside an otherwise normal payload.
    let spec = PayloadSpec {
        label: None,
        ..PayloadSpec::new(&pan)
    };
    bytes = payload_bytes(&spec);
    let app_len = usize::from(bytes[8]);
    let extra = [
        0x50, 0x82, 0x00, 0x07, b'Q', b'R', b'I', b'S', b'C', b'P', b'M',
    ];
    bytes.extend_from_slice(&extra);
    bytes[8] = u8::try_from(app_len + extra.len()).unwrap();
    let p = decode(&b64(&bytes)).unwrap();
    assert_eq!(p.label(), Some("QRISCPM"));
}

#[test]
fn lower_case_label_and_odd_language() {
    let pan = luhn_pan("93600914");
    let spec = PayloadSpec {
        label: Some("qriscpm".into()),
        ..PayloadSpec::new(&pan)
    };
    let p = decode(&payload(&spec)).unwrap();
    assert_eq!(p.label(), Some("qriscpm"));
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());

    let spec = PayloadSpec {
        label: Some("GOPAY\n".into()),
        language: Some("en".into()),
        ..PayloadSpec::new(&pan)
    };
    let p = decode(&payload(&spec)).unwrap();
    assert_eq!(
        p.label(),
        Some("GOPAY?"),
        "control characters never reach the logs"
    );
    assert_eq!(p.warnings().len(), 2, "{:?}", p.warnings());
}

#[test]
fn pan_from_track2_only_and_both_agreeing() {
    let pan = luhn_pan("93600009");
    let spec = PayloadSpec {
        pan_field: PanField::Track2,
        ..PayloadSpec::new(&pan)
    };
    assert_eq!(decode(&payload(&spec)).unwrap().pan().digits(), pan);
    let spec = PayloadSpec {
        pan_field: PanField::Both,
        ..PayloadSpec::new(&pan)
    };
    assert_eq!(decode(&payload(&spec)).unwrap().pan().digits(), pan);
}

#[test]
fn disagreeing_5a_and_57_are_rejected_without_showing_either_pan() {
    let pan = luhn_pan("93600009");
    let other = luhn_pan("93600008");
    let spec = PayloadSpec {
        pan_field: PanField::Both,
        track2_pan: Some(other.clone()),
        ..PayloadSpec::new(&pan)
    };
    let e = decode(&payload(&spec)).unwrap_err();
    assert_eq!(e.code(), "pan_mismatch");
    let msg = e.to_string();
    assert!(!msg.contains(&pan) && !msg.contains(&other), "{msg}");
    assert!(
        msg.contains("93600009") && msg.contains("93600008"),
        "{msg}"
    );
}

#[test]
fn non_qris_pan_is_rejected() {
    let spec = PayloadSpec::new("4111111111111111111");
    let e = decode(&payload(&spec)).unwrap_err();
    assert_eq!(e.code(), "pan_not_qris");
    assert_eq!(
        e.to_string(),
        "PAN starts 4111, not 9360: not an Indonesian QRIS account"
    );
    // Too short and malformed PANs.
    assert_eq!(
        decode(&payload(&PayloadSpec::new("936000021121")))
            .unwrap_err()
            .code(),
        "pan_length"
    );
    assert_eq!(
        decode(&payload(&PayloadSpec::new("936000021121986295:")))
            .unwrap_err()
            .code(),
        "bad_pan"
    );
    let spec = PayloadSpec {
        pan_field: PanField::Track2,
        ..PayloadSpec::new("936000021121986295:")
    };
    assert_eq!(decode(&payload(&spec)).unwrap_err().code(), "bad_track2");
}

#[test]
fn duplicate_primitive_tags_are_rejected() {
    let pan = luhn_pan("93600002");
    let spec = PayloadSpec::new(&pan).with_private_tag(Tag::LABEL, b"QRISCPM");
    let e = decode(&payload(&spec)).unwrap_err();
    assert_eq!(e.code(), "duplicate_tag");
    assert_eq!(e.to_string(), "tag 50 appears twice in template 61");

    // Two 85 at the top level.
    let mut bytes = payload_bytes(&PayloadSpec::new(&pan));
    bytes.extend_from_slice(b"\x85\x05CPV01");
    assert_eq!(decode(&b64(&bytes)).unwrap_err().code(), "duplicate_tag");

    // A duplicate inside 63.
    let spec = PayloadSpec {
        issuer_token: None,
        private_tags: vec![(
            Tag::APP_TRANSPARENT_TEMPLATE,
            b"\x9F\x74\x01\x01\x9F\x74\x01\x02".to_vec(),
        )],
        ..PayloadSpec::new(&pan)
    };
    assert_eq!(
        decode(&payload(&spec)).unwrap_err().to_string(),
        "tag 9F74 appears twice in template 63"
    );
}

#[test]
fn trailing_garbage_is_rejected() {
    let pan = luhn_pan("93600002");
    let spec = PayloadSpec {
        trailing: vec![0x12, 0x34, 0x56],
        ..PayloadSpec::new(&pan)
    };
    let e = decode(&payload(&spec)).unwrap_err();
    assert_eq!(e.code(), "bad_tlv");
    assert!(
        e.to_string().contains("tag 12 claims 52 value bytes"),
        "{e}"
    );
    // Padding is not garbage.
    let spec = PayloadSpec {
        trailing: vec![0, 0, 0],
        padding: 2,
        ..PayloadSpec::new(&pan)
    };
    assert_eq!(decode(&payload(&spec)).unwrap().pan().digits(), pan);
    // Text after the base64.
    let text = format!("{}!!", payload(&PayloadSpec::new(&pan)));
    assert_eq!(decode(&text).unwrap_err().code(), "not_base64");
}

#[test]
fn text_level_rejections() {
    let e = decode("hQVDUFYwMWFmTwegAAAGAiAg-UAd").unwrap_err();
    assert_eq!(e.code(), "not_base64");
    assert_eq!(e.to_string(), "payload is not base64: '-' at character 24");
    assert_eq!(decode("hQVDUFYwMQ==\n").unwrap_err().code(), "not_base64");
    assert_eq!(decode("hQVDUFYwMQé").unwrap_err().code(), "not_base64");

    let long = format!("hQVDUFYw{}", "A".repeat(505));
    assert_eq!(long.len(), 513);
    let e = decode(&long).unwrap_err();
    assert_eq!(e, CpmError::TooLong { len: 513 });
    // A built payload that is too long, for the same reason.
    let text = payload(&PayloadSpec::new(&luhn_pan("93600002")).with_token(&[7; 400]));
    assert!(text.len() > 512);
    assert_eq!(decode(&text).unwrap_err().code(), "too_long");

    let e = decode("00020101021126650013ID.CO.QRIS.WWW0215ID10200000000").unwrap_err();
    assert_eq!(e.code(), "merchant_presented");
    assert_eq!(
        decode(&b64(b"hello world")).unwrap_err().code(),
        "not_cpm_prefix"
    );

    let spec = PayloadSpec {
        format_indicator: b"CPV02".to_vec(),
        ..PayloadSpec::new(&luhn_pan("93600002"))
    };
    assert_eq!(
        decode(&payload(&spec)).unwrap_err().to_string(),
        "unsupported payload format indicator \"CPV02\", expected \"CPV01\""
    );
}

#[test]
fn first_object_must_be_85() {
    let e = decode_bytes(b"\x5A\x02\x93\x60\x85\x05CPV01").unwrap_err();
    assert_eq!(e.code(), "not_cpm");
    assert_eq!(
        e.to_string(),
        "payload is not EMV CPM: first object is 5A, expected 85"
    );
    assert_eq!(decode_bytes(b"").unwrap_err().code(), "not_cpm");
    assert_eq!(decode_bytes(b"\0\0").unwrap_err().code(), "not_cpm");
}

#[test]
fn application_choice() {
    let pan = luhn_pan("93600002");
    // A QRIS application after another scheme's.
    let spec = PayloadSpec {
        other_apps: vec![vec![0xA0, 0, 0, 0, 0x55, 0x55, 0x55]],
        ..PayloadSpec::new(&pan)
    };
    assert_eq!(decode(&payload(&spec)).unwrap().pan().digits(), pan);
    // An AID that extends the QRIS one still counts.
    let mut aid = tapgate::cpm::qris::QRIS_AID.to_vec();
    aid.push(0x01);
    let spec = PayloadSpec {
        aid,
        ..PayloadSpec::new(&pan)
    };
    assert!(decode(&payload(&spec)).is_ok());
    // A 61 without any 4F.
    let e = decode_bytes(b"\x85\x05CPV01\x61\x04\x5A\x02\x93\x60").unwrap_err();
    assert_eq!(e.code(), "no_qris_aid");
    assert!(e.to_string().contains("found none"), "{e}");
    // A QRIS application with no account number at all.
    let bytes = b"\x85\x05CPV01\x61\x09\x4F\x07\xA0\x00\x00\x06\x02\x20\x20";
    assert_eq!(decode_bytes(bytes).unwrap_err().code(), "no_pan");
}

#[test]
fn missing_token_and_luhn_failure_are_only_warnings() {
    let pan = luhn_pan("93600002");
    let p = decode(&payload(&PayloadSpec::new(&pan).without_token())).unwrap();
    assert!(!p.has_issuer_token());
    assert_eq!(p.warnings().len(), 1);
    assert!(p.warnings()[0].contains("9F74"));

    // An empty 9F74 is no token either.
    let p = decode(&payload(&PayloadSpec::new(&pan).with_token(b""))).unwrap();
    assert!(!p.has_issuer_token());

    let mut bad = pan.clone().into_bytes();
    bad[18] = if bad[18] == b'9' { b'0' } else { bad[18] + 1 };
    let bad = String::from_utf8(bad).unwrap();
    let p = decode(&payload(&PayloadSpec::new(&bad))).unwrap();
    assert_eq!(p.pan().digits(), bad);
    assert_eq!(p.warnings().len(), 1);
    assert!(p.warnings()[0].contains("Luhn"));

    // 9F25 agreeing and disagreeing.
    let agree = PayloadSpec {
        last4: Some(pan[15..].to_string()),
        ..PayloadSpec::new(&pan)
    };
    assert!(decode(&payload(&agree)).unwrap().warnings().is_empty());
    let disagree = PayloadSpec {
        last4: Some("0000".into()),
        ..PayloadSpec::new(&pan)
    };
    let p = decode(&payload(&disagree)).unwrap();
    assert_eq!(p.warnings().len(), 1);
    assert!(p.warnings()[0].starts_with("9F25 says the PAN ends 0000"));
}

#[test]
fn name_and_url_never_leave_the_decoder() {
    let pan = luhn_pan("93600002");
    let spec = PayloadSpec {
        name: Some("SITI NURHALIZA".into()),
        issuer_url: Some("siti@example.co.id".into()),
        ..PayloadSpec::new(&pan)
    };
    let text = payload(&spec);
    let p = decode(&text).unwrap();
    let dbg = format!("{p:?}");
    let json = serde_json::to_string(&decode_report(&text)).unwrap();
    for s in [&dbg, &json] {
        assert!(!s.contains("SITI"), "{s}");
        assert!(!s.contains("example.co.id"), "{s}");
        assert!(!s.contains(&pan), "{s}");
        assert!(!s.contains(&text), "{s}");
    }
    assert!(dbg.contains(&p.pan().masked()));
}

#[test]
fn decode_report_json_shape() {
    let q1 = "hQVDUFYwMWFmTwegAAAGAiAgUAdRUklTQ1BNWgqTYAACESGYYpUvXyARUkVORFkgTVVIQVJESUFOVE9fLQRpZGVuX1AYcm11aGFyZGlhbnRvQGhvdG1haWwuY29tnyUCYpVjC590CDRiODg5MGY1";
    let v = serde_json::to_value(decode_report(q1)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["nns"], "93600002");
    assert_eq!(v["issuer"], "BRI");
    assert_eq!(v["pan_masked"], "93600002*******2952");
    assert_eq!(v["label"], "QRISCPM");
    assert_eq!(v["language"], "iden");
    assert_eq!(v["has_issuer_token"], true);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["error"].is_null() && v["error_code"].is_null());

    let v = serde_json::to_value(decode_report("hQVDUFYwMQ==")).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["error_code"], "no_application_template");
    assert_eq!(v["error"], "payload has no application template (61)");
    assert_eq!(v["next_step"], "use_another_wallet");
    assert!(v["nns"].is_null() && v["pan_masked"].is_null());
}
