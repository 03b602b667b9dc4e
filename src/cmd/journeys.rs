//! `tapgate journeys ...`: the line database, for the operator and the technician.
//!
//! - `migrate` applies the line schema's migrations by hand (gates apply them at start when
//!   their database role may; an operator whose gates run with a role without DDL rights runs
//!   this once per upgrade, as the schema's owner with `--url`).
//! - `status` says whether this gate can work on the line: database reachable, schema
//!   current, and this gate's passenger key the line's. The same lines are part of
//!   `tapgate doctor`.
//!
//! Neither moves money nor registers anything: `status` reads the line's key fingerprint, it
//! never joins the line (joining registers the first gate's key as the line's, which only a
//! starting gate should do).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;

use crate::cmd::doctor::{Check, Status};
use crate::config::Config;
use crate::line::schema::SCHEMA_VERSION;
use crate::line::{KeyFingerprint, LineError, LineSettings, LineStore};

/// `tapgate journeys`.
#[derive(clap::Args, Debug)]
pub struct JourneysArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: JourneysCommand,
}

/// The `tapgate journeys` sub-commands.
#[derive(clap::Subcommand, Debug)]
pub enum JourneysCommand {
    /// Apply the line database's schema migrations and print the versions before and after.
    ///
    /// Gates migrate at start when their database role may; run this when it may not, with
    /// --url naming a role that owns the schema. Refused with [journeys] store = "local".
    Migrate {
        /// The station config (its [journeys] section).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Connect with this URL instead of [journeys] url, e.g. as the schema's owner
        /// (no password in it). Its password, if any, comes from --password-file only.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The password file to use instead of [journeys] password_file.
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
    },
    /// The line database reachable, its schema version, and whether this gate's
    /// passenger-key fingerprint is the line's. PASS/WARN/FAIL lines; exit 1 on any FAIL.
    Status {
        /// The station config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs a `tapgate journeys` sub-command.
pub async fn run(args: JourneysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        JourneysCommand::Migrate {
            config,
            url,
            password_file,
        } => migrate(&config, url, password_file).await,
        JourneysCommand::Status { config } => {
            let cfg = Config::load(&config)?;
            if !cfg.journeys.is_line() {
                bail!("{}", local_refusal(&config));
            }
            let checks = line_checks(&cfg, &config).await;
            Ok(crate::cmd::doctor::report(&checks, "journeys status"))
        }
    }
}

fn local_refusal(config: &Path) -> String {
    format!(
        "{}: [journeys] store is \"local\": journeys are matched at this station only and there \
         is no line database (set store = \"postgres\" and url in [journeys] to join a line)",
        config.display()
    )
}

/// `tapgate journeys migrate`.
async fn migrate(
    config: &Path,
    url: Option<String>,
    password_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config)?;
    let Some(mut settings) = cfg.journeys.line_settings(&cfg.station.id) else {
        bail!("{}", local_refusal(config));
    };
    let by_hand = url.is_some();
    if let Some(url) = url {
        settings.url = url;
        settings.password_file = None;
    }
    if let Some(p) = password_file {
        settings.password_file = Some(p);
    }
    let store = LineStore::connect(&settings)?;
    match store.migrate().await {
        Ok(m) if m.from == m.to => {
            println!(
                "line schema already at version {} (this tapgate's): nothing to do",
                m.to
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(m) => {
            println!("line schema migrated from version {} to {}", m.from, m.to);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (LineError::NotMigrated { .. } | LineError::Auth(_))) if !by_hand => {
            bail!("{e} (connect as the schema's owner with --url URL and --password-file FILE)")
        }
        Err(e) => Err(e.into()),
    }
}

/// The fingerprint of the passenger key in `path`, read as the daemon reads it (the first 32
/// bytes of the file). `PassengerKey` keeps its bytes to itself; a `fingerprint()` method on
/// it would make this the daemon's own computation.
pub fn passenger_key_fingerprint(path: &Path) -> Result<KeyFingerprint, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    match bytes.get(..32) {
        Some(key) => Ok(KeyFingerprint::of_key(key)),
        None => Err("it is shorter than 32 bytes".into()),
    }
}

/// What one connection to the line database found.
struct Probe {
    /// Time to connect (TCP, TLS, authentication).
    connect_ms: u128,
    /// The line's passenger-key fingerprint and the station that registered it, when the
    /// line has one.
    line_key: Option<(KeyFingerprint, String)>,
}

/// One connection within `connect_timeout_ms`, and the line's key fingerprint read (never
/// registered).
async fn probe(settings: &LineSettings) -> Result<Probe, LineError> {
    const WHAT: &str = "connect";
    let conn = crate::line::connection(settings)?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*conn.tls).clone());
    let started = Instant::now();
    let (client, connection) =
        match tokio::time::timeout(settings.connect_timeout(), conn.pg.connect(tls)).await {
            Err(_) => {
                return Err(LineError::Timeout {
                    what: WHAT,
                    after_ms: settings.connect_timeout_ms,
                })
            }
            Ok(r) => r.map_err(|e| match LineError::from_pg(WHAT, &e) {
                // The driver's "error connecting to server" alone hides the cause a
                // technician needs (refused, no route, name not known): add its sources.
                LineError::Unavailable { what, .. } => LineError::Unavailable {
                    what,
                    detail: with_sources(&e),
                },
                other => other,
            })?,
        };
    let connect_ms = started.elapsed().as_millis();
    // The connection task ends when the client is dropped.
    tokio::spawn(connection);
    let read = async {
        let pg = |e: tokio_postgres::Error| LineError::from_pg("read the line's key", &e);
        let exists: bool = client
            .query_one("SELECT to_regclass('tapgate_line') IS NOT NULL", &[])
            .await
            .map_err(pg)?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let row = client
            .query_opt(
                "SELECT key_fingerprint, registered_by FROM tapgate_line",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| {
            (
                KeyFingerprint::from_hex(r.get::<_, &str>(0)),
                r.get::<_, String>(1),
            )
        }))
    };
    let line_key = match tokio::time::timeout(settings.background_timeout(), read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(LineError::Timeout {
                what: "read the line's key",
                after_ms: settings.background_timeout_ms,
            })
        }
    };
    Ok(Probe {
        connect_ms,
        line_key,
    })
}

