//! Property: no output path shows more than the masked PAN (first 8 + last 4 digits), the
//! cardholder name, the issuer URL, or the payload text (`qrContent`).
//!
//! Payloads: the valid fixtures, payloads built with long `9F25`, `5A`, `57`, `5F20`, `9F24`,
//! `5F50` and `9F74` fields holding PAN-like digit strings and cardholder names, and seeded
//! mutations of all of them (a fixed seed: a failure replays). Each goes through the decoder
//! (text and bytes), the APDU exchange with a scripted phone, every formatter (`Debug`,
//! `Display`, serde JSON of the payload view, warnings, errors, `DecodeReport` and its text
//! form, `CardEvent` and the `readers --watch` line), and, for a sample, the real lane pipeline
//! against the loopback simulator: its `TapReport` (JSON and `Debug`) and the log lines it
//! writes, in the text and the JSON format.
//!
//! The secrets of each payload are read from its own bytes (every `5A`/`57` account number,
//! `5F20`, `5F50`), so a mutation that changes them is checked against what it changed them to.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tapgate::cpm::build::{payload_bytes, PanField, PayloadSpec};
use tapgate::cpm::fuzz::{pan_leak, pan_run_in};
use tapgate::cpm::tlv::{self, Tag, Tlv};
use tapgate::nfc::qris_tap::read_qr_content;
use tapgate::nfc::scripted::ScriptedPhone;
use tapgate::nfc::CardEvent;

mod common;
use common::SplitMix;

const NAMES: [&str; 4] = [
    "SITI RAHAYU",
    "RENDY MUHARDIANTO",
    "PUTU AYU KADEK WIDYASTUTI",
    "Muhammad Rizky Pratama",
];
const NNS: [&str; 5] = ["93600002", "93600914", "93600014", "93600915", "93609999"];

