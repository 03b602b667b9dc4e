//! A throwaway PostgreSQL cluster for the line-store tests and bench: `initdb` and `pg_ctl`
//! from Debian's `postgresql` package in a temporary directory, on a free loopback port, with
//! password (SCRAM) authentication so that the password file is exercised. Run as root, the
//! cluster runs as the `postgres` user (PostgreSQL refuses root), which owns the directory.
//! Stopped, by its own pid file, when dropped.
//!
//! When `initdb` is missing the caller FAILS, unless `TAPGATE_SKIP_PG=1`: then [`PgCluster::start`]
//! prints that it skipped and returns `None`.

#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tapgate::line::LineSettings;

/// The cluster's superuser, whose password is in [`PgCluster::password_file`].
pub const USER: &str = "tapgate";

/// A running (or stopped, see [`PgCluster::stop`]) cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    run_as: Option<(u32, u32)>,
    opts: String,
    frozen: bool,
}

/// Where `initdb` and `pg_ctl` are: the newest /usr/lib/postgresql/N/bin, else the PATH.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
}

fn skipping() -> bool {
    std::env::var("TAPGATE_SKIP_PG").is_ok_and(|v| v == "1")
}

/// The uid and gid of a user, from the password database.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns NULL or a pointer to a static record, read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null, as above.
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}

impl PgCluster {
    /// A new cluster, started. `durable: false` turns fsync off (tests); `true` keeps
    /// PostgreSQL's defaults (the bench). `None` only when skipped (see the module docs).
    pub fn start(durable: bool) -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            if skipping() {
                eprintln!(
                    "SKIPPED: PostgreSQL's initdb not found (TAPGATE_SKIP_PG=1); the line-store \
                     tier did not run"
                );
                return None;
            }
            panic!(
                "PostgreSQL's initdb not found in /usr/lib/postgresql/*/bin or on the PATH: \
                 install it (scripts/install-deps.sh test) or set TAPGATE_SKIP_PG=1 to skip \
                 the line-store tier"
            );
        };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = if root {
            Some(
                user_ids("postgres")
                    .or_else(|| user_ids("nobody"))
                    .expect("running as root: need the postgres (or nobody) user to run initdb"),
            )
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("tapgate-pg-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("sock")).expect("socket dir");
        std::fs::write(dir.path().join("pw"), "line-test-password\n").expect("password file");
        if let Some((uid, gid)) = run_as {
            for p in [dir.path(), &dir.path().join("sock"), &dir.path().join("pw")] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }
        let port = free_port();
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=60",
            dir.path().join("sock").display()
        );
        if !durable {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let c = PgCluster {
            dir,
            bin,
            port,
            run_as,
            opts,
            frozen: false,
        };
        let pw = c.password_file();
        let data = c.data_dir();
        c.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                USER.as_ref(),
                "--pwfile".as_ref(),
                pw.as_os_str(),
                "--auth=scram-sha-256".as_ref(),
                "--no-locale".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        c.start_again();
        Some(c)
    }

    /// The password file (also the superuser's password).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("pw")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory (for the tests' own files; owned by the cluster's user).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of database `db` as the superuser, without password.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Line settings for `station` on database `db`, password from the file.
    pub fn settings(&self, db: &str, station: &str) -> LineSettings {
        let mut s = LineSettings::new(self.url(db), station);
        s.password_file = Some(self.password_file());
        s
    }

    /// Runs one of the cluster's programs as the cluster's user; panics with its output on
    /// failure.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let out = self.command(program).args(args).output().expect(program);
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path())
            .env("PGPASSFILE", "/dev/null")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Runs SQL with psql as the superuser on database `db`; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let pw = std::fs::read_to_string(self.password_file()).expect("password");
        let out = self
            .command("psql")
            .env("PGPASSWORD", pw.trim_end())
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A fresh database.
    pub fn create_db(&self, db: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {db}"));
    }

    /// `pg_ctl stop -m fast`: clients are disconnected, new connections refused.
    pub fn stop(&mut self) {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
            ],
        );
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_again(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                self.opts.as_ref(),
            ],
        );
    }

    /// The postmaster and its children, by pid (the pid file, then /proc).
    fn pids(&self) -> Vec<i32> {
        let Ok(pidfile) = std::fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return Vec::new();
        };
        let Some(master) = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![master];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // Fields after the ")" that ends the command name: state, then ppid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(master) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Freezes the whole server (SIGSTOP to the postmaster and every backend): connections
    /// stay open and new ones are accepted by the kernel, but nothing answers, as with a
    /// hung database host.
    pub fn freeze(&mut self) {
        for pid in self.pids() {
            // SAFETY: signalling a pid of our own cluster.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        self.frozen = true;
    }

    /// Undoes [`PgCluster::freeze`].
    pub fn thaw(&mut self) {
        for pid in self.pids() {
            // SAFETY: signalling a pid of our own cluster.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        self.frozen = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.frozen {
            self.thaw();
        }
        let data = self.data_dir();
        if data.join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
