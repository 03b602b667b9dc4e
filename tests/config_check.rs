//! Configuration that cannot lie, through the real `tapgate` binary: what `check-config`
//! accepts, `run` (and `tap`) accept, and what one refuses the other refuses with the same
//! file:line:key; relative paths mean the same files from any current directory; plain http
//! only to loopback; the station's time zone resolves on an image without tzdata.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tapgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapgate"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_config(file: &Path) -> Output {
    tapgate()
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run tapgate check-config")
}

/// Runs `tapgate run` and waits for it to exit on its own; a daemon still running after
/// `limit` accepted the config: it is killed and `None` returned.
fn run_until_exit(file: &Path, limit: Duration) -> Option<Output> {
    let mut child = tapgate()
        .args(["run", "--config"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapgate run");
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The demo station with its secrets in `dir`, the aggregator at `base_url`, and the edits.
fn station(dir: &Path, base_url: &str, edits: &[(&str, &str)]) -> PathBuf {
    let path = common::station_config(dir, base_url, "", "");
    let mut t = std::fs::read_to_string(&path).unwrap();
    for (old, new) in edits {
        assert!(t.contains(old), "edit {old:?} does not apply to\n{t}");
        t = t.replacen(old, new, 1);
    }
    std::fs::write(&path, t).unwrap();
    path
}

/// The 1-based line of the first line starting with `marker` (the `nth` one).
fn line_of(file: &Path, marker: &str, nth: usize) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(marker))
        .nth(nth)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("no line starts with {marker:?}"))
}

const SIM: &str = "http://127.0.0.1:8600";

