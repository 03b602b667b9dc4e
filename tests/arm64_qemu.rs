//! The gate controllers are ARM: this tier cross-builds the arm64 Debian package and runs what
//! it installs on an emulated aarch64 machine.
//!
//! 1. `cargo deb --target aarch64-unknown-linux-gnu` (release profile, as shipped; set
//!    `TAPGATE_ARM64_PROFILE=dev` for a quicker debug package) into `target/qemu-arm64/deb/`,
//!    and checks the package: architecture arm64, an aarch64 binary, its dependencies.
//! 2. Boots Debian's arm64 kernel (`tests/qemu/fetch-arm64-kernel.sh`, cached under
//!    `target/qemu-arm64/kernel/`) under `qemu-system-aarch64` (software emulation: qemu-user
//!    7.2 hangs on the first thread a program spawns) with an initramfs holding the package's
//!    files as `dpkg -i` would lay them out, the arm64 shared libraries the binary needs (found
//!    with `readelf`, from Debian's arm64 multiarch packages) and
//!    `tests/qemu/arm64_smoke_init.rs` as PID 1 — and no time zone database, as on minimal
//!    controller images: the station's zone resolves from the copy built into the binary.
//! 3. The init runs `tapgate decode`, `tapgate check-config /etc/tapgate/tapgate.toml` and
//!    `tapgate demo`, and prints each one's output and exit code on the serial console; this
//!    test asserts on them.
//!
//! Needs (scripts/install-deps.sh test installs them): the `aarch64-unknown-linux-gnu` Rust
//! target, `gcc-aarch64-linux-gnu`, `libc6-dev-arm64-cross`, `libpcsclite-dev:arm64`,
//! `qemu-system-arm`, cargo-deb, and arm64 in dpkg's architectures with a fresh package list
//! (the kernel is fetched with `apt-get download`). Without them the test fails; set
//! `TAPGATE_SKIP_ARM64=1` to skip it on purpose. The linker and pkg-config settings for the
//! target are in `.cargo/config.toml`.

#[path = "support/qemu.rs"]
mod qemu;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapgate::cpm::build::{payload, PayloadSpec};

const TARGET: &str = "aarch64-unknown-linux-gnu";
/// Where Debian's arm64 multiarch packages (libc6:arm64, libpcsclite1:arm64, libgcc-s1:arm64)
/// and the cross toolchain's copy of the C library put the shared libraries.
const LIB_DIRS: &[&str] = &[
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/aarch64-linux-gnu/lib",
];
const WALLET_PAN: &str = "9360091230000012345";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { repo().join(p) })
        .unwrap_or_else(|| repo().join("target"))
}

/// Runs `cmd`; panics with its output when it cannot start or fails. Returns stdout.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Everything the tier needs, each missing part named with how to install it.
fn missing_parts() -> Vec<String> {
    let mut missing = Vec::new();
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if sysroot.is_empty()
        || !Path::new(&sysroot)
            .join("lib/rustlib")
            .join(TARGET)
            .is_dir()
    {
        missing.push(format!(
            "the Rust std for {TARGET}: rustup target add {TARGET}"
        ));
    }
    if !works("aarch64-linux-gnu-gcc", &["--version"]) {
        missing.push("aarch64-linux-gnu-gcc: apt-get install gcc-aarch64-linux-gnu".into());
    }
    if !works("aarch64-linux-gnu-readelf", &["--version"]) {
        missing
            .push("aarch64-linux-gnu-readelf: apt-get install binutils-aarch64-linux-gnu".into());
    }
    if !Path::new("/usr/aarch64-linux-gnu/lib/libc.a").exists() {
        missing.push("the static arm64 C library: apt-get install libc6-dev-arm64-cross".into());
    }
    if !Path::new("/usr/lib/aarch64-linux-gnu/pkgconfig/libpcsclite.pc").exists() {
        missing.push(
            "libpcsclite for arm64: dpkg --add-architecture arm64 && apt-get update && \
             apt-get install --no-install-recommends libpcsclite-dev:arm64"
                .into(),
        );
    }
    if !works("qemu-system-aarch64", &["--version"]) {
        missing.push("qemu-system-aarch64: apt-get install qemu-system-arm".into());
    }
    if !works("cargo", &["deb", "--version"]) {
        missing.push("cargo-deb: cargo install cargo-deb --locked".into());
    }
    missing
}

/// `cargo deb` for the target into `dir` (emptied first); returns the package and the seconds
/// the build took.
fn build_deb(dir: &Path) -> (PathBuf, f64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create deb dir");
    let profile = std::env::var("TAPGATE_ARM64_PROFILE").unwrap_or_else(|_| "release".into());
    let start = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        Command::new(cargo)
            .current_dir(repo())
            .env("CARGO_TARGET_DIR", target_dir())
            .args(["deb", "--target", TARGET, "--profile", &profile, "--output"])
            .arg(dir),
        "cargo deb --target aarch64-unknown-linux-gnu",
    );
    let secs = start.elapsed().as_secs_f64();
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read deb dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "expected one .deb in {}: {debs:?}",
        dir.display()
    );
    (debs[0].clone(), secs)
}

