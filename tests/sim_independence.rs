//! The simulator (src/sim/, src/nfc/vphone.rs) is an independent reading of the wire: it may
//! use the pure core (cpm, fare, journal model and rules, SNAP codes and signing, clock,
//! escape) but never the client's side (config, SNAP wire types and client, aggregator, the
//! SQLite journal, daemon, relay, commands). Otherwise a client mistake could be mirrored by
//! the simulator and pass unseen.
//!
//! Until the simulator is its own crate (then the compiler checks this), this test reads the
//! sources: every path through `crate::`, `tapgate::` or `super::` (brace groups expanded,
//! `super` resolved against the file's module) is checked against the forbidden modules, and
//! each offence is reported with its file and line.

use std::path::{Path, PathBuf};

/// Module paths (below the crate root) the simulator must not reach.
const FORBIDDEN: [&str; 8] = [
    "config",
    "snap::wire",
    "snap::client",
    "aggregator",
    "daemon",
    "relay",
    "cmd",
    "journal",
];

/// The parts of a forbidden module that belong to the pure core.
const ALLOWED_INSIDE: [&str; 2] = ["journal::model", "journal::rules"];

/// Whether the crate-relative path `p` (`a::b::c`) reaches a forbidden module.
fn forbidden(p: &str) -> bool {
    let within = |m: &str| p == m || p.starts_with(&format!("{m}::"));
    FORBIDDEN.iter().any(|m| within(m)) && !ALLOWED_INSIDE.iter().any(|m| within(m))
}

/// The module path (below the crate root) of a source file, e.g. `sim::engine::token` for
/// `src/sim/engine/token.rs` and `sim::engine` for `src/sim/engine/mod.rs`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .skip(1) // "src"
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`; `text` starts right after
/// a path root. Returns the paths and how many bytes were read.
fn expand(text: &str) -> (Vec<String>, usize) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut head = String::new();
    while i < b.len() {
        let c = b[i] as char;
        if c.is_alphanumeric() || c == '_' || c == ':' {
            head.push(c);
            i += 1;
        } else if c == '{' && (head.is_empty() || head.ends_with("::")) {
            i += 1;
            let mut out = Vec::new();
            loop {
                while i < b.len() && (b[i] as char).is_whitespace() {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (inner, used) = expand(&text[i..]);
                out.extend(inner.into_iter().map(|t| format!("{head}{t}")));
                i += used.max(1);
                while i < b.len() && (b[i] as char).is_whitespace() {
                    i += 1;
                }
                if i < b.len() && b[i] == b',' {
                    i += 1;
                }
            }
            return (out, i);
        } else {
            break;
        }
    }
    let head = head.trim_end_matches("::").to_string();
    (if head.is_empty() { vec![] } else { vec![head] }, i)
}

/// Every forbidden path in `src` (the text of the file whose module is `module`), as
/// `(line, path)`.
fn offences(src: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let mut rest = line;
        while let Some(pos) = ["crate::", "tapgate::", "super::"]
            .iter()
            .filter_map(|r| rest.find(r).map(|p| (p, *r)))
            .min()
        {
            let (p, root) = pos;
            // Part of a longer identifier (`my_crate::`): not a path root.
            let glued = p > 0 && {
                let prev = rest.as_bytes()[p - 1] as char;
                prev.is_alphanumeric() || prev == '_' || prev == ':'
            };
            let start = p + root.len();
            let (paths, used) = expand(&rest[start..]);
            if !glued {
                for path in paths {
                    let resolved = match root {
                        "super::" => {
                            let mut base = module.to_vec();
                            base.pop();
                            let mut tail = path.as_str();
                            while let Some(t) = tail.strip_prefix("super::") {
                                base.pop();
                                tail = t;
                            }
                            if tail == "super" {
                                base.pop();
                                tail = "";
                            }
                            base.extend(
                                tail.split("::").filter(|s| !s.is_empty()).map(String::from),
                            );
                            base.join("::")
                        }
                        _ => path,
                    };
                    if forbidden(&resolved) {
                        out.push((n + 1, resolved));
                    }
                }
            }
            rest = &rest[(start + used.max(1)).min(rest.len())..];
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_simulator_imports_nothing_from_the_clients_side() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/sim"), &mut files);
    files.push(root.join("src/nfc/vphone.rs"));
    assert!(files.len() >= 5, "found only {files:?}");
    let mut report = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        for (line, path) in offences(&text, &module_of(rel)) {
            report.push(format!("{}:{line}: uses crate::{path}", rel.display()));
        }
    }
    assert!(
        report.is_empty(),
        "the simulator must use only the core:\n{}",
        report.join("\n")
    );
}

/// The checker itself finds what it must (so the test above cannot pass by reading nothing).
#[test]
fn the_checker_finds_every_spelling_of_a_forbidden_import() {
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let engine = m("sim::engine::token");
    let found = |src: &str, module: &[String]| {
        offences(src, module)
            .into_iter()
            .map(|(l, p)| format!("{l}:{p}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        found("use crate::journal::OpRow;", &engine),
        ["1:journal::OpRow"]
    );
    assert_eq!(
        found("fn f(c: &crate::config::AggregatorConfig) {}", &engine),
        ["1:config::AggregatorConfig"]
    );
    assert_eq!(
        found(
            "use crate::{clock::Clock, snap::{sign, wire::TokenRequest}};\nuse tapgate::cmd;",
            &engine
        ),
        ["1:snap::wire::TokenRequest", "2:cmd"]
    );
    assert_eq!(
        found("use super::super::super::daemon::lane;", &engine),
        ["1:daemon::lane"]
    );
    assert_eq!(
        found(
            "use super::super::super::aggregator;",
            &m("sim::engine::mod_x")
        ),
        ["1:aggregator"]
    );
    // The core is allowed: journal model and rules, signing, codes, clock, cpm, fare.
    let fine = "use crate::journal::model::OpRow;\nuse crate::journal::rules;\n\
                use crate::snap::{sign, codes::ResponseCode};\nuse crate::clock::Clock;\n\
                use super::ledger::Ledger;\nuse super::super::faults::Fault;\n\
                let x = my_crate::config::X; crate::cpm::decode(q); crate::fare::OpState::Pending";
    assert_eq!(found(fine, &engine), Vec::<String>::new());
    assert_eq!(
        module_of(Path::new("src/sim/engine/mod.rs")),
        ["sim", "engine"]
    );
    assert_eq!(module_of(Path::new("src/nfc/vphone.rs")), ["nfc", "vphone"]);
}
