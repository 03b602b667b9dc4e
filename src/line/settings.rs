//! How a station reaches its line's PostgreSQL: the settings, and the checked connection
//! configuration made from them (no password in the URL, TLS for anything off this machine).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};

use super::error::LineError;

/// Where the line's journeys live and how long a station waits for them. A plain struct: the
/// station's TOML (`[journeys]`) is mapped onto it by the config layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineSettings {
    /// The line database, as a libpq URL or key=value string **without a password**, e.g.
    /// `postgresql://tapgate@line1-db.example:5432/tapgate`. Several hosts
    /// (`host1:5432,host2:5432` with `target_session_attrs=read-write`) follow a failover.
    /// Any host that is not a loopback address or a Unix socket directory is reached over TLS
    /// with certificate and host-name verification, whatever `sslmode` says.
    pub url: String,
    /// A file holding the password (a systemd credential, `$CREDENTIALS_DIRECTORY/...`); one
    /// trailing line break is ignored. `None`: the server asks for no password (peer or trust
    /// on a Unix socket).
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA certificate(s) the line database's certificate must chain to.
    /// `None`: the public web roots bundled in the binary (webpki-roots), right for a managed
    /// service with a publicly issued certificate.
    pub ca_file: Option<PathBuf>,
    /// Budget of one lookup on the tap path (`find_open`, `close_if_open`), pool wait
    /// included. Past it the call fails with [`LineError::Timeout`] and the lane degrades.
    pub lookup_timeout_ms: u64,
    /// Budget of the other calls (applying an event, the stale sweep's check, pruning,
    /// migrations).
    pub background_timeout_ms: u64,
    /// Budget of opening one connection (TCP, TLS, authentication).
    pub connect_timeout_ms: u64,
    /// Connections kept to the database (a lane's lookups and the replicator share them).
    pub pool_size: usize,
    /// This station's id: shown in `pg_stat_activity` as `tapgate-<station>` and recorded as
    /// who registered the line's passenger-key fingerprint or applied a migration.
    pub station: String,
}

impl LineSettings {
    /// Settings with the defaults for everything but the URL and the station.
    pub fn new(url: impl Into<String>, station: impl Into<String>) -> LineSettings {
        LineSettings {
            url: url.into(),
            password_file: None,
            ca_file: None,
            lookup_timeout_ms: DEFAULT_LOOKUP_TIMEOUT_MS,
            background_timeout_ms: DEFAULT_BACKGROUND_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            pool_size: DEFAULT_POOL_SIZE,
            station: station.into(),
        }
    }

    /// The tap-path budget.
    pub fn lookup_timeout(&self) -> Duration {
        Duration::from_millis(self.lookup_timeout_ms)
    }

    /// The background budget.
    pub fn background_timeout(&self) -> Duration {
        Duration::from_millis(self.background_timeout_ms)
    }

    /// The connect budget.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Default tap-path budget: a LAN round trip is a millisecond; this leaves room for a busy
/// database without holding a passenger at the gate.
pub const DEFAULT_LOOKUP_TIMEOUT_MS: u64 = 50;
/// Default budget of background calls.
pub const DEFAULT_BACKGROUND_TIMEOUT_MS: u64 = 5_000;
/// Default connect budget.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Default pool size.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// The connection configuration made from [`LineSettings`], checked.
#[derive(Clone)]
pub struct Connection {
    /// tokio-postgres' configuration, password included.
    pub pg: tokio_postgres::Config,
    /// Whether every host is on this machine (loopback address or Unix socket).
    pub local: bool,
    /// The TLS client configuration (used unless `pg`'s sslmode is `disable`).
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password; the TLS config has no secret.
        f.debug_struct("Connection")
            .field("pg", &self.pg)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// Whether a host is on this machine. A host *name* is never taken as local, even
/// `localhost`'s look-alikes: DNS could point it anywhere; only `localhost` itself, loopback
/// addresses and Unix socket directories are.
fn host_is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || IpAddr::from_str(name.trim_start_matches('[').trim_end_matches(']'))
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false)
        }
    }
}

/// Checks the settings and builds the connection configuration: the URL parsed (refused when
/// it carries a password), the password read from its file, TLS required and verified for any
/// host off this machine, timeouts and the application name set.
pub fn connection(s: &LineSettings) -> Result<Connection, LineError> {
    // The parser's messages name the option, never echo the value: safe to pass on.
    let mut pg = tokio_postgres::Config::from_str(&s.url)
        .map_err(|e| LineError::Config(format!("journeys url: {e}")))?;
    if pg.get_password().is_some() {
        return Err(LineError::Config(
            "journeys url carries a password: remove it from the url and put the password in \
             the file named by password_file (a systemd credential)"
                .into(),
        ));
    }
    if pg.get_user().is_none() {
        return Err(LineError::Config(
            "journeys url names no user (postgresql://USER@host/dbname)".into(),
        ));
    }
    if pg.get_hosts().is_empty() {
        return Err(LineError::Config(
            "journeys url names no host (postgresql://user@HOST/dbname)".into(),
        ));
    }
    if s.pool_size == 0 {
        return Err(LineError::Config(
            "journeys pool_size must be at least 1".into(),
        ));
    }
    if s.lookup_timeout_ms == 0 || s.background_timeout_ms == 0 || s.connect_timeout_ms == 0 {
        return Err(LineError::Config(
            "journeys timeouts must be at least 1 ms".into(),
        ));
    }
    let local = pg.get_hosts().iter().all(host_is_local)
        && pg.get_hostaddrs().iter().all(|a| a.is_loopback());
    match (local, pg.get_ssl_mode()) {
        (false, SslMode::Disable) => {
            let hosts = host_list(&pg);
            return Err(LineError::Config(format!(
                "journeys url has sslmode=disable for {hosts}, which is not on this machine: the \
                 line database is reached over TLS (remove sslmode or set sslmode=require)"
            )));
        }
        // Off this machine TLS is required, never merely preferred: prefer would fall back to
        // plain TCP for a server (or a man in the middle) that declines TLS.
        (false, _) => {
            pg.ssl_mode(SslMode::Require);
        }
        // On this machine the traffic never leaves the kernel; prefer (the default, and what
        // a local server with Debian's snake-oil certificate would turn into a verification
        // failure) becomes plain. An explicit require is honoured, verified like any other.
        (true, SslMode::Prefer) => {
            pg.ssl_mode(SslMode::Disable);
        }
        (true, _) => {}
    }
    if let Some(path) = &s.password_file {
        pg.password(read_password(path)?);
    }
    pg.connect_timeout(s.connect_timeout());
    // A database that vanished mid-connection (power cut, cable) is noticed by the kernel
    // instead of a read that waits forever.
    pg.keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(s.connect_timeout().max(Duration::from_secs(5)));
    pg.application_name(format!("tapgate-{}", s.station));
    let tls = Arc::new(tls_config(s.ca_file.as_deref())?);
    Ok(Connection { pg, local, tls })
}