/// The package's metadata and contents, then its files laid out under `root`.
fn check_and_extract_deb(deb: &Path, root: &Path) {
    let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(name.ends_with("_arm64.deb"), "{name}: not named for arm64");
    let info = run(Command::new("dpkg-deb").arg("-I").arg(deb), "dpkg-deb -I");
    let field = |f: &str| {
        info.lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{f}: ")))
            .unwrap_or_else(|| panic!("no {f} in:\n{info}"))
            .to_string()
    };
    assert_eq!(field("Package"), "tapgate", "{info}");
    assert_eq!(field("Architecture"), "arm64", "{info}");
    let depends = field("Depends");
    // $auto resolved against the arm64 libraries, plus the declared ones.
    for dep in ["libc6", "libpcsclite1", "pcscd", "systemd"] {
        assert!(depends.contains(dep), "{dep} not in Depends: {depends}");
    }
    let list = run(Command::new("dpkg-deb").arg("-c").arg(deb), "dpkg-deb -c");
    for want in [
        "./usr/bin/tapgate",
        "./etc/tapgate/tapgate.toml",
        "./usr/lib/udev/rules.d/60-tapgate.rules",
        "./usr/lib/sysusers.d/tapgate.conf",
    ] {
        assert!(
            list.lines()
                .any(|l| l.split_whitespace().nth(5) == Some(want)),
            "{want} not in the .deb:\n{list}"
        );
    }
    let _ = std::fs::remove_dir_all(root);
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(root),
        "dpkg-deb -x",
    );
    let bin = std::fs::read(root.join("usr/bin/tapgate")).expect("read the packaged binary");
    // ELF header: class 64-bit (byte 4 = 2), little-endian (5 = 1), e_machine EM_AARCH64 (183).
    assert!(
        bin.len() > 20 && &bin[..4] == b"\x7fELF" && bin[4] == 2 && bin[5] == 1,
        "usr/bin/tapgate is not a 64-bit little-endian ELF file"
    );
    assert_eq!(
        u16::from_le_bytes([bin[18], bin[19]]),
        183,
        "usr/bin/tapgate is not an aarch64 binary"
    );
}

/// The static init, built with rustc alone (it needs nothing but std).
fn build_init(out: &Path) {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    run(
        Command::new(rustc)
            .args(["--edition", "2021", "--target", TARGET])
            .args(["-C", "linker=aarch64-linux-gnu-gcc"])
            .args(["-C", "target-feature=+crt-static", "-C", "opt-level=1"])
            .args(["-C", "strip=symbols", "-o"])
            .arg(out)
            .arg(repo().join("tests/qemu/arm64_smoke_init.rs")),
        "rustc tests/qemu/arm64_smoke_init.rs",
    );
}

/// `readelf` on an aarch64 file: its interpreter (if any) and the libraries it needs.
fn elf_needs(file: &Path) -> (Option<String>, Vec<String>) {
    let headers = run(
        Command::new("aarch64-linux-gnu-readelf")
            .args(["-W", "-l", "-d"])
            .arg(file),
        "aarch64-linux-gnu-readelf",
    );
    let mut interp = None;
    let mut needed = Vec::new();
    for line in headers.lines() {
        if let Some(rest) = line.split("[Requesting program interpreter: ").nth(1) {
            interp = Some(rest.trim_end_matches(']').to_string());
        }
        if line.contains("(NEEDED)") {
            if let Some(lib) = line.split('[').nth(1) {
                needed.push(lib.trim_end_matches(']').to_string());
            }
        }
    }
    (interp, needed)
}

fn find_lib(name: &str) -> PathBuf {
    LIB_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} (needed by the arm64 binary) is in none of {LIB_DIRS:?}"))
}

/// The interpreter and every shared library `binary` needs, transitively: (path inside the
/// VM, file on this machine).
fn shared_libraries(binary: &Path) -> BTreeMap<String, PathBuf> {
    let mut files = BTreeMap::new();
    let (interp, needed) = elf_needs(binary);
    let interp = interp.expect("the packaged binary is dynamically linked");
    let interp_name = Path::new(&interp)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("interpreter file name")
        .to_string();
    files.insert(interp.clone(), find_lib(&interp_name));
    let mut queue = needed;
    let mut seen = BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let host = find_lib(&name);
        queue.extend(elf_needs(&host).1);
        // One of the loader's built-in search directories on Debian arm64.
        files.insert(format!("/lib/aarch64-linux-gnu/{name}"), host);
    }
    files
}

