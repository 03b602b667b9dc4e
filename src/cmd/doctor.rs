//! `tapgate doctor --config FILE`: what a technician runs at a gate that misbehaves.
//!
//! Each check prints one line, `PASS`, `WARN` or `FAIL`, with what was found and, when it is
//! not a pass, what to do next. The exit code is 1 when any check failed. The doctor moves no
//! money: towards the aggregator it asks for an access token and queries the status of a
//! reference that does not exist (`TGDOCTOR…`), which proves the client secret's signatures are
//! accepted. It never creates the journal: run by root, it would leave a file the service user
//! cannot write. With `[journeys] store = "postgres"` it connects to the line database and
//! reads its schema version and passenger-key fingerprint; it never registers a key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aggregator::QueryOutcome;
use crate::config::{CardSourceConfig, Config, RelayConfig};
use crate::nfc::pcsc::ReaderPattern;

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but a person should look (or: fine on a bench, wrong at a gate).
    Warn,
    /// The gate cannot work like this.
    Fail,
}

impl Status {
    /// `PASS`, `WARN` or `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was checked (`pcscd`, `reader in-1`, `clock`, ...).
    pub name: String,
    /// The verdict.
    pub status: Status,
    /// What was found, and for WARN/FAIL what to do.
    pub detail: String,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

/// Free space below this fails the journal check: SQLite needs room for its WAL.
pub const DISK_FAIL_BYTES: u64 = 64 << 20;
/// Free space below this is a warning.
pub const DISK_WARN_BYTES: u64 = 512 << 20;
/// How long the doctor waits for pcscd, and for each aggregator request.
const PCSC_TIMEOUT: Duration = Duration::from_secs(5);
const AGGREGATOR_TIMEOUT: Duration = Duration::from_secs(15);

/// `tapgate doctor`: runs every check, prints the list, exit 1 on any FAIL.
pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let checks = checks(config).await;
    Ok(report(&checks, "doctor"))
}

/// Prints checks as `STATUS  name  detail` lines and a `{title}: n FAIL, n WARN, n PASS`
/// summary; exit 1 when any failed.
pub fn report(checks: &[Check], title: &str) -> ExitCode {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        println!(
            "{}  {:width$}  {}",
            c.status.as_str(),
            c.name,
            c.detail,
            width = width
        );
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let failed = count(Status::Fail);
    println!(
        "{title}: {} FAIL, {} WARN, {} PASS",
        failed,
        count(Status::Warn),
        count(Status::Pass)
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs every check against the config at `path`, in the order printed.
pub async fn checks(path: &Path) -> Vec<Check> {
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            return vec![check(
                "config",
                Status::Fail,
                format!(
                    "{e} (fix it, then `tapgate check-config {}`)",
                    path.display()
                ),
            )]
        }
    };
    let mut out = vec![check(
        "config",
        Status::Pass,
        format!(
            "{}: station {} {:?}, {} lane(s)",
            path.display(),
            cfg.station.id,
            cfg.station.name,
            cfg.lanes.len()
        ),
    )];
    out.extend(readers(&cfg).await);
    out.push(gpio(&cfg, Path::new("/dev")));
    out.extend(gpio_lines(&cfg));
    out.extend(journal(&cfg));
    out.extend(crate::cmd::journeys::line_checks(&cfg, path).await);
    out.push(clock());
    out.extend(aggregator(&cfg, path).await);
    out
}