/// Issue 9 item 6's list, plus items 5 and 9b: each config is refused by `check-config` and by
/// `run` (no restart loop under systemd), both naming the same file, line and key.
#[test]
fn check_config_and_run_refuse_the_same_configs_naming_file_line_and_key() {
    struct Case {
        what: &'static str,
        edits: Vec<(&'static str, String)>,
        key: &'static str,
        line_marker: &'static str,
    }
    let case = |what, edits: &[(&'static str, &str)], key, line_marker| Case {
        what,
        edits: edits.iter().map(|(o, n)| (*o, n.to_string())).collect(),
        key,
        line_marker,
    };
    let cases = vec![
        case(
            "metrics.listen not an address",
            &[(
                "[policy]\n",
                "[metrics]\nlisten = \"localhost:9464\"\n\n[policy]\n",
            )],
            "metrics.listen",
            "listen =",
        ),
        case(
            "base URL with a query",
            &[(
                "base_url = \"http://127.0.0.1:8600\"",
                "base_url = \"http://127.0.0.1:8600/?env=prod\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        case(
            "max_body_bytes = 0",
            &[(
                "channel_id = \"95221\"",
                "channel_id = \"95221\"\nmax_body_bytes = 0",
            )],
            "aggregator.max_body_bytes",
            "max_body_bytes =",
        ),
        case(
            "a path with a space",
            &[(
                "channel_id = \"95221\"",
                "channel_id = \"95221\"\npayment_path = \"/v1.0/qr/qr cpm-payment\"",
            )],
            "aggregator.payment_path",
            "payment_path =",
        ),
        case(
            "a header value with CR/LF",
            &[(
                "partner_id = \"TAPGATE-DEMO\"",
                "partner_id = \"TAPGATE-DEMO\\r\\nX-Injected: 1\"",
            )],
            "aggregator.partner_id",
            "partner_id =",
        ),
        case(
            "a fare of 10^15",
            &[("[ 3000,  3000,  4000,", "[ 1000000000000000,  3000,  4000,")],
            "tariff.fares[0]",
            "[ 1000000000000000,",
        ),
        case(
            "plain http to a remote aggregator",
            &[(
                "base_url = \"http://127.0.0.1:8600\"",
                "base_url = \"http://aggregator.example:8600\"",
            )],
            "aggregator.base_url",
            "base_url =",
        ),
        case(
            "a key beside kind = \"recording\"",
            &[(
                "relay = { kind = \"recording\" }",
                "relay = { kind = \"recording\", line = \"GATE1_RELAY\" }",
            )],
            "lane[0].relay.line",
            "relay = { kind = \"recording\", line",
        ),
        case(
            "a key beside kind = \"none\"",
            &[(
                "direction = \"in\"\n",
                "direction = \"in\"\ncard_source = { kind = \"none\", reader = \"ACS*\" }\n",
            )],
            "lane[0].card_source.reader",
            "card_source =",
        ),
        case(
            "a recording relay outside a bench rig",
            &[("bench = true\n", "")],
            "lane[0].relay",
            "relay = { kind = \"recording\" }",
        ),
        case(
            "reconciler.interval_ms = 0",
            &[("[policy]\n", "[reconciler]\ninterval_ms = 0\n\n[policy]\n")],
            "reconciler.interval_ms",
            "interval_ms =",
        ),
        case(
            "a missing required key",
            &[("client_id = \"tapgate-demo\"\n", "")],
            "aggregator.client_id",
            "[aggregator]",
        ),
        case(
            "a negative number",
            &[("debounce_ms = 3000", "debounce_ms = -1")],
            "policy.debounce_ms",
            "debounce_ms =",
        ),
        // The journal file's name is taken by a directory (created below).
        case("journal.path a directory", &[], "journal.path", "path ="),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let dir = tempfile::tempdir().unwrap();
        let path = common::station_config(dir.path(), SIM, "", "");
        let mut t = std::fs::read_to_string(&path).unwrap();
        for (old, new) in &c.edits {
            assert!(t.contains(old), "{}: edit {old:?} does not apply", c.what);
            t = t.replacen(old, new, 1);
        }
        if c.what == "journal.path a directory" {
            std::fs::create_dir(dir.path().join("journal.db")).unwrap();
        }
        std::fs::write(&path, &t).unwrap();
        let line = line_of(&path, c.line_marker, 0);
        let want = format!("{}:{line}:", path.display());
        let want_key = format!("key `{}`", c.key);

        let out = check_config(&path);
        let err = text(&out.stderr);
        if out.status.code() != Some(1) || !err.contains(&want) || !err.contains(&want_key) {
            failures.push(format!(
                "{}: check-config exit {:?}, want {want}…{want_key}, got: {}{err}",
                c.what,
                out.status.code(),
                text(&out.stdout)
            ));
            continue;
        }
        match run_until_exit(&path, Duration::from_secs(10)) {
            None => failures.push(format!("{}: run started with it", c.what)),
            Some(out) => {
                let err = text(&out.stderr);
                if out.status.success() || !err.contains(&want) || !err.contains(&want_key) {
                    failures.push(format!(
                        "{}: run exit {:?}, want {want}…{want_key}, got: {err}",
                        c.what,
                        out.status.code()
                    ));
                }
            }
        }
        // `tap` moves money: the same validation stands in front of it.
        let out = tapgate()
            .args(["tap", "--config"])
            .arg(&path)
            .args(["--lane", "in-1", "not-a-payload"])
            .output()
            .expect("run tapgate tap");
        if out.status.success() || !text(&out.stderr).contains(&want_key) {
            failures.push(format!(
                "{}: tap exit {:?}: {}",
                c.what,
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The control: the demo-derived station passes `check-config`, and `run` starts with it
/// (it is killed after a moment), so the refusals above are about the edits.
#[test]
fn the_unedited_station_passes_check_config_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = station(dir.path(), SIM, &[]);
    let out = check_config(&path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        run_until_exit(&path, Duration::from_secs(2)).is_none(),
        "run exited on a config check-config accepts"
    );
}

/// A recording relay on a bench rig is allowed, and said loudly: at start, and on every
/// open (the fare is taken; no gate moves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_rig_says_its_gates_do_not_open() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = station(dir.path(), &sim.base_url(), &[]);
    let out = common::tap_command(&path, "in-1", &common::tap_payload("9360000201100456781"))
        .output()
        .expect("run tapgate tap");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        text(&out.stdout).contains("\"opened\":true"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        err.contains("WARN") && err.contains("gate was NOT opened"),
        "{err}"
    );

    let mut child = tapgate()
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    let start = Instant::now();
    while !log().contains("tapgate ready") && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let l = log();
    assert!(l.contains("tapgate ready"), "{l}");
    for lane in ["in-1", "out-1"] {
        assert!(
            l.lines()
                .any(|x| x.contains("WARN") && x.contains("BENCH RIG") && x.contains(lane)),
            "no start warning for {lane}: {l}"
        );
    }
}

/// Issue 9 item 2: a relative journal path means the file beside the config, from any
/// current directory: two taps from two directories land in one journal (so anti-passback
/// and `reconcile` see both), and no journal appears where the commands ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_journal_path_is_beside_the_config_from_any_directory() {
    let sim = common::start_sim().await;
    let root = tempfile::tempdir().unwrap();
    let conf_dir = root.path().join("etc");
    let here = root.path().join("here");
    let there = root.path().join("there/deeper");
    for d in [&conf_dir, &here, &there] {
        std::fs::create_dir_all(d).unwrap();
    }
    let abs = common::station_config(&conf_dir, &sim.base_url(), "", "");
    let t = std::fs::read_to_string(&abs).unwrap();
    let journal_line = t
        .lines()
        .find(|l| l.starts_with("path = "))
        .expect("journal path line")
        .to_string();
    std::fs::write(
        &abs,
        t.replacen(&journal_line, "path = \"state/journal.db\"", 1)
            .replacen(
                "[journal]\n",
                "[journal]\npassenger_key_file = \"passenger.key\"\n",
                1,
            ),
    )
    .unwrap();
    let expected = conf_dir.canonicalize().unwrap().join("state/journal.db");

    // check-config prints the file run will use, the same from both places; the config is
    // named relatively from one of them.
    let from = |cwd: &Path, config: &Path| {
        tapgate()
            .current_dir(cwd)
            .arg("check-config")
            .arg(config)
            .output()
            .unwrap()
    };
    let a = from(&here, &abs);
    let b = from(&there, Path::new("../../etc/station.toml"));
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains(&format!("journal {}", expected.display())),
            "{}",
            text(&o.stdout)
        );
    }

    // Real taps, one from each directory.
    let tap = |cwd: &Path, config: &Path, pan: &str| {
        let out = tapgate()
            .current_dir(cwd)
            .args(["tap", "--config"])
            .arg(config)
            .args(["--lane", "in-1", &common::tap_payload(pan)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["outcome"], "approved", "{v}");
    };
    tap(&here, &abs, "9360000201100456781");
    tap(
        &there,
        Path::new("../../etc/station.toml"),
        "9360091430100531720",
    );

    let rows = tapgate::journal::Journal::open_read_only(&expected)
        .and_then(|j| j.export(0))
        .expect("the journal beside the config");
    assert_eq!(rows.len(), 2, "both taps in one journal: {rows:?}");
    // And `journal list --config` reads that journal from anywhere.
    for (cwd, config) in [
        (&here, abs.as_path()),
        (&there, Path::new("../../etc/station.toml")),
    ] {
        let out = tapgate()
            .current_dir(cwd)
            .args(["journal", "list", "--json", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).lines().count(),
            2,
            "{}",
            text(&out.stdout)
        );
    }
    assert!(conf_dir.join("passenger.key").exists());
    assert!(!conf_dir.join("demo-journal.db").exists());
    for d in [&here, &there] {
        let stray: Vec<_> = walk(d);
        assert!(
            stray.is_empty(),
            "files created in {}: {stray:?}",
            d.display()
        );
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A time zone database with nothing but UTC in it, as on a stripped controller image.
fn utc_only_tzdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    // A TZif file for UTC (version 2, no transitions), so the directory is a valid, tiny
    // database that lacks every Indonesian zone.
    let mut tzif = Vec::new();
    for _ in 0..2 {
        tzif.extend_from_slice(b"TZif2");
        tzif.extend_from_slice(&[0; 15]);
        // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
        for n in [0u32, 0, 0, 0, 1, 4] {
            tzif.extend_from_slice(&n.to_be_bytes());
        }
        tzif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        tzif.extend_from_slice(b"UTC\0");
    }
    tzif.extend_from_slice(b"\nUTC0\n");
    std::fs::write(d.path().join("UTC"), tzif).unwrap();
    d
}

/// Issue 9 item 10: with the system's database lacking the zone, the station's zone still
/// resolves (the database is built in), in `check-config` and in a real tap, whose
/// X-TIMESTAMP the simulator checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indonesian_zones_resolve_without_system_tzdata() {
    let sim = common::start_sim().await;
    let tzdir = utc_only_tzdir();
    let dir = tempfile::tempdir().unwrap();
    for zone in ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"] {
        let path = station(
            dir.path(),
            &sim.base_url(),
            &[(
                "timezone = \"Asia/Jakarta\"",
                &format!("timezone = \"{zone}\""),
            )],
        );
        let out = tapgate()
            .env("TZDIR", tzdir.path())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{zone}: {}", text(&out.stderr));
    }
    let path = station(dir.path(), &sim.base_url(), &[]);
    let out = common::tap_command(&path, "in-1", &common::tap_payload("9360000201100456781"))
        .env("TZDIR", tzdir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "approved", "{v}");
    assert_eq!(sim.stats().protocol_violations(), 0);

    // A zone nobody has: the message says what is missing and what to write.
    let bad = station(
        dir.path(),
        &sim.base_url(),
        &[(
            "timezone = \"Asia/Jakarta\"",
            "timezone = \"Asia/Atlantis\"",
        )],
    );
    let out = tapgate()
        .env("TZDIR", tzdir.path())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("key `station.timezone`"), "{err}");
    assert!(err.contains("built into tapgate"), "{err}");
    assert!(err.contains(&tzdir.path().display().to_string()), "{err}");
}

/// The same with /usr/share/zoneinfo itself hidden (an empty tmpfs over it in a private mount
/// namespace, as on an image without tzdata): `check-config` and `relay-pulse` (which stops
/// at the GPIO line here, after loading the config) get past the time zone. Needs
/// `unshare -rm` (user and mount namespaces); `TAPGATE_SKIP_UNSHARE=1` skips it, said so.
#[test]
fn the_zone_resolves_with_zoneinfo_hidden() {
    if std::env::var_os("TAPGATE_SKIP_UNSHARE").is_some() {
        eprintln!("SKIPPED: TAPGATE_SKIP_UNSHARE is set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = station(
        dir.path(),
        SIM,
        &[(
            "relay = { kind = \"recording\" }",
            "relay = { kind = \"gpio\", line = \"TAPGATE_NO_SUCH_LINE\" }",
        )],
    );
    let script = format!(
        "mount -t tmpfs none /usr/share/zoneinfo && test -z \"$(ls /usr/share/zoneinfo)\" && \
         {bin} check-config {cfg}; echo \"check=$?\"; \
         {bin} relay-pulse --config {cfg} --lane in-1; echo \"pulse=$?\"",
        bin = env!("CARGO_BIN_EXE_tapgate"),
        cfg = path.display()
    );
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .env_remove("TZDIR")
        .output()
        .expect("unshare (util-linux) runs; set TAPGATE_SKIP_UNSHARE=1 to skip");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("check=0"), "{all}");
    assert!(!all.contains("time zone"), "{all}");
    // No GPIO here: relay-pulse fails at the line, past the config and its zone.
    assert!(all.contains("pulse=1"), "{all}");
    assert!(
        all.contains("GPIO"),
        "relay-pulse got to the GPIO line: {all}"
    );
}

/// The aggregator client is built by `check-config` as `run` builds it: a private key that
/// does not parse fails both; a secret not installed yet is only a warning (the packaged
/// example config is checked before any secret exists).
#[test]
fn check_config_builds_the_aggregator_client_as_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = station(dir.path(), SIM, &[]);
    std::fs::write(dir.path().join("private-key.pem"), "not a key\n").unwrap();
    let out = check_config(&path);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{err}", text(&out.stdout));
    assert!(err.contains("private-key.pem"), "{err}");
    let run = run_until_exit(&path, Duration::from_secs(10)).expect("run refuses it too");
    assert!(!run.status.success());
    assert!(
        text(&run.stderr).contains("private-key.pem"),
        "{}",
        text(&run.stderr)
    );

    std::fs::remove_file(dir.path().join("private-key.pem")).unwrap();
    let out = check_config(&path);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("private-key.pem"),
        "{err}"
    );
}

/// `[journeys]` through the real binary: a line gate's config is accepted with its files in
/// place (and the files it will use printed); each mistake a person makes writing one is
/// refused by `check-config` and by `run`, naming file, line and key, and a password written
/// into the url is never echoed.
#[test]
fn journeys_mistakes_are_refused_naming_file_line_and_key() {
    let good = "\n[journeys]\nstore = \"postgres\"\n\
                url = \"postgresql://tapgate@127.0.0.1:5432/tapgate\"\n\
                password_file = \"line-db-password\"\n\
                ca_file = \"line-ca.pem\"\n\
                lookup_timeout_ms = 50\n";
    let setup = |dir: &Path, toml: &str| {
        let path = station(dir, SIM, &[]);
        let mut t = std::fs::read_to_string(&path).unwrap();
        t.push_str(toml);
        std::fs::write(&path, t).unwrap();
        std::fs::write(dir.join("line-db-password"), "pw\n").unwrap();
        std::fs::write(dir.join("line-ca.pem"), "not read by check-config\n").unwrap();
        path
    };

    // The control: accepted, and the resolved files shown; the line's passenger key not
    // installed yet is a warning (a line gate never generates it).
    let dir = tempfile::tempdir().unwrap();
    let path = setup(dir.path(), good);
    let out = check_config(&path);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning")
            && stderr.contains("passenger.key")
            && stderr.contains("line credential"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("passenger.key"), [7u8; 32]).unwrap();
    let out = check_config(&path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("passenger"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("journeys line database postgresql://tapgate@127.0.0.1:5432/tapgate"),
        "{stdout}"
    );
    let beside = dir.path().canonicalize().unwrap();
    assert!(
        stdout.contains(&format!(
            "line database password {}",
            beside.join("line-db-password").display()
        )),
        "{stdout}"
    );

    struct Case {
        what: &'static str,
        old: &'static str,
        new: &'static str,
        key: &'static str,
        at: &'static str,
        remove: Option<&'static str>,
    }
    let case = |what, old, new, key, at| Case {
        what,
        old,
        new,
        key,
        at,
        remove: None,
    };
    let cases = [
        case(
            "postgres without url",
            "url = \"postgresql://tapgate@127.0.0.1:5432/tapgate\"\n",
            "",
            "journeys.url",
            "[journeys]",
        ),
        case(
            "a password in the url",
            "postgresql://tapgate@127.0.0.1",
            "postgresql://tapgate:hunter2@127.0.0.1",
            "journeys.url",
            "url =",
        ),
        case(
            "an unknown key",
            "lookup_timeout_ms = 50\n",
            "lookup_timeout_ms = 50\nlookup_timout_ms = 50\n",
            "journeys.lookup_timout_ms",
            "lookup_timout_ms",
        ),
        case(
            "a lookup budget of seconds",
            "lookup_timeout_ms = 50",
            "lookup_timeout_ms = 3000",
            "journeys.lookup_timeout_ms",
            "lookup_timeout_ms",
        ),
        case(
            "a zero connect budget",
            "lookup_timeout_ms = 50",
            "lookup_timeout_ms = 50\nconnect_timeout_ms = 0",
            "journeys.connect_timeout_ms",
            "connect_timeout_ms",
        ),
        case(
            "postgres keys under store = local",
            "store = \"postgres\"",
            "store = \"local\"",
            "journeys.url",
            "url =",
        ),
        Case {
            remove: Some("line-db-password"),
            ..case(
                "password_file missing",
                "",
                "",
                "journeys.password_file",
                "password_file",
            )
        },
        Case {
            remove: Some("line-ca.pem"),
            ..case("ca_file missing", "", "", "journeys.ca_file", "ca_file")
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let dir = tempfile::tempdir().unwrap();
        let toml = if c.old.is_empty() {
            good.to_string()
        } else {
            assert!(good.contains(c.old), "{}: edit does not apply", c.what);
            good.replacen(c.old, c.new, 1)
        };
        let path = setup(dir.path(), &toml);
        if let Some(f) = c.remove {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        let want = format!("{}:{}:", path.display(), line_of(&path, c.at, 0));
        let want_key = format!("key `{}`", c.key);
        let out = check_config(&path);
        let err = text(&out.stderr);
        if out.status.code() != Some(1)
            || !err.contains(&want)
            || !err.contains(&want_key)
            || err.contains("hunter2")
        {
            failures.push(format!(
                "{}: check-config exit {:?}, want {want}…{want_key}, got: {}{err}",
                c.what,
                out.status.code(),
                text(&out.stdout)
            ));
            continue;
        }
        if let Some(f) = c.remove {
            if !err.contains(f) || !err.contains("does not exist") {
                failures.push(format!("{}: the missing file is not named: {err}", c.what));
            }
        }
        match run_until_exit(&path, Duration::from_secs(10)) {
            None => failures.push(format!("{}: run started with it", c.what)),
            Some(out) => {
                let err = text(&out.stderr);
                if out.status.success()
                    || !err.contains(&want)
                    || !err.contains(&want_key)
                    || err.contains("hunter2")
                {
                    failures.push(format!(
                        "{}: run exit {:?}, want {want}…{want_key}, got: {err}",
                        c.what,
                        out.status.code()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