/// An error and its sources, `: `-separated.
fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cur = s.source();
    }
    text
}

fn check(name: &str, status: Status, detail: String) -> Check {
    Check {
        name: name.into(),
        status,
        detail,
    }
}

/// What a gate does while the line database is away, for the FAIL line.
const DEGRADED: &str = "until it answers, exits use what this station knows, else the \
                        unknown-entry fare, and are made right later";

/// The line checks of `tapgate doctor` and `tapgate journeys status`: with `store =
/// "postgres"`, the database reachable within `connect_timeout_ms`, its schema version, and
/// this gate's passenger key against the line's; with `local`, one line saying so.
pub async fn line_checks(cfg: &Config, config_path: &Path) -> Vec<Check> {
    let Some(settings) = cfg.journeys.line_settings(&cfg.station.id) else {
        return vec![check(
            "journeys",
            Status::Pass,
            "store = \"local\": journeys are matched at this station only".into(),
        )];
    };
    let key_path = cfg.journal.passenger_key_path();
    let ours = passenger_key_fingerprint(&key_path);
    let mut out = Vec::new();
    let probed = probe(&settings).await;
    out.push(match &probed {
        Ok(p) => check(
            "line database",
            Status::Pass,
            format!(
                "{} answered in {} ms (connect_timeout_ms {})",
                settings.url, p.connect_ms, settings.connect_timeout_ms
            ),
        ),
        Err(LineError::Timeout { after_ms, .. }) => check(
            "line database",
            Status::Fail,
            format!(
                "{}: no connection within {after_ms} ms (database down, network, firewall, or \
                 raise connect_timeout_ms); {DEGRADED}",
                settings.url
            ),
        ),
        Err(e) if e.is_retryable() => check(
            "line database",
            Status::Fail,
            format!(
                "{}: unreachable: {e} (is PostgreSQL running and listening there? network, \
                 firewall); {DEGRADED}",
                settings.url
            ),
        ),
        Err(e) => check(
            "line database",
            Status::Fail,
            format!(
                "{}: {e} (fix [journeys] url, password_file or ca_file, or the role's rights)",
                settings.url
            ),
        ),
    });
    let Ok(probe) = probed else {
        out.push(match &ours {
            Ok(fp) => check(
                "passenger key",
                Status::Warn,
                format!(
                    "{fp} ({}): not compared with the line's, the database did not answer",
                    key_path.display()
                ),
            ),
            Err(e) => missing_key(&key_path, e),
        });
        return out;
    };
    out.push(schema_check(&settings, config_path).await);
    out.push(match (&ours, &probe.line_key) {
        (Err(e), _) => missing_key(&key_path, e),
        (Ok(fp), None) => check(
            "passenger key",
            Status::Warn,
            format!(
                "{fp} ({}); the line has no key yet: the first gate to start registers its \
                 own, so start first a gate holding the line's key file",
                key_path.display()
            ),
        ),
        (Ok(fp), Some((line, by))) if fp == line => check(
            "passenger key",
            Status::Pass,
            format!(
                "{fp} ({}) is the line's (registered by station {by})",
                key_path.display()
            ),
        ),
        (Ok(fp), Some((line, by))) => check(
            "passenger key",
            Status::Fail,
            format!(
                "this gate's key {fp} ({path}) is not the line's {line} (registered by station \
                 {by}): its exits would match no journey from another station, and tapgate \
                 refuses to start with it; copy the line's key file to {path} (the same file \
                 at every gate, see the key rollout in docs/operations.md) and restart tapgate",
                path = key_path.display()
            ),
        ),
    });
    out.push(outbox_lag(cfg));
    out
}

