//! novaha's tidy checks: rules about the repository's own files that no
//! compiler enforces, checked by the tidy test (`crates/tidy/tests/tidy.rs`)
//! in the default test command (docs/testing.md).
//!
//! Each checker is a pure function over file contents returning the
//! [`Violation`]s it finds, so a test can plant a violation in a string and
//! see it reported; [`repo`] reads the real files and feeds them in.
//!
//! - [`deps`]: a crate's `[dependencies]` name only the workspace crates
//!   docs/architecture.md's "Dependency rules" table allows;
//! - [`refs`]: comments and docs cite nothing outside the repository (a
//!   sibling checkout, a note that was never committed, an issue tracker);
//! - [`docs`]: every public item has a doc comment;
//! - [`cycles`]: no import cycle between a crate's top-level modules;
//! - [`size`]: the daemon stays within its line budget.

pub mod cycles;
pub mod deps;
pub mod docs;
pub mod refs;
pub mod repo;
pub mod rust;
pub mod size;

use std::fmt;

/// One broken rule, at the file and line (1-based) that breaks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file, relative to the repository root (`crates/x/src/lib.rs`).
    pub file: String,
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong and, where it helps, what the rule allows.
    pub message: String,
}

impl Violation {
    /// A violation at `file:line` (line counted from 1).
    pub fn new(file: &str, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Renders violations one per line, for a test's failure message.
pub fn render(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{v}\n"))
        .collect::<String>()
}