/// pcscd reachable, and each pcsc lane's reader present.
async fn readers(cfg: &Config) -> Vec<Check> {
    let lanes: Vec<(&str, &str)> = cfg
        .lanes
        .iter()
        .filter_map(|l| match &l.card_source {
            CardSourceConfig::Pcsc { reader, .. } => Some((l.name.as_str(), reader.as_str())),
            CardSourceConfig::None => None,
        })
        .collect();
    let listed = tokio::time::timeout(
        PCSC_TIMEOUT,
        tokio::task::spawn_blocking(crate::nfc::pcsc::list_readers),
    )
    .await;
    let names = match listed {
        Ok(Ok(Ok(names))) => names,
        Ok(Ok(Err(e))) => {
            let status = if lanes.is_empty() {
                Status::Warn
            } else {
                Status::Fail
            };
            let mut v = vec![check(
                "pcscd",
                status,
                format!(
                    "not reachable: {e} (`systemctl status pcscd.socket`; Debian package \
                     pcscd){}",
                    if lanes.is_empty() {
                        "; no lane uses a reader"
                    } else {
                        ""
                    }
                ),
            )];
            v.extend(lanes.iter().map(|(lane, pattern)| {
                check(
                    format!("reader {lane}"),
                    Status::Fail,
                    format!("cannot look for {pattern:?}: pcscd is not reachable"),
                )
            }));
            return v;
        }
        Ok(Err(e)) => {
            return vec![check(
                "pcscd",
                Status::Fail,
                format!("the check itself failed: {e}"),
            )]
        }
        Err(_) => {
            return vec![check(
                "pcscd",
                Status::Fail,
                format!(
                    "no answer within {} s (`journalctl -u pcscd`, `systemctl restart pcscd`)",
                    PCSC_TIMEOUT.as_secs()
                ),
            )]
        }
    };
    let mut v = vec![check(
        "pcscd",
        Status::Pass,
        if names.is_empty() {
            "reachable, no reader plugged in".to_string()
        } else {
            format!("reachable, readers: {}", names.join(", "))
        },
    )];
    if lanes.is_empty() {
        v.push(check(
            "readers",
            Status::Warn,
            "no lane has a pcsc card_source: taps only arrive through `tapgate tap`",
        ));
    }
    for (lane, pattern) in lanes {
        let p = ReaderPattern::new(pattern);
        v.push(match p.choose(&names) {
            Some(name) => check(format!("reader {lane}"), Status::Pass, name.to_string()),
            None => check(
                format!("reader {lane}"),
                Status::Fail,
                format!(
                    "no reader matches {pattern:?} (plug it in, or fix card_source.reader; \
                     `tapgate readers` lists the names)"
                ),
            ),
        });
    }
    v
}

/// Whether a lane's relay drives a GPIO line (the recording relay drives nothing).
fn relay_needs_gpio(r: &RelayConfig) -> bool {
    match r {
        RelayConfig::Recording => false,
        RelayConfig::Gpio(_) => true,
    }
}

/// Each configured GPIO line (lane relays, gate inputs) found by name or chip and offset.
pub fn gpio_lines(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for lane in &cfg.lanes {
        if let RelayConfig::Gpio(spec) = &lane.relay {
            let found = spec
                .line_ref()
                .and_then(|r| crate::relay::gpio::resolve(&r));
            out.push(match found {
                Ok(line) => check(
                    format!("relay line {}", lane.name),
                    Status::Pass,
                    format!("{line:?}"),
                ),
                Err(e) => check(
                    format!("relay line {}", lane.name),
                    Status::Fail,
                    e.to_string(),
                ),
            });
        }
    }
    for (i, input) in cfg.inputs.iter().enumerate() {
        let found = input
            .line_ref()
            .and_then(|r| crate::relay::gpio::resolve(&r));
        let name = format!("input {} ({:?})", i, input.role);
        out.push(match found {
            Ok(line) => check(name, Status::Pass, format!("{line:?}")),
            Err(e) => check(name, Status::Fail, e.to_string()),
        });
    }
    out
}

