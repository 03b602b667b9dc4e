//! The systemd unit, sysusers file and udev rules as systemd itself reads them: the offline
//! security score, `systemd-analyze verify`, and `systemd-sysusers` into a throwaway root.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn unit_text() -> String {
    std::fs::read_to_string(repo("systemd/tapgate.service")).expect("read the unit")
}

/// The number on systemd-analyze's "Overall exposure level for X: 1.5 OK" line.
fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_line_parses() {
    assert_eq!(
        exposure("x\n→ Overall exposure level for tapgate.service: 1.5 OK 🙂\n"),
        Some(1.5)
    );
    assert_eq!(
        exposure("→ Overall exposure level for a.service: 9.6 UNSAFE 😨"),
        Some(9.6)
    );
    assert_eq!(exposure("no such line"), None);
}

#[test]
fn unit_security_exposure_is_at_most_2() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(repo("systemd/tapgate.service"))
        .output()
        .expect("systemd-analyze is installed (Debian: systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score = exposure(&text).unwrap_or_else(|| {
        panic!(
            "no exposure line in:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

/// `systemd-analyze verify` works offline here (no booted systemd needed). It insists that
/// ExecStart's binary exists, so the installed path is pointed at the freshly built one.
#[test]
fn unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_text().replace("/usr/bin/tapgate", env!("CARGO_BIN_EXE_tapgate"));
    let path = dir.path().join("tapgate.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed:\n{stderr}");
    assert!(
        !stderr.contains("tapgate.service:"),
        "verify complains about the unit:\n{stderr}"
    );
}

#[test]
fn unit_has_the_operating_contract() {
    let unit = unit_text();
    let keys: Vec<(String, String)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = |k: &str| -> Vec<&str> {
        keys.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("NotifyAccess"), ["main"]);
    assert_eq!(get("Restart"), ["always"]);
    assert_eq!(get("StateDirectory"), ["tapgate"]);
    assert_eq!(get("User"), ["tapgate"]);
    assert!(!get("WatchdogSec").is_empty());
    assert!(!get("StartLimitIntervalSec").is_empty());
    assert!(!get("StartLimitBurst").is_empty());
    assert_eq!(
        get("ExecStartPre"),
        ["/usr/bin/tapgate check-config /etc/tapgate/tapgate.toml"]
    );
    // The credentials carry exactly the names the example config uses as relative paths.
    let example = std::fs::read_to_string(repo("config/tapgate.toml")).unwrap();
    let creds: Vec<&str> = get("LoadCredential")
        .iter()
        .filter_map(|v| v.split_once(':').map(|(name, _)| name))
        .collect();
    for key in ["client_secret_file", "private_key_file"] {
        let line = example
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in the example config"));
        let name = line.split('"').nth(1).unwrap();
        assert!(creds.contains(&name), "no LoadCredential= for {name}");
    }
    // The group the udev rules give /dev/gpiochip* to is the unit's supplementary group, and
    // sysusers creates it.
    let rules = std::fs::read_to_string(repo("udev/60-tapgate.rules")).unwrap();
    let gpio_rule = rules
        .lines()
        .find(|l| l.contains("gpiochip") && !l.starts_with('#'))
        .expect("a gpiochip rule");
    let group = gpio_rule
        .split("GROUP=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the rule sets GROUP");
    assert_eq!(get("SupplementaryGroups"), [group]);
    assert!(gpio_rule.contains("TAG+=\"systemd\""));
    for id in ["ATTRS{idProduct}==\"2200\"", "ATTRS{idProduct}==\"223b\""] {
        let l = rules.lines().find(|l| l.contains(id)).expect(id);
        assert!(l.contains("072f") && l.contains("TAG+=\"systemd\""), "{l}");
    }
}

/// systemd-sysusers applied to an empty root creates the user, its home and the gpio group
/// with the user in it.
#[test]
fn sysusers_creates_user_and_group() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo("systemd/tapgate.sysusers"))
        .output()
        .expect("systemd-sysusers is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("tapgate:"))
        .unwrap_or_else(|| panic!("no tapgate user in:\n{passwd}"));
    let f: Vec<&str> = user.split(':').collect();
    assert_eq!(f[5], "/var/lib/tapgate");
    assert_eq!(f[6], "/usr/sbin/nologin");
    let uid: u32 = f[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system user: uid {uid}");
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    let gpio = group
        .lines()
        .find(|l| l.starts_with("gpio:"))
        .unwrap_or_else(|| panic!("no gpio group in:\n{group}"));
    assert!(gpio.ends_with(":tapgate"), "tapgate is not in gpio: {gpio}");
}
