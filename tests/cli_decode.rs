//! `tapgate decode` as a technician runs it: the real binary, payloads beyond the shared vectors.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;
use tapgate::cpm::build::{payload, PayloadSpec};

fn decode(arg: &str, stdin: Option<&str>) -> (i32, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["decode", "--json", arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tapgate");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    (out.status.code().unwrap_or(-1), v, stdout)
}

#[test]
fn valid_wallets_give_nns_issuer_and_masked_pan() {
    for (pan, nns, issuer) in [
        ("9360091230000012345", "93600912", "OVO"),
        ("9360000812345678901", "93600008", "Mandiri"),
        ("9360077700001234567", "93600777", "Finpay"),
    ] {
        let text = payload(&PayloadSpec::new(pan).with_name("SITI RAHAYU"));
        let (code, v, raw) = decode(&text, None);
        assert_eq!(code, 0, "{raw}");
        assert_eq!(v["valid"], true);
        assert_eq!(v["nns"], nns);
        assert!(v["issuer"].as_str().unwrap_or("").contains(issuer), "{raw}");
        assert_eq!(
            v["pan_masked"],
            format!("{}*******{}", &pan[..8], &pan[15..])
        );
        assert_eq!(v["label"], "QRISCPM");
        assert!(!raw.contains(pan), "full PAN printed");
        assert!(!raw.contains("SITI"), "cardholder name printed");
    }
}

#[test]
fn stdin_and_private_tags() {
    let text = payload(
        &PayloadSpec::new("9360091800123456789")
            .with_private_tag(tapgate::cpm::tlv::Tag(0x9F76), b"\x01\x02"),
    );
    let (code, v, _) = decode("-", Some(&format!("{text}\n")));
    assert_eq!(code, 0);
    assert_eq!(v["nns"], "93600918");
}

#[test]
fn rejections_exit_one_with_a_reason() {
    for (text, code_word) in [
        ("hQVDUFYwMQ==", "no_application_template"),
        (
            "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=",
            "no_qris_aid",
        ),
        ("not base64 at all", "not_base64"),
        ("aGVsbG8gd29ybGQ=", "not_cpm_prefix"),
        ("00020101021126", "merchant_presented"),
    ] {
        let (code, v, raw) = decode(text, None);
        assert_eq!(code, 1, "{text}: {raw}");
        assert_eq!(v["valid"], false);
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(v["error_code"], code_word, "{raw}");
    }
}

/// The review's case: BCA's M2 payload with a 9F25 holding the whole PAN instead of its last 4
/// digits. `tapgate decode` printed it in the mismatch warning, as text and as JSON.
#[test]
fn a_long_9f25_is_never_printed() {
    let pan = "9360001417451180859";
    for last4 in [pan.to_string(), format!("{pan}1"), pan[..12].to_string()] {
        let text = payload(&PayloadSpec {
            last4: Some(last4.clone()),
            ..PayloadSpec::new(pan).with_name("SENDY AGUSTIAN")
        });
        let (code, v, raw) = decode(&text, None);
        assert_eq!(code, 0, "{raw}");
        let warnings = v["warnings"].to_string();
        assert!(warnings.contains("9F25 is "), "{raw}");
        let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
            .args(["decode", &text])
            .output()
            .unwrap();
        let human = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(human.contains("warning     9F25 is "), "{human}");
        for shown in [&raw, &human] {
            // Not the PAN, nor the run the mask hides, nor the name.
            assert!(!shown.contains(&pan[..12]), "{shown}");
            assert!(!shown.contains(&pan[6..15]), "{shown}");
            assert!(!shown.contains("SENDY"), "{shown}");
            assert!(shown.contains("93600014*******0859"), "{shown}");
        }
    }
    // A 2-byte 9F25 that disagrees is still shown: 4 digits, what the mask shows anyway.
    let text = payload(&PayloadSpec {
        last4: Some("1234".into()),
        ..PayloadSpec::new(pan)
    });
    let (_, v, raw) = decode(&text, None);
    assert!(
        v["warnings"]
            .to_string()
            .contains("9F25 says the PAN ends 1234 but it ends 0859"),
        "{raw}"
    );
}
