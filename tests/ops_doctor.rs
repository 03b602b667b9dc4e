//! `tapgate doctor` as a technician runs it: the real binary, a config with secret files, the
//! simulator over loopback, a throwaway PostgreSQL for the line checks (tests/support/pg.rs;
//! `TAPGATE_SKIP_PG=1` skips those, saying so). Every line must tell the truth about this
//! machine.

mod common;
mod journal_common;
#[path = "support/pg.rs"]
mod pg;
#[allow(dead_code)] // the shared pcscd helper has more than this test uses
mod support;

use std::path::Path;
use std::process::Command;

/// One printed line: (STATUS, name, detail).
type Line = (String, String, String);

/// (exit code, lines, whole stdout).
fn doctor(config: &Path) -> (i32, Vec<Line>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["doctor", "--config"])
        .arg(config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run tapgate doctor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .filter(|l| !l.starts_with("doctor:"))
        .map(|l| {
            let mut it = l.splitn(2, "  ");
            let status = it.next().unwrap_or_default().to_string();
            let rest = it.next().unwrap_or_default().trim_start();
            let (name, detail) = rest.split_once("  ").unwrap_or((rest, ""));
            (status, name.trim().to_string(), detail.trim().to_string())
        })
        .collect();
    (out.status.code().unwrap_or(-1), lines, stdout)
}

