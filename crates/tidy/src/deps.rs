//! Check (a): which workspace crate may depend on which. The rules are the
//! "Dependency rules" table of docs/architecture.md (one row per crate:
//! the crate, then the workspace crates it may name in `[dependencies]`),
//! so the document stays the single source; dev-dependencies are free.

use std::collections::{BTreeMap, BTreeSet};

use crate::Violation;

/// The heading of the table in docs/architecture.md.
pub const RULES_HEADING: &str = "## Dependency rules";

/// The parsed table: crate -> the workspace crates it may depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Per crate (package name), the allowed workspace dependencies.
    pub allowed: BTreeMap<String, BTreeSet<String>>,
}

/// The backticked words of a table cell (`` `novaha-core` ``).
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Reads the rules table under [`RULES_HEADING`] of `doc` (the text of
/// `doc_file`): a markdown table whose first column is a crate and second
/// the crates it may depend on, each in backticks (none: any other text).
pub fn parse_rules(doc_file: &str, doc: &str) -> Result<Rules, Violation> {
    let mut lines = doc.lines().enumerate();
    let Some((heading, _)) = lines.by_ref().find(|(_, l)| l.trim() == RULES_HEADING) else {
        return Err(Violation::new(
            doc_file,
            1,
            format!("no `{RULES_HEADING}` section: the tidy test reads the crate rules from it"),
        ));
    };
    let mut rules = Rules::default();
    let mut in_table = false;
    for (n, line) in lines {
        let line = line.trim();
        if !line.starts_with('|') {
            if in_table || line.starts_with('#') {
                break;
            }
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        let first_row = !in_table;
        in_table = true;
        if first_row
            || cells
                .iter()
                .all(|c| c.trim().chars().all(|ch| "-: ".contains(ch)))
        {
            continue;
        }
        let [krate, allowed, ..] = cells.as_slice() else {
            return Err(Violation::new(
                doc_file,
                n + 1,
                "a rules row needs two cells",
            ));
        };
        let Some(krate) = backticked(krate).into_iter().next() else {
            return Err(Violation::new(
                doc_file,
                n + 1,
                "a rules row names its crate in backticks",
            ));
        };
        rules
            .allowed
            .insert(krate, backticked(allowed).into_iter().collect());
    }
    if rules.allowed.is_empty() {
        return Err(Violation::new(
            doc_file,
            heading + 1,
            "the dependency rules table is empty",
        ));
    }
    Ok(rules)
}

/// A manifest's package name and the line (from 1) that names it.
pub fn package_name(manifest: &str) -> Option<(String, usize)> {
    let mut section = String::new();
    for (n, line) in manifest.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if section == "package"
            && let Some(value) = line.strip_prefix("name")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            return Some((value.trim().trim_matches('"').to_owned(), n + 1));
        }
    }
    None
}

/// The normal dependencies of a manifest (`[dependencies]`, a target's
/// `[target.'...'.dependencies]`, `[dependencies.name]`): (package name,
/// line from 1). A renamed dependency counts under its `package`.
pub fn dependencies(manifest: &str) -> Vec<(String, usize)> {
    let mut deps = Vec::new();
    let mut section = String::new();
    for (n, line) in manifest.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            if let Some(name) = section.strip_prefix("dependencies.") {
                deps.push((name.trim_matches('"').to_owned(), n + 1));
            }
            continue;
        }
        let normal = section == "dependencies"
            || section.starts_with("target.") && section.ends_with(".dependencies");
        if !normal || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key: String = line
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if key.is_empty() {
            continue;
        }
        let renamed = line.split_once("package").and_then(|(_, rest)| {
            let rest = rest.trim_start().strip_prefix('=')?.trim_start();
            rest.strip_prefix('"')?.split('"').next().map(str::to_owned)
        });
        deps.push((renamed.unwrap_or(key), n + 1));
    }
    deps
}

/// Checks one manifest (`file`, its text `manifest`) against the rules;
/// `workspace` is every workspace crate's package name (only those are
/// ruled on).
pub fn check_manifest(
    file: &str,
    manifest: &str,
    rules: &Rules,
    workspace: &BTreeSet<String>,
) -> Vec<Violation> {
    let Some((name, name_line)) = package_name(manifest) else {
        return vec![Violation::new(file, 1, "no [package] name")];
    };
    let Some(allowed) = rules.allowed.get(&name) else {
        return vec![Violation::new(
            file,
            name_line,
            format!(
                "{name} has no row in docs/architecture.md's dependency rules: add one naming the workspace crates it may depend on"
            ),
        )];
    };
    let list = if allowed.is_empty() {
        "no workspace crate".to_owned()
    } else {
        allowed.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    dependencies(manifest)
        .into_iter()
        .filter(|(dep, _)| workspace.contains(dep) && !allowed.contains(dep))
        .map(|(dep, line)| {
            Violation::new(
                file,
                line,
                format!(
                    "{name} depends on {dep}, which docs/architecture.md's dependency rules do not allow ({name} may depend on: {list})"
                ),
            )
        })
        .collect()
}
