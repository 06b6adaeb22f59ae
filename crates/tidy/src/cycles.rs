//! Check (d): no import cycle between the top-level modules of a crate.
//! A module uses another when its code (not its comments, not its
//! `#[cfg(test)]` parts) names a `crate::other::..` path (also in a grouped
//! `use crate::{..}`, also `crate::Name` for a name the crate root
//! re-exports from `other`) or reaches it through `super::`. Modules that
//! use each other, directly or round a loop, form a cycle; each cycle (a
//! strongly connected component of the graph) is one violation naming
//! every edge in it and where it is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::Violation;
use crate::rust::{self, Token};

/// One file of a crate: its path relative to `src/` and its text.
#[derive(Debug, Clone)]
pub struct CrateFile {
    /// Relative to the crate's `src/` (`recovery/plan.rs`).
    pub rel: PathBuf,
    /// The file's text.
    pub text: String,
}

/// Where one top-level module first uses another: (file, line from 1).
type Edges = BTreeMap<(String, String), (String, usize)>;

/// The first segments of the paths of a use tree starting at token `k`
/// (`a::B` -> a; `{a::B, c}` -> a, c).
fn first_segments(t: &[Token], k: usize) -> Vec<(String, usize)> {
    let Some(tok) = t.get(k) else {
        return Vec::new();
    };
    if !tok.is("{") {
        return if rust::is_ident(t, k) {
            vec![(tok.text.clone(), tok.line)]
        } else {
            Vec::new()
        };
    }
    let end = rust::matching(t, k);
    let mut out = Vec::new();
    let mut expect = true;
    let mut depth = 0;
    for (j, x) in t.iter().enumerate().take(end).skip(k + 1) {
        match x.text.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            "," if depth == 0 => expect = true,
            _ if expect && depth == 0 && rust::is_ident(t, j) => {
                out.push((x.text.clone(), x.line));
                expect = false;
            }
            _ => expect = false,
        }
    }
    out
}

/// The names the crate root re-exports (`pub use a::{B, C as D};`), each
/// with the top-level module it comes from.
fn root_reexports(root: &rust::Source, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let t = &root.tokens;
    let mut map = BTreeMap::new();
    for i in 0..t.len() {
        if !(t[i].is("pub") && t.get(i + 1).is_some_and(|x| x.is("use"))) {
            continue;
        }
        let mut k = i + 2;
        if t.get(k).is_some_and(|x| x.is("crate") || x.is("self"))
            && t.get(k + 1).is_some_and(|x| x.is("::"))
        {
            k += 2;
        }
        let Some(module) = t.get(k).filter(|x| modules.contains(&x.text)) else {
            continue;
        };
        let end = rust::item_end(t, k);
        for j in k + 1..end {
            if rust::is_ident(t, j) && !t[j].is("as") && !t[j].is("self") {
                map.insert(t[j].text.clone(), module.text.clone());
            }
        }
    }
    map
}

