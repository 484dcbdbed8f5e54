//! Tidy: the rules of ARCHITECTURE.md and ../shared/STYLE.md a machine can check, checked on
//! every `make test` (rust-analyzer's `tidy.rs`, TigerBeetle's `tidy.zig`): crates depend only
//! as the map allows, every dependency is used, every module says what it owns and must not
//! do, and the docs name only files that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The workspace's crates, by directory.
const CRATES: [&str; 7] = ["storage", "netio", "raftstore", "txn", "shard", "tools", "perf"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tools/ is in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The names a crate lists in `section` of its Cargo.toml (`dependencies`, ...).
fn deps(krate: &str, section: &str) -> Vec<String> {
    let manifest: toml::Table = read(&root().join(krate).join("Cargo.toml"))
        .parse()
        .expect("a valid Cargo.toml");
    manifest
        .get(section)
        .and_then(|t| t.as_table())
        .map_or_else(Vec::new, |t| t.keys().cloned().collect())
}

/// ARCHITECTURE.md's "Dependency rules": `crate -> the workspace crates it may depend on`.
fn allowed() -> Vec<(String, BTreeSet<String>)> {
    let map = read(&root().join("ARCHITECTURE.md"));
    let rules = map
        .split("## Dependency rules")
        .nth(1)
        .expect("ARCHITECTURE.md has its dependency rules");
    rules
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .take_while(|l| l.contains("may depend on"))
        .map(|l| {
            let (krate, rest) = l.split_once('`').expect("- `crate` may depend on: ...");
            let allowed = rest
                .split('`')
                .skip(1)
                .step_by(2)
                .map(|d| format!("corekv-{d}"))
                .collect();
            (krate.to_string(), allowed)
        })
        .collect()
}

// Proves every crate depends only on the workspace crates ARCHITECTURE.md allows it (the
// rules are read from the map itself, so the map and the manifests cannot drift apart).
#[test]
fn crates_depend_only_as_the_map_allows() {
    let rules = allowed();
    assert_eq!(rules.len(), CRATES.len(), "one rule per crate: {rules:?}");
    for (krate, allowed) in rules {
        for dep in deps(&krate, "dependencies")
            .into_iter()
            .filter(|d| d.starts_with("corekv-"))
        {
            assert!(
                allowed.contains(&dep),
                "{krate} depends on {dep}, which ARCHITECTURE.md does not allow"
            );
        }
    }
}

/// Whether `ident` (a crate's name in code) is used in `source`.
fn mentions(source: &str, ident: &str) -> bool {
    [
        format!("{ident}::"),
        format!("use {ident}"),
        format!("{ident}!"),
        format!("extern crate {ident}"),
    ]
    .iter()
    .any(|needle| source.contains(needle.as_str()))
}

// Proves every dependency a crate lists is used by its code (an unused one costs build time
// and, for a workspace crate, hides a dependency the map does not want).
#[test]
fn every_dependency_is_used() {
    let mut unused = Vec::new();
    for krate in CRATES {
        let dir = root().join(krate);
        let code: String = rust_files(&dir).iter().map(|f| read(f)).collect();
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            for dep in deps(krate, section) {
                if !mentions(&code, &dep.replace('-', "_")) {
                    unused.push(format!("{krate} [{section}] {dep}"));
                }
            }
        }
    }
    assert_eq!(unused, Vec::<String>::new(), "dependencies nothing uses");
}

// Proves every module of every crate opens with a `//!` doc that says what it owns and what
// it must not do (STYLE.md, rule 2).
#[test]
fn every_module_says_what_it_owns_and_must_not_do() {
    let mut missing = Vec::new();
    for krate in CRATES {
        for file in rust_files(&root().join(krate).join("src")) {
            let doc: String = read(&file)
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_lowercase();
            let rel = file
                .strip_prefix(root())
                .expect("in the workspace")
                .display()
                .to_string();
            if doc.is_empty() {
                missing.push(format!("{rel}: no //! doc"));
            } else if !doc.contains("own") || !doc.contains("must not") {
                missing.push(format!("{rel}: its doc does not say what it owns and must not do"));
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new());
}

/// Backticked tokens of `text` that look like paths of this repository (`a/b.rs`, `x.md`).
fn named_paths(text: &str) -> Vec<String> {
    let kinds = [".rs", ".md", ".toml", ".sh", ".service"];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| !t.contains(' ') && !t.contains("::") && !t.contains(['*', '<', '{']))
        .filter(|t| !t.starts_with("target/")) // build output, not the repository
        .filter(|t| t.contains('/') || kinds.iter().any(|k| t.ends_with(k)))
        .filter(|t| kinds.iter().any(|k| t.ends_with(k)) || t.ends_with('/'))
        .map(str::to_string)
        .collect()
}

// Proves the docs name only files that exist: every path in backticks in README.md,
// ARCHITECTURE.md and docs/ is a file or directory of the repository (in full, or as the end
// of one: `raftlog/engine.rs`).
#[test]
fn docs_name_files_that_exist() {
    let root = root();
    let mut all: Vec<String> = CRATES
        .iter()
        .chain(&["docs", "scripts"])
        .map(|d| format!("{d}/"))
        .collect();
    for krate in CRATES.iter().chain(&["docs", "scripts"]) {
        let mut stack = vec![root.join(krate)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let rel = path
                    .strip_prefix(&root)
                    .expect("in the workspace")
                    .display()
                    .to_string();
                if path.is_dir() {
                    all.push(format!("{rel}/"));
                    stack.push(path);
                } else {
                    all.push(rel);
                }
            }
        }
    }
    all.extend(["README.md", "ARCHITECTURE.md", "Cargo.toml", "Makefile"].map(String::from));
    let mut docs = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    docs.extend(
        std::fs::read_dir(root.join("docs"))
            .unwrap()
            .flatten()
            .map(|e| e.path()),
    );
    let mut dangling = Vec::new();
    for doc in docs {
        for path in named_paths(&read(&doc)) {
            let found = all.iter().any(|f| f == &path || f.ends_with(&format!("/{path}")));
            if !found {
                dangling.push(format!("{}: `{path}`", doc.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    assert_eq!(dangling, Vec::<String>::new(), "docs name files that do not exist");
}
