//! Crash points for the crash-consistency tests: `TAPGATE_FAILPOINT=<name>` makes the process
//! SIGKILL itself when it reaches the point of that name, exactly as a power cut or an OOM kill
//! would stop it there. Compiled only into debug builds; a release build has no such hook.

/// Kills the process with SIGKILL if `TAPGATE_FAILPOINT` names this point.
#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    static WANT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let want = WANT.get_or_init(|| std::env::var("TAPGATE_FAILPOINT").ok());
    if want.as_deref() == Some(name) {
        // SAFETY: kill(2) on our own PID; SIGKILL cannot be caught, so nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Release builds: no crash points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str) {}
