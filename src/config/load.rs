//! Reading a config file and resolving what depends on the machine: relative paths beside the
//! file, secrets under `$CREDENTIALS_DIRECTORY`, the time zone database, and the file system
//! checks that opening the journal would otherwise trip on later.

use std::path::{Path, PathBuf};

use super::locate::{located, parse_error};
use super::{Config, ConfigError};

/// Resolves a secret file path: relative paths go under `$CREDENTIALS_DIRECTORY` when set,
/// else under `base` (the config file's folder).
pub fn resolve_secret_path(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(path),
        _ => base.join(path),
    }
}

/// Resolves an IANA time zone name: the system's database first (operators keep it current),
/// then the copy bundled in the binary (controller images often ship without tzdata).
pub fn resolve_time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if let Ok(tz) = jiff::tz::TimeZone::get(name) {
        return Ok(tz);
    }
    jiff::tz::TimeZoneDatabase::bundled()
        .get(name)
        .map_err(|_| {
            let system = std::env::var_os("TZDIR")
                .map(|d| format!("TZDIR={}", PathBuf::from(d).display()))
                .unwrap_or_else(|| "/usr/share/zoneinfo".into());
            format!(
                "unknown time zone {name:?}: neither the time zone database built into tapgate \
                 nor the system's ({system}) has it; use an IANA name such as Asia/Jakarta \
                 (WIB), Asia/Makassar (WITA) or Asia/Jayapura (WIT)"
            )
        })
}

/// The folder relative paths in the config file at `path` resolve against: absolute and
/// without `..`, so that the answer does not depend on the current directory and one journal
/// has one name.
pub fn config_dir(path: &Path) -> PathBuf {
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

impl Config {
    /// Reads, parses and checks a config file; relative paths in it are resolved beside the
    /// file (secrets: under `$CREDENTIALS_DIRECTORY` when set), so that the same file means
    /// the same journal from any current directory. Every command that takes a config goes
    /// through here: what `check-config` accepts, `run` accepts.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        let mut cfg = Config::parse(&text, path)?;
        cfg.resolve_paths(&config_dir(path));
        cfg.check_files()
            .map_err(|(key, message)| located(&text, path, key, message))?;
        Ok(cfg)
    }

    /// Parses and checks config text; `path` is only used in errors. Paths stay as written
    /// (see [`Config::load`] for their resolution) and the file system is not consulted.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        cfg.check()
            .map_err(|(key, message)| located(text, path, key, message))?;
        Ok(cfg)
    }

    /// Makes every relative path absolute: beside the config file (`base`), secrets under
    /// `$CREDENTIALS_DIRECTORY` when set (see [`resolve_secret_path`]).
    pub fn resolve_paths(&mut self, base: &Path) {
        let beside = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.journal.path = beside(&self.journal.path);
        if let Some(k) = &self.journal.passenger_key_file {
            self.journal.passenger_key_file = Some(beside(k));
        }
        let a = &mut self.aggregator;
        a.client_secret_file = resolve_secret_path(&a.client_secret_file, base);
        a.private_key_file = resolve_secret_path(&a.private_key_file, base);
        let j = &mut self.journeys;
        if let Some(p) = &j.password_file {
            j.password_file = Some(resolve_secret_path(p, base));
        }
        if let Some(p) = &j.ca_file {
            j.ca_file = Some(beside(p));
        }
    }

    /// Checks against the file system what opening would trip on later (paths resolved).
    fn check_files(&self) -> Result<(), (String, String)> {
        let j = &self.journal.path;
        if j.is_dir() {
            return Err((
                "journal.path".into(),
                format!(
                    "{} is a directory; name the journal file in it (e.g. {})",
                    j.display(),
                    j.join("journal.db").display()
                ),
            ));
        }
        if let Some(parent) = j.parent() {
            if parent.exists() && !parent.is_dir() {
                return Err((
                    "journal.path".into(),
                    format!("{} is not a directory", parent.display()),
                ));
            }
        }
        let key = self.journal.passenger_key_path();
        if key.is_dir() {
            return Err((
                "journal.passenger_key_file".into(),
                format!("{} is a directory, not a key file", key.display()),
            ));
        }
        self.check_journeys_files()
    }

    /// With a line database, its password and CA files must be there at start: without them
    /// the gate could never reach the line, and would only say so at the first tap-out.
    fn check_journeys_files(&self) -> Result<(), (String, String)> {
        let j = &self.journeys;
        if !j.is_line() {
            return Ok(());
        }
        for (key, path, what) in [
            (
                "journeys.password_file",
                &j.password_file,
                "the line database's password (under systemd: LoadCredential=, relative paths \
                 resolve under $CREDENTIALS_DIRECTORY)",
            ),
            (
                "journeys.ca_file",
                &j.ca_file,
                "the CA certificate(s) of the line database (PEM)",
            ),
        ] {
            let Some(p) = path else { continue };
            let problem = match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => "is a directory, not a file holding".to_string(),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    "does not exist: install the file holding".to_string()
                }
                Err(e) => format!("cannot be looked at ({e}): it must hold"),
            };
            return Err((key.into(), format!("{} {problem} {what}", p.display())));
        }
        Ok(())
    }
}
