//! The house rule "no module imports one that imports it back, directly or through
//! others", checked on the sources of every crate.
//!
//! A module (one `.rs` file) imports another when it names it or one of its items in a
//! `use` or in a path (`crate::a::b::Item`, `super::x`, `self::x`, or a child module by
//! name). A `pub use` re-export (a crate root's `pub use error::Error`) is no import of
//! its own: a path through it counts as an import of the module the item comes from. A
//! cycle is a strongly connected set of two or more modules; the test lists each one
//! with the lines that close it. `#[cfg(test)]` items are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use recursa_tests::repo_root;

/// The crates' source folders (the binary `experiments/src/main.rs` is its own crate).
const CRATES: &[&str] = &[
    "core/src",
    "plugins/src",
    "data/src",
    "backends/src",
    "experiments/src",
];

/// A module path from its crate root: `["train", "trainer"]`; the root is `[]`.
type Module = Vec<String>;

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "lib" | "mod" | "main") || !parts.is_empty() && stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments, string and char literals (each replaced by spaces, so
/// line numbers stay).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&b, i) {
            // A raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{..}'
            let mut j = i + 2;
            while j < b.len() && b[j] != '\'' {
                j += 1;
            }
            for _ in i..=j.min(b.len() - 1) {
                out.push(' ');
            }
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` without its `#[cfg(test)]` items (test modules import their file with
/// `use super::*`, which says nothing of the library's structure).
fn without_tests(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let after = at + "#[cfg(test)]".len();
        // The item ends at its matching closing brace, or at a `;` before any brace.
        let rest = &out[after..];
        let end = match (rest.find('{'), rest.find(';')) {
            (Some(open), semi) if semi.is_none_or(|s| open < s) => {
                let mut depth = 0;
                let mut end = rest.len();
                for (k, ch) in rest[open..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (_, Some(semi)) => semi + 1,
            _ => rest.len(),
        };
        let blanked: String = out[at..after + end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(at..after + end, &blanked);
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// Expands a use tree (`crate::{a::{b, c}, d as e}`) into its paths.
/// Each with the name it brings into scope.
fn expand(tree: &str) -> Vec<(Vec<String>, String)> {
    fn segments(t: &str) -> Vec<String> {
        t.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "*")
            .map(str::to_string)
            .collect()
    }
    fn go(prefix: &[String], t: &str, out: &mut Vec<(Vec<String>, String)>) {
        let t = t.trim();
        let mut p = prefix.to_vec();
        let Some(open) = t.find('{') else {
            // A leaf, perhaps renamed: `d as e` (the name it is known by comes last).
            let mut words = t.split_whitespace();
            p.extend(segments(words.next().unwrap_or("")));
            let name = words.last().map(str::to_string);
            let name = name.or_else(|| p.last().cloned()).unwrap_or_default();
            out.push((p, name));
            return;
        };
        p.extend(segments(&t[..open]));
        let inner = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
        let (mut depth, mut start) = (0, 0);
        for (k, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    go(&p, &inner[start..k], out);
                    start = k + 1;
                }
                _ => {}
            }
        }
        if !inner[start..].trim().is_empty() {
            go(&p, &inner[start..], out);
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

struct Source {
    module: Module,
    /// (line, path as written) of every use and path naming crate, super, self or a child.
    paths: Vec<(usize, Vec<String>)>,
    /// Names made reachable by `pub use`, with the path they stand for.
    reexports: BTreeMap<String, Vec<String>>,
    children: BTreeSet<String>,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn read_source(src: &Path, file: &Path) -> Source {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let code = without_tests(&code_only(&text));
    let module = module_of(src, file);
    let mut children = BTreeSet::new();
    let mut paths = Vec::new();
    let mut reexports = BTreeMap::new();
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (pos, _) = chars[k];
        let rest = &code[pos..];
        let at_word = k == 0 || !is_ident(chars[k - 1].1);
        if at_word && (rest.starts_with("mod ") || rest.starts_with("pub mod ")) {
            let name: String = rest
                .trim_start_matches("pub ")
                .trim_start_matches("mod ")
                .chars()
                .take_while(|&c| is_ident(c))
                .collect();
            if rest[rest.find(&name).unwrap_or(0) + name.len()..]
                .trim_start()
                .starts_with(';')
            {
                children.insert(name);
            }
        }
        if at_word && rest.starts_with("use ") {
            let end = rest.find(';').unwrap_or(rest.len());
            let before = code[..pos].trim_end();
            let reexport = before.ends_with("pub") || before.ends_with(')');
            for (p, name) in expand(&rest[4..end]) {
                if reexport {
                    reexports.insert(name, p);
                } else {
                    paths.push((line_of(pos), p));
                }
            }
            let skip = rest[..end].chars().count();
            k += skip;
            continue;
        }
        if at_word {
            for anchor in ["crate::", "super::", "self::"] {
                if rest.starts_with(anchor) {
                    let path: String = rest
                        .chars()
                        .take_while(|&c| is_ident(c) || c == ':')
                        .collect();
                    let segments = path
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                    paths.push((line_of(pos), segments));
                    k += path.chars().count();
                    break;
                }
            }
        }
        k += 1;
    }
    Source {
        module,
        paths,
        reexports,
        children,
    }
}

/// The module a path names, from module `at`: the longest module prefix, or where the
/// item after it comes from when that module only re-exports it (`crate::Error`).
fn resolve(at: &Module, path: &[String], sources: &BTreeMap<Module, Source>) -> Option<Module> {
    resolve_within(at, path, sources, 0)
}

fn resolve_within(
    at: &Module,
    path: &[String],
    sources: &BTreeMap<Module, Source>,
    depth: usize,
) -> Option<Module> {
    let children = sources.get(at).map(|s| &s.children);
    let (mut base, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (at.clone(), &path[1..]),
        Some("super") => {
            let mut m = at.clone();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                m.pop();
                rest = &rest[1..];
            }
            (m, rest)
        }
        Some(first) if children.is_some_and(|c| c.contains(first)) => (at.clone(), path),
        _ => return None,
    };
    let mut best = base.clone();
    let mut used = 0;
    for seg in rest {
        base.push(seg.clone());
        if sources.contains_key(&base) {
            best = base.clone();
            used += 1;
        } else {
            break;
        }
    }
    let item = rest.get(used);
    let reexported = item.and_then(|name| sources.get(&best)?.reexports.get(name));
    match reexported {
        Some(target) if depth < 8 => {
            resolve_within(&best, target, sources, depth + 1).or(Some(best))
        }
        _ => Some(best),
    }
}

/// Strongly connected sets of two or more modules (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State, v: &Module) {
        let i = s.index.len();
        s.index.insert(v.clone(), i);
        s.low.insert(v.clone(), i);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let next: Vec<Module> = s.edges.get(v).into_iter().flatten().cloned().collect();
        for w in next {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on_stack.remove(&w);
                let done = &w == v;
                set.push(w);
                if done {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.out.push(set);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Every module-level import cycle of the crate in `src` (the binary's `main.rs` apart),
/// each with the lines that import along it.
fn import_cycles(src: &Path, binary: bool) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // The binary is its own crate of one file; the library is every other file.
    let main = src.join("main.rs");
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| (*f == main) == binary)
        .collect();
    let sources: BTreeMap<Module, Source> = files
        .iter()
        .map(|f| {
            let s = read_source(src, f);
            (s.module.clone(), s)
        })
        .collect();
    let file_of: BTreeMap<Module, &PathBuf> =
        files.iter().map(|f| (module_of(src, f), f)).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut why: BTreeMap<(Module, Module), String> = BTreeMap::new();
    for s in sources.values() {
        let file = file_of[&s.module];
        edges.entry(s.module.clone()).or_default();
        for (line, path) in &s.paths {
            let Some(to) = resolve(&s.module, path, &sources) else {
                continue;
            };
            if to != s.module {
                edges
                    .entry(s.module.clone())
                    .or_default()
                    .insert(to.clone());
                why.entry((s.module.clone(), to))
                    .or_insert_with(|| format!("{}:{line} {}", file.display(), path.join("::")));
            }
        }
    }
    cycles(&edges)
        .into_iter()
        .map(|set| {
            let members: BTreeSet<&Module> = set.iter().collect();
            let name = |m: &Module| format!("crate::{}", m.join("::"));
            let lines: Vec<String> = why
                .iter()
                .filter(|((a, b), _)| members.contains(a) && members.contains(b))
                .map(|((a, b), w)| format!("    {} -> {}: {w}", name(a), name(b)))
                .collect();
            format!(
                "{}: {}\n{}",
                src.display(),
                set.iter().map(name).collect::<Vec<_>>().join(", "),
                lines.join("\n")
            )
        })
        .collect()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = repo_root();
    let mut found = Vec::new();
    for krate in CRATES {
        let src = root.join(krate);
        found.extend(import_cycles(&src, false));
        if src.join("main.rs").exists() {
            found.extend(import_cycles(&src, true));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_finder_sees_a_cycle_and_resolves_paths() {
    // a -> b -> c -> a, and d -> a (not in the cycle).
    let m = |s: &str| -> Module { s.split("::").map(str::to_string).collect() };
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    edges.insert(m("d"), BTreeSet::from([m("a")]));
    assert_eq!(cycles(&edges), vec![vec![m("a"), m("b"), m("c")]]);

    let paths = expand("crate::{a::{b, c::D}, e as f, g::*}");
    let joined: Vec<String> = paths
        .iter()
        .map(|(p, name)| format!("{} {name}", p.join("::")))
        .collect();
    assert_eq!(
        joined,
        [
            "crate::a::b b",
            "crate::a::c::D D",
            "crate::e f",
            "crate::g g"
        ]
    );

    let source = |module: &str, reexports: &[(&str, &str)]| Source {
        module: if module.is_empty() { vec![] } else { m(module) },
        paths: Vec::new(),
        reexports: reexports
            .iter()
            .map(|(n, p)| (n.to_string(), m(p)))
            .collect(),
        children: reexports
            .iter()
            .map(|(_, p)| p.split("::").next().unwrap_or("").to_string())
            .collect(),
    };
    let sources: BTreeMap<Module, Source> = [
        source("", &[("Error", "error::Error")]),
        source("error", &[]),
        source("train", &[]),
        source("train::loss", &[]),
        source("step", &[]),
    ]
    .into_iter()
    .map(|s| (s.module.clone(), s))
    .collect();
    let at = m("train::trainer");
    let r = |p: &str| resolve(&at, &m(p), &sources);
    assert_eq!(r("crate::train::loss::bce"), Some(m("train::loss")));
    assert_eq!(r("super::loss::Thing"), Some(m("train::loss")));
    assert_eq!(r("super::super::step::Batch"), Some(m("step")));
    // Through the root's `pub use error::Error`.
    assert_eq!(r("crate::Error"), Some(m("error")));
    assert_eq!(r("crate::B"), Some(vec![]));
    assert_eq!(r("burn::tensor::Tensor"), None);

    let code = code_only(
        "let s = \"crate::a\"; // crate::b\nuse crate::c; /* crate::d */ let r = r#\"crate::e\"#;",
    );
    assert!(code.contains("crate::c") && !code.contains("crate::a"));
    assert!(!code.contains("crate::b") && !code.contains("crate::d") && !code.contains("crate::e"));
    assert_eq!(code.lines().count(), 2);
}