/// How far behind the line this gate's journal is: the journey events not yet sent and the
/// age of the oldest. A minute is a database away for a while; an hour, exits elsewhere
/// charged the unknown-entry fare for this station's entries (made right once sent).
fn outbox_lag(cfg: &Config) -> Check {
    let path = &cfg.journal.path;
    if !path.exists() {
        return check(
            "line outbox",
            Status::Pass,
            format!(
                "{}: no journal yet, nothing waiting to be sent to the line",
                path.display()
            ),
        );
    }
    let stats = crate::journal::Journal::open_read_only(path).and_then(|j| j.outbox_stats());
    let s = match stats {
        Ok(s) => s,
        Err(e) => {
            return check(
                "line outbox",
                Status::Warn,
                format!("cannot read the journal's outbox ({e})"),
            )
        }
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let age_s = s
        .oldest_at_ms
        .map_or(0, |t| now.saturating_sub(t).max(0) / 1000);
    let detail = format!(
        "{} journey event(s) waiting to be sent to the line, the oldest {age_s} s old",
        s.pending
    );
    let status = match age_s {
        0..60 => Status::Pass,
        60..3600 => Status::Warn,
        _ => Status::Fail,
    };
    if status == Status::Pass {
        return check("line outbox", status, detail);
    }
    check(
        "line outbox",
        status,
        format!(
            "{detail}: the daemon sends them once the line database answers (see the line \
             database check); meanwhile exits at other stations do not see these entries"
        ),
    )
}

/// The key file missing or unreadable on a line gate.
fn missing_key(path: &Path, e: &str) -> Check {
    check(
        "passenger key",
        Status::Fail,
        format!(
            "{}: {e}: on a line the passenger key is a line credential, never generated by a \
             gate: install the line's key file there (the same file at every gate, mode 0600, \
             owned by the service user)",
            path.display()
        ),
    )
}

/// The schema's version against this build's.
async fn schema_check(settings: &LineSettings, config_path: &Path) -> Check {
    let found = match LineStore::connect(settings) {
        Ok(store) => store.schema_version().await,
        Err(e) => Err(e),
    };
    let migrate = format!(
        "run `tapgate journeys migrate --config {}`",
        config_path.display()
    );
    match found {
        Ok(v) if v == SCHEMA_VERSION => check(
            "line schema",
            Status::Pass,
            format!("version {v}, this tapgate's"),
        ),
        Ok(0) => check(
            "line schema",
            Status::Warn,
            format!(
                "no tapgate tables yet: {migrate} (a gate whose role may create tables also \
                 migrates at start)"
            ),
        ),
        Ok(v) if v < SCHEMA_VERSION => check(
            "line schema",
            Status::Warn,
            format!("version {v}, this tapgate uses {SCHEMA_VERSION}: {migrate}"),
        ),
        Ok(v) => check(
            "line schema",
            Status::Fail,
            format!(
                "version {v} is newer than this tapgate knows ({SCHEMA_VERSION}): another gate \
                 runs a newer tapgate; upgrade tapgate on this gate"
            ),
        ),
        Err(e) => check("line schema", Status::Fail, e.to_string()),
    }
}