/// What must never be shown for one payload.
#[derive(Debug, Default)]
struct Secrets {
    pans: Vec<String>,
    texts: Vec<String>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn nibble_digits(v: &[u8]) -> String {
    v.iter()
        .flat_map(|b| [b >> 4, b & 0x0F])
        .take_while(|n| *n <= 9)
        .map(|n| char::from(b'0' + n))
        .collect()
}

/// Account numbers, names and URLs as the payload's own bytes carry them.
fn secrets_of(bytes: &[u8], text: &str) -> Secrets {
    fn walk(objs: &[Tlv<'_>], s: &mut Secrets) {
        for o in objs {
            match o.tag {
                Tag::PAN | Tag::TRACK2 => {
                    let d = nibble_digits(o.value);
                    if d.len() >= 13 {
                        s.pans.push(d);
                    }
                }
                Tag::CARDHOLDER_NAME | Tag::ISSUER_URL => {
                    let t = String::from_utf8_lossy(o.value).trim().to_string();
                    if t.chars().count() >= 5 {
                        s.texts.push(t);
                    }
                }
                _ => {}
            }
            walk(&o.children, s);
        }
    }
    let mut s = Secrets::default();
    if let Ok(objs) = tlv::parse(bytes) {
        walk(&objs, &mut s);
    }
    if text.len() >= 24 {
        s.texts.push(text.to_string());
    }
    s
}

/// Fails with the output and what leaked. `run` is the shortest PAN run that counts: 6 for
/// text made from the payload alone, 9 where unrelated numbers (timings, references) appear.
fn check(s: &Secrets, what: &str, out: &str, run: usize) {
    // tapgate's own constants are not the passenger's digits, whatever a PAN happens to hold.
    let out = &out.replace(
        &hex::encode_upper(tapgate::cpm::qris::QRIS_AID),
        "<QRIS AID>",
    );
    for pan in &s.pans {
        let leak = if run == tapgate::cpm::fuzz::LEAK_RUN {
            pan_leak(out, pan)
        } else {
            pan_run_in(out, pan, run)
        };
        if let Some(digits) = leak {
            panic!("{what}: PAN digits {digits} of {pan} shown:\n{out}");
        }
    }
    for t in &s.texts {
        assert!(!out.contains(t.as_str()), "{what}: {t:?} shown:\n{out}");
        // Long secrets (the payload text, URLs) also not in part.
        let chars: Vec<char> = t.chars().collect();
        if chars.len() >= 40 {
            for w in chars.windows(24).step_by(8) {
                let w: String = w.iter().collect();
                assert!(
                    !out.contains(&w),
                    "{what}: part {w:?} of a secret shown:\n{out}"
                );
            }
        }
    }
}

fn random_pan(rng: &mut SplitMix) -> String {
    let mut pan = NNS[rng.below(NNS.len())].to_string();
    let len = [19, 19, 19, 16, 17, 18][rng.below(6)];
    while pan.len() < len {
        pan.push(char::from(b'0' + rng.below(10) as u8));
    }
    pan
}

/// A payload with PAN-like digits and names where wallets (or hostile phones) put them.
fn hostile_spec(rng: &mut SplitMix) -> PayloadSpec {
    let pan = random_pan(rng);
    let name = NAMES[rng.below(NAMES.len())];
    let token_len = 8 + rng.below(24);
    let mut spec = PayloadSpec::new(&pan)
        .with_token(&rand_bytes(rng, token_len))
        .with_name(name);
    spec.issuer_url = match rng.below(3) {
        0 => Some(format!("https://wallet.example.id/u/{pan}")),
        1 => Some(format!(
            "{}@hotmail.com",
            name.to_lowercase().replace(' ', ".")
        )),
        _ => None,
    };
    spec.last4 = match rng.below(7) {
        0 => Some(pan[pan.len() - 4..].to_string()),
        1 => Some("0000".into()),
        2 => Some(pan.clone()),
        3 => Some(format!("{pan}0")),
        4 => Some(pan[..12].to_string()),
        5 => Some(pan[6..].to_string()),
        _ => None,
    };
    spec.pan_field = [PanField::Pan5A, PanField::Track2, PanField::Both][rng.below(3)];
    if rng.chance(15) {
        // 5A and 57 disagreeing in one hidden digit.
        let mut other = pan.clone().into_bytes();
        other[10] = b'0' + (other[10] - b'0' + 1) % 10;
        spec.pan_field = PanField::Both;
        spec.track2_pan = Some(String::from_utf8(other).unwrap());
    }
    // 9F24 (payment account reference) and private tags holding the PAN, as text and BCD.
    if rng.chance(50) {
        spec.private_tags
            .push((Tag(0x9F24), format!("PAR{pan}").into_bytes()));
    }
    if rng.chance(30) {
        spec.private_tags
            .push((Tag(0x9F76), pan.clone().into_bytes()));
    }
    if rng.chance(20) {
        spec.issuer_token = Some(format!("tok:{pan}").into_bytes());
    }
    if rng.chance(10) {
        spec.label = Some(format!("QRIS {pan}"));
    }
    if rng.chance(10) {
        spec.format_indicator = pan.clone().into_bytes();
    }
    if rng.chance(10) {
        spec.other_apps.push({
            let mut aid = vec![0xA0];
            aid.extend(hex::decode(&pan[1..15]).unwrap());
            aid
        });
        spec.aid = vec![0xA0, 0, 0, 0, 0x03, 0x10, 0x10];
    }
    spec
}

fn rand_bytes(rng: &mut SplitMix, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

fn mutate(rng: &mut SplitMix, b: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(b.len().max(1));
        match rng.below(5) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            1 if !b.is_empty() => b[at] = rng.next() as u8,
            2 => b.insert(at.min(b.len()), rng.next() as u8),
            3 if !b.is_empty() => {
                b.remove(at);
            }
            _ => {
                let end = (at + 1 + rng.below(12)).min(b.len());
                let copy = b[at.min(end)..end].to_vec();
                let at = at.min(b.len());
                b.splice(at..at, copy);
            }
        }
    }
}

/// Every payload of the property, as (bytes, text, secrets).
fn payloads() -> Vec<(Vec<u8>, String, Secrets)> {
    let mut base = common::fixture_payloads();
    let mut rng = SplitMix(0x9F25_1EAC);
    for _ in 0..400 {
        base.push(payload_bytes(&hostile_spec(&mut rng)));
    }
    let mut all = base.clone();
    for _ in 0..1600 {
        let mut b = base[rng.below(base.len())].clone();
        mutate(&mut rng, &mut b);
        all.push(b);
    }
    all.into_iter()
        .map(|bytes| {
            let text = b64(&bytes);
            let secrets = secrets_of(&bytes, &text);
            (bytes, text, secrets)
        })
        .collect()
}

fn view_outputs(p: &tapgate::cpm::QrisPayload) -> Vec<String> {
    let mut out = vec![
        format!("{p:?}"),
        format!("{:?}", p.pan()),
        p.pan().to_string(),
        p.pan().masked(),
        p.nns().to_string(),
        p.warnings().join("\n"),
    ];
    out.extend(p.label().map(str::to_string));
    out.extend(p.language().map(str::to_string));
    out
}

fn error_outputs(e: &tapgate::cpm::CpmError) -> Vec<String> {
    vec![e.to_string(), format!("{e:?}"), e.code().to_string()]
}

#[test]
fn no_formatter_shows_a_pan_a_name_a_url_or_the_payload() {
    let all = payloads();
    let (mut valid, mut invalid, mut long_9f25, mut read_ok) = (0, 0, 0, 0);
    for (i, (bytes, text, secrets)) in all.iter().enumerate() {
        let what = |step: &str| format!("payload {i} ({step})");
        for (step, r) in [
            ("decode_bytes", tapgate::cpm::decode_bytes(bytes)),
            ("decode", tapgate::cpm::decode(text)),
        ] {
            let outs = match &r {
                Ok(p) => view_outputs(p),
                Err(e) => error_outputs(e),
            };
            for o in outs {
                check(secrets, &what(step), &o, 6);
            }
        }
        let report = tapgate::cpm::decode_report(text);
        if report.valid {
            valid += 1;
        } else {
            invalid += 1;
        }
        if report.warnings.iter().any(|w| w.starts_with("9F25 is ")) {
            long_9f25 += 1;
        }
        for o in [
            format!("{report:?}"),
            serde_json::to_string(&report).unwrap(),
            serde_json::to_string(&report.warnings).unwrap(),
            report.to_text(),
        ] {
            check(secrets, &what("report"), &o, 6);
        }

        // The APDU exchange with a phone holding this payload, in records of varied sizes,
        // and what `readers --watch` and the lane's event stream make of it.
        let mut phone = ScriptedPhone::new(text, &[1 + i % 200]);
        let event = match read_qr_content(&mut phone) {
            Ok(t) => {
                assert_eq!(&t, text, "the exchange returns the payload as sent");
                read_ok += 1;
                CardEvent::Payload {
                    reader: "ACS ACR1252 1S CL Reader PICC 0".into(),
                    qr_content: t,
                    read_us: 41_000,
                }
            }
            Err(error) => {
                for o in [error.to_string(), format!("{error:?}")] {
                    check(secrets, &what("exchange error"), &o, 6);
                }
                CardEvent::ReadFailed {
                    reader: "ACS ACR1252 1S CL Reader PICC 0".into(),
                    error,
                    read_us: 41_000,
                }
            }
        };
        for o in [format!("{event:?}"), event.watch_line()] {
            check(secrets, &what("card event"), &o, 6);
        }
    }
    // The property must have met every kind of case, or it proves nothing.
    assert!(valid > 400, "valid {valid}");
    assert!(invalid > 500, "invalid {invalid}");
    assert!(long_9f25 > 50, "payloads with a long 9F25: {long_9f25}");
    assert!(
        read_ok > 1000,
        "payloads read through the exchange: {read_ok}"
    );
}

/// A log writer shared with the test.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Buf {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap())).into_owned()
    }
}

