//! A small Rust lexer, enough for the tidy checks: it splits a source file
//! into comments and code (string and char literals blanked, so text inside
//! them is never taken for code or a comment), tokenizes the code, and finds
//! attributes and the `#[cfg(test)]` parts of a file.

use std::path::{Path, PathBuf};

/// What a comment is to rustdoc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentKind {
    /// `///` or `/** */`: documents the item after it.
    Outer,
    /// `//!` or `/*! */`: documents the enclosing item (module, crate).
    Inner,
    /// Any other comment.
    Plain,
}

/// One line's share of a comment (a block comment gives one per line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// The line, counted from 0.
    pub line: usize,
    /// Doc or plain.
    pub kind: CommentKind,
    /// The comment's text on that line, markers included.
    pub text: String,
}

/// A token of code: an identifier or keyword, a literal, or one punctuation
/// character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The line, counted from 0.
    pub line: usize,
    /// The text; a string or char literal is its delimiters with the
    /// content blanked (`"  "`).
    pub text: String,
}

impl Token {
    /// Whether the token is exactly `s`.
    pub fn is(&self, s: &str) -> bool {
        self.text == s
    }

    fn is_ident(&self) -> bool {
        self.text
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
    }
}

/// A Rust source file split into comments and code.
#[derive(Debug, Clone)]
pub struct Source {
    /// Each line's code: comments replaced by spaces, literal contents blanked.
    pub code: Vec<String>,
    /// Whether a line holds code (a literal's content counts as code).
    pub has_code: Vec<bool>,
    /// Every comment, one entry per line it covers.
    pub comments: Vec<Comment>,
    /// The code's tokens.
    pub tokens: Vec<Token>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

struct Lexer {
    code: Vec<String>,
    has_code: Vec<bool>,
    comments: Vec<Comment>,
    line: usize,
}

impl Lexer {
    fn newline(&mut self) {
        self.code.push(String::new());
        self.has_code.push(false);
        self.line += 1;
    }

    fn push_code(&mut self, c: char, counts: bool) {
        self.code[self.line].push(c);
        if counts && !c.is_whitespace() {
            self.has_code[self.line] = true;
        }
    }

