//! The Debian package: `cargo deb` builds it (the debug build in the suite), `dpkg-deb` shows what it holds,
//! and `dpkg -i` / `dpkg -r` / `dpkg -P` run in a throwaway root: an overlay of this machine's
//! root on a tmpfs, inside `unshare -m`, so nothing lands on the real root.
//!
//! It needs `cargo-deb` (scripts/test.sh installs it: `cargo install cargo-deb --locked`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_deb(out_dir: &Path) -> PathBuf {
    let have = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have,
        "cargo-deb is missing: cargo install cargo-deb --locked"
    );
    // The suite packages the debug build it already has (the contents and scripts are what is
    // checked); a release package is `cargo deb` with no profile.
    let profile = std::env::var("TAPGATE_DEB_PROFILE").unwrap_or_else(|_| "dev".into());
    run(Command::new("cargo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["deb", "--profile", &profile, "--output"])
        .arg(out_dir));
    let debs: Vec<PathBuf> = std::fs::read_dir(out_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs[0].clone()
}

/// What the throwaway root checks, in order; each prints `ok NAME` or `FAIL NAME: why`.
const IN_ROOT: &str = r##"
check() { name=$1; shift; if "$@" >/tmp/check.out 2>&1; then echo "ok $name"; else echo "FAIL $name: $(cat /tmp/check.out)"; fi; }
gone() { ! test -e "$1"; }
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
test -d /run/systemd/system && echo "FAIL no-systemd: systemd is running here"
check install dpkg -i /root/tapgate.deb
check bin test -x /usr/bin/tapgate
check unit sh -c 'test -f /lib/systemd/system/tapgate.service || test -f /usr/lib/systemd/system/tapgate.service'
check sysusers test -f /usr/lib/sysusers.d/tapgate.conf
check udev test -f /usr/lib/udev/rules.d/60-tapgate.rules
check config test -f /etc/tapgate/tapgate.toml
check docs test -f /usr/share/doc/tapgate/operations.md
check user sh -c 'getent passwd tapgate | grep -q ":/var/lib/tapgate:/usr/sbin/nologin$"'
check gpio-group sh -c 'getent group gpio | grep -q "[:,]tapgate$"'
check enabled test -L /etc/systemd/system/multi-user.target.wants/tapgate.service
# What the unit runs first, as the unit's user, on the installed example config.
check check-config runuser -u tapgate -- /usr/bin/tapgate check-config /etc/tapgate/tapgate.toml
check binary-runs /usr/bin/tapgate --version
echo "# edited" >> /etc/tapgate/tapgate.toml
check remove dpkg -r tapgate
check removed-bin gone /usr/bin/tapgate
check removed-unit sh -c '! test -e /lib/systemd/system/tapgate.service && ! test -e /usr/lib/systemd/system/tapgate.service'
check removed-udev gone /usr/lib/udev/rules.d/60-tapgate.rules
check removed-sysusers gone /usr/lib/sysusers.d/tapgate.conf
check conffile-kept test -f /etc/tapgate/tapgate.toml
check purge dpkg -P tapgate
check purged-conffile gone /etc/tapgate/tapgate.toml
check purged-enable-link sh -c '! test -L /etc/systemd/system/multi-user.target.wants/tapgate.service'
check purged-status sh -c '! dpkg -s tapgate'
"##;

#[test]
fn deb_contents_install_and_removal() {
    let installed_before = Path::new("/usr/lib/sysusers.d/tapgate.conf").exists();
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path());

    let list = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let paths: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for want in [
        "./usr/bin/tapgate",
        "./usr/lib/sysusers.d/tapgate.conf",
        "./usr/lib/udev/rules.d/60-tapgate.rules",
        "./etc/tapgate/tapgate.toml",
        "./usr/share/doc/tapgate/operations.md",
    ] {
        assert!(paths.contains(&want), "{want} not in the .deb:\n{list}");
    }
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("/systemd/system/tapgate.service")),
        "no unit in the .deb:\n{list}"
    );

    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: tapgate"), "{info}");
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends in:\n{info}"));
    for dep in ["pcscd", "systemd"] {
        assert!(depends.contains(dep), "{depends}");
    }

    // Maintainer scripts: present, valid sh, doing what the unit needs.
    let control = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/tapgate/tapgate.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(!postinst.contains("#DEBHELPER#"), "snippets not filled in");
    assert!(postinst.contains("systemd-sysusers"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-helper enable tapgate.service"),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let p = control.join(script);
        if p.exists() {
            run(Command::new("sh").arg("-n").arg(&p));
        }
    }

    // dpkg -i, -r, -P in a throwaway root without systemd running.
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let script = format!(
        "set -e\n\
         mount -t tmpfs -o size=1g tmpfs {r}\n\
         mkdir {r}/u {r}/w {r}/m\n\
         mount -t overlay overlay -o lowerdir=/,upperdir={r}/u,workdir={r}/w {r}/m\n\
         mount -t proc proc {r}/m/proc\n\
         mount -t tmpfs tmpfs {r}/m/run\n\
         cp {deb} {r}/m/root/tapgate.deb\n\
         chroot {r}/m sh -c '{inner}'\n",
        r = root.display(),
        deb = deb.display(),
        inner = IN_ROOT.replace('\'', "'\\''"),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "{}\n{stdout}\n{stderr}",
        failed.join("\n")
    );
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(
        passed,
        IN_ROOT.lines().filter(|l| l.starts_with("check ")).count(),
        "{stdout}"
    );
    // The real root was not touched.
    assert_eq!(
        Path::new("/usr/lib/sysusers.d/tapgate.conf").exists(),
        installed_before,
        "the real root changed"
    );
}
