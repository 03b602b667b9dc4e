//! Real-kernel tier for the GPIO backend: boots a small kernel with gpio-sim under
//! `qemu-system-x86_64` whose init is `tests/qemu/gpio_sim_init.rs`, and asserts that every
//! check it prints passed.
//!
//! Builds what it needs, or reuses the cache: the kernel (`tests/qemu/build-kernel.sh`, cached
//! under `target/qemu-kernel/`), the init binary (an example of this crate, built dynamically
//! in the suite's own target dir, whose dependencies are already compiled) and the initramfs
//! (the init plus the shared libraries it needs).
//!
//! Needs `qemu-system-x86`, `linux-source-6.1`, `bc bison flex libelf-dev`. Without them the
//! test fails; set `TAPGATE_SKIP_QEMU=1` to skip it on purpose.

#[path = "support/qemu.rs"]
mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every check the init must report, each exactly once.
const CHECKS: &[&str] = &[
    "line_by_name",
    "pulse_300ms",
    "active_low_output",
    "busy_line_reported",
    "technician_pulse_by_offset",
    "reconfigure_not_rerequest",
    "initial_emergency_active_low",
    "debounce_filters_bounce",
    "bounce_reaches_undebounced_line",
    "edge_order",
    "emergency_free_exit",
    "hold_until_passage",
    "release_hands_level_to_board",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { repo().join(p) })
        .unwrap_or_else(|| repo().join("target"))
}

/// Runs `cmd`, sending its output to `log`; panics with the log's tail when it fails.
fn run_logged(mut cmd: Command, what: &str, log: &Path) -> String {
    let log_file = std::fs::File::create(log).expect("create log file");
    let out = cmd
        .stderr(Stdio::from(log_file))
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    if !out.status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what} failed ({}); last lines of {}:\n{}",
            out.status,
            log.display(),
            tail.join("\n")
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn last_line(s: &str) -> PathBuf {
    PathBuf::from(s.lines().last().unwrap_or_default().trim())
}

fn build_kernel(target: &Path) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("tests/qemu/build-kernel.sh"))
        .env("CARGO_TARGET_DIR", target);
    std::fs::create_dir_all(target.join("qemu-kernel")).expect("create cache dir");
    let out = run_logged(
        cmd,
        "tests/qemu/build-kernel.sh",
        &target.join("qemu-kernel/last-build.log"),
    );
    last_line(&out)
}

fn build_init(target: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // A dynamically linked debug build in the suite's own target dir: its dependencies are
    // already compiled, and build-initramfs.sh packs the shared libraries it needs (a static
    // build would need a second dependency build and static libpcsclite, which Debian lacks).
    cmd.current_dir(repo())
        .args(["build", "--example", "gpio_sim_init"])
        .env("CARGO_TARGET_DIR", target);
    std::fs::create_dir_all(target.join("qemu-init")).expect("create init dir");
    run_logged(
        cmd,
        "cargo build --example gpio_sim_init",
        &target.join("qemu-init/last-build.log"),
    );
    target.join("debug/examples/gpio_sim_init")
}

fn build_initramfs(kernel_dir: &Path, init: &Path, target: &Path) -> PathBuf {
    let out = target.join("qemu-init/initramfs.cpio");
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("tests/qemu/build-initramfs.sh"))
        .arg(kernel_dir.join("gen_init_cpio"))
        .arg(init)
        .arg(&out);
    run_logged(
        cmd,
        "tests/qemu/build-initramfs.sh",
        &target.join("qemu-init/initramfs.log"),
    );
    out
}

/// Boots the VM and returns its console output. Panics if it does not finish in `limit`.
fn boot(kernel: &Path, initrd: &Path, limit: Duration) -> String {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-nographic", "-no-reboot", "-m", "256", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    qemu::run_to_poweroff(cmd, limit)
}

#[test]
fn gpio_backend_against_the_kernels_gpio_sim_under_qemu() {
    if std::env::var("TAPGATE_SKIP_QEMU").as_deref() == Ok("1") {
        eprintln!("TAPGATE_SKIP_QEMU=1: gpio-sim tier skipped on purpose");
        return;
    }
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        matches!(qemu, Ok(s) if s.success()),
        "qemu-system-x86_64 is missing: apt-get install qemu-system-x86 \
         (or set TAPGATE_SKIP_QEMU=1 to skip this tier on purpose)"
    );

    let target = target_dir();
    let kernel_dir = build_kernel(&target);
    let init = build_init(&target);
    let initrd = build_initramfs(&kernel_dir, &init, &target);
    let console = boot(
        &kernel_dir.join("bzImage"),
        &initrd,
        Duration::from_secs(300),
    );

    let checks: Vec<&str> = console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("CHECK "))
        .collect();
    for c in &checks {
        println!("{c}");
    }
    assert!(
        console.contains("CHECKS DONE"),
        "the init did not finish its checks; console:\n{console}"
    );
    let failed: Vec<&&str> = checks.iter().filter(|l| !l.contains(" PASS ")).collect();
    assert!(
        failed.is_empty(),
        "failed checks: {failed:#?}\nconsole:\n{console}"
    );
    for name in CHECKS {
        let n = checks
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some(name))
            .count();
        assert_eq!(n, 1, "check {name} reported {n} times; console:\n{console}");
    }
    assert_eq!(checks.len(), CHECKS.len(), "unexpected checks: {checks:#?}");
}