/// GPIO chips present under `dev`, and openable read-write by this user.
pub fn gpio(cfg: &Config, dev: &Path) -> Check {
    let needed = cfg.lanes.iter().any(|l| relay_needs_gpio(&l.relay)) || !cfg.inputs.is_empty();
    let mut chips: Vec<PathBuf> = std::fs::read_dir(dev)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("gpiochip"))
                })
                .collect()
        })
        .unwrap_or_default();
    chips.sort();
    if chips.is_empty() {
        let (status, why) = if needed {
            (
                Status::Fail,
                "a lane drives its relay by GPIO: check the controller's device tree / kernel \
                 driver",
            )
        } else {
            (
                Status::Warn,
                "every lane uses the recording relay (nothing opens a gate): fine on a bench, \
                 not at a gate",
            )
        };
        return check(
            "gpio",
            status,
            format!("no GPIO chip ({}/gpiochip*): {why}", dev.display()),
        );
    }
    let mut denied = Vec::new();
    for c in &chips {
        // Opening a gpiochip requests no line: it changes nothing on the hardware.
        if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(c) {
            denied.push(format!("{}: {e}", c.display()));
        }
    }
    let list = chips
        .iter()
        .map(|c| c.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if denied.is_empty() {
        check("gpio", Status::Pass, format!("{list} (read-write)"))
    } else {
        check(
            "gpio",
            if needed { Status::Fail } else { Status::Warn },
            format!(
                "cannot open {} (the service user needs group gpio: udev/60-tapgate.rules, \
                 `udevadm trigger`)",
                denied.join("; ")
            ),
        )
    }
}

/// Free bytes for an unprivileged user on the file system holding `path` (statvfs).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs only writes the struct we own; `c` is a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The fields are 32-bit on armv7: the conversions are needed there.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize));
    Ok(free)
}

fn mib(b: u64) -> u64 {
    b >> 20
}

/// The journal file writable and sound, and room on its disk.
fn journal(cfg: &Config) -> Vec<Check> {
    let path = &cfg.journal.path;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut v = Vec::new();
    if !dir.is_dir() {
        v.push(check(
            "journal",
            Status::Fail,
            format!(
                "folder {} does not exist (under systemd StateDirectory=tapgate creates \
                 /var/lib/tapgate; else create it for the service user)",
                dir.display()
            ),
        ));
        return v;
    }
    v.push(journal_file(path, &dir));
    if path.exists() {
        v.push(journal_permissions(path));
    }
    v.push(retention(cfg));
    v.push(disk(&dir));
    v
}

/// The journal file itself: writable by this user and passing `quick_check`, or, before the
/// daemon's first start, a folder it can be created in.
fn journal_file(path: &Path, dir: &Path) -> Check {
    if !path.exists() {
        // Probe the folder with a file of our own rather than creating the journal.
        let probe = dir.join(format!(".tapgate-doctor-{}", std::process::id()));
        let writable = std::fs::File::create(&probe).is_ok();
        let _ = std::fs::remove_file(&probe);
        return if writable {
            check(
                "journal",
                Status::Warn,
                format!(
                    "{} does not exist yet: created on the daemon's first start",
                    path.display()
                ),
            )
        } else {
            check(
                "journal",
                Status::Fail,
                format!(
                    "{} does not exist and {} is not writable by this user",
                    path.display(),
                    dir.display()
                ),
            )
        };
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        return check(
            "journal",
            Status::Fail,
            format!(
                "{} is not writable: {e} (owner must be the service user)",
                path.display()
            ),
        );
    }
    match crate::journal::Journal::open(path) {
        Err(e) => check("journal", Status::Fail, format!("{}: {e}", path.display())),
        Ok(j) => match j.quick_check() {
            Ok(found) if found.is_empty() => check(
                "journal",
                Status::Pass,
                format!("{} writable, quick_check ok", path.display()),
            ),
            Ok(found) => check(
                "journal",
                Status::Fail,
                format!(
                    "{} is damaged: {} (stop tapgate, keep a copy, see docs/operations.md)",
                    path.display(),
                    found.join("; ")
                ),
            ),
            Err(e) => check("journal", Status::Fail, format!("{}: {e}", path.display())),
        },
    }
}

/// Room on the journal's disk.
fn disk(dir: &Path) -> Check {
    match free_bytes(dir) {
        Ok(b) if b < DISK_FAIL_BYTES => check(
            "disk",
            Status::Fail,
            format!(
                "{} MiB free under {}: free space now",
                mib(b),
                dir.display()
            ),
        ),
        Ok(b) if b < DISK_WARN_BYTES => check(
            "disk",
            Status::Warn,
            format!("{} MiB free under {}: getting low", mib(b), dir.display()),
        ),
        Ok(b) => check(
            "disk",
            Status::Pass,
            format!("{} MiB free under {}", mib(b), dir.display()),
        ),
        Err(e) => check(
            "disk",
            Status::Warn,
            format!("statvfs {}: {e}", dir.display()),
        ),
    }
}

