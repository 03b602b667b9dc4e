//! Runs a qemu-system VM to completion for the emulated tiers (gpio-sim, arm64).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `qemu` (a qemu-system command with its machine, kernel and initramfs arguments),
/// waits for the VM to power off and returns its serial console. Panics with the console so far
/// if it does not power off within `limit`; qemu's stderr, if any, is printed.
pub fn run_to_poweroff(mut qemu: Command, limit: Duration) -> String {
    let name = qemu.get_program().to_string_lossy().into_owned();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        lines.join("\n")
    });
    let start = Instant::now();
    loop {
        match child.try_wait().expect("wait for qemu") {
            Some(_) => break,
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                let console = reader.join().unwrap_or_default();
                panic!("the {name} VM did not power off within {limit:?}; console:\n{console}");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let console = reader.join().unwrap_or_default();
    if !err.trim().is_empty() {
        eprintln!("qemu stderr:\n{err}");
    }
    console
}
