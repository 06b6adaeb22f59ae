//! The tidy test (docs/testing.md): each check over the real repository,
//! and each check fed a planted violation it must report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use novaha_tidy::cycles::CrateFile;
use novaha_tidy::{Violation, cycles, deps, docs, refs, render, repo, size};

fn assert_clean(what: &str, found: Vec<Violation>) {
    assert!(
        found.is_empty(),
        "tidy: {what}: {} violation(s):\n{}",
        found.len(),
        render(&found)
    );
}

fn files(list: &[(&str, &str)]) -> Vec<CrateFile> {
    list.iter()
        .map(|(rel, text)| CrateFile {
            rel: PathBuf::from(rel),
            text: (*text).to_owned(),
        })
        .collect()
}

// ---- over the repository ----

#[test]
fn crates_depend_only_on_what_the_architecture_allows() {
    assert_clean("dependency rules", repo::check_deps(&repo::root()));
}

#[test]
fn comments_and_docs_cite_only_what_is_in_the_repository() {
    assert_clean("references", repo::check_refs(&repo::root()));
}

#[test]
fn every_public_item_is_documented() {
    assert_clean("doc comments", repo::check_docs(&repo::root()));
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    assert_clean("module cycles", repo::check_cycles(&repo::root()));
}

#[test]
fn the_daemon_stays_within_its_size_budget() {
    assert_clean("daemon size", repo::check_size(&repo::root()));
}

// ---- planted violations ----

const RULES: &str = "\
# Architecture

## Dependency rules

Prose before the table.

| crate | may depend on |
|---|---|
| `novaha-core` | nothing |
| `novaha-fence` | `novaha-core` |
| `novaha` | `novaha-core`, `novaha-fence` |

## Next
";