/// The journal's files readable by their owner only: they hold passenger keys, masked PANs and
/// the aggregator's references. Existing files are not changed by tapgate: a person decides.
fn journal_permissions(path: &Path) -> Check {
    let open = crate::journal::integrity::open_to_others(path);
    if open.is_empty() {
        return check(
            "journal files",
            Status::Pass,
            format!("{} and its -wal/-shm: mode 0600", path.display()),
        );
    }
    let list: Vec<String> = open
        .iter()
        .map(|(p, m)| format!("{} ({m:04o})", p.display()))
        .collect();
    let names: Vec<String> = open.iter().map(|(p, _)| p.display().to_string()).collect();
    check(
        "journal files",
        Status::Warn,
        format!(
            "readable by others: {}: they hold passenger keys and masked PANs (`chmod 600 {}`)",
            list.join(", "),
            names.join(" ")
        ),
    )
}

/// Whether retention is on, and its export folder usable.
fn retention(cfg: &Config) -> Check {
    let Some(days) = cfg.journal.retain_days else {
        return check(
            "retention",
            Status::Warn,
            "off: the journal keeps every operation and grows forever (set [journal] \
             retain_days, e.g. 90)",
        );
    };
    let dir = cfg.journal.export_dir_path();
    let usable = if dir.is_dir() {
        // Probe with a file of our own; the folder's lock and exports are left alone.
        let probe = dir.join(format!(".tapgate-doctor-{}", std::process::id()));
        let ok = std::fs::File::create(&probe).is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    } else {
        // Created by the first prune, if its parent lets this user.
        dir.parent().is_some_and(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_dir() && !m.permissions().readonly())
        })
    };
    if usable {
        check(
            "retention",
            Status::Pass,
            format!(
                "final operations older than {days} day(s) are exported to {} and pruned",
                dir.display()
            ),
        )
    } else {
        check(
            "retention",
            Status::Fail,
            format!(
                "export folder {} is not writable by this user: retention cannot export, so it \
                 deletes nothing (create it for the service user, or set [journal] export_dir)",
                dir.display()
            ),
        )
    }
}

/// The kernel's view of clock synchronisation: adjtimex(2) read-only (modes = 0), whose
/// STA_UNSYNC flag NTP clients (systemd-timesyncd, chrony) clear while they discipline it.
pub fn clock_synchronised() -> std::io::Result<bool> {
    // SAFETY: adjtimex with modes = 0 only reads into the struct we own.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

fn clock() -> Check {
    match clock_synchronised() {
        Ok(true) => check("clock", Status::Pass, "synchronised (kernel NTP status)"),
        Ok(false) => check(
            "clock",
            Status::Warn,
            "not synchronised: the aggregator refuses signatures whose X-TIMESTAMP is off; \
             enable an NTP client (`timedatectl set-ntp true`, or chrony)",
        ),
        Err(e) => check(
            "clock",
            Status::Warn,
            format!("cannot read the kernel clock status: {e}"),
        ),
    }
}

/// Credentials readable, aggregator reachable, token obtainable, signatures accepted.
async fn aggregator(cfg: &Config, path: &Path) -> Vec<Check> {
    let clock = Arc::new(crate::clock::SystemClock::new(cfg.time_zone()));
    let agg = match crate::daemon::aggregator_from_config(cfg, path, clock) {
        Ok(a) => a,
        Err(e) => {
            return vec![check(
                "credentials",
                Status::Fail,
                format!(
                    "{e} (relative paths resolve under $CREDENTIALS_DIRECTORY, else beside the \
                     config)"
                ),
            )]
        }
    };
    let mut v = vec![credential_modes(cfg, path)];
    let (token, ok) = token_check(&agg, &cfg.aggregator.base_url).await;
    v.push(token);
    if ok {
        v.push(signature_check(&agg, cfg).await);
    }
    v
}

/// The secrets were read and the key parses; warns when others may read them too.
fn credential_modes(cfg: &Config, path: &Path) -> Check {
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    let open: Vec<String> = [
        &cfg.aggregator.client_secret_file,
        &cfg.aggregator.private_key_file,
    ]
    .iter()
    .map(|p| crate::config::resolve_secret_path(p, base_dir))
    .filter(|p| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    })
    .map(|p| p.display().to_string())
    .collect();
    if open.is_empty() {
        check(
            "credentials",
            Status::Pass,
            "client secret and private key read; the key parses",
        )
    } else {
        check(
            "credentials",
            Status::Warn,
            format!(
                "read and usable, but readable by others: {} (`chmod 600`)",
                open.join(", ")
            ),
        )
    }
}