fn host_list(pg: &tokio_postgres::Config) -> String {
    pg.get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(n) => n.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads the password file: its content less one trailing line break.
fn read_password(path: &Path) -> Result<Vec<u8>, LineError> {
    let mut bytes = std::fs::read(path).map_err(|e| {
        LineError::Config(format!(
            "journeys password_file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(LineError::Config(format!(
            "journeys password_file {} is empty",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The TLS client configuration: ring as the crypto provider (already tapgate's), roots from
/// `ca_file` or else the bundled web roots. rustls always verifies the chain and the host name
/// (an IP address host is matched against the certificate's IP SANs).
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, LineError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                LineError::Config(format!(
                    "journeys ca_file {}: cannot read it: {e}",
                    path.display()
                ))
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    LineError::Config(format!(
                        "journeys ca_file {}: not a PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    LineError::Config(format!(
                        "journeys ca_file {}: unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(LineError::Config(format!(
                    "journeys ca_file {} holds no certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LineError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> LineSettings {
        LineSettings::new(url, "BLM")
    }

    fn err(url: &str) -> String {
        match connection(&settings(url)) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_url_carrying_a_password_is_refused_without_echoing_it() {
        for url in [
            "postgresql://tapgate:s3cr3t@db.line1.example/tapgate",
            "host=db.line1.example user=tapgate password=s3cr3t dbname=tapgate",
            "postgresql://tapgate@127.0.0.1/tapgate?password=s3cr3t",
        ] {
            let e = err(url);
            assert!(e.contains("carries a password"), "{e}");
            assert!(e.contains("password_file"), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn a_remote_host_always_gets_verified_tls() {
        for url in [
            "postgresql://tapgate@db.line1.example/tapgate",
            "postgresql://tapgate@db.line1.example/tapgate?sslmode=prefer",
            "postgresql://tapgate@10.1.2.3/tapgate?sslmode=require",
            // One remote host among local ones is enough.
            "postgresql://tapgate@127.0.0.1:5432,db2.example:5432/tapgate",
            // A name that looks local is still a name.
            "postgresql://tapgate@localhost.example/tapgate",
        ] {
            let c = connection(&settings(url)).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!c.local, "{url}");
            assert_eq!(c.pg.get_ssl_mode(), SslMode::Require, "{url}");
        }
    }

    #[test]
    fn plain_tcp_to_a_remote_host_is_refused() {
        let e = err("postgresql://tapgate@db.line1.example/tapgate?sslmode=disable");
        assert!(e.contains("sslmode=disable"), "{e}");
        assert!(e.contains("db.line1.example"), "{e}");
    }

    #[test]
    fn loopback_and_unix_sockets_may_go_plain() {
        for url in [
            "postgresql://tapgate@127.0.0.1:5433/tapgate",
            "postgresql://tapgate@[::1]:5433/tapgate",
            "postgresql://tapgate@localhost/tapgate",
            "host=/run/postgresql user=tapgate dbname=tapgate",
        ] {
            let c = connection(&settings(url)).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(c.local, "{url}");
            assert_eq!(c.pg.get_ssl_mode(), SslMode::Disable, "{url}");
        }
        // An explicit require on loopback is kept (and verified).
        let c = connection(&settings(
            "postgresql://tapgate@127.0.0.1/tapgate?sslmode=require",
        ))
        .unwrap();
        assert_eq!(c.pg.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn the_password_comes_from_its_file_less_the_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let mut s = settings("postgresql://tapgate@127.0.0.1/tapgate");
        s.password_file = Some(path.clone());
        let c = connection(&s).unwrap();
        assert_eq!(c.pg.get_password(), Some(&b"s3cr3t"[..]));
        assert!(!format!("{c:?}").contains("s3cr3t"));

        std::fs::write(&path, "\n").unwrap();
        let e = connection(&s).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        s.password_file = Some(dir.path().join("missing"));
        let e = connection(&s).unwrap_err().to_string();
        assert!(e.contains("cannot read it"), "{e}");
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn a_url_without_user_or_host_or_with_a_bad_ca_file_is_refused() {
        assert!(err("postgresql://127.0.0.1/tapgate").contains("no user"));
        assert!(err("user=tapgate dbname=tapgate").contains("no host"));
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let mut s = settings("postgresql://tapgate@db.example/tapgate");
        s.ca_file = Some(ca);
        let e = connection(&s).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