#[test]
fn a_forbidden_dependency_is_reported_with_its_line() {
    let rules = deps::parse_rules("docs/architecture.md", RULES).expect("rules parse");
    assert_eq!(rules.allowed.len(), 3);
    assert!(rules.allowed["novaha-core"].is_empty());
    let workspace: BTreeSet<String> = ["novaha-core", "novaha-fence", "novaha-sim", "novaha"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let manifest = "\
[package]
name = \"novaha\"

[dependencies]
novaha-core.workspace = true
novaha-sim = { workspace = true }
serde.workspace = true

[dev-dependencies]
novaha-sim.workspace = true
";
    let found = deps::check_manifest("crates/daemon/Cargo.toml", manifest, &rules, &workspace);
    assert_eq!(found.len(), 1, "{}", render(&found));
    assert_eq!(found[0].line, 6);
    assert!(found[0].message.contains("novaha depends on novaha-sim"));

    let driver =
        "[package]\nname = \"novaha-fence\"\n[dependencies]\nnovaha = { path = \"../daemon\" }\n";
    let found = deps::check_manifest("crates/fence/Cargo.toml", driver, &rules, &workspace);
    assert_eq!(found.len(), 1, "{}", render(&found));
    assert_eq!(found[0].line, 4);

    let unknown = "[package]\nname = \"novaha-sim\"\n";
    let found = deps::check_manifest("crates/sim/Cargo.toml", unknown, &rules, &workspace);
    assert_eq!(found.len(), 1);
    assert!(found[0].message.contains("no row"));

    let renamed = "[package]\nname = \"novaha-core\"\n[target.'cfg(unix)'.dependencies]\nfence = { package = \"novaha-fence\", path = \"x\" }\n";
    let found = deps::check_manifest("crates/core/Cargo.toml", renamed, &rules, &workspace);
    assert_eq!(found.len(), 1, "{}", render(&found));
}

#[test]
fn a_dangling_reference_is_reported_only_in_comments() {
    let root = repo::root();
    let rust = r##"//! See docs/testing.md and [the rules](docs/architecture.md#dependency-rules).
/// Follows DESIGN.md.
fn f() {
    // from ../shared/notes
    let s = "DESIGN.md and issue #12 in a string are data";
    /* see issue 7 */
    #[derive(Debug)]
    struct S; // #3 was the bug
    let t = "#1";
}
"##;
    let found = refs::check(&root, "crates/x/src/lib.rs", refs::Kind::Rust, rust);
    let lines: Vec<usize> = found.iter().map(|v| v.line).collect();
    assert_eq!(lines, vec![2, 4, 6, 8], "{}", render(&found));

    let md = "# Doc\n\nSee [x](consul.md#kv), README.md, NOTES.md and https://example.invalid/y/STYLE.md.\n";
    let found = refs::check(&root, "docs/x.md", refs::Kind::Markdown, md);
    assert_eq!(found.len(), 1, "{}", render(&found));
    assert!(found[0].message.contains("NOTES.md"));

    let sh = "#!/usr/bin/env bash\n# see issue 3\necho \"#4\" ${#x[@]}\n";
    let found = refs::check(&root, "scripts/x.sh", refs::Kind::Hash, sh);
    assert_eq!(found.iter().map(|v| v.line).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn an_undocumented_public_item_is_reported() {
    let text = r#"//! A module.

/// Documented.
pub fn documented() {}

/// Documented through its attributes.
#[derive(Debug)]
#[cfg_attr(
    test,
    derive(Clone)
)]
pub struct Attributed {
    pub field: u8,
}

pub const fn bare() {}

pub(crate) fn internal() {}

pub use std::fmt;

#[doc = "Documented by attribute."]
pub enum E {}

pub mod external;

pub mod undocumented_external;

pub trait T {}

#[cfg(test)]
mod tests {
    pub fn helper() {}
}
"#;
    let module_doc = |name: &str| name == "external";
    let found = docs::check("crates/x/src/lib.rs", text, &module_doc);
    let named: Vec<(usize, &str)> = found
        .iter()
        .map(|v| (v.line, v.message.split(" has").next().unwrap_or("")))
        .collect();
    assert_eq!(
        named,
        vec![
            (16, "pub fn bare"),
            (27, "pub mod undocumented_external"),
            (29, "pub trait T"),
        ],
        "{}",
        render(&found)
    );
}

#[test]
fn an_import_cycle_is_reported_and_test_code_ignored() {
    let crate_files = files(&[
        (
            "lib.rs",
            "mod a;\nmod b;\nmod c;\nmod d;\npub use d::Thing;\n",
        ),
        ("a.rs", "use crate::b::X;\n"),
        ("b/mod.rs", "mod inner;\n"),
        ("b/inner.rs", "fn f() { super::super::c::g(); }\n"),
        (
            "c.rs",
            "use crate::{a::Y, Thing};\n// crate::d in a comment\n",
        ),
        (
            "d.rs",
            "pub struct Thing;\n#[cfg(test)]\nmod tests {\n    use crate::a::Y;\n}\n",
        ),
    ]);
    let found = cycles::check("crates/x", &crate_files);
    assert_eq!(found.len(), 1, "{}", render(&found));
    let v = &found[0];
    assert!(v.message.contains("{a, b, c}"), "{v}");
    assert!(
        v.message.contains("b -> c (crates/x/src/b/inner.rs:1)"),
        "{v}"
    );
    assert_eq!((v.file.as_str(), v.line), ("crates/x/src/a.rs", 1));

    // d uses a only in its tests, c uses d through the root's re-export:
    // no cycle through d.
    assert!(!v.message.contains("-> d"), "{v}");
}

#[test]
fn a_crate_over_its_budget_is_reported_with_each_file() {
    let crate_files = files(&[
        (
            "lib.rs",
            "//! Doc.\n\nmod big;\n#[cfg(test)]\nmod tests;\n\nfn a() {\n    // note\n    let s = \"\n\";\n}\n",
        ),
        (
            "big.rs",
            "fn b() {}\nfn c() {}\n#[cfg(test)]\nmod t {\n    fn d() {}\n}\n",
        ),
        ("tests.rs", "fn e() {}\nfn f() {}\n"),
    ]);
    // lib.rs: mod big, mod tests is test-only, fn a, let s, the string's
    // second line, the closing brace = 5; big.rs: 2.
    assert_eq!(size::lines_of_code(&crate_files[0].text), 5);
    assert!(size::check("crates/x", &crate_files, 7).is_empty());
    let found = size::check("crates/x", &crate_files, 6);
    assert_eq!(found.len(), 1);
    assert!(
        found[0]
            .message
            .contains("7 lines of code, over its budget of 6"),
        "{}",
        found[0]
    );
    assert!(
        found[0].message.contains("5 crates/x/src/lib.rs"),
        "{}",
        found[0]
    );
    assert!(
        found[0].message.contains("2 crates/x/src/big.rs"),
        "{}",
        found[0]
    );
    assert!(!found[0].message.contains("tests.rs"), "{}", found[0]);
    assert_eq!(
        found[0].file,
        Path::new("crates/x/src/lib.rs").display().to_string()
    );
}
