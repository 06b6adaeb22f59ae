//! Check (b): comments and docs cite nothing a reader of the repository
//! cannot open: no sibling checkout (a `shared` directory next to the
//! repository), no markdown file that is
//! not in the repository, no issue number.
//!
//! Only comments are read in code (Rust comments, `#` comments of scripts
//! and config files); markdown is read whole.

use std::path::Path;

use crate::Violation;
use crate::rust;

/// How a file's text is read for references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Rust: its comments only.
    Rust,
    /// Shell, Python, TOML, YAML, HCL, systemd units: their `#` comments.
    Hash,
    /// Markdown: the whole text.
    Markdown,
}

/// The kind of a file, by its name; `None` for files with no comments to
/// read (JSON, data).
pub fn kind_of(path: &Path) -> Option<Kind> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "rs" => Some(Kind::Rust),
        "md" => Some(Kind::Markdown),
        "sh" | "py" | "toml" | "yml" | "yaml" | "hcl" | "service" | "conf" | "ini" | "txt"
        | "cfg" => Some(Kind::Hash),
        "" => Some(Kind::Hash),
        _ => None,
    }
}

/// The `#` comment of a line of a shell-like file: from a `#` at the
/// line's start or after a blank, to the end of the line.
fn hash_comment(line: &str) -> Option<&str> {
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        if c == '#' && prev.is_whitespace() {
            return Some(&line[i..]);
        }
        prev = c;
    }
    None
}

/// The text to check, line by line (line from 0).
fn texts(kind: Kind, text: &str) -> Vec<(usize, String)> {
    match kind {
        Kind::Markdown => text
            .lines()
            .enumerate()
            .map(|(n, l)| (n, l.to_owned()))
            .collect(),
        Kind::Hash => text
            .lines()
            .enumerate()
            .filter_map(|(n, l)| hash_comment(l).map(|c| (n, c.to_owned())))
            .collect(),
        Kind::Rust => rust::lex(text)
            .comments
            .into_iter()
            .map(|c| (c.line, c.text))
            .collect(),
    }
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

/// The markdown file names cited in `text`, as written (`docs/testing.md`).
fn markdown_names(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_path_char(chars[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_path_char(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let word = word.trim_end_matches('.');
        let before = start.checked_sub(1).map(|k| chars[k]);
        // A URL, a variable or a pattern: not a file of this repository.
        let foreign = word.contains("//")
            || matches!(before, Some(':' | '$' | '{' | '*' | '<' | '@'))
            || chars.get(i).is_some_and(|c| matches!(c, '*' | '}' | '>'));
        if let Some(stem) = word.strip_suffix(".md")
            && !foreign
            && stem.rsplit('/').next().is_some_and(|s| !s.is_empty())
        {
            names.push(word.to_owned());
        }
    }
    names
}

/// The issue number cited in `text`, if any: the word issue then a number
/// (with or without a `#`), or a bare `#` and digits after a blank or an
/// opening bracket.
fn issue_number(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("issue") {
        let after = rest[at + 5..].trim_start_matches(['s', ' ', ':']);
        let after = after.strip_prefix('#').unwrap_or(after);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            return Some(format!("issue {digits}"));
        }
        rest = &rest[at + 5..];
    }
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let before_ok = i == 0 || chars[i - 1].is_whitespace() || matches!(chars[i - 1], '(' | '[');
        if *c != '#' || !before_ok {
            continue;
        }
        let digits: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let end = chars.get(i + 1 + digits.len());
        if !digits.is_empty() && !end.is_some_and(|c| c.is_alphanumeric() || *c == '_') {
            return Some(format!("#{digits}"));
        }
    }
    None
}

/// Checks the file `file` (relative to the repository root `root`) of
/// kind `kind`: every reference to a missing document, sibling checkout or
/// issue. A markdown name resolves against the file's directory or the
/// repository root.
pub fn check(root: &Path, file: &str, kind: Kind, text: &str) -> Vec<Violation> {
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    let mut found = Vec::new();
    for (n, line) in texts(kind, text) {
        if line.contains("../shared") {
            found.push(Violation::new(
                file,
                n + 1,
                "cites ../shared, which is outside the repository: say what is meant here instead",
            ));
        }
        for name in markdown_names(&line) {
            let name_path = Path::new(&name);
            if !root.join(dir).join(name_path).is_file() && !root.join(name_path).is_file() {
                found.push(Violation::new(
                    file,
                    n + 1,
                    format!(
                        "cites {name}, which is not in the repository (neither next to this file nor at the root)"
                    ),
                ));
            }
        }
        if let Some(issue) = issue_number(&line) {
            found.push(Violation::new(
                file,
                n + 1,
                format!(
                    "cites {issue}: comments and docs stand alone, say what the issue was instead"
                ),
            ));
        }
    }
    found
}
