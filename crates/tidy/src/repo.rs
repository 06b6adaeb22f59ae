//! The repository's files, read from disk and fed to each check.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::cycles::CrateFile;
use crate::{Violation, cycles, deps, docs, refs, rust, size};

/// The repository root: two levels above this crate's manifest.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Directories never walked: build output, caches, VCS data.
fn skipped(name: &str) -> bool {
    name.starts_with('.') || matches!(name, "target" | "node_modules" | "__pycache__")
}

/// Every file under `dir` (sorted), relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(root.join(dir)) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if skipped(&name) {
            continue;
        }
        let rel = dir.join(&name);
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(root, &rel, out),
            Ok(t) if t.is_file() => out.push(rel),
            _ => {}
        }
    }
}

fn read(root: &Path, rel: &Path) -> String {
    fs::read_to_string(root.join(rel)).unwrap_or_default()
}

fn display(rel: &Path) -> String {
    rel.display().to_string()
}

/// The workspace crates' directories (`crates/x`), sorted.
pub fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .map(|e| Path::new("crates").join(e.file_name()))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Every `.rs` file under a crate's `src/`, relative to `src/`.
pub fn crate_files(root: &Path, krate: &Path) -> Vec<CrateFile> {
    let src = krate.join("src");
    let mut files = Vec::new();
    walk(root, &src, &mut files);
    files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        .map(|f| CrateFile {
            text: read(root, &f),
            rel: f.strip_prefix(&src).map(Path::to_path_buf).unwrap_or(f),
        })
        .collect()
}

/// Check (a) over every crate's manifest.
pub fn check_deps(root: &Path) -> Vec<Violation> {
    let doc_file = "docs/architecture.md";
    let rules = match deps::parse_rules(doc_file, &read(root, Path::new(doc_file))) {
        Ok(rules) => rules,
        Err(v) => return vec![v],
    };
    let manifests: Vec<(String, String)> = crate_dirs(root)
        .iter()
        .map(|d| {
            let rel = d.join("Cargo.toml");
            (display(&rel), read(root, &rel))
        })
        .collect();
    let workspace: BTreeSet<String> = manifests
        .iter()
        .filter_map(|(_, m)| deps::package_name(m).map(|(n, _)| n))
        .collect();
    manifests
        .iter()
        .flat_map(|(file, m)| deps::check_manifest(file, m, &rules, &workspace))
        .collect()
}

/// Check (b) over the docs, scripts, deploy files and every comment.
pub fn check_refs(root: &Path) -> Vec<Violation> {
    let mut files = Vec::new();
    for dir in ["crates", "tests", "scripts", "docs", "deploy"] {
        walk(root, Path::new(dir), &mut files);
    }
    for top in ["README.md", "Cargo.toml", "clippy.toml", "rustfmt.toml"] {
        if root.join(top).is_file() {
            files.push(PathBuf::from(top));
        }
    }
    files
        .iter()
        .filter_map(|f| refs::kind_of(f).map(|k| (f, k)))
        .flat_map(|(f, kind)| refs::check(root, &display(f), kind, &read(root, f)))
        .collect()
}

/// Check (c) over every crate's `src/`.
pub fn check_docs(root: &Path) -> Vec<Violation> {
    let mut found = Vec::new();
    for krate in crate_dirs(root) {
        let src = krate.join("src");
        let files = crate_files(root, &krate);
        let sources: Vec<_> = files.iter().map(|f| (f, rust::lex(&f.text))).collect();
        let test_roots = rust::test_module_roots(sources.iter().map(|(f, s)| (f.rel.as_path(), s)));
        for f in files
            .iter()
            .filter(|f| !test_roots.iter().any(|r| f.rel.starts_with(r)))
        {
            let module_doc = |name: &str| {
                rust::child_module_files(&f.rel, name).iter().any(|child| {
                    let text = read(root, &src.join(child));
                    !text.is_empty() && docs::has_module_doc(&rust::lex(&text))
                })
            };
            found.extend(docs::check(
                &display(&src.join(&f.rel)),
                &f.text,
                &module_doc,
            ));
        }
    }
    found
}

/// Check (d) over every crate.
pub fn check_cycles(root: &Path) -> Vec<Violation> {
    crate_dirs(root)
        .iter()
        .flat_map(|krate| cycles::check(&display(krate), &crate_files(root, krate)))
        .collect()
}

/// Check (e): the daemon against [`size::DAEMON_BUDGET`].
pub fn check_size(root: &Path) -> Vec<Violation> {
    let krate = Path::new("crates/daemon");
    size::check(
        &display(krate),
        &crate_files(root, krate),
        size::DAEMON_BUDGET,
    )
}
