//! The repository stands alone: every document the code and the docs cite exists in it, every
//! `docs/protocol.md §N` names a section that is there, and every relative link in the
//! Markdown docs points at a file or folder of the repository. (Eleven citations once named a
//! protocol.md that was not in the repository; files moving into crates broke links twice.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files whose words are checked: sources of every crate, tests, the docs.
fn cited_from() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        "src", "crates", "tests", "docs", "config", "systemd", "scripts",
    ] {
        walk(&repo().join(dir), &mut out);
    }
    out.extend(["README.md", "hardware-notes.md"].map(|f| repo().join(f)));
    // This file's own examples are not citations.
    out.retain(|p| !p.ends_with("tests/doc_citations.rs"));
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("fixtures") {
                walk(&p, out);
            }
        } else if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("rs" | "md" | "toml" | "sh" | "service")
        ) {
            out.push(p);
        }
    }
}

/// Every `name.md` (with its path as written) in `text`.
fn md_names(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "_-./".contains(c)))
        .filter(|w| w.ends_with(".md") && w.len() > 3)
        // Where the package installs the docs on a gate, not a file of the repository.
        .filter(|w| !w.contains("usr/share/doc/"))
        .map(|w| w.trim_start_matches("./").to_string())
        .collect()
}

/// Every file name of the repository (outside target/), for citations without a path.
fn all_names() -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in [
        "src", "crates", "tests", "docs", "fuzz", "config", "systemd", "udev",
    ] {
        walk_all(&repo().join(dir), &mut files);
    }
    let mut names: BTreeSet<String> = files
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    for top in std::fs::read_dir(repo()).expect("repo").flatten() {
        if let Some(n) = top.file_name().to_str() {
            names.insert(n.to_string());
        }
    }
    names
}

fn walk_all(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_all(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_cited_document_is_in_the_repository() {
    let names = all_names();
    let mut missing = Vec::new();
    for file in cited_from() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for cited in md_names(&text) {
            let found = if cited.contains('/') {
                let from_dir = file.parent().map(|d| d.join(&cited));
                repo().join(&cited).exists() || from_dir.is_some_and(|p| p.exists())
            } else {
                names.contains(&cited)
            };
            if !found && !cited.contains("shared/") {
                missing.push(format!("{}: {cited}", file.display()));
            }
            if cited.contains("shared/") {
                missing.push(format!(
                    "{}: cites outside the repo: {cited}",
                    file.display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited but not in the repository:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_protocol_section_cited_exists() {
    let protocol =
        std::fs::read_to_string(repo().join("docs/protocol.md")).expect("docs/protocol.md");
    let mut missing = Vec::new();
    for file in cited_from() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (i, _) in text.match_indices("protocol.md §") {
            let rest = &text[i + "protocol.md §".len()..];
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            // `§N` in prose explains the form; it cites nothing.
            if rest.starts_with('N') {
                continue;
            }
            if n.is_empty() || !protocol.contains(&format!("## §{n} ")) {
                missing.push(format!("{}: protocol.md §{n}", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no such section:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut docs: Vec<PathBuf> = vec![repo().join("README.md"), repo().join("hardware-notes.md")];
    walk(&repo().join("docs"), &mut docs);
    for doc in docs
        .iter()
        .filter(|d| d.extension().is_some_and(|x| x == "md"))
    {
        let text = std::fs::read_to_string(doc).expect("doc");
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let base = doc.parent().unwrap_or(Path::new("."));
            if !base.join(target).exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing:\n{}",
        broken.join("\n")
    );
}