/// The lane pipeline for a sample of the payloads (one phone per payload, so anti-passback
/// never hides a path): every `TapReport` and every log line, text and JSON, checked.
#[tokio::test]
async fn tap_reports_and_log_lines_show_only_the_masked_pan() {
    use tapgate::daemon::logging::text_layer;
    use tracing_subscriber::prelude::*;

    let text_log = Buf::default();
    let json_log = Buf::default();
    let (t, j) = (text_log.clone(), json_log.clone());
    let subscriber = tracing_subscriber::registry()
        .with(text_layer(move || t.clone(), false))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(move || j.clone()),
        )
        // The simulator is the aggregator's side, not the gate's output.
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("tapgate::sim", tracing_subscriber::filter::LevelFilter::OFF)
                .with_default(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = common::station_config(dir.path(), &sim.base_url(), "", common::FAST_RECONCILER);
    let cfg = tapgate::config::Config::load(&path).unwrap();
    let station = tapgate::daemon::station_from_config(cfg.clone(), &path).unwrap();
    let lanes: Vec<tapgate::daemon::lane::Lane> = cfg
        .lanes
        .iter()
        .map(|l| {
            tapgate::daemon::lane::Lane::new(
                l.clone(),
                station.clone(),
                Arc::new(tapgate::relay::RecordingRelay::new()),
            )
        })
        .collect();

    let all = payloads();
    let (mut approved, mut refused, mut lines) = (0, 0, 0);
    for (i, (_, text, secrets)) in all.iter().enumerate().step_by(7) {
        let lane = &lanes[i % lanes.len()];
        let mut r = lane.handle_payload(text, 40_000).await;
        if r.opened {
            approved += 1;
        } else {
            refused += 1;
        }
        for o in [serde_json::to_string(&r).unwrap(), format!("{r:?}")] {
            check(secrets, &format!("payload {i} TapReport"), &o, 9);
        }
        // Without the numbers tapgate makes itself (timings, its own reference), the report
        // is held to the strict run.
        r.timings = Default::default();
        r.partner_reference_no = None;
        r.reference_no = None;
        for o in [serde_json::to_string(&r).unwrap(), format!("{r:?}")] {
            check(secrets, &format!("payload {i} TapReport"), &o, 6);
        }
        for (format, log) in [("text", text_log.take()), ("json", json_log.take())] {
            lines += log.lines().count();
            check(secrets, &format!("payload {i} {format} log"), &log, 9);
        }
    }
    // Replies journaled after their deadline log too.
    station.drain().await;
    let late = format!("{}{}", text_log.take(), json_log.take());
    for (i, (_, _, secrets)) in all.iter().enumerate().step_by(7) {
        check(secrets, &format!("payload {i}, logs after drain"), &late, 9);
    }
    assert!(approved > 20, "approved {approved}");
    assert!(refused > 100, "refused {refused}");
    assert!(lines > 200, "log lines {lines}");
}
