//! The layers, checked on the crate graph itself (`cargo tree`): the core does no I/O and
//! knows nothing of the daemon, and the simulator knows the core only, so its reading of the
//! wire stays independent of the client's. Inside the crates the compiler enforces the rest: a
//! core or simulator file cannot name a module of a crate it does not depend on.

use std::collections::BTreeSet;
use std::process::Command;

/// Every crate `package` depends on for its normal (non-dev, non-build) code, transitively,
/// with `extra` arguments for `cargo tree` (features).
fn dependencies(package: &str, extra: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "-p", package])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deps: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(
        deps.contains(package),
        "cargo tree -p {package} did not list the package itself: {deps:?}"
    );
    deps
}

/// What the core must never depend on: runtimes, HTTP, databases, readers, GPIO, config files,
/// and tapgate's own daemon and simulator.
const NOT_IN_CORE: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "axum",
    "rusqlite",
    "tokio-postgres",
    "pcsc",
    "gpiocdev",
    "sd-notify",
    "toml",
    "toml_edit",
    "tracing-journald",
    "tapgate",
    "tapgate-sim",
];

#[test]
fn the_core_depends_on_no_io_crate_and_not_on_the_daemon() {
    let deps = dependencies("tapgate-core", &[]);
    let bad: Vec<&&str> = NOT_IN_CORE.iter().filter(|c| deps.contains(**c)).collect();
    assert!(bad.is_empty(), "tapgate-core depends on {bad:?}");
}

#[test]
fn the_simulator_depends_on_the_core_and_not_on_the_client() {
    let deps = dependencies("tapgate-sim", &[]);
    assert!(deps.contains("tapgate-core"));
    let bad: Vec<&str> = ["tapgate", "reqwest", "rusqlite", "pcsc", "gpiocdev", "toml"]
        .into_iter()
        .filter(|c| deps.contains(*c))
        .collect();
    assert!(bad.is_empty(), "tapgate-sim depends on {bad:?}");
}

#[test]
fn the_daemon_links_the_simulator_only_through_its_default_feature() {
    let with = dependencies("tapgate", &[]);
    assert!(with.contains("tapgate-core") && with.contains("tapgate-sim"));
    let without = dependencies("tapgate", &["--no-default-features"]);
    assert!(without.contains("tapgate-core"), "{without:?}");
    assert!(
        !without.contains("tapgate-sim"),
        "without the sim feature the daemon still links the simulator"
    );
}
