//! `tapgate` logging to journald: the real binary, under `unshare -m`, with a fake journald
//! socket bind-mounted on /run/systemd/journal, drives one tap against the simulator. The
//! datagrams must carry the per-tap fields and never the full PAN.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Inside a private mount namespace: put `$SOCKDIR` (holding our socket) on
/// /run/systemd/journal without touching the host's /run, then run the command.
const IN_NAMESPACE: &str = r#"set -e
if [ -d /run/systemd/journal ]; then :
elif [ -d /run/systemd ]; then mount -t tmpfs -o size=1m tmpfs /run/systemd; mkdir /run/systemd/journal
else mount -t tmpfs -o size=1m tmpfs /run; mkdir -p /run/systemd/journal
fi
mount --bind "$SOCKDIR" /run/systemd/journal
exec "$@""#;

/// One journald native-protocol datagram: `NAME=value\n`, or `NAME\n` + le64 length + bytes +
/// `\n` for values that may hold newlines.
fn parse_native(mut d: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !d.is_empty() {
        let Some(nl) = d.iter().position(|&b| b == b'\n') else {
            panic!("truncated field: {:?}", String::from_utf8_lossy(d));
        };
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            d = &d[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &d[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            assert_eq!(
                rest[8 + len],
                b'\n',
                "value of {name} not closed by a newline"
            );
            fields.push((name, value));
            d = &rest[8 + len + 1..];
        }
    }
    fields
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    datagrams: Vec<Vec<u8>>,
}

/// Runs `tapgate tap` in the namespace with stderr on a file; `journal_stream` decides what
/// JOURNAL_STREAM says: stderr's own dev:inode (true) or another file's (false).
fn tap_under_fake_journald(
    config: &Path,
    payload: &str,
    journal_stream: bool,
    log_format: &str,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let sockdir = dir.path().join("journal");
    std::fs::create_dir(&sockdir).unwrap();
    let sock = UnixDatagram::bind(sockdir.join("socket")).expect("bind the fake journald socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    // Read while the child writes: a full socket queue would block it.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => got.push(buf[..n].to_vec()),
                    Err(_) if stop.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            got
        })
    };

    let stderr_path = dir.path().join("stderr.log");
    let stderr_file = std::fs::File::create(&stderr_path).unwrap();
    let meta = if journal_stream {
        stderr_file.metadata().unwrap()
    } else {
        std::fs::File::create(dir.path().join("other"))
            .unwrap()
            .metadata()
            .unwrap()
    };
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            IN_NAMESPACE,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_tapgate"))
        .args(["--log-format", log_format, "tap", "--config"])
        .arg(config)
        .args(["--lane", "in-1", payload])
        .env("SOCKDIR", &sockdir)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("RUST_LOG")
        .stderr(Stdio::from(stderr_file))
        .output()
        .expect("run unshare (util-linux)");
    // The child has exited: whatever it sent is queued; one more timeout drains it.
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::SeqCst);
    let datagrams = reader.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
        datagrams,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tap_reaches_journald_with_its_fields() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");
    let pan = "9360000201100456781";
    let payload = common::tap_payload(pan);

    let run =
        tokio::task::spawn_blocking(move || tap_under_fake_journald(&cfg, &payload, true, "text"))
            .await
            .unwrap();
    assert_eq!(
        run.code, 0,
        "tapgate tap failed (is this root, with unshare and mount?):\n{}",
        run.stderr
    );
    let decision: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(decision["outcome"], "approved", "{decision}");
    let fare_ref = decision["partnerReferenceNo"].as_str().unwrap();

    // Logs went to the journal, not to stderr.
    assert!(
        !run.datagrams.is_empty(),
        "no datagram reached the fake journald; stderr:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("tap approved"),
        "the tap was logged on stderr too:\n{}",
        run.stderr
    );
    for d in &run.datagrams {
        let text = String::from_utf8_lossy(d);
        assert!(!text.contains(pan), "full PAN sent to the journal: {text}");
    }

    let events: Vec<HashMap<String, String>> = run
        .datagrams
        .iter()
        .map(|d| parse_native(d).into_iter().collect())
        .collect();
    let taps: Vec<&HashMap<String, String>> = events
        .iter()
        .filter(|e| e.get("TARGET").map(String::as_str) == Some("tapgate::tap"))
        .collect();
    assert_eq!(taps.len(), 1, "one event per tap: {events:#?}");
    let tap = taps[0];
    let field = |k: &str| {
        tap.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {k} in {tap:#?}"))
    };
    assert_eq!(field("LANE"), "in-1");
    assert_eq!(field("DIRECTION"), "in");
    assert_eq!(field("OUTCOME"), "approved");
    assert_eq!(field("FARE_REF"), fare_ref);
    assert_eq!(field("OPENED"), "true");
    assert_eq!(field("SYSLOG_IDENTIFIER"), "tapgate");
    assert_eq!(field("PRIORITY"), "5", "info is journald's notice");
    assert!(field("MESSAGE").contains("approved"));
    for timing in ["DECODE_US", "JOURNAL_US", "AGGREGATOR_US", "TOTAL_US"] {
        let v: u64 = field(timing)
            .parse()
            .unwrap_or_else(|_| panic!("{timing} is not a number"));
        if timing == "AGGREGATOR_US" || timing == "TOTAL_US" {
            assert!(v > 0, "{timing} = 0");
        }
    }
    assert!(
        field("TOTAL_US").parse::<u64>().unwrap() >= field("AGGREGATOR_US").parse::<u64>().unwrap()
    );
}

/// A JOURNAL_STREAM that names some other file (inherited from a parent whose stderr was the
/// journal) is not the journal: text goes to stderr and journald hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherited_journal_stream_falls_back_to_text() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");
    let payload = common::tap_payload("9360000201100456781");
    let run =
        tokio::task::spawn_blocking(move || tap_under_fake_journald(&cfg, &payload, false, "text"))
            .await
            .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.datagrams.iter().all(|d| d.is_empty()),
        "{} datagram(s) reached journald",
        run.datagrams.len()
    );
    assert!(run.stderr.contains("tap approved"), "{}", run.stderr);
    assert!(run.stderr.contains("lane=in-1"), "{}", run.stderr);
}

#[test]
fn native_protocol_parser() {
    let mut d = b"PRIORITY=5\nMESSAGE\n".to_vec();
    d.extend_from_slice(&6u64.to_le_bytes());
    d.extend_from_slice(b"a\nb=cd\nLANE=in-1\n");
    assert_eq!(
        parse_native(&d),
        vec![
            ("PRIORITY".into(), "5".into()),
            ("MESSAGE".into(), "a\nb=cd".into()),
            ("LANE".into(), "in-1".into())
        ]
    );
}

/// `--log-format json` means JSON on stderr even when stderr is the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_stays_on_stderr_under_the_journal() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");
    let payload = common::tap_payload("9360000201100456781");
    let run =
        tokio::task::spawn_blocking(move || tap_under_fake_journald(&cfg, &payload, true, "json"))
            .await
            .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.datagrams.is_empty(),
        "{} datagram(s)",
        run.datagrams.len()
    );
    let tap = run
        .stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .find(|v| v["target"] == "tapgate::tap")
        .unwrap_or_else(|| panic!("no tap event in:\n{}", run.stderr));
    assert_eq!(tap["fields"]["lane"], "in-1");
    assert_eq!(tap["fields"]["outcome"], "approved");
}
