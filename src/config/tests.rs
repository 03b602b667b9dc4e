use std::path::{Path, PathBuf};

use super::*;

const EXAMPLE: &str = include_str!("../../config/tapgate.toml");
const DEMO: &str = include_str!("../../config/demo.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("station.toml"))
}

#[test]
fn shipped_configs_parse() {
    let c = parse(EXAMPLE).expect("annotated example");
    assert_eq!(c.station.id, "DKA");
    assert_eq!(c.lanes.len(), 2);
    assert_eq!(c.aggregator.payment_path, "/v1.0/qr/qr-cpm-payment");
    let d = parse(DEMO).expect("demo");
    assert_eq!(d.lanes[1].direction, crate::fare::Direction::Out);
    assert_eq!(d.policy.decision_deadline_ms, 800);
    for (name, text, lanes) in [
        (
            "entry-only",
            include_str!("../../config/entry-only-brt.toml"),
            2,
        ),
        (
            "exit-only",
            include_str!("../../config/exit-only-krl.toml"),
            3,
        ),
        (
            "gate array",
            include_str!("../../config/gate-array-distance.toml"),
            4,
        ),
    ] {
        let c = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.lanes.len(), lanes, "{name}");
    }
    assert_eq!(c.inputs.len(), 2);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = DEMO.replace("debounce_ms = 3000", "debounce_ms = 3000\ndebounse_ms = 10");
    let e = parse(&text).expect_err("typo must be rejected");
    let line = text
        .lines()
        .position(|l| l.starts_with("debounse_ms"))
        .map(|i| i + 1);
    assert_eq!(e.line, line);
    assert_eq!(e.key.as_deref(), Some("policy.debounse_ms"));
    assert!(e.message.contains("unknown field"), "{}", e.message);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("station.toml:{}:", line.unwrap_or(0))),
        "{shown}"
    );
}

#[test]
fn wrong_type_names_the_line() {
    let text = DEMO.replace(
        "decision_deadline_ms = 800",
        "decision_deadline_ms = \"fast\"",
    );
    let e = parse(&text).expect_err("string for a number");
    let line = text
        .lines()
        .position(|l| l.starts_with("decision_deadline_ms"))
        .map(|i| i + 1);
    assert_eq!(e.line, line);
}

#[test]
fn bad_direction_is_rejected_with_its_line() {
    let text = DEMO.replace("direction = \"out\"", "direction = \"sideways\"");
    let e = parse(&text).expect_err("bad enum");
    assert!(
        e.message.contains("sideways") || e.message.contains("unknown variant"),
        "{}",
        e.message
    );
    let line = text
        .lines()
        .position(|l| l.contains("sideways"))
        .map(|i| i + 1);
    assert_eq!(e.line, line);
}

#[test]
fn semantic_errors_name_key_and_line() {
    let text = DEMO.replace("decision_deadline_ms = 800", "decision_deadline_ms = 5");
    let e = parse(&text).expect_err("deadline too short");
    assert_eq!(e.key.as_deref(), Some("policy.decision_deadline_ms"));
    let line = text
        .lines()
        .position(|l| l.starts_with("decision_deadline_ms"))
        .map(|i| i + 1);
    assert_eq!(e.line, line);

    let text = DEMO.replace("name = \"out-1\"", "name = \"in-1\"");
    let e = parse(&text).expect_err("duplicate lane");
    assert_eq!(e.key.as_deref(), Some("lane[1].name"));
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("name = \"in-1\""))
        .nth(1)
        .map(|(i, _)| i + 1);
    assert_eq!(e.line, second);

    let text = DEMO.replace(
        "base_url = \"http://127.0.0.1:8600\"",
        "base_url = \"http://h/v1.0\"",
    );
    let e = parse(&text).expect_err("path in base url");
    assert_eq!(e.key.as_deref(), Some("aggregator.base_url"));
    assert!(e.line.is_some());

    let text = DEMO.replace("id = \"BLM\"", "id = \"XYZ\"");
    let e = parse(&text).expect_err("station not in matrix");
    assert_eq!(e.key.as_deref(), Some("tariff.stations"));
}

#[test]
fn missing_section_is_named() {
    let text: String = DEMO
        .split("[aggregator]")
        .next()
        .unwrap_or_default()
        .to_string();
    let e = parse(&text).expect_err("no aggregator");
    assert!(e.message.contains("aggregator"), "{}", e.message);
}