/// A `newc` cpio archive (what the kernel unpacks as initramfs), written without root: device
/// nodes are entries, not files on this machine.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// `path`'s parent directories, each once.
    fn parents(&mut self, path: &str) {
        let mut at = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for p in &parts[..parts.len() - 1] {
            at = format!("{at}/{p}");
            self.dir(&at.clone());
        }
    }

    fn dir(&mut self, path: &str) {
        if self.dirs.insert(path.to_string()) {
            self.parents(path);
            self.entry(path, 0o040755, (0, 0), &[]);
        }
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        self.parents(path);
        self.entry(path, 0o100000 | mode, (0, 0), data);
    }

    fn symlink(&mut self, path: &str, to: &str) {
        self.parents(path);
        self.entry(path, 0o120777, (0, 0), to.as_bytes());
    }

    fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.parents(path);
        self.entry(path, 0o020000 | mode, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// Debian's merged /usr: `/lib/x` is `/usr/lib/x` (the archive has `/lib` as a link, and an
/// entry under it as a directory would replace the link).
fn merged_usr(path: &str) -> String {
    for top in ["/lib", "/bin", "/sbin"] {
        if path == top || path.starts_with(&format!("{top}/")) {
            return format!("/usr{path}");
        }
    }
    path.to_string()
}

/// Adds the tree under `root` (the extracted package) at `/` in the archive.
fn add_tree(cpio: &mut Cpio, root: &Path, at: &Path) {
    let mut entries: Vec<_> = std::fs::read_dir(at)
        .expect("read extracted package")
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let inside = merged_usr(&format!(
            "/{}",
            path.strip_prefix(root).expect("under root").display()
        ));
        let meta = std::fs::symlink_metadata(&path).expect("stat extracted file");
        if meta.is_dir() {
            cpio.dir(&inside);
            add_tree(cpio, root, &path);
        } else if meta.file_type().is_symlink() {
            let to = std::fs::read_link(&path).expect("read symlink");
            cpio.symlink(&inside, &to.to_string_lossy());
        } else {
            use std::os::unix::fs::PermissionsExt as _;
            let data = std::fs::read(&path).expect("read extracted file");
            cpio.file(&inside, &data, meta.permissions().mode() & 0o7777);
        }
    }
}

fn build_initramfs(root: &Path, init: &Path, plan: &str, out: &Path) {
    let mut cpio = Cpio::default();
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.dir("/dev");
    cpio.char_dev("/dev/console", 0o600, 5, 1);
    cpio.char_dev("/dev/null", 0o666, 1, 3);
    for d in ["/proc", "/sys", "/tmp", "/root", "/run", "/var/lib/tapgate"] {
        cpio.dir(d);
    }
    // Debian's merged /usr: /bin, /lib are links into /usr.
    for top in ["bin", "lib", "sbin"] {
        cpio.dir(&format!("/usr/{top}"));
        cpio.symlink(&format!("/{top}"), &format!("usr/{top}"));
    }
    add_tree(&mut cpio, root, root);
    for (inside, host) in shared_libraries(&root.join("usr/bin/tapgate")) {
        let inside = merged_usr(&inside);
        let data = std::fs::read(&host).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
        cpio.file(&inside, &data, 0o755);
    }
    // No /usr/share/zoneinfo, as on many Buildroot/Yocto controller images: the station's
    // zone must resolve from the database built into the binary.
    let init = std::fs::read(init).expect("read init");
    cpio.file("/init", &init, 0o755);
    cpio.file("/smoke/plan", plan.as_bytes(), 0o644);
    std::fs::write(out, cpio.finish()).expect("write initramfs");
}

/// Boots the VM and returns its console output. Panics if it does not power off in `limit`.
fn boot(kernel: &Path, initrd: &Path, limit: Duration) -> String {
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd
        // pauth-impdef: the kernel signs return addresses; QEMU's default (architected QARMA)
        // pointer authentication makes every kernel function call several times slower.
        .args([
            "-machine",
            "virt",
            "-cpu",
            "max,pauth-impdef=on",
            "-smp",
            "2",
        ])
        .args(["-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyAMA0 panic=-1 quiet rdinit=/init"]);
    qemu::run_to_poweroff(cmd, limit).replace('\r', "")
}

/// One smoke command's result, read back from the console.
struct Step {
    exit: String,
    secs: f64,
    output: Vec<String>,
}

fn parse_steps(console: &str) -> BTreeMap<String, Step> {
    let mut steps = BTreeMap::new();
    for line in console.lines() {
        if let Some(rest) = line.strip_prefix("SMOKE END ") {
            let mut it = rest.split_whitespace();
            let name = it.next().unwrap_or_default().to_string();
            let mut exit = String::new();
            let mut secs = 0.0;
            for kv in it {
                if let Some(v) = kv.strip_prefix("exit=") {
                    exit = v.to_string();
                } else if let Some(v) = kv.strip_prefix("secs=") {
                    secs = v.parse().unwrap_or(0.0);
                }
            }
            let prefix = format!("SMOKE| {name} | ");
            let output = console
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(str::to_string)
                .collect();
            steps.insert(name, Step { exit, secs, output });
        }
    }
    steps
}