/// An access token from the aggregator at `base`; the flag says whether one was obtained.
async fn token_check(agg: &crate::aggregator::Aggregator, base: &str) -> (Check, bool) {
    let started = Instant::now();
    match tokio::time::timeout(AGGREGATOR_TIMEOUT, agg.ensure_token()).await {
        Err(_) => (
            check(
                "aggregator",
                Status::Fail,
                format!(
                    "{base}: no token within {} s (network, firewall, DNS)",
                    AGGREGATOR_TIMEOUT.as_secs()
                ),
            ),
            false,
        ),
        Ok(Err(e)) => {
            let hint = if e.is_transient() {
                "network, firewall, DNS, or the aggregator is down; try again"
            } else {
                "client_id, partner_id, private key or the clock is wrong"
            };
            (
                check("aggregator", Status::Fail, format!("{base}: {e} ({hint})")),
                false,
            )
        }
        Ok(Ok(())) => (
            check(
                "aggregator",
                Status::Pass,
                format!(
                    "{base}: access token obtained in {} ms",
                    started.elapsed().as_millis()
                ),
            ),
            true,
        ),
    }
}

/// A signed status query for a reference that does not exist: any well-formed answer proves
/// the signature and merchant are accepted.
async fn signature_check(agg: &crate::aggregator::Aggregator, cfg: &Config) -> Check {
    let reference = format!(
        "TGDOCTOR{}{}",
        cfg.station.id,
        jiff::Timestamp::now().as_millisecond()
    );
    let q = tokio::time::timeout(AGGREGATOR_TIMEOUT, agg.query(&reference)).await;
    match q {
        Err(_) => check(
            "signature",
            Status::Fail,
            format!(
                "status query unanswered within {} s",
                AGGREGATOR_TIMEOUT.as_secs()
            ),
        ),
        Ok(QueryOutcome::NotFound { response_code })
        | Ok(QueryOutcome::Status { response_code, .. }) => check(
            "signature",
            Status::Pass,
            format!("signed status query accepted ({response_code})"),
        ),
        Ok(QueryOutcome::Refused {
            response_code,
            message,
        }) => check(
            "signature",
            Status::Fail,
            format!(
                "signed status query refused{}: {message} (client secret or merchant_id wrong?)",
                response_code.map(|c| format!(" ({c})")).unwrap_or_default()
            ),
        ),
        Ok(QueryOutcome::Unavailable { reason }) => check(
            "signature",
            Status::Warn,
            format!("status query got no usable answer: {reason}; try again"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Config {
        Config::parse(
            include_str!("../../config/demo.toml"),
            Path::new("/etc/tapgate/demo.toml"),
        )
        .unwrap()
    }

    #[test]
    fn gpio_missing_is_a_warning_for_recording_relays() {
        let dev = tempfile::tempdir().unwrap();
        let c = gpio(&demo(), dev.path());
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.detail.contains("no GPIO chip"), "{c:?}");
    }

    #[test]
    fn gpio_chip_found_and_openable() {
        let dev = tempfile::tempdir().unwrap();
        std::fs::write(dev.path().join("gpiochip0"), b"").unwrap();
        std::fs::write(dev.path().join("ttyS0"), b"").unwrap();
        let c = gpio(&demo(), dev.path());
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.detail.contains("gpiochip0") && !c.detail.contains("ttyS0"));
    }

    #[test]
    fn statvfs_reports_space() {
        let free = free_bytes(Path::new("/")).unwrap();
        assert!(free > 0);
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
    }
}
