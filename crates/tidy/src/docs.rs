//! Check (c): every public item says what it is and why. A `pub` fn,
//! struct, enum, trait, type, const, static, mod or union (not
//! `pub(crate)`, `pub(super)`, `pub(in ..)`; not a `pub use` re-export;
//! not a field) outside `#[cfg(test)]` code must carry an outer doc comment
//! (`///`, `/** */` or `#[doc]`), attributes allowed in between. A
//! `pub mod name;` may instead be documented by `//!` at the top of its
//! file.

use crate::Violation;
use crate::rust::{self, Source};

const ITEMS: [&str; 9] = [
    "fn", "struct", "enum", "trait", "type", "const", "static", "mod", "union",
];

/// A public item found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its keyword (`fn`, `struct`, ...).
    pub keyword: String,
    /// Its name.
    pub name: String,
    /// The line (from 0) of its `pub`.
    pub line: usize,
    /// Whether an outer doc comment or `#[doc]` precedes it.
    pub documented: bool,
    /// `pub mod name;`: its body lives in another file.
    pub external_mod: bool,
}

/// Whether token `k` qualifies an item (`async`, `unsafe`, `extern "C"`,
/// `const fn`) rather than naming its kind.
fn is_qualifier(t: &[rust::Token], k: usize) -> bool {
    let Some(x) = t.get(k) else {
        return false;
    };
    match x.text.as_str() {
        "async" | "unsafe" | "extern" => true,
        "const" => t
            .get(k + 1)
            .is_some_and(|y| matches!(y.text.as_str(), "fn" | "async" | "unsafe" | "extern")),
        s => s.starts_with('"'),
    }
}

/// The public items of a source file outside `#[cfg(test)]` code.
pub fn public_items(src: &Source) -> Vec<Item> {
    let t = &src.tokens;
    let tests = rust::test_parts(src);
    let doc_lines = rust::outer_doc_lines(src);
    // For each token that ends an attribute, where the attribute starts.
    let mut attr_start = vec![None; t.len()];
    for i in 0..t.len() {
        if let Some(a) = rust::attribute_at(t, i) {
            attr_start[a.end] = Some(a.start);
        }
    }
    let mut items = Vec::new();
    for (i, tok) in t.iter().enumerate() {
        if !tok.is("pub") || tests.tokens[i] || i > 0 && t[i - 1].is("$") {
            continue;
        }
        let mut k = i + 1;
        if t.get(k).is_some_and(|x| x.is("(")) {
            continue;
        }
        while is_qualifier(t, k) {
            k += 1;
        }
        let Some(keyword) = t.get(k).filter(|x| ITEMS.contains(&x.text.as_str())) else {
            continue;
        };
        let name = t.get(k + 1).map(|x| x.text.clone()).unwrap_or_default();
        // Walk back over the attributes in front of the item.
        let mut first = i;
        let mut documented = false;
        while first > 0
            && let Some(start) = attr_start[first - 1]
        {
            let text = rust::attribute_text(
                t,
                rust::Attribute {
                    start,
                    end: first - 1,
                    inner: false,
                },
            );
            documented |= text.starts_with("#[doc");
            first = start;
        }
        let from = t[first].line.saturating_sub(1);
        documented |= (from..=tok.line).any(|l| doc_lines[l]);
        let external_mod = keyword.is("mod") && t.get(k + 2).is_some_and(|x| x.is(";"));
        items.push(Item {
            keyword: keyword.text.clone(),
            name,
            line: tok.line,
            documented,
            external_mod,
        });
    }
    items
}

/// Whether a module file opens with an inner doc comment (`//!`), before
/// any code.
pub fn has_module_doc(src: &Source) -> bool {
    let first_code = src.has_code.iter().position(|c| *c).unwrap_or(usize::MAX);
    src.comments
        .iter()
        .any(|c| c.kind == rust::CommentKind::Inner && c.line < first_code)
}

/// Checks the file `file` with text `text`; `module_doc(name)` says whether
/// the file of `pub mod name;` opens with `//!` (false when not found).
pub fn check(file: &str, text: &str, module_doc: &dyn Fn(&str) -> bool) -> Vec<Violation> {
    let src = rust::lex(text);
    public_items(&src)
        .into_iter()
        .filter(|item| !(item.documented || item.external_mod && module_doc(&item.name)))
        .map(|item| {
            let hint = if item.external_mod {
                " (or a `//!` at the top of its file)"
            } else {
                ""
            };
            Violation::new(
                file,
                item.line + 1,
                format!(
                    "pub {} {} has no doc comment: say what it is and why{hint}",
                    item.keyword, item.name
                ),
            )
        })
        .collect()
}
