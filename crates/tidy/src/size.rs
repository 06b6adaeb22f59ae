//! Check (e): the daemon stays small. It wires the stage crates together
//! and pumps the leader cycle; logic that grows it belongs in a stage crate
//! or in novaha-core. The figure is its lines of code: not blank, not only
//! a comment, not in `#[cfg(test)]` code (nor a file only tests build).

use std::path::Path;

use crate::Violation;
use crate::cycles::CrateFile;
use crate::rust;

/// The daemon's budget, in lines of code under `crates/daemon/src`.
pub const DAEMON_BUDGET: usize = 4500;

/// Lines of code of one file: lines holding code, outside `#[cfg(test)]`
/// items.
pub fn lines_of_code(text: &str) -> usize {
    let src = rust::lex(text);
    let tests = rust::test_parts(&src);
    src.has_code
        .iter()
        .zip(&tests.lines)
        .filter(|(code, test)| **code && !**test)
        .count()
}

/// Each file's lines of code (test-only files left out), largest first.
pub fn per_file(files: &[CrateFile]) -> Vec<(String, usize)> {
    let sources: Vec<_> = files.iter().map(|f| (f, rust::lex(&f.text))).collect();
    let roots = rust::test_module_roots(sources.iter().map(|(f, s)| (f.rel.as_path(), s)));
    let mut counts: Vec<(String, usize)> = files
        .iter()
        .filter(|f| !roots.iter().any(|r| f.rel.starts_with(r)))
        .map(|f| (f.rel.display().to_string(), lines_of_code(&f.text)))
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

/// Checks a crate (`krate`, its directory; `files`, its `src/`) against
/// `budget`: over it, one violation listing every file's figure.
pub fn check(krate: &str, files: &[CrateFile], budget: usize) -> Vec<Violation> {
    let counts = per_file(files);
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    if total <= budget {
        return Vec::new();
    }
    let table: Vec<String> = counts
        .iter()
        .map(|(file, n)| format!("  {n:>5} {krate}/src/{file}"))
        .collect();
    let biggest = counts.first().map(|(f, _)| f.as_str()).unwrap_or("lib.rs");
    vec![Violation::new(
        &Path::new(krate)
            .join("src")
            .join(biggest)
            .display()
            .to_string(),
        1,
        format!(
            "{krate} has {total} lines of code, over its budget of {budget} (non-test, non-blank, non-comment lines); per file:\n{}",
            table.join("\n")
        ),
    )]
}