/// The module graph's edges of one crate (`files`, all of `src/`; the
/// binary root `main.rs` is left out, it is a crate of its own).
fn edges(krate: &str, files: &[CrateFile]) -> (BTreeSet<String>, Edges) {
    let lib = files.iter().find(|f| f.rel == Path::new("lib.rs"));
    let lib_src = lib.map(|f| rust::lex(&f.text));
    let sources: Vec<_> = files.iter().map(|f| (f, rust::lex(&f.text))).collect();
    let test_roots = rust::test_module_roots(sources.iter().map(|(f, src)| (f.rel.as_path(), src)));
    let is_test_file = |rel: &Path| test_roots.iter().any(|r| rel.starts_with(r));
    let modules: BTreeSet<String> = files
        .iter()
        .filter(|f| f.rel != Path::new("main.rs") && !is_test_file(&f.rel))
        .filter_map(|f| rust::module_path(&f.rel).into_iter().next())
        .collect();
    let reexports = lib_src
        .as_ref()
        .map(|s| root_reexports(s, &modules))
        .unwrap_or_default();
    let mut found = Edges::new();
    for (f, src) in &sources {
        let path = rust::module_path(&f.rel);
        let Some(from) = path.first().cloned() else {
            continue; // the crate root
        };
        if f.rel == Path::new("main.rs") || is_test_file(&f.rel) {
            continue;
        }
        let tests = rust::test_parts(src);
        let t = &src.tokens;
        for i in 0..t.len() {
            if tests.tokens[i] || i > 0 && t[i - 1].is("$") {
                continue;
            }
            let targets: Vec<(String, usize)> = if t[i].is("crate")
                && t.get(i + 1).is_some_and(|x| x.is("::"))
                && !(i > 0 && t[i - 1].is("::"))
            {
                first_segments(t, i + 2)
                    .into_iter()
                    .filter_map(|(name, line)| {
                        if modules.contains(&name) {
                            Some((name, line))
                        } else {
                            reexports.get(&name).map(|m| (m.clone(), line))
                        }
                    })
                    .collect()
            } else if t[i].is("super") && !(i > 0 && (t[i - 1].is("::") || t[i - 1].is("("))) {
                let mut ups = 0;
                let mut k = i;
                while t.get(k).is_some_and(|x| x.is("super"))
                    && t.get(k + 1).is_some_and(|x| x.is("::"))
                {
                    ups += 1;
                    k += 2;
                }
                if ups == 0 || ups > path.len() || path.len() - ups > 0 {
                    continue; // still inside this top-level module
                }
                first_segments(t, k)
                    .into_iter()
                    .filter(|(name, _)| modules.contains(name))
                    .collect()
            } else {
                continue;
            };
            for (to, line) in targets {
                if to != from {
                    found
                        .entry((from.clone(), to))
                        .or_insert_with(|| (format!("{krate}/src/{}", f.rel.display()), line + 1));
                }
            }
        }
    }
    (modules, found)
}

/// The strongly connected components of a graph with more than one node
/// (Tarjan's algorithm).
fn cycles(nodes: &BTreeSet<String>, edges: &Edges) -> Vec<Vec<String>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a str, edges: &'a Edges, st: &mut State<'a>) {
        let n = st.index.len();
        st.index.insert(v, n);
        st.low.insert(v, n);
        st.stack.push(v);
        st.on_stack.insert(v);
        for (from, to) in edges.keys() {
            if from != v {
                continue;
            }
            let w = to.as_str();
            if !st.index.contains_key(w) {
                visit(w, edges, st);
                let low = st.low[v].min(st.low[w]);
                st.low.insert(v, low);
            } else if st.on_stack.contains(w) {
                let low = st.low[v].min(st.index[w]);
                st.low.insert(v, low);
            }
        }
        if st.low[v] == st.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                st.out.push(scc);
            }
        }
    }
    let mut st = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !st.index.contains_key(v.as_str()) {
            visit(v, edges, &mut st);
        }
    }
    st.out
}

/// Checks one crate (`krate`, its directory relative to the repository
/// root; `files`, every `.rs` file under its `src/`): one violation per
/// cycle.
pub fn check(krate: &str, files: &[CrateFile]) -> Vec<Violation> {
    let (modules, edges) = edges(krate, files);
    cycles(&modules, &edges)
        .into_iter()
        .map(|scc| {
            let inside: Vec<_> = edges
                .iter()
                .filter(|((a, b), _)| scc.contains(a) && scc.contains(b))
                .collect();
            let ((_, _), (file, line)) = inside[0];
            let detail: Vec<String> = inside
                .iter()
                .map(|((a, b), (file, line))| format!("{a} -> {b} ({file}:{line})"))
                .collect();
            Violation::new(
                file,
                *line,
                format!(
                    "import cycle between the modules {{{}}} of {krate}: {}",
                    scc.join(", "),
                    detail.join("; ")
                ),
            )
        })
        .collect()
}