fn line<'a>(lines: &'a [Line], name: &str) -> &'a Line {
    lines
        .iter()
        .find(|(_, n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} line in {lines:#?}"))
}

/// Secret files as an installer leaves them: readable by their owner only.
fn secure(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["client-secret", "private-key.pem"] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

fn run_doctor_blocking(
    cfg: std::path::PathBuf,
) -> tokio::task::JoinHandle<(i32, Vec<Line>, String)> {
    tokio::task::spawn_blocking(move || doctor(&cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_bench_gate_against_the_simulator() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");

    // Secrets readable by everyone work, with a warning.
    let (_, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let cred = line(&lines, "credentials");
    assert_eq!(cred.0, "WARN", "{out}");
    assert!(
        cred.2.contains("client-secret") && cred.2.contains("chmod 600"),
        "{out}"
    );

    secure(dir.path());
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    assert_eq!(line(&lines, "config").0, "PASS", "{out}");
    assert_eq!(line(&lines, "credentials").0, "PASS", "{out}");
    let agg = line(&lines, "aggregator");
    assert_eq!(agg.0, "PASS", "{out}");
    assert!(agg.2.contains(&sim.base_url()), "{out}");
    assert_eq!(line(&lines, "signature").0, "PASS", "{out}");
    // The doctor signed in and queried a reference that does not exist: nothing was paid.
    assert!(sim.ledger().is_empty(), "the doctor moved money");

    // GPIO: truthful about this machine's /dev.
    let chips = std::fs::read_dir("/dev")
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("gpiochip"));
    let gpio = line(&lines, "gpio");
    if chips {
        assert_ne!(gpio.1, "", "{out}");
        assert!(gpio.2.contains("/dev/gpiochip"), "{out}");
    } else {
        assert_eq!(gpio.0, "WARN", "{out}");
        assert!(gpio.2.contains("no GPIO chip"), "{out}");
    }
    // Clock: what the kernel says.
    let synced = tapgate::cmd::doctor::clock_synchronised().unwrap();
    assert_eq!(
        line(&lines, "clock").0,
        if synced { "PASS" } else { "WARN" },
        "{out}"
    );
    // The demo lanes have no reader: pcscd is never a FAIL for them.
    assert_ne!(line(&lines, "pcscd").0, "FAIL", "{out}");
    // No journal yet: the doctor says so and does not create it.
    assert_eq!(line(&lines, "journal").0, "WARN", "{out}");
    assert!(
        !dir.path().join("journal.db").exists(),
        "the doctor created the journal"
    );
    let free = tapgate::cmd::doctor::free_bytes(dir.path()).unwrap();
    let disk = line(&lines, "disk");
    let expect = if free < tapgate::cmd::doctor::DISK_FAIL_BYTES {
        "FAIL"
    } else if free < tapgate::cmd::doctor::DISK_WARN_BYTES {
        "WARN"
    } else {
        "PASS"
    };
    assert_eq!(disk.0, expect, "{out}");

    let any_fail = lines.iter().any(|(s, _, _)| s == "FAIL");
    assert_eq!(code, if any_fail { 1 } else { 0 }, "{out}");
    assert!(out.contains("doctor: "), "{out}");

    // After one tap the journal exists: quick_check passes.
    let tap = common::tap_command(&cfg, "in-1", &common::tap_payload("9360000201100456781"))
        .output()
        .unwrap();
    assert!(tap.status.success());
    let (_, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let j = line(&lines, "journal");
    assert_eq!(j.0, "PASS", "{out}");
    assert!(j.2.contains("quick_check ok"), "{out}");

    // A damaged journal file is a FAIL.
    std::fs::write(dir.path().join("journal.db"), vec![0x5a; 8192]).unwrap();
    let _ = std::fs::remove_file(dir.path().join("journal.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("journal.db-shm"));
    let (code, lines, out) = run_doctor_blocking(cfg).await.unwrap();
    assert_eq!(line(&lines, "journal").0, "FAIL", "{out}");
    assert_eq!(code, 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_key_or_address_fail() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");
    secure(dir.path());

    // A wrong client secret: the token (RSA) is fine, the HMAC-signed query is refused.
    std::fs::write(dir.path().join("client-secret"), "not-the-secret").unwrap();
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert_eq!(line(&lines, "aggregator").0, "PASS", "{out}");
    let sig = line(&lines, "signature");
    assert_eq!(sig.0, "FAIL", "{out}");
    assert!(sig.2.contains("client secret"), "{out}");
    assert!(
        !out.contains("not-the-secret"),
        "the doctor printed the secret"
    );
    std::fs::write(
        dir.path().join("client-secret"),
        tapgate::sim::DEMO_CLIENT_SECRET,
    )
    .unwrap();

    // A private key the aggregator does not know: the token is refused.
    let other = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl");
    assert!(other.status.success());
    std::fs::write(dir.path().join("private-key.pem"), &other.stdout).unwrap();
    secure(dir.path());
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert_eq!(line(&lines, "credentials").0, "PASS", "{out}");
    let agg = line(&lines, "aggregator");
    assert_eq!(agg.0, "FAIL", "{out}");
    assert!(agg.2.contains("refused"), "{out}");

    // A missing secret file is named.
    std::fs::remove_file(dir.path().join("private-key.pem")).unwrap();
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    assert_eq!(code, 1);
    let cred = line(&lines, "credentials");
    assert_eq!(cred.0, "FAIL", "{out}");
    assert!(cred.2.contains("private-key.pem"), "{out}");

    // Nobody listening at the aggregator's address.
    std::fs::write(
        dir.path().join("private-key.pem"),
        tapgate::sim::DEMO_PRIVATE_KEY_PEM,
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&sim.base_url(), &format!("http://127.0.0.1:{port}"));
    std::fs::write(&cfg, text).unwrap();
    let (code, lines, out) = run_doctor_blocking(cfg).await.unwrap();
    assert_eq!(code, 1);
    let agg = line(&lines, "aggregator");
    assert_eq!(agg.0, "FAIL", "{out}");
    assert!(agg.2.contains("unreachable"), "{out}");
}

/// The journal lines: its files' modes, retention, and a journal damaged on a real b-tree page
/// (FAIL, with the procedure, and the file left as it was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_permissions_retention_and_damage() {
    use std::os::unix::fs::PermissionsExt as _;
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");
    secure(dir.path());
    let path = dir.path().join("journal.db");
    journal_common::filled(&path, 400);

    let (_, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    assert_eq!(line(&lines, "journal").0, "PASS", "{out}");
    assert_eq!(line(&lines, "journal files").0, "PASS", "{out}");
    let ret = line(&lines, "retention");
    assert_eq!(ret.0, "WARN", "{out}");
    assert!(ret.2.contains("retain_days"), "{out}");

    // A journal left 0644 by an older tapgate: a warning naming the fix; the mode is kept.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let files = line(&lines, "journal files");
    assert_eq!(files.0, "WARN", "{out}");
    assert!(
        files.2.contains("0644") && files.2.contains(&format!("chmod 600 {}", path.display())),
        "{out}"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the doctor changed the mode");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Retention on, its export folder creatable.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[journal]\n",
        "[journal]\nretain_days = 30\n",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let (_, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let ret = line(&lines, "retention");
    assert_eq!(ret.0, "PASS", "{out}");
    assert!(
        ret.2.contains("30 day(s)") && ret.2.contains("pruned"),
        "{out}"
    );

    // Random bytes over one page of the operations table.
    journal_common::damage_ops_page(&path);
    let bytes = std::fs::read(&path).unwrap();
    let (code, lines, out) = run_doctor_blocking(cfg).await.unwrap();
    let j = line(&lines, "journal");
    assert_eq!(j.0, "FAIL", "{out}");
    assert!(
        j.2.contains("is damaged")
            && j.2.contains("keep the damaged file")
            && j.2.contains("--salvage")
            && j.2.contains("settlement report"),
        "{out}"
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the doctor changed the file"
    );
}

#[test]
fn broken_config_stops_at_the_config_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(&cfg, "[station]\nid = \"DKA\"\nnmae = \"typo\"\n").unwrap();
    let (code, lines, out) = doctor(&cfg);
    assert_eq!(code, 1, "{out}");
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(line(&lines, "config").0, "FAIL", "{out}");
}

/// With a real pcscd and vsmartcard's vpcd reader: the lane whose pattern matches it passes,
/// the lane whose reader is not plugged in fails, and so does the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_through_a_real_pcscd() {
    if !support::pcscd::tier_available() {
        return;
    }
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", "");
    secure(dir.path());
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replacen(
            "name = \"in-1\"\n",
            "name = \"in-1\"\ncard_source = { kind = \"pcsc\", reader = \"Virtual PCD*\" }\n",
            1,
        )
        .replacen(
            "name = \"out-1\"\n",
            "name = \"out-1\"\ncard_source = { kind = \"pcsc\", reader = \"ACS ACR1252*\" }\n",
            1,
        );
    std::fs::write(&cfg, text).unwrap();

    let mut pcscd = support::pcscd::Pcscd::start(&dir.path().join("pcscd.log"));
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    pcscd.stop();
    assert_eq!(code, 1, "{out}");
    let p = line(&lines, "pcscd");
    assert_eq!(p.0, "PASS", "{out}");
    assert!(p.2.contains(support::pcscd::VPCD_READER), "{out}");
    let r = line(&lines, "reader in-1");
    assert_eq!(r.0, "PASS", "{out}");
    assert_eq!(r.2, support::pcscd::VPCD_READER, "{out}");
    let r = line(&lines, "reader out-1");
    assert_eq!(r.0, "FAIL", "{out}");
    assert!(r.2.contains("ACS ACR1252*"), "{out}");

    // pcscd gone: lanes that need it fail.
    let (code, lines, out) = run_doctor_blocking(cfg).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert_eq!(line(&lines, "pcscd").0, "FAIL", "{out}");
    assert_eq!(line(&lines, "reader in-1").0, "FAIL", "{out}");
}

/// `tapgate journeys ARGS --config CONFIG`: (exit code, stdout, stderr).
fn journeys(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .arg("journeys")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run tapgate journeys");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_key(dir: &Path, key: &[u8; 32]) {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join("passenger.key");
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The line checks against a real PostgreSQL, through the real binary: a fresh database
/// (reachable, schema missing: migrate), `tapgate journeys migrate`, a gate of the line
/// joined (every line PASS), this gate's key not the line's (FAIL, with what to do), the key
/// file missing, a schema newer than this build, a hung server (FAIL within
/// connect_timeout_ms) and a stopped one (FAIL). Neither the doctor nor `journeys status`
/// nor `migrate` ever registers a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_database_checks_against_a_real_postgresql() {
    use tapgate::line::schema::SCHEMA_VERSION;
    use tapgate::line::{KeyFingerprint, LineStore};
    let Some(mut pg) = pg::PgCluster::start(false) else {
        return;
    };
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let line_key = [7u8; 32];
    write_key(dir.path(), &line_key);
    let url = pg.url("postgres");
    let journeys_toml = format!(
        "[journeys]\nstore = \"postgres\"\nurl = \"{url}\"\npassword_file = {:?}\n\
         connect_timeout_ms = 3000\n",
        pg.password_file()
    );
    let cfg = common::station_config(dir.path(), &sim.base_url(), "", &journeys_toml);
    secure(dir.path());
    let ours = KeyFingerprint::of_key(&line_key);
    let no_line_table = || pg.psql("postgres", "SELECT to_regclass('tapgate_line') IS NULL");

    // A fresh database: reachable, no tables yet; nothing to compare the key with.
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let db = line(&lines, "line database");
    assert_eq!(db.0, "PASS", "{out}");
    assert!(db.2.contains(&url) && db.2.contains("answered in"), "{out}");
    let schema = line(&lines, "line schema");
    assert_eq!(schema.0, "WARN", "{out}");
    assert!(
        schema.2.contains(&format!(
            "run `tapgate journeys migrate --config {}`",
            cfg.display()
        )),
        "{out}"
    );
    let key = line(&lines, "passenger key");
    assert_eq!(key.0, "WARN", "{out}");
    assert!(
        key.2.contains(&ours.short()) && key.2.contains("no key yet"),
        "{out}"
    );
    let any_fail = lines.iter().any(|(s, _, _)| s == "FAIL");
    assert_eq!(code, if any_fail { 1 } else { 0 }, "{out}");
    assert_eq!(no_line_table(), "t", "the doctor created tables");

    // Migrating by hand: from 0 to this build's version, then nothing to do; no key
    // registered.
    let (code, stdout, stderr) = journeys(&["migrate"], &cfg);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("migrated from version 0 to {SCHEMA_VERSION}")),
        "{stdout}"
    );
    let (code, stdout, stderr) = journeys(&["migrate"], &cfg);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("nothing to do"), "{stdout}");
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM tapgate_line"),
        "0"
    );
    // As another role or database (the schema's owner): --url, its password only from
    // --password-file; a password written into --url is refused and never echoed.
    pg.create_db("line2");
    let pw = pg.password_file();
    let pw = pw.to_str().unwrap();
    let (code, stdout, stderr) = journeys(&["migrate", "--url", &pg.url("line2")], &cfg);
    assert_eq!(
        code, 1,
        "without --password-file no password is sent: {stdout}{stderr}"
    );
    let (code, stdout, stderr) = journeys(
        &["migrate", "--url", &pg.url("line2"), "--password-file", pw],
        &cfg,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("migrated from version 0 to {SCHEMA_VERSION}")),
        "{stdout}"
    );
    let with_pw = pg.url("line2").replace("tapgate@", "tapgate:hunter2@");
    let (code, stdout, stderr) = journeys(&["migrate", "--url", &with_pw], &cfg);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("carries a password"), "{stderr}");
    assert!(
        !stderr.contains("hunter2") && !stdout.contains("hunter2"),
        "{stderr}"
    );
    let (code, stdout, _) = journeys(&["status"], &cfg);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("WARN  passenger key"), "{stdout}");
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM tapgate_line"),
        "0"
    );

    // Another station's gate joins the line with the line's key: every line passes.
    let first = LineStore::open(&pg.settings("postgres", "BLM"), &ours)
        .await
        .expect("the first gate joins");
    drop(first);
    let (_, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    assert_eq!(line(&lines, "line database").0, "PASS", "{out}");
    let schema = line(&lines, "line schema");
    assert_eq!(schema.0, "PASS", "{out}");
    assert!(
        schema.2.contains(&format!("version {SCHEMA_VERSION}")),
        "{out}"
    );
    let key = line(&lines, "passenger key");
    assert_eq!(key.0, "PASS", "{out}");
    assert!(
        key.2.contains(&ours.short()) && key.2.contains("registered by station BLM"),
        "{out}"
    );
    let (code, stdout, _) = journeys(&["status"], &cfg);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("journeys status: 0 FAIL, 0 WARN, 4 PASS"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS  line outbox") && stdout.contains("nothing waiting"),
        "{stdout}"
    );

    // This gate's key is not the line's: FAIL, saying what to do; exit 1.
    let other = [8u8; 32];
    write_key(dir.path(), &other);
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let key = line(&lines, "passenger key");
    assert_eq!(key.0, "FAIL", "{out}");
    assert!(
        key.2.contains(&KeyFingerprint::of_key(&other).short())
            && key.2.contains(&ours.short())
            && key.2.contains("not the line's")
            && key.2.contains("copy the line's key file"),
        "{out}"
    );
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains(&hex_of(&other)), "the doctor printed the key");
    let (code, stdout, _) = journeys(&["status"], &cfg);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  passenger key"), "{stdout}");
    // The line's key is still the first gate's.
    assert_eq!(
        pg.psql("postgres", "SELECT key_fingerprint FROM tapgate_line"),
        ours.as_hex()
    );

    // No key file at all: a line gate never makes one up.
    std::fs::remove_file(dir.path().join("passenger.key")).unwrap();
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let key = line(&lines, "passenger key");
    assert_eq!(key.0, "FAIL", "{out}");
    assert!(key.2.contains("never generated"), "{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        !dir.path().join("passenger.key").exists(),
        "the doctor created a key"
    );
    write_key(dir.path(), &line_key);

    // A schema newer than this build: FAIL, upgrade this gate.
    pg.psql(
        "postgres",
        "INSERT INTO tapgate_schema VALUES (999, 0, 'a newer tapgate')",
    );
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let schema = line(&lines, "line schema");
    assert_eq!(schema.0, "FAIL", "{out}");
    assert!(
        schema.2.contains("version 999") && schema.2.contains("upgrade tapgate"),
        "{out}"
    );
    assert_eq!(code, 1, "{out}");
    pg.psql("postgres", "DELETE FROM tapgate_schema WHERE version = 999");

    // A hung server (accepts TCP, never answers): FAIL within connect_timeout_ms.
    pg.freeze();
    let started = std::time::Instant::now();
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let took = started.elapsed();
    pg.thaw();
    let db = line(&lines, "line database");
    assert_eq!(db.0, "FAIL", "{out}");
    assert!(db.2.contains("no connection within 3000 ms"), "{out}");
    assert_eq!(line(&lines, "passenger key").0, "WARN", "{out}");
    assert!(lines.iter().all(|(_, n, _)| n != "line schema"), "{out}");
    assert_eq!(code, 1, "{out}");
    // The whole doctor, the aggregator's checks included: bounded by the connect budget.
    assert!(took < std::time::Duration::from_secs(20), "{took:?}\n{out}");

    // The database stopped: FAIL, and what the gate does meanwhile.
    pg.stop();
    let (code, lines, out) = run_doctor_blocking(cfg.clone()).await.unwrap();
    let db = line(&lines, "line database");
    assert_eq!(db.0, "FAIL", "{out}");
    assert!(
        db.2.contains("unreachable")
            && db.2.contains("Connection refused")
            && db.2.contains("unknown-entry fare"),
        "{out}"
    );
    assert_eq!(code, 1, "{out}");
    let (code, stdout, _) = journeys(&["status"], &cfg);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  line database"), "{stdout}");
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// With `store = "local"` (the default) there is no line database: the doctor says so in one
/// line, and `journeys migrate` / `status` refuse with what to set.
#[test]
fn a_local_store_has_no_line_database() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::station_config(dir.path(), "http://127.0.0.1:9", "", "");
    for sub in ["migrate", "status"] {
        let (code, stdout, stderr) = journeys(&[sub], &cfg);
        assert_eq!(code, 1, "{sub}: {stdout}{stderr}");
        assert!(
            stderr.contains("store is \"local\"") && stderr.contains("store = \"postgres\""),
            "{sub}: {stderr}"
        );
    }
    let (_, lines, out) = doctor(&cfg);
    let j = line(&lines, "journeys");
    assert_eq!(j.0, "PASS", "{out}");
    assert!(j.2.contains("this station only"), "{out}");
    assert!(lines.iter().all(|(_, n, _)| n != "line database"), "{out}");
}