    fn blank(&mut self) {
        self.code[self.line].push(' ');
    }
}

/// Where the literal starting at `i` begins its quote, if a string literal
/// (`"`, `b"`, `r#"`, `br"`, `c"`, `cr"`) starts there: (prefix length,
/// number of `#`, raw).
fn string_start(s: &[char], i: usize) -> Option<(usize, usize, bool)> {
    if i > 0 && is_ident_char(s[i - 1]) {
        return None;
    }
    let mut j = i;
    if j < s.len() && (s[j] == 'b' || s[j] == 'c') {
        j += 1;
    }
    let raw = j < s.len() && s[j] == 'r';
    if raw {
        j += 1;
    }
    let mut hashes = 0;
    if raw {
        while j < s.len() && s[j] == '#' {
            hashes += 1;
            j += 1;
        }
    }
    (j < s.len() && s[j] == '"').then_some((j - i, hashes, raw))
}

/// Splits `text` into comments, code and tokens.
pub fn lex(text: &str) -> Source {
    let s: Vec<char> = text.chars().collect();
    let n = s.len();
    let mut lx = Lexer {
        code: vec![String::new()],
        has_code: vec![false],
        comments: Vec::new(),
        line: 0,
    };
    let mut i = 0;
    while i < n {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '\n' {
            lx.newline();
            i += 1;
        } else if c == '/' && next == Some('/') {
            let mut j = i;
            while j < n && s[j] != '\n' {
                j += 1;
            }
            let text: String = s[i..j].iter().collect();
            let kind = if text.starts_with("///") && !text.starts_with("////") {
                CommentKind::Outer
            } else if text.starts_with("//!") {
                CommentKind::Inner
            } else {
                CommentKind::Plain
            };
            for _ in i..j {
                lx.blank();
            }
            lx.comments.push(Comment {
                line: lx.line,
                kind,
                text,
            });
            i = j;
        } else if c == '/' && next == Some('*') {
            let head: String = s[i..n.min(i + 4)].iter().collect();
            let kind = if head.starts_with("/**") && !head.starts_with("/***") && head != "/**/" {
                CommentKind::Outer
            } else if head.starts_with("/*!") {
                CommentKind::Inner
            } else {
                CommentKind::Plain
            };
            let mut depth = 0;
            let mut j = i;
            let mut seg = String::new();
            while j < n {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    seg.push_str("/*");
                    lx.blank();
                    lx.blank();
                    j += 2;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    seg.push_str("*/");
                    lx.blank();
                    lx.blank();
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else if s[j] == '\n' {
                    lx.comments.push(Comment {
                        line: lx.line,
                        kind,
                        text: std::mem::take(&mut seg),
                    });
                    lx.newline();
                    j += 1;
                } else {
                    seg.push(s[j]);
                    lx.blank();
                    j += 1;
                }
            }
            lx.comments.push(Comment {
                line: lx.line,
                kind,
                text: seg,
            });
            i = j;
        } else if let Some((prefix, hashes, raw)) = string_start(&s, i) {
            for k in 0..=prefix {
                lx.push_code(s[i + k], true);
            }
            let mut j = i + prefix + 1;
            while j < n {
                if s[j] == '\n' {
                    lx.newline();
                    j += 1;
                } else if !raw && s[j] == '\\' {
                    lx.push_code(' ', false);
                    lx.has_code[lx.line] = true;
                    j += 1;
                    if j < n && s[j] != '\n' {
                        lx.push_code(' ', false);
                        j += 1;
                    }
                } else if s[j] == '"' && (0..hashes).all(|h| s.get(j + 1 + h) == Some(&'#')) {
                    lx.push_code('"', true);
                    for _ in 0..hashes {
                        lx.push_code('#', true);
                    }
                    j += 1 + hashes;
                    break;
                } else {
                    lx.push_code(' ', false);
                    lx.has_code[lx.line] = true;
                    j += 1;
                }
            }
            i = j;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            let end = if next == Some('\\') {
                let mut j = i + 2;
                if j < n {
                    j += 1;
                }
                while j < n && s[j] != '\'' && s[j] != '\n' {
                    j += 1;
                }
                Some(j)
            } else if s.get(i + 2) == Some(&'\'') && next != Some('\n') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) if end < n && s[end] == '\'' => {
                    lx.push_code('\'', true);
                    for _ in i + 1..end {
                        lx.push_code(' ', false);
                    }
                    lx.push_code('\'', true);
                    i = end + 1;
                }
                _ => {
                    lx.push_code('\'', true);
                    i += 1;
                }
            }
        } else {
            lx.push_code(c, true);
            i += 1;
        }
    }
    let tokens = tokenize(&lx.code);
    Source {
        code: lx.code,
        has_code: lx.has_code,
        comments: lx.comments,
        tokens,
    }
}

fn tokenize(code: &[String]) -> Vec<Token> {
    let mut tokens = Vec::new();
    for (line, text) in code.iter().enumerate() {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if is_ident_char(c) {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                tokens.push(Token {
                    line,
                    text: chars[start..i].iter().collect(),
                });
            } else if c == ':' && chars.get(i + 1) == Some(&':') {
                tokens.push(Token {
                    line,
                    text: "::".to_owned(),
                });
                i += 2;
            } else {
                tokens.push(Token {
                    line,
                    text: c.to_string(),
                });
                i += 1;
            }
        }
    }
    tokens
}

/// The index of the token closing the group opened at `open` (`(`, `[` or
/// `{`), or the last token when it is never closed.
pub fn matching(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0i32;
    for (k, t) in tokens.iter().enumerate().skip(open) {
        match t.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    tokens.len().saturating_sub(1)
}

/// An attribute: `#[...]` or `#![...]`, as token indices (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    /// The `#`.
    pub start: usize,
    /// The closing `]`.
    pub end: usize,
    /// `#![...]`.
    pub inner: bool,
}

/// The attribute starting at token `i`, if one does.
pub fn attribute_at(tokens: &[Token], i: usize) -> Option<Attribute> {
    if !tokens.get(i)?.is("#") {
        return None;
    }
    let inner = tokens.get(i + 1)?.is("!");
    let open = if inner { i + 2 } else { i + 1 };
    if !tokens.get(open)?.is("[") {
        return None;
    }
    Some(Attribute {
        start: i,
        end: matching(tokens, open),
        inner,
    })
}

/// The attribute's tokens joined without spaces (`cfg(test)`).
pub fn attribute_text(tokens: &[Token], a: Attribute) -> String {
    tokens[a.start..=a.end]
        .iter()
        .map(|t| t.text.as_str())
        .collect()
}

fn is_cfg_test(text: &str) -> bool {
    text.contains("cfg(test)") || text.contains("cfg(any(test,") || text.contains("cfg(all(test,")
}

