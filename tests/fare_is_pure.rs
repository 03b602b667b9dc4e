//! The fare rules are pure core: nothing under `src/fare/` may name a daemon-side module
//! (config, journal storage, the SNAP client, adapters, the run loop) or an I/O crate. The
//! core owns its types and the config composes them, never the other way round. A text check
//! until the crate graph (core crate without these dependencies) takes it over.

use std::path::{Path, PathBuf};

/// Modules of this crate the core must not reach, as `crate::<module>` path roots.
const DAEMON_MODULES: &[&str] = &[
    "config",
    "journal",
    "daemon",
    "aggregator",
    "cmd",
    "nfc",
    "relay",
    "sim",
];

/// `crate::snap` is split: codes and signing are core, the client and its wire types are not.
const DAEMON_SNAP_MODULES: &[&str] = &["client", "wire"];

/// Crates that do I/O (or exist to parse the config file), as path roots.
const IO_CRATES: &[&str] = &[
    "tokio",
    "reqwest",
    "rusqlite",
    "pcsc",
    "gpiocdev",
    "axum",
    "hyper",
    "hyper_util",
    "sd_notify",
    "libc",
    "toml",
    "toml_edit",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Whether `text[at..]` begins a path segment (not the tail of a longer identifier).
fn starts_word(text: &str, at: usize) -> bool {
    !text[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The leading identifier of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every path below `crate::` written in `text`, as its first two segments; `crate::{a, b::c}`
/// counts as `a` and `b::c`.
fn crate_paths(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |tail: &str| {
        let first = ident(tail.trim_start());
        let rest = tail.trim_start()[first.len()..].trim_start();
        let second = rest.strip_prefix("::").map(ident).unwrap_or("");
        out.push((first.to_string(), second.to_string()));
    };
    for (at, _) in text.match_indices("crate::") {
        if !starts_word(text, at) {
            continue;
        }
        let tail = &text[at + "crate::".len()..];
        match tail.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    push(item);
                }
            }
            None => push(tail),
        }
    }
    out
}

/// What in `text` the core must not use, one line each.
fn offences(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (first, second) in crate_paths(text) {
        let daemon = DAEMON_MODULES.contains(&first.as_str())
            || (first == "snap" && DAEMON_SNAP_MODULES.contains(&second.as_str()));
        if daemon && second.is_empty() {
            found.push(format!("crate::{first}"));
        } else if daemon {
            found.push(format!("crate::{first}::{second}"));
        }
    }
    for krate in IO_CRATES {
        let needle = format!("{krate}::");
        if text
            .match_indices(&needle)
            .any(|(at, _)| starts_word(text, at) && !text[..at].ends_with("crate::"))
        {
            found.push(needle);
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn fare_names_no_daemon_module_and_no_io_crate() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("src/fare");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("policy.rs")),
        "no policy.rs under {}: is this check looking at the right folder?",
        root.display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for what in offences(&text) {
            let shown = file.strip_prefix(manifest).unwrap_or(file);
            failures.push(format!("{}: names {what}", shown.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "the pure core reaches outside itself:\n{}",
        failures.join("\n")
    );
}

/// The check itself sees each way of naming a forbidden module or crate, and lets the core's
/// own paths through.
#[test]
fn the_check_sees_every_spelling() {
    for bad in [
        "use crate::config::PolicyConfig;",
        "use crate::{config::{A, B}, fare::Rupiah};",
        "use crate::{fare, journal};",
        "/// Built from [`crate::config::Config::parse`].",
        "fn f(c: &crate::daemon::Station) {}",
        "use crate::snap::client::Client;",
        "use crate::snap::wire::PaymentRequest;",
        "async fn f() { tokio::time::sleep(d).await }",
        "use rusqlite::Connection;",
        "let d: toml::Value = x;",
    ] {
        assert!(!offences(bad).is_empty(), "not seen: {bad}");
    }
    for good in [
        "use super::tariff::Tariff;",
        "use crate::fare::Rupiah;",
        "use crate::snap::codes::ResponseCode;",
        "use crate::cpm::qris::Payload;",
        "let configured = my_tokio::x;",
        "// the config composes these types",
        "use serde::Deserialize;",
    ] {
        assert_eq!(offences(good), Vec::<String>::new(), "flagged: {good}");
    }
}