#[test]
fn gpio_relays_and_inputs_parse_strictly() {
    let text = DEMO.replacen(
        "relay = { kind = \"recording\" }",
        "relay = { kind = \"gpio\", line = \"GATE1_RELAY\", active_low = true, pulse_ms = 400 }",
        1,
    ) + "\n[[input]]\nrole = \"emergency\"\nline = \"FIRE_ALARM\"\nactive_low = true\n";
    let c = parse(&text).expect("gpio relay and input");
    match &c.lanes[0].relay {
        RelayConfig::Gpio(spec) => {
            assert_eq!(spec.line.as_deref(), Some("GATE1_RELAY"));
            assert!(spec.active_low);
            assert_eq!(spec.pulse_ms, 400);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.inputs.len(), 1);

    let typo = DEMO.replacen(
        "relay = { kind = \"recording\" }",
        "relay = { kind = \"gpio\", line = \"GATE1_RELAY\", pulse = 400 }",
        1,
    );
    let e = parse(&typo).expect_err("unknown relay key");
    assert!(e.message.contains("pulse"), "{}", e.message);
    assert!(e.line.is_some());

    let bad_lane =
        DEMO.to_string() + "\n[[input]]\nrole = \"passage\"\nlane = \"in-9\"\nline = \"P\"\n";
    let e = parse(&bad_lane).expect_err("input for a missing lane");
    assert_eq!(e.key.as_deref(), Some("input[0].lane"));
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn secrets_resolve_against_the_config_folder() {
    let p = resolve_secret_path(Path::new("/abs/key.pem"), Path::new("/etc/tapgate"));
    assert_eq!(p, PathBuf::from("/abs/key.pem"));
}

/// The `n`-th (0-based) line that starts with `marker`.
fn nth_line_of(text: &str, marker: &str, n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(marker))
        .nth(n)
        .map(|(i, _)| i + 1)
}

/// Applies each case's edits to the annotated example and checks the error names the case's
/// key at the case's line, as `station.toml:LINE:` with "key `KEY`"; reports every case that
/// does not, at once.
fn assert_each_refused_at_its_key(cases: &[Bad]) {
    let mut failures = Vec::new();
    for c in cases {
        let mut text = EXAMPLE.to_string();
        for (old, new) in c.edits {
            assert!(text.contains(old), "edit {old:?} does not apply");
            text = text.replacen(old, new, 1);
        }
        let want_line = nth_line_of(&text, c.at, c.nth);
        assert!(
            want_line.is_some(),
            "{}: no line starts with {:?}",
            c.key,
            c.at
        );
        match parse(&text) {
            Ok(_) => failures.push(format!("{}: accepted", c.key)),
            Err(e) => {
                let shown = e.to_string();
                let want = format!("station.toml:{}:", want_line.unwrap_or(0));
                if e.key.as_deref() != Some(c.key)
                    || e.line != want_line
                    || !shown.starts_with(&want)
                    || !shown.contains(&format!("key `{}`", c.key))
                {
                    failures.push(format!("{}: want line {want_line:?}, got {shown}", c.key));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// One bad config: `(old, new)` edits of the annotated example, the key the error must
/// name, and the line it must point at (the first line starting with `at`, its `nth`).
struct Bad {
    edits: &'static [(&'static str, &'static str)],
    key: &'static str,
    at: &'static str,
    nth: usize,
}

const fn bad(
    edits: &'static [(&'static str, &'static str)],
    key: &'static str,
    at: &'static str,
) -> Bad {
    Bad {
        edits,
        key,
        at,
        nth: 0,
    }
}

const GPIO1: &str = "relay = { kind = \"gpio\", line = \"GATE1_RELAY\", active_low = false, mode = \"pulse\", pulse_ms = 300, gap_ms = 200 }";
const OUT_RELAY: &str = "relay = { kind = \"gpio\", line = \"GATE2_RELAY\" }";
const OUT_READER: &str =
    "card_source = { kind = \"pcsc\", reader = \"ACS ACR1252 1S CL Reader PICC 01*\" }";

/// Every example of issue 9 item 6 and every key of the annotated example: the error
/// names the key the person must fix, at its line.
#[test]
fn every_bad_key_is_named_with_its_line() {
    let cases: &[Bad] = &[
        // Serde-level errors: wrong type, range, enum, unknown and missing keys.
        bad(
            &[("pulse_ms = 300, ", "pulse_ms = -1, ")],
            "lane[0].relay.pulse_ms",
            GPIO1.split("pulse_ms").next().unwrap_or(""),
        ),
        bad(
            &[("client_id = \"YOUR-CLIENT-ID\"\n", "")],
            "aggregator.client_id",
            "[aggregator]",
        ),
        bad(
            &[("path = \"/var/lib/tapgate/journal.db\"\n", "")],
            "journal.path",
            "[journal]",
        ),
        bad(&[("id = \"DKA\"\n", "")], "station.id", "[station]"),
        Bad {
            edits: &[("direction = \"out\"\n", "")],
            key: "lane[1].direction",
            at: "[[lane]]",
            nth: 1,
        },
        Bad {
            edits: &[("direction = \"out\"", "direction = \"sideways\"")],
            key: "lane[1].direction",
            at: "direction = \"sideways\"",
            nth: 0,
        },
        bad(
            &[(
                "decision_deadline_ms = 1500",
                "decision_deadline_ms = \"fast\"",
            )],
            "policy.decision_deadline_ms",
            "decision_deadline_ms =",
        ),
        bad(
            &[("debounce_ms = 3000", "debounce_ms = -5")],
            "policy.debounce_ms",
            "debounce_ms = -5",
        ),
        bad(
            &[("anti_passback = \"refuse\"", "anti_passback = \"maybe\"")],
            "policy.anti_passback",
            "anti_passback =",
        ),
        bad(
            &[("unknown_at_exit = \"open\"", "unknown_at_exit = \"ajar\"")],
            "policy.unknown_at_exit",
            "unknown_at_exit =",
        ),
        bad(
            &[("stale_journey = \"max_fare\"", "stale_journey = \"forget\"")],
            "policy.stale_journey",
            "stale_journey =",
        ),
        bad(
            &[("feedback = \"off\"", "feedback = \"blinky\"")],
            "lane[0].card_source.feedback",
            "card_source =",
        ),
        bad(
            &[("mode = \"pulse\", ", "mode = \"wiggle\", ")],
            "lane[0].relay.mode",
            "relay =",
        ),
        bad(
            &[("bias = \"pull_up\"", "bias = \"pull_sideways\"")],
            "input[0].bias",
            "bias =",
        ),
        bad(
            &[("bias = \"pull_up\"", "pull = \"up\"")],
            "input[0].pull",
            "pull =",
        ),
        bad(
            &[("interval_ms = 1000", "interval_ms = 1000\nintervall_ms = 5")],
            "reconciler.intervall_ms",
            "intervall_ms",
        ),
        bad(&[("[metrics]", "[metric]")], "metric", "[metric]"),
        bad(
            &[("latitude = -6.2008", "latitude = \"south\"")],
            "station.latitude",
            "latitude =",
        ),
        bad(
            &[("max_body_bytes = 65536", "max_body_bytes = -1")],
            "aggregator.max_body_bytes",
            "max_body_bytes =",
        ),
        bad(
            &[(
                "fares = [\n  [3000, 6000, 7000, 8000],",
                "fares = [\n  [3000, 6000, -7000, 8000],",
            )],
            "tariff.fares[0][2]",
            "[3000, 6000, -7000",
        ),
        bad(&[("[6000, 3000, 3000, 3000],", "[6000, 3000, 3000.5, 3000],")], "tariff.fares[1][2]", "[6000, 3000, 3000.5"),
        // Keys beside kind = "none" / "recording" are refused, not swallowed.
        Bad {
            edits: &[(
                OUT_READER,
                "card_source = { kind = \"none\", reader = \"ACS*\" }",
            )],
            key: "lane[1].card_source.reader",
            at: "card_source = { kind = \"none\"",
            nth: 0,
        },
        Bad {
            edits: &[
                (
                    OUT_RELAY,
                    "relay = { kind = \"recording\", line = \"GATE2_RELAY\" }",
                ),
                ("bench = false", "bench = true"),
            ],
            key: "lane[1].relay.line",
            at: "relay = { kind = \"recording\"",
            nth: 0,
        },
        // A recording relay (written, or the default when absent) needs station.bench.
        Bad {
            edits: &[(OUT_RELAY, "relay = { kind = \"recording\" }")],
            key: "lane[1].relay",
            at: "relay = { kind = \"recording\" }",
            nth: 0,
        },
        Bad {
            edits: &[(OUT_RELAY, "")],
            key: "lane[1].relay",
            at: "[[lane]]",
            nth: 1,
        },
        // Semantic checks, each key by name.
        bad(
            &[("id = \"DKA\"", "id = \"D-KA\"")],
            "station.id",
            "id = \"D-KA\"",
        ),
        bad(
            &[("name = \"Dukuh Atas\"", "name = \"Dukuh\\nAtas\"")],
            "station.name",
            "name = \"Dukuh",
        ),
        bad(
            &[("latitude = -6.2008", "latitude = 100.0")],
            "station.latitude",
            "latitude =",
        ),
        bad(
            &[("longitude = 106.8228", "longitude = nan")],
            "station.longitude",
            "longitude =",
        ),
        bad(
            &[(
                "timezone = \"Asia/Jakarta\"",
                "timezone = \"Asia/Jakartaa\"",
            )],
            "station.timezone",
            "timezone =",
        ),
        Bad {
            edits: &[("name = \"out-1\"", "name = \"in-1\"")],
            key: "lane[1].name",
            at: "name = \"in-1\"",
            nth: 1,
        },
        Bad {
            edits: &[("name = \"out-1\"", "name = \"out 1\"")],
            key: "lane[1].name",
            at: "name = \"out 1\"",
            nth: 0,
        },
        bad(
            &[(
                "device_id = \"DKA-G01\"",
                "device_id = \"DKA\\r\\nX-Evil: 1\"",
            )],
            "lane[0].device_id",
            "device_id =",
        ),
        bad(
            &[("tap_deadline_ms = 1500", "tap_deadline_ms = 0")],
            "lane[0].card_source.tap_deadline_ms",
            "card_source =",
        ),
        Bad {
            edits: &[(
                OUT_READER,
                "card_source = { kind = \"pcsc\", reader = \" \" }",
            )],
            key: "lane[1].card_source.reader",
            at: "card_source = { kind = \"pcsc\", reader = \" \"",
            nth: 0,
        },
        bad(
            &[("pulse_ms = 300, ", "pulse_ms = 10, ")],
            "lane[0].relay.pulse_ms",
            "relay =",
        ),
        bad(
            &[("gap_ms = 200 }", "gap_ms = 5000 }")],
            "lane[0].relay.gap_ms",
            "relay =",
        ),
        bad(
            &[("line = \"GATE1_RELAY\", ", "")],
            "lane[0].relay.line",
            "relay =",
        ),
        bad(
            &[(
                "fares = [\n  [3000, 6000, 7000, 8000],",
                "fares = [\n  [3000, 6000, 1000000000000000, 8000],",
            )],
            "tariff.fares[0]",
            "[3000, 6000, 1000000000000000",
        ),
        bad(
            &[("[7000, 3000, 3000, 3000],", "[7000, 3000, 3000],")],
            "tariff.fares[2]",
            "[7000, 3000, 3000],",
        ),
        bad(
            &[("[8000, 3000, 3000, 3000],", "[8000, 3000, 3000, 0],")],
            "tariff.fares[3]",
            "[8000, 3000, 3000, 0]",
        ),
        bad(
            &[(
                "stations = [\"BLM\", \"STB\", \"DKA\", \"BHI\"]",
                "stations = [\"BLM\", \"BLM\", \"DKA\", \"BHI\"]",
            )],
            "tariff.stations[1]",
            "stations =",
        ),
        bad(
            &[(
                "stations = [\"BLM\", \"STB\", \"DKA\", \"BHI\"]",
                "stations = [\"BLM\", \"STB\", \"DKI\", \"BHI\"]",
            )],
            "tariff.stations",
            "stations =",
        ),
        bad(
            &[("decision_deadline_ms = 1500", "decision_deadline_ms = 5")],
            "policy.decision_deadline_ms",
            "decision_deadline_ms =",
        ),
        bad(
            &[("wait_ms = 100", "wait_ms = 1500")],
            "policy.fast_open.wait_ms",
            "wait_ms =",
        ),
        bad(
            &[("exposure_cap = 100000", "exposure_cap = 0")],
            "policy.fast_open.exposure_cap",
            "exposure_cap =",
        ),
        bad(
            &[("issuers = []", "issuers = [\"93600009\", \"mandiri\"]")],
            "policy.fast_open.issuers[1]",
            "issuers =",
        ),
        bad(
            &[("degraded_after_ms = 5000", "degraded_after_ms = 5")],
            "policy.fast_open.degraded_after_ms",
            "degraded_after_ms =",
        ),
        bad(
            &[("enabled = false", "enabled = false\nwait = 100")],
            "policy.fast_open.wait",
            "wait = 100",
        ),
        bad(
            &[("max_trip_minutes = 240", "max_trip_minutes = 0")],
            "policy.max_trip_minutes",
            "max_trip_minutes =",
        ),
        bad(
            &[("passage_window_ms = 8000", "passage_window_ms = 0")],
            "policy.passage_window_ms",
            "passage_window_ms =",
        ),
        bad(
            &[("debounce_ms = 3000", "debounce_ms = 18446744073709551615")],
            "policy.debounce_ms",
            "debounce_ms = 1844",
        ),
        bad(
            &[(
                "path = \"/var/lib/tapgate/journal.db\"",
                "path = \"/var/lib/tapgate/\"",
            )],
            "journal.path",
            "path = \"/var/lib/tapgate/\"",
        ),
        bad(
            &[(
                "passenger_key_file = \"/var/lib/tapgate/passenger.key\"",
                "passenger_key_file = \"\"",
            )],
            "journal.passenger_key_file",
            "passenger_key_file =",
        ),
        bad(
            &[(
                "base_url = \"https://sandbox.aggregator.example\"",
                "base_url = \"https://sandbox.aggregator.example/?x=1\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        bad(
            &[(
                "base_url = \"https://sandbox.aggregator.example\"",
                "base_url = \"https://sandbox.aggregator.example#top\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        bad(
            &[(
                "base_url = \"https://sandbox.aggregator.example\"",
                "base_url = \"https://user:pw@sandbox.aggregator.example\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        bad(
            &[(
                "base_url = \"https://sandbox.aggregator.example\"",
                "base_url = \"https://sandbox.aggregator.example/v1.0\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        bad(
            &[(
                "base_url = \"https://sandbox.aggregator.example\"",
                "base_url = \"ftp://sandbox.aggregator.example\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        bad(
            &[(
                "base_url = \"https://sandbox.aggregator.example\"",
                "base_url = \"http://sandbox.aggregator.example\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        bad(
            &[(
                "base_url = \"https://sandbox.aggregator.example\"",
                "base_url = \"http://10.20.1.1:8600\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        bad(
            &[(
                "client_id = \"YOUR-CLIENT-ID\"",
                "client_id = \"ID\\r\\nX-Evil: 1\"",
            )],
            "aggregator.client_id",
            "client_id =",
        ),
        bad(
            &[("partner_id = \"YOUR-PARTNER-ID\"", "partner_id = \"P\\n\"")],
            "aggregator.partner_id",
            "partner_id =",
        ),
        bad(
            &[("channel_id = \"95221\"", "channel_id = \"\"")],
            "aggregator.channel_id",
            "channel_id =",
        ),
        bad(
            &[(
                "merchant_id = \"YOUR-MERCHANT-ID\"",
                "merchant_id = \"M\\u001b[2J\"",
            )],
            "aggregator.merchant_id",
            "merchant_id =",
        ),
        bad(
            &[("sub_merchant_id = \"DKA\"", "sub_merchant_id = \"\"")],
            "aggregator.sub_merchant_id",
            "sub_merchant_id =",
        ),
        bad(
            &[("# terminal_id = \"DKA-G01\"", "terminal_id = \"T\\r\"")],
            "aggregator.terminal_id",
            "terminal_id =",
        ),
        bad(
            &[(
                "# origin = \"https://gates.operator.example\"",
                "origin = \"https://o.example\\r\\nX: y\"",
            )],
            "aggregator.origin",
            "origin =",
        ),
        bad(
            &[("device_ip = \"10.20.1.11\"", "device_ip = \"gate one\"")],
            "aggregator.device_ip",
            "device_ip =",
        ),
        bad(
            &[(
                "client_secret_file = \"aggregator-client-secret\"",
                "client_secret_file = \"\"",
            )],
            "aggregator.client_secret_file",
            "client_secret_file =",
        ),
        bad(
            &[("connect_timeout_ms = 1500", "connect_timeout_ms = 0")],
            "aggregator.connect_timeout_ms",
            "connect_timeout_ms =",
        ),
        bad(
            &[("request_timeout_ms = 5000", "request_timeout_ms = 1000")],
            "aggregator.connect_timeout_ms",
            "connect_timeout_ms =",
        ),
        bad(
            &[("max_body_bytes = 65536", "max_body_bytes = 0")],
            "aggregator.max_body_bytes",
            "max_body_bytes =",
        ),
        bad(
            &[("pool_idle_timeout_ms = 50000", "pool_idle_timeout_ms = 0")],
            "aggregator.pool_idle_timeout_ms",
            "pool_idle_timeout_ms =",
        ),
        bad(
            &[("keep_warm_ms = 20000", "keep_warm_ms = 25001")],
            "aggregator.keep_warm_ms",
            "keep_warm_ms =",
        ),
        bad(
            &[(
                "payment_path = \"/v1.0/qr/qr-cpm-payment\"",
                "payment_path = \"/v1.0/qr/qr cpm-payment\"",
            )],
            "aggregator.payment_path",
            "payment_path =",
        ),
        bad(
            &[(
                "query_path = \"/v1.0/qr/qr-cpm-query\"",
                "query_path = \"v1.0/qr/qr-cpm-query\"",
            )],
            "aggregator.query_path",
            "query_path =",
        ),
        bad(
            &[(
                "refund_path = \"/v1.0/qr/qr-cpm-refund\"",
                "refund_path = \"/v1.0/refund?x=1\"",
            )],
            "aggregator.refund_path",
            "refund_path =",
        ),
        bad(
            &[(
                "token_path = \"/v1.0/access-token/b2b\"",
                "token_path = \"/v1.0/tokén\"",
            )],
            "aggregator.token_path",
            "token_path =",
        ),
        bad(
            &[("listen = \"127.0.0.1:9464\"", "listen = \"localhost:9464\"")],
            "metrics.listen",
            "listen =",
        ),
        bad(
            &[("listen = \"127.0.0.1:9464\"", "listen = \"9464\"")],
            "metrics.listen",
            "listen =",
        ),
        bad(
            &[("interval_ms = 1000", "interval_ms = 0")],
            "reconciler.interval_ms",
            "interval_ms =",
        ),
        bad(
            &[("backoff_base_ms = 2000", "backoff_base_ms = 0")],
            "reconciler.backoff_base_ms",
            "backoff_base_ms =",
        ),
        bad(
            &[("backoff_cap_ms = 300000", "backoff_cap_ms = 1000")],
            "reconciler.backoff_cap_ms",
            "backoff_cap_ms =",
        ),
        bad(
            &[("max_attempts = 30", "max_attempts = 0")],
            "reconciler.max_attempts",
            "max_attempts =",
        ),
        bad(
            &[(
                "attention_after_minutes = 1440",
                "attention_after_minutes = 0",
            )],
            "reconciler.attention_after_minutes",
            "attention_after_minutes =",
        ),
        bad(
            &[(
                "not_found_after_seconds = 120",
                "not_found_after_seconds = 99999999",
            )],
            "reconciler.not_found_after_seconds",
            "not_found_after_seconds =",
        ),
        bad(
            &[("debounce_ms = 20", "debounce_ms = 5000")],
            "input[0].debounce_ms",
            "debounce_ms = 5000",
        ),
        bad(
            &[("line = \"FIRE_ALARM\"\n", "")],
            "input[0].line",
            "[[input]]",
        ),
        Bad {
            edits: &[(
                "lane = \"in-1\"\nline = \"GATE1_PASSAGE\"",
                "lane = \"in-9\"\nline = \"GATE1_PASSAGE\"",
            )],
            key: "input[1].lane",
            at: "lane = \"in-9\"",
            nth: 0,
        },
        Bad {
            edits: &[(
                "lane = \"in-1\"\nline = \"GATE1_PASSAGE\"",
                "line = \"GATE1_PASSAGE\"",
            )],
            key: "input[1].lane",
            at: "[[input]]",
            nth: 1,
        },
        // Keys the cases above leave out, so that every key of the example is covered.
        bad(&[("bench = false", "bench = \"yes\"")], "station.bench", "bench ="),
        Bad { edits: &[(OUT_RELAY, "relay = { kind = \"gpio\", chip = \"gpiochip0\" }")], key: "lane[1].relay.offset", at: "relay = { kind = \"gpio\", chip", nth: 0 },
        Bad { edits: &[(OUT_RELAY, "relay = { kind = \"gpio\", line = \"G2\", mode = \"hold_until_passage\", hold_timeout_ms = 100 }")], key: "lane[1].relay.hold_timeout_ms", at: "relay = { kind = \"gpio\", line = \"G2\"", nth: 0 },
        Bad { edits: &[(OUT_RELAY, "relay = { kind = \"gpio\", line = \"G2\", active_low = 1 }")], key: "lane[1].relay.active_low", at: "relay = { kind = \"gpio\", line = \"G2\"", nth: 0 },
        Bad { edits: &[(OUT_RELAY, "relay = { kind = \"solenoid\" }")], key: "lane[1].relay.kind", at: "relay = { kind = \"solenoid\"", nth: 0 },
        Bad { edits: &[(OUT_READER, "card_source = { kind = \"usb\" }")], key: "lane[1].card_source.kind", at: "card_source = { kind = \"usb\"", nth: 0 },
        bad(&[("kind = \"matrix\"\nstations", "kind = \"zone\"\nstations")], "tariff.kind", "kind = \"zone\""),
        bad(&[("kind = \"matrix\"\nstations", "kind = \"flat\"\nfare = 0\nstations")], "tariff.stations", "stations ="),
        bad(&[("role = \"emergency\"", "role = \"smoke\"")], "input[0].role", "role = \"smoke\""),
        bad(&[("active_low = true\n# Kernel", "active_low = \"yes\"\n# Kernel")], "input[0].active_low", "active_low = \"yes\""),
        Bad { edits: &[("line = \"GATE1_PASSAGE\"", "chip = \"gpiochip0\"")], key: "input[1].offset", at: "[[input]]", nth: 1 },
    ];
    assert_each_refused_at_its_key(cases);
}

#[test]
fn flat_fares_are_bounded() {
    let flat = |fare: &str| {
        let start = EXAMPLE.find("kind = \"matrix\"\nstations").unwrap_or(0);
        let end = EXAMPLE.find("[policy]").unwrap_or(0);
        format!(
            "{}kind = \"flat\"\nfare = {fare}\n\n{}",
            &EXAMPLE[..start],
            &EXAMPLE[end..]
        )
    };
    assert!(parse(&flat("3500")).is_ok());
    assert!(parse(&flat(&MAX_FARE.to_string())).is_ok());
    for bad in ["0", "1000000000000000", "10000001"] {
        let text = flat(bad);
        let e = parse(&text).expect_err(bad);
        assert_eq!(e.key.as_deref(), Some("tariff.fare"), "{bad}: {e}");
        let line = text
            .lines()
            .position(|l| l.starts_with("fare ="))
            .map(|i| i + 1);
        assert_eq!(e.line, line, "{bad}: {e}");
    }
}

#[test]
fn a_missing_section_is_named_alone_even_when_the_file_starts_with_a_table() {
    let text = &DEMO[DEMO.find("[station]").unwrap_or(0)..];
    for section in ["[aggregator]", "[journal]"] {
        let start = text.find(section).unwrap_or(0);
        let end = text[start + 1..]
            .find("\n[")
            .map_or(text.len(), |e| start + 1 + e + 1);
        let cut = format!("{}{}", &text[..start], &text[end..]);
        let e = parse(&cut).expect_err(section);
        let name = section.trim_matches(|c| c == '[' || c == ']');
        assert_eq!(e.key.as_deref(), Some(name), "{e}");
    }
}

#[test]
fn plain_http_only_to_loopback() {
    for ok in [
        "https://aggregator.example",
        "https://aggregator.example:8443/",
        "http://127.0.0.1:8600",
        "http://127.9.9.9",
        "http://[::1]:8600",
        "http://localhost:8600",
        "http://LOCALHOST",
    ] {
        assert_eq!(check_base_url(ok), Ok(()), "{ok}");
    }
    for bad in [
        "http://aggregator.example",
        "http://10.0.0.1:8600",
        "http://[fe80::1]",
        "http://localhost.evil.example",
        "http://128.0.0.1",
        "http://0.0.0.0:8600",
    ] {
        let e = check_base_url(bad).expect_err(bad);
        assert!(e.contains("clear text"), "{bad}: {e}");
    }
}

#[test]
fn reconciler_interval_has_a_floor() {
    for (v, ok) in [
        (0, false),
        (1, false),
        (MIN_RECONCILER_INTERVAL_MS - 1, false),
        (MIN_RECONCILER_INTERVAL_MS, true),
        (1000, true),
    ] {
        let text = EXAMPLE.replace("interval_ms = 1000", &format!("interval_ms = {v}"));
        match parse(&text) {
            Ok(c) => {
                assert!(ok, "interval_ms = {v} accepted");
                assert_eq!(c.reconciler.interval_ms, v);
            }
            Err(e) => {
                assert!(!ok, "interval_ms = {v}: {e}");
                assert_eq!(e.key.as_deref(), Some("reconciler.interval_ms"));
                assert!(
                    e.message.contains(&MIN_RECONCILER_INTERVAL_MS.to_string()),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn bench_allows_recording_relays() {
    let text = EXAMPLE
        .replace(
            "relay = { kind = \"gpio\", line = \"GATE2_RELAY\" }",
            "relay = { kind = \"recording\" }",
        )
        .replace("bench = false", "bench = true");
    let c = parse(&text).expect("bench rig");
    assert!(matches!(c.lanes[1].relay, RelayConfig::Recording));
    let none = text.replace(
        "card_source = { kind = \"pcsc\", reader = \"ACS ACR1252 1S CL Reader PICC 01*\" }",
        "card_source = { kind = \"none\" }",
    );
    let c = parse(&none).expect("kind none alone");
    assert!(matches!(c.lanes[1].card_source, CardSourceConfig::None));
}

#[test]
fn relative_paths_resolve_beside_the_config() {
    let mut c = parse(DEMO).expect("demo");
    c.resolve_paths(Path::new("/etc/tapgate"));
    assert_eq!(
        c.journal.path,
        PathBuf::from("/etc/tapgate/demo-journal.db")
    );
    assert_eq!(
        c.journal.passenger_key_path(),
        PathBuf::from("/etc/tapgate/passenger.key")
    );
    let mut c = parse(EXAMPLE).expect("example");
    c.resolve_paths(Path::new("/elsewhere"));
    assert_eq!(c.journal.path, PathBuf::from("/var/lib/tapgate/journal.db"));
    assert_eq!(
        config_dir(Path::new("station.toml")),
        std::env::current_dir().unwrap().canonicalize().unwrap()
    );
}

#[test]
fn indonesian_zones_resolve_from_the_bundled_database() {
    for name in ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"] {
        let tz = jiff::tz::TimeZoneDatabase::bundled()
            .get(name)
            .unwrap_or_else(|e| panic!("{name} not bundled: {e}"));
        assert_eq!(tz.iana_name(), Some(name));
    }
    let e = resolve_time_zone("Asia/Atlantis").expect_err("no such zone");
    assert!(
        e.contains("built into tapgate") && e.contains("Asia/Jakarta"),
        "{e}"
    );
}

/// The annotated example's `[journeys]` block, uncommented: the postgres example as documented.
fn example_with_line() -> String {
    let mut out = String::new();
    let mut inside = false;
    for l in EXAMPLE.lines() {
        if l == "# [journeys]" {
            inside = true;
        } else if l.starts_with("# ----") {
            inside = false;
        }
        let is_key = l
            .strip_prefix("# ")
            .and_then(|r| r.split_once(" = "))
            .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if inside && (l == "# [journeys]" || is_key) {
            out.push_str(&l[2..]);
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    out
}

#[test]
fn journeys_are_local_by_default() {
    let c = parse(EXAMPLE).expect("example");
    assert_eq!(c.journeys.store, JourneyStoreKind::Local);
    assert!(c.journeys.line_settings("DKA").is_none());
    assert!(!c.passenger_key_must_exist());
    let j = JourneysConfig::default();
    assert_eq!(j.store, JourneyStoreKind::Local);
    assert_eq!(
        (
            j.lookup_timeout_ms,
            j.background_timeout_ms,
            j.connect_timeout_ms,
            j.pool_size,
            j.replicate_interval_ms,
            j.retain_days,
            j.converge_hours
        ),
        (50, 5000, 3000, 4, 200, None, 24)
    );
    // An empty section is the same.
    let c = parse(&format!("{EXAMPLE}\n[journeys]\n")).expect("empty [journeys]");
    assert!(c.journeys.line_settings("DKA").is_none());
    let c = parse(&format!("{EXAMPLE}\n[journeys]\nstore = \"local\"\n")).expect("local");
    assert_eq!(c.journeys.store, JourneyStoreKind::Local);
}

#[test]
fn the_documented_postgres_example_parses_and_maps_onto_the_line_settings() {
    let text = example_with_line();
    assert!(
        text.contains("\n[journeys]\nstore = \"postgres\"\n"),
        "{text}"
    );
    let mut c = parse(&text).expect("the documented [journeys] example");
    assert!(c.passenger_key_must_exist());
    c.resolve_paths(Path::new("/etc/tapgate"));
    let s = c.journeys.line_settings("DKA").expect("postgres");
    assert_eq!(
        s.url,
        "postgresql://tapgate-dka@line1-db.example:5432/tapgate"
    );
    assert_eq!(s.station, "DKA");
    // A secret: beside the config (no $CREDENTIALS_DIRECTORY in the unit tests' environment
    // unless the runner sets one).
    let expected_pw = resolve_secret_path(Path::new("line-db-password"), Path::new("/etc/tapgate"));
    assert_eq!(s.password_file, Some(expected_pw));
    assert_eq!(
        s.ca_file,
        Some(PathBuf::from("/etc/tapgate/line-db-ca.pem"))
    );
    assert_eq!(
        (
            s.lookup_timeout_ms,
            s.background_timeout_ms,
            s.connect_timeout_ms,
            s.pool_size
        ),
        (50, 5000, 3000, 4)
    );
    assert_eq!(c.journeys.retain_days, Some(90));
    assert_eq!(c.journeys.converge_window().as_secs(), 24 * 3600);
    assert_eq!(c.journeys.replicate_interval().as_millis(), 200);
    // A relative CA file is beside the config, not under the credentials directory.
    let mut c = parse(&text.replace(
        "ca_file = \"/etc/tapgate/line-db-ca.pem\"",
        "ca_file = \"ca.pem\"",
    ))
    .expect("relative ca_file");
    c.resolve_paths(Path::new("/srv/conf"));
    assert_eq!(c.journeys.ca_file, Some(PathBuf::from("/srv/conf/ca.pem")));
}

/// Each bad `[journeys]`: the key named, at its line (or its table's, for a missing key).
#[test]
fn bad_journeys_keys_are_named_with_their_line() {
    let line = example_with_line();
    let url = "url = \"postgresql://tapgate-dka@line1-db.example:5432/tapgate\"";
    let cases: &[(&str, &str, &str, &str)] = &[
        // (old, new, key, the line's start)
        (&format!("{url}\n"), "", "journeys.url", "[journeys]"),
        (
            url,
            "url = \"postgresql://tapgate-dka:hunter2@line1-db.example/tapgate\"",
            "journeys.url",
            "url =",
        ),
        (
            url,
            "url = \"host=line1-db.example user=tapgate password=hunter2 dbname=tapgate\"",
            "journeys.url",
            "url =",
        ),
        (
            url,
            "url = \"postgresql://tapgate@line1-db.example/tapgate?sslmode=disable\"",
            "journeys.url",
            "url =",
        ),
        (
            url,
            "url = \"postgresql://line1-db.example/tapgate\"",
            "journeys.url",
            "url =",
        ),
        (
            "\nstore = \"postgres\"",
            "\nstore = \"mysql\"",
            "journeys.store",
            "store =",
        ),
        (
            "lookup_timeout_ms = 50",
            "lookup_timeout_ms = 50\nlookup_timeout = 50",
            "journeys.lookup_timeout",
            "lookup_timeout =",
        ),
        (
            "lookup_timeout_ms = 50",
            "lookup_timeout_ms = 0",
            "journeys.lookup_timeout_ms",
            "lookup_timeout_ms =",
        ),
        (
            "lookup_timeout_ms = 50",
            "lookup_timeout_ms = 5000",
            "journeys.lookup_timeout_ms",
            "lookup_timeout_ms =",
        ),
        (
            "lookup_timeout_ms = 50",
            "lookup_timeout_ms = \"50ms\"",
            "journeys.lookup_timeout_ms",
            "lookup_timeout_ms =",
        ),
        (
            "background_timeout_ms = 5000",
            "background_timeout_ms = 0",
            "journeys.background_timeout_ms",
            "background_timeout_ms =",
        ),
        (
            "connect_timeout_ms = 3000\n# Conn",
            "connect_timeout_ms = -1\n# Conn",
            "journeys.connect_timeout_ms",
            "connect_timeout_ms = -1",
        ),
        (
            "connect_timeout_ms = 3000\n# Conn",
            "connect_timeout_ms = 0\n# Conn",
            "journeys.connect_timeout_ms",
            "connect_timeout_ms = 0",
        ),
        (
            "pool_size = 4",
            "pool_size = 0",
            "journeys.pool_size",
            "pool_size =",
        ),
        (
            "pool_size = 4",
            "pool_size = 33",
            "journeys.pool_size",
            "pool_size =",
        ),
        (
            "replicate_interval_ms = 200",
            "replicate_interval_ms = 1",
            "journeys.replicate_interval_ms",
            "replicate_interval_ms =",
        ),
        (
            "retain_days = 90\n# How",
            "retain_days = 0\n# How",
            "journeys.retain_days",
            "retain_days = 0",
        ),
        (
            "converge_hours = 24",
            "converge_hours = 0",
            "journeys.converge_hours",
            "converge_hours =",
        ),
        (
            "converge_hours = 24",
            "converge_hours = 721",
            "journeys.converge_hours",
            "converge_hours =",
        ),
        (
            "password_file = \"line-db-password\"",
            "password_file = \"\"",
            "journeys.password_file",
            "password_file =",
        ),
        // With store = "local", a postgres-only key is refused, named.
        (
            "\nstore = \"postgres\"",
            "\nstore = \"local\"",
            "journeys.url",
            "url =",
        ),
    ];
    let mut failures = Vec::new();
    for (old, new, key, at) in cases {
        assert!(line.contains(old), "edit {old:?} does not apply");
        let text = line.replacen(old, new, 1);
        let want_line = nth_line_of(&text, at, 0);
        match parse(&text) {
            Ok(_) => failures.push(format!("{new:?}: accepted")),
            Err(e) => {
                let shown = e.to_string();
                if e.key.as_deref() != Some(key)
                    || e.line != want_line
                    || !shown.starts_with(&format!("station.toml:{}:", want_line.unwrap_or(0)))
                    || shown.contains("hunter2")
                {
                    failures.push(format!("{new:?}: want {key} at {want_line:?}, got {shown}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_exit_lookup_fits_in_the_decision_deadline() {
    let text = example_with_line()
        .replace("decision_deadline_ms = 1500", "decision_deadline_ms = 400")
        .replace("lookup_timeout_ms = 50", "lookup_timeout_ms = 400");
    let e = parse(&text).expect_err("a lookup as long as the deadline");
    assert_eq!(e.key.as_deref(), Some("journeys.lookup_timeout_ms"), "{e}");
    assert_eq!(e.line, nth_line_of(&text, "lookup_timeout_ms =", 0), "{e}");
    assert!(e.message.contains("decision_deadline_ms (400 ms)"), "{e}");
    let ok = text.replace("lookup_timeout_ms = 400", "lookup_timeout_ms = 399");
    assert!(parse(&ok).is_ok());
}

#[test]
fn a_local_store_refuses_each_postgres_only_key_with_what_to_do() {
    for key in JOURNEYS_POSTGRES_ONLY {
        let value = match *key {
            "url" => "\"postgresql://tapgate@127.0.0.1/tapgate\"",
            "password_file" | "ca_file" => "\"x\"",
            _ => "5",
        };
        let text = format!("{EXAMPLE}\n[journeys]\n{key} = {value}\n");
        let e = parse(&text).expect_err(key);
        assert_eq!(
            e.key.as_deref(),
            Some(format!("journeys.{key}").as_str()),
            "{e}"
        );
        assert!(
            e.message.contains("only used with store = \"postgres\""),
            "{e}"
        );
        assert_eq!(e.line, Some(text.lines().count()), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// [display]

#[test]
fn the_documented_display_parses_and_is_off_when_absent() {
    let c = parse(EXAMPLE).expect("annotated example");
    let d = c.display.expect("[display] in the example");
    assert_eq!(d.listen, "127.0.0.1:8700");
    assert!(!d.allow_remote);
    assert_eq!(d.idle_after_ms, 4000);
    assert_eq!(d.gates.len(), 1);
    assert_eq!(d.gates[0].name, "G1");
    assert_eq!(d.gates[0].lanes, ["in-1", "out-1"]);

    assert!(
        parse(DEMO).expect("demo").display.is_none(),
        "off when absent"
    );
    let only_listen = strip_display(EXAMPLE) + "\n[display]\nlisten = \"[::1]:8700\"\n";
    let d = parse(&only_listen)
        .expect("listen alone")
        .display
        .expect("on");
    assert_eq!(d.idle_after_ms, 4000, "default");
    assert!(d.gates.is_empty());
    let remote = EXAMPLE
        .replace("listen = \"127.0.0.1:8700\"", "listen = \"0.0.0.0:8700\"")
        .replace("allow_remote = false", "allow_remote = true");
    assert!(parse(&remote).is_ok(), "allowed explicitly");
}

/// The example without its `[display]` section (up to the next section's rule).
fn strip_display(text: &str) -> String {
    let start = text.find("[display]").expect("[display]");
    let start = text[..start]
        .rfind("# ----")
        .expect("rule before [display]");
    let end = start + 4 + text[start + 4..].find("# ----").expect("rule after");
    format!("{}{}", &text[..start], &text[end..])
}

/// Each bad `[display]` key: named, at its line.
#[test]
fn bad_display_keys_are_named_with_their_line() {
    const LISTEN: &str = "listen = \"127.0.0.1:8700\"";
    const LANES: &str = "lanes = [\"in-1\", \"out-1\"]";
    let cases: &[Bad] = &[
        bad(
            &[(LISTEN, "listen = \"0.0.0.0:8700\"")],
            "display.listen",
            "listen = \"0.0.0.0",
        ),
        bad(
            &[(LISTEN, "listen = \"192.168.1.20:8700\"")],
            "display.listen",
            "listen = \"192",
        ),
        bad(
            &[(LISTEN, "listen = \"localhost:8700\"")],
            "display.listen",
            "listen = \"localhost",
        ),
        bad(
            &[(LISTEN, "listen = 8700")],
            "display.listen",
            "listen = 8700",
        ),
        bad(
            &[(LISTEN, "")],
            "display.listen",
            "[display]",
        ),
        bad(
            &[("allow_remote = false", "allow_remote = \"no\"")],
            "display.allow_remote",
            "allow_remote =",
        ),
        bad(
            &[("idle_after_ms = 4000", "idle_after_ms = 999")],
            "display.idle_after_ms",
            "idle_after_ms =",
        ),
        bad(
            &[("idle_after_ms = 4000", "idle_after_ms = 60001")],
            "display.idle_after_ms",
            "idle_after_ms =",
        ),
        bad(
            &[("idle_after_ms = 4000", "idle_after_ms = 4000\nidle_ms = 10")],
            "display.idle_ms",
            "idle_ms",
        ),
        bad(
            &[(LANES, "lanes = [\"in-1\", \"out-1\"]\ncolour = \"red\"")],
            "display.gate[0].colour",
            "colour =",
        ),
        bad(
            &[("name = \"G1\"", "name = \"G 1\"")],
            "display.gate[0].name",
            "name = \"G 1\"",
        ),
        bad(
            &[(LANES, "lanes = [\"in-1\"]")],
            "display.gate[0].lanes",
            "lanes =",
        ),
        bad(
            &[(LANES, "lanes = [\"in-1\", \"out-1\", \"in-1\"]")],
            "display.gate[0].lanes",
            "lanes =",
        ),
        bad(
            &[(LANES, "lanes = [\"in-1\", \"out-9\"]")],
            "display.gate[0].lanes[1]",
            "lanes =",
        ),
        bad(
            &[(LANES, "lanes = [\"in-1\", \"in-1\"]")],
            "display.gate[0].lanes[1]",
            "lanes =",
        ),
        bad(
            &[(LANES, "lanes = [\"in-1\", 7]")],
            "display.gate[0].lanes[1]",
            "lanes =",
        ),
        bad(
            &[("name = \"G1\"\n", "")],
            "display.gate[0].name",
            "[[display.gate]]",
        ),
        Bad {
            edits: &[(
                LANES,
                "lanes = [\"in-1\", \"out-1\"]\n[[display.gate]]\nname = \"G1\"\nlanes = [\"out-1\", \"in-1\"]",
            )],
            key: "display.gate[1].name",
            at: "name = \"G1\"",
            nth: 1,
        },
        Bad {
            edits: &[(
                LANES,
                "lanes = [\"in-1\", \"out-1\"]\n[[display.gate]]\nname = \"G2\"\nlanes = [\"out-1\", \"in-1\"]",
            )],
            key: "display.gate[1].lanes[0]",
            at: "lanes = [\"out-1\"",
            nth: 0,
        },
    ];
    assert_each_refused_at_its_key(cases);
}

#[test]
fn a_remote_listen_address_says_why_and_what_to_do() {
    let text = EXAMPLE.replace("listen = \"127.0.0.1:8700\"", "listen = \"0.0.0.0:8700\"");
    let e = parse(&text).expect_err("remote");
    assert!(e.message.contains("allow_remote = true"), "{e}");
    assert!(e.message.contains("127.0.0.1"), "{e}");
}

/// The annotated `[qr]` parses with its documented values; off when absent.
#[test]
fn the_documented_qr_parses_and_is_off_when_absent() {
    let c = parse(EXAMPLE).expect("annotated example");
    let q = c.qr.expect("[qr] in the example");
    assert_eq!(q.lanes, ["out-1"]);
    assert_eq!((q.validity_seconds, q.poll_ms), (120, 1000));
    assert_eq!(q.late_payment_seconds, 600);
    assert_eq!(q.notify_path, "/v1.0/qr/qr-mpm-notify");
    assert_eq!(q.callback_url, None);
    assert_eq!(c.aggregator.mpm_generate_path, "/v1.0/qr/qr-mpm-generate");
    assert_eq!(c.aggregator.mpm_query_path, "/v1.0/qr/qr-mpm-query");
    assert_eq!(c.aggregator.mpm_refund_path, "/v1.0/qr/qr-mpm-refund");
    let callback = EXAMPLE.replace(
        "# callback_url = \"https://backoffice",
        "callback_url = \"https://backoffice",
    );
    assert!(parse(&callback)
        .expect("callback")
        .qr
        .expect("qr")
        .callback_url
        .is_some());
    assert!(parse(DEMO).expect("demo").qr.is_none(), "off when absent");
    // A flat tariff knows the fare at the entry too: an entry lane may sell QRs there.
    let start = EXAMPLE.find("\nkind = \"matrix\"").expect("matrix") + 1;
    let end = start + EXAMPLE[start..].find("\n]\n").expect("fares end") + 3;
    let flat = format!(
        "{}kind = \"flat\"\nfare = 3500\n{}",
        &EXAMPLE[..start],
        &EXAMPLE[end..]
    )
    .replace("lanes = [\"out-1\"]", "lanes = [\"in-1\", \"out-1\"]");
    let q = parse(&flat)
        .expect("entry on a flat tariff")
        .qr
        .expect("qr");
    assert_eq!(q.lanes, ["in-1", "out-1"]);
}

/// Each bad `[qr]` key: named, at its line; `[qr]` without `[display]` names `[qr]`.
#[test]
fn bad_qr_keys_are_named_with_their_line() {
    const LANES: &str = "lanes = [\"out-1\"]";
    let cases: &[Bad] = &[
        bad(&[(LANES, "lanes = [\"in-1\"]")], "qr.lanes[0]", "lanes = [\"in-1\"]"),
        bad(&[(LANES, "lanes = [\"out-9\"]")], "qr.lanes[0]", "lanes = [\"out-9\"]"),
        bad(&[(LANES, "lanes = [\"out-1\", \"out-1\"]")], "qr.lanes[1]", "lanes = [\"out-1\", "),
        bad(&[(LANES, "lanes = []")], "qr.lanes", "lanes = []"),
        bad(&[(LANES, "")], "qr.lanes", "[qr]"),
        bad(&[("validity_seconds = 120", "validity_seconds = 29")], "qr.validity_seconds", "validity_seconds ="),
        bad(&[("validity_seconds = 120", "validity_seconds = 901")], "qr.validity_seconds", "validity_seconds ="),
        bad(&[("poll_ms = 1000", "poll_ms = 249")], "qr.poll_ms", "poll_ms ="),
        bad(&[("poll_ms = 1000", "poll_ms = 10001")], "qr.poll_ms", "poll_ms ="),
        bad(&[("late_payment_seconds = 600", "late_payment_seconds = 29")], "qr.late_payment_seconds", "late_payment_seconds ="),
        bad(&[("notify_path = \"/v1.0/qr/qr-mpm-notify\"", "notify_path = \"/lane/out-1\"")], "qr.notify_path", "notify_path ="),
        bad(&[("notify_path = \"/v1.0/qr/qr-mpm-notify\"", "notify_path = \"notify\"")], "qr.notify_path", "notify_path ="),
        bad(&[("# callback_url = \"https://backoffice.operator.example/gates/BLM-G1/qr-mpm-notify\"", "callback_url = \"ftp://x\"")], "qr.callback_url", "callback_url ="),
        bad(&[("poll_ms = 1000", "poll_ms = 1000\ncolour = 1")], "qr.colour", "colour"),
        bad(&[("mpm_query_path = \"/v1.0/qr/qr-mpm-query\"", "mpm_query_path = \"v1.0\"")], "aggregator.mpm_query_path", "mpm_query_path ="),
    ];
    assert_each_refused_at_its_key(cases);
    let e = parse(&strip_display(EXAMPLE)).expect_err("[qr] needs [display]");
    assert_eq!(e.key.as_deref(), Some("qr"));
    assert!(e.to_string().contains("[display]"), "{e}");
}