/// The index of the last token of the item starting at `i`: its first `;`
/// or the `}` closing its first `{`, outside parentheses and brackets.
pub fn item_end(tokens: &[Token], i: usize) -> usize {
    let mut k = i;
    while k < tokens.len() {
        match tokens[k].text.as_str() {
            ";" => return k,
            "{" => return matching(tokens, k),
            "(" | "[" => k = matching(tokens, k) + 1,
            _ => k += 1,
        }
    }
    tokens.len().saturating_sub(1)
}

/// The parts of a file that only tests build.
#[derive(Debug, Clone, Default)]
pub struct TestParts {
    /// Per line: inside a `#[cfg(test)]` item (a module, a `use`, a fn).
    pub lines: Vec<bool>,
    /// Per token: inside a `#[cfg(test)]` item.
    pub tokens: Vec<bool>,
    /// Modules declared `#[cfg(test)] mod name;`: their files are test-only.
    pub modules: Vec<String>,
}

/// Finds the `#[cfg(test)]` items of a file (the whole file after
/// `#![cfg(test)]`).
pub fn test_parts(src: &Source) -> TestParts {
    let t = &src.tokens;
    let mut parts = TestParts {
        lines: vec![false; src.code.len()],
        tokens: vec![false; t.len()],
        modules: Vec::new(),
    };
    let mut i = 0;
    while i < t.len() {
        let Some(a) = attribute_at(t, i) else {
            i += 1;
            continue;
        };
        if !is_cfg_test(&attribute_text(t, a)) {
            i = a.end + 1;
            continue;
        }
        if a.inner {
            parts.lines.iter_mut().for_each(|l| *l = true);
            parts.tokens.iter_mut().for_each(|l| *l = true);
            return parts;
        }
        // Skip the item's other attributes and its visibility.
        let mut k = a.end + 1;
        while let Some(b) = attribute_at(t, k) {
            k = b.end + 1;
        }
        if t.get(k).is_some_and(|x| x.is("pub")) {
            k += 1;
            if t.get(k).is_some_and(|x| x.is("(")) {
                k = matching(t, k) + 1;
            }
        }
        let end = item_end(t, k);
        if t.get(k).is_some_and(|x| x.is("mod"))
            && t.get(end).is_some_and(|x| x.is(";"))
            && let Some(name) = t.get(k + 1)
        {
            parts.modules.push(name.text.clone());
        }
        for flag in &mut parts.tokens[a.start..=end.min(t.len() - 1)] {
            *flag = true;
        }
        let (first, last) = (t[a.start].line, t[end.min(t.len() - 1)].line);
        for flag in &mut parts.lines[first..=last] {
            *flag = true;
        }
        i = end + 1;
    }
    parts
}

/// The module path of a source file, from its path relative to the crate's
/// `src/` (`lib.rs` -> [], `a/mod.rs` -> [a], `a/b.rs` -> [a, b]).
pub fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let Some(last) = parts.pop() else {
        return parts;
    };
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    let root = parts.is_empty() && matches!(stem, "lib" | "main");
    if !root && stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The files a module declared as `mod name;` in `file` (relative to
/// `src/`) may live in.
pub fn child_module_files(file: &Path, name: &str) -> [PathBuf; 2] {
    let dir = file.parent().unwrap_or(Path::new(""));
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let root = dir.as_os_str().is_empty() && matches!(stem, "lib" | "main");
    let base = if root || stem == "mod" {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        base.join(format!("{name}.rs")),
        base.join(name).join("mod.rs"),
    ]
}

/// The paths (relative to `src/`) that only tests build: for each
/// `#[cfg(test)] mod x;`, its file `x.rs` and its directory `x/`. A file is
/// test-only when its path starts with one of them.
pub fn test_module_roots<'a>(files: impl Iterator<Item = (&'a Path, &'a Source)>) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for (rel, src) in files {
        for name in test_parts(src).modules {
            let [file, dir_mod] = child_module_files(rel, &name);
            roots.push(file);
            roots.extend(dir_mod.parent().map(Path::to_path_buf));
        }
    }
    roots
}

/// The lines (from 0) that carry an outer doc comment.
pub fn outer_doc_lines(src: &Source) -> Vec<bool> {
    let mut lines = vec![false; src.code.len()];
    for c in &src.comments {
        if c.kind == CommentKind::Outer {
            lines[c.line] = true;
        }
    }
    lines
}

/// Whether token `i` is an identifier.
pub fn is_ident(tokens: &[Token], i: usize) -> bool {
    tokens.get(i).is_some_and(Token::is_ident)
}
