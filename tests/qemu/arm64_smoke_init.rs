//! PID 1 of the arm64 smoke VM (booted by `tests/arm64_qemu.rs` under `qemu-system-aarch64`).
//!
//! A single file with no dependencies beyond std, so the test builds it with `rustc` directly,
//! statically linked for aarch64: it reports even when the package's binary cannot start
//! (a missing shared library, the wrong architecture).
//!
//! Mounts proc, sysfs, devtmpfs and a tmpfs on /tmp, brings the loopback interface up (the demo
//! talks HTTP to its simulator over 127.0.0.1), then runs each command of `/smoke/plan` and
//! prints, on the serial console:
//!
//! ```text
//! SMOKE UNAME Linux 6.1.0-… aarch64
//! SMOKE BEGIN decode
//! SMOKE| decode | <each line the command wrote to stdout or stderr>
//! SMOKE END decode exit=0 secs=1.234
//! SMOKE DONE 3 commands
//! ```
//!
//! then powers the machine off. `exit=timeout` when a command outlived its limit (it is
//! killed), `exit=signal-N` when a signal ended it, `exit=spawn-error` when it could not start.
//!
//! The plan has one command per line, fields separated by tabs:
//! `name<TAB>timeout-seconds<TAB>program<TAB>arg…`.

use std::ffi::CString;
use std::fs::{self, File};
use std::os::raw::{c_char, c_int, c_ulong, c_void};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

extern "C" {
    fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn uname(buf: *mut u8) -> c_int;
    fn sync();
    fn reboot(cmd: c_int) -> c_int;
}

const AF_INET: c_int = 2;
const SOCK_DGRAM: c_int = 2;
const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
const IFF_UP: i16 = 0x1;
const LINUX_REBOOT_CMD_POWER_OFF: c_int = 0x4321_fedc;
/// `struct ifreq` is 40 bytes on 64-bit Linux: a 16-byte name, then a union whose
/// `ifr_flags` (a short) is at its start.
const IFREQ_SIZE: usize = 40;
/// `struct utsname`: six fields of 65 bytes each.
const UTS_FIELD: usize = 65;

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "arm64_smoke_init is the init of the arm64 smoke VM (see tests/arm64_qemu.rs); \
             it mounts filesystems and powers off, so it only runs as pid 1"
        );
        std::process::exit(2);
    }
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/tmp"),
    ] {
        if let Err(e) = mount_fs(fstype, target) {
            println!("SMOKE SETUP-WARN {e}");
        }
    }
    println!("SMOKE UNAME {}", uname_line());
    match loopback_up() {
        Ok(()) => println!("SMOKE LO up"),
        Err(e) => println!("SMOKE LO FAIL {e}"),
    }
    let n = match fs::read_to_string("/smoke/plan") {
        Ok(plan) => {
            let mut n = 0;
            for line in plan.lines().filter(|l| !l.trim().is_empty()) {
                run_step(line);
                n += 1;
            }
            n
        }
        Err(e) => {
            println!("SMOKE SETUP-FAIL reading /smoke/plan: {e}");
            0
        }
    };
    println!("SMOKE DONE {n} commands");
    // SAFETY: plain syscalls with constant arguments; as pid 1 we own the machine.
    unsafe {
        sync();
        reboot(LINUX_REBOOT_CMD_POWER_OFF);
    }
}

fn mount_fs(fstype: &str, target: &str) -> Result<(), String> {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let (s, t, f) = (c(fstype)?, c(target)?, c(fstype)?);
    // SAFETY: valid NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe { mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn uname_line() -> String {
    let mut buf = [0u8; UTS_FIELD * 6];
    // SAFETY: the buffer is the size of struct utsname.
    if unsafe { uname(buf.as_mut_ptr()) } != 0 {
        return format!("unknown ({})", std::io::Error::last_os_error());
    }
    let field = |i: usize| {
        let f = &buf[i * UTS_FIELD..(i + 1) * UTS_FIELD];
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    // sysname, release, machine
    format!("{} {} {}", field(0), field(2), field(4))
}

/// `ip link set lo up`: the kernel creates `lo` down, and nothing else here brings it up.
fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain socket call; the descriptor is closed below.
    let fd = unsafe { socket(AF_INET, SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let mut ifr = [0u8; IFREQ_SIZE];
    ifr[..2].copy_from_slice(b"lo");
    // SAFETY: ifr is a zeroed struct ifreq with the name set; the kernel writes the flags into it.
    let result = if unsafe { ioctl(fd, SIOCGIFFLAGS, ifr.as_mut_ptr()) } != 0 {
        Err(format!(
            "SIOCGIFFLAGS lo: {}",
            std::io::Error::last_os_error()
        ))
    } else {
        let flags = i16::from_ne_bytes([ifr[16], ifr[17]]) | IFF_UP;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: as above; the kernel reads the name and the flags.
        if unsafe { ioctl(fd, SIOCSIFFLAGS, ifr.as_mut_ptr()) } != 0 {
            Err(format!(
                "SIOCSIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ))
        } else {
            Ok(())
        }
    };
    // SAFETY: fd is ours and open.
    unsafe { close(fd) };
    result
}

fn run_step(line: &str) {
    let fields: Vec<&str> = line.split('\t').collect();
    let (name, limit, program, args) = match fields.as_slice() {
        [name, limit, program, args @ ..] => (*name, *limit, *program, args),
        _ => {
            println!("SMOKE PLAN-ERROR bad line {line:?}");
            return;
        }
    };
    let limit = Duration::from_secs(limit.parse().unwrap_or(60));
    println!("SMOKE BEGIN {name}");
    let out_path = format!("/tmp/smoke-{name}.out");
    let start = Instant::now();
    let status = File::create(&out_path)
        .and_then(|f| Ok((f.try_clone()?, f)))
        .map_err(|e| format!("creating {out_path}: {e}"))
        .and_then(|(out, err)| {
            Command::new(program)
                .args(args)
                .current_dir("/tmp")
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("HOME", "/root")
                .env("TMPDIR", "/tmp")
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting {program}: {e}"))
        })
        .map(|mut child| loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if start.elapsed() > limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break None,
            }
        });
    let secs = start.elapsed().as_secs_f64();
    if let Ok(text) = fs::read(&out_path) {
        for l in String::from_utf8_lossy(&text).lines() {
            println!("SMOKE| {name} | {l}");
        }
    }
    let exit = match status {
        Err(e) => {
            println!("SMOKE| {name} | {e}");
            "spawn-error".to_string()
        }
        Ok(None) => "timeout".to_string(),
        Ok(Some(st)) => match (st.code(), st.signal()) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("signal-{s}"),
            (None, None) => "unknown".to_string(),
        },
    };
    println!("SMOKE END {name} exit={exit} secs={secs:.3}");
}