#[test]
fn arm64_package_runs_on_an_emulated_aarch64_controller() {
    if std::env::var("TAPGATE_SKIP_ARM64").as_deref() == Ok("1") {
        eprintln!("TAPGATE_SKIP_ARM64=1: arm64 cross-build and emulation tier skipped on purpose");
        return;
    }
    let missing = missing_parts();
    assert!(
        missing.is_empty(),
        "the arm64 tier cannot run; missing:\n  {}\n(scripts/install-deps.sh test installs them, \
         or set TAPGATE_SKIP_ARM64=1 to skip this tier on purpose)",
        missing.join("\n  ")
    );

    let work = target_dir().join("qemu-arm64");
    std::fs::create_dir_all(&work).expect("create work dir");
    let (deb, build_secs) = build_deb(&work.join("deb"));
    let deb_size = std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "arm64: {} ({deb_size} bytes) built in {build_secs:.1} s",
        deb.display()
    );
    let root = work.join("root");
    check_and_extract_deb(&deb, &root);

    let kernel = {
        let out = run(
            Command::new("bash")
                .arg(repo().join("tests/qemu/fetch-arm64-kernel.sh"))
                .env("CARGO_TARGET_DIR", target_dir()),
            "tests/qemu/fetch-arm64-kernel.sh",
        );
        PathBuf::from(out.lines().last().unwrap_or_default().trim())
    };
    let init = work.join("init");
    build_init(&init);

    let wallet = payload(&PayloadSpec::new(WALLET_PAN).with_name("SITI RAHAYU"));
    let plan = [
        format!("decode\t300\t/usr/bin/tapgate\tdecode\t--json\t{wallet}"),
        "check-config\t300\t/usr/bin/tapgate\tcheck-config\t/etc/tapgate/tapgate.toml".into(),
        "demo\t900\t/usr/bin/tapgate\tdemo".into(),
    ]
    .join("\n");
    let initrd = work.join("initramfs.cpio");
    build_initramfs(&root, &init, &plan, &initrd);

    let start = Instant::now();
    let console = boot(&kernel, &initrd, Duration::from_secs(1500));
    let boot_secs = start.elapsed().as_secs_f64();
    let steps = parse_steps(&console);
    for (name, s) in &steps {
        println!(
            "== arm64: tapgate {name}: exit {} in {:.1} s",
            s.exit, s.secs
        );
        for l in &s.output {
            println!("   {l}");
        }
    }
    eprintln!("arm64: VM boot, smoke commands and power-off took {boot_secs:.1} s");

    let uname = console
        .lines()
        .find_map(|l| l.strip_prefix("SMOKE UNAME "))
        .unwrap_or_else(|| panic!("the init never ran; console:\n{console}"));
    assert!(
        uname.ends_with(" aarch64"),
        "not an aarch64 machine: {uname}"
    );
    assert!(
        console.lines().any(|l| l == "SMOKE LO up"),
        "loopback not up; console:\n{console}"
    );
    assert!(
        console.lines().any(|l| l == "SMOKE DONE 3 commands"),
        "the init did not finish its plan; console:\n{console}"
    );
    let step = |name: &str| {
        let s = steps
            .get(name)
            .unwrap_or_else(|| panic!("no result for {name}; console:\n{console}"));
        assert_eq!(
            s.exit,
            "0",
            "tapgate {name} on arm64 exited {}:\n{}",
            s.exit,
            s.output.join("\n")
        );
        s.output.join("\n")
    };

    let decode = step("decode");
    let v: serde_json::Value = serde_json::from_str(decode.trim())
        .unwrap_or_else(|e| panic!("decode --json printed no JSON object ({e}):\n{decode}"));
    assert_eq!(v["valid"], true, "{decode}");
    assert_eq!(v["nns"], "93600912", "{decode}");
    assert_eq!(v["pan_masked"], "93600912*******2345", "{decode}");
    assert!(!decode.contains(WALLET_PAN), "full PAN printed:\n{decode}");

    let check = step("check-config");
    assert!(
        check.contains("/etc/tapgate/tapgate.toml: ok"),
        "check-config did not say ok:\n{check}"
    );

    let demo = step("demo");
    for want in [
        "tapgate demo: ",
        "0 mismatches; 0 not final; 0 SNAP protocol violations",
    ] {
        assert!(
            demo.contains(want),
            "{want:?} not in the demo's output:\n{demo}"
        );
    }
}
