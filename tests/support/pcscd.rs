//! Starts and stops a real `pcscd` for the reader tests, by PID.
//!
//! There is one pcscd per machine (its socket and pid file are fixed paths), so tests that use
//! it must run one at a time, and none may run while a pcscd not started here is alive.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The reader Debian's vsmartcard-vpcd configures on port 35963.
pub const VPCD_READER: &str = "Virtual PCD 00 00";

const PID_FILE: &str = "/run/pcscd/pcscd.pid";

/// The pcscd binary, if installed.
pub fn binary() -> Option<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/sbin/pcscd"),
        PathBuf::from("/usr/local/sbin/pcscd"),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("pcscd")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Whether vsmartcard's vpcd driver is configured for pcscd.
pub fn vpcd_configured() -> bool {
    Path::new("/etc/reader.conf.d/vpcd").is_file()
}

/// Whether the pcscd + vpcd tier runs. It runs when both are installed; when either is missing
/// the test fails, unless `TAPGATE_SKIP_PCSC=1` asks to skip the tier on purpose (printed).
pub fn tier_available() -> bool {
    if std::env::var("TAPGATE_SKIP_PCSC").as_deref() == Ok("1") {
        eprintln!("TAPGATE_SKIP_PCSC=1: pcscd + vpcd tier skipped on purpose");
        return false;
    }
    assert!(
        binary().is_some() && vpcd_configured(),
        "pcscd or vsmartcard-vpcd is not installed: scripts/install-deps.sh test installs them \
         (or set TAPGATE_SKIP_PCSC=1 to skip this tier on purpose)"
    );
    true
}

/// A pcscd child process.
pub struct Pcscd {
    child: Option<Child>,
    log: PathBuf,
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A pcscd this test run did not start, if one is running.
fn foreign_pcscd() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(PID_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (alive(pid) && comm.trim() == "pcscd").then_some(pid)
}

impl Pcscd {
    /// Starts `pcscd --foreground`, logging to `log`, and waits until its vpcd reader is listed.
    pub fn start(log: &Path) -> Pcscd {
        if let Some(pid) = foreign_pcscd() {
            panic!(
                "a pcscd not started by these tests is running (pid {pid}); \
                 stop it first: the reader tests need the machine's only pcscd"
            );
        }
        let bin = binary().expect("pcscd binary");
        let out: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("pcscd log file");
        let err = out.try_clone().expect("pcscd log file");
        let mut cmd = Command::new(bin);
        cmd.arg("--foreground");
        if std::env::var_os("TAPGATE_PCSCD_DEBUG").is_some() {
            cmd.args(["--debug", "--apdu"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn pcscd");
        let mut me = Pcscd {
            child: Some(child),
            log: log.to_owned(),
        };
        me.wait_ready(Duration::from_secs(10));
        me
    }

    fn wait_ready(&mut self, within: Duration) {
        let until = Instant::now() + within;
        loop {
            if let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) {
                if let Ok(names) = ctx.list_readers_owned() {
                    if names.iter().any(|n| n.to_string_lossy() == VPCD_READER) {
                        return;
                    }
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "pcscd exited during start-up ({status}); log:\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < until,
                "pcscd did not list {VPCD_READER:?} within {within:?} (is vsmartcard-vpcd \
                 installed?); log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as in a crash; waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if pcscd has not exited within 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: signalling our own child by its PID.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.stop();
    }
}
