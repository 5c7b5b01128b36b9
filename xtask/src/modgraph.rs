//! The module graph of a crate, and its cycles: `cargo xtask lint` fails when a module of
//! socktrace's userspace imports one that imports it back, directly or around a circle.
//!
//! Two levels are checked:
//! * the crate's top-level modules (a folder module counts as one: `kernel`, `diagnose`), so
//!   the data path keeps one direction;
//! * the files of each folder module among themselves. A folder's `mod.rs` is its interface:
//!   its children may use what it defines (the `Diagnosis` a rule family returns) and it calls
//!   them, so edges between a child and its own `mod.rs` are not cycles; any circle among the
//!   children (`reset.rs` -> `timeout.rs` -> `reset.rs`) is.
//!
//! References are read with `syn`: every `use` tree and every path (in code, types and
//! patterns), and the `crate::`/`super::`/`self::` paths inside macro invocations (`format!`
//! arguments), which `syn` leaves as tokens. Test code counts too: a test that reaches into a
//! module that depends on its own is a cycle all the same.

use anyhow::{Context as _, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// A module path inside the crate, as its segments (`["kernel", "load"]`; empty: the root).
type ModPath = Vec<String>;

/// One reference from a file to a module of the crate.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: ModPath,
    pub to: ModPath,
    /// Where the reference is, as `file:line`.
    pub at: String,
}

/// A cycle: the modules around it (the first repeated at the end), and one reference per step.
#[derive(Debug, PartialEq, Eq)]
pub struct Cycle {
    pub modules: Vec<String>,
    pub evidence: Vec<String>,
}

/// The modules of the crate whose sources are under `src` (`main.rs` or `lib.rs` its root),
/// each with its file.
fn modules(src: &Path) -> Result<BTreeMap<ModPath, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?;
            let mut segs: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            let last = segs.pop().unwrap_or_default();
            let stem = last.trim_end_matches(".rs");
            if !(segs.is_empty() && (stem == "main" || stem == "lib")) && stem != "mod" {
                segs.push(stem.to_string());
            }
            // A build script or a binary beside the crate root is not a module of it.
            if segs.first().is_some_and(|s| s == "bin") {
                continue;
            }
            out.insert(segs, path);
        }
    }
    Ok(out)
}

/// The longest known module that `path` (absolute, from the crate root) names or is inside.
fn module_of(known: &BTreeMap<ModPath, PathBuf>, path: &[String]) -> ModPath {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| known.contains_key(p)).unwrap_or_default()
}

/// Collects the crate-relative paths a file mentions.
struct Refs<'a> {
    here: &'a [String],
    /// Child modules this file declares (`mod x;`): a path may start with one of them.
    children: BTreeSet<String>,
    found: Vec<(Vec<String>, usize)>,
}

impl Refs<'_> {
    /// `segs` as written in this file, made absolute; None when it leaves the crate (a
    /// dependency, std) or names a local item.
    fn absolute(&self, segs: &[String]) -> Option<Vec<String>> {
        let first = segs.first()?;
        match first.as_str() {
            "crate" => Some(segs[1..].to_vec()),
            "self" => Some(self.here.iter().cloned().chain(segs[1..].iter().cloned()).collect()),
            "super" => {
                let mut base = self.here.to_vec();
                let mut rest = segs;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                Some(base.into_iter().chain(rest.iter().cloned()).collect())
            }
            name if self.children.contains(name) => {
                Some(self.here.iter().cloned().chain(segs.iter().cloned()).collect())
            }
            _ => None,
        }
    }

    fn note(&mut self, segs: Vec<String>, line: usize) {
        if let Some(abs) = self.absolute(&segs) {
            self.found.push((abs, line));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.note(full, line);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                self.note(full, line);
            }
            syn::UseTree::Glob(_) => self.note(prefix.clone(), line),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let line = u.use_token.span.start().line;
        self.use_tree(&mut Vec::new(), &u.tree, line);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = p.segments.first().map(|s| s.ident.span().start().line).unwrap_or(0);
        self.note(segs, line);
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Paths inside a macro's tokens: `crate :: a :: b`, `super :: x`.
        let tokens: Vec<proc_macro2::TokenTree> = flatten(m.tokens.clone());
        let mut i = 0;
        while i < tokens.len() {
            if let proc_macro2::TokenTree::Ident(id) = &tokens[i] {
                let start = id.to_string();
                if matches!(start.as_str(), "crate" | "super" | "self") || self.children.contains(&start) {
                    let line = id.span().start().line;
                    let mut segs = vec![start];
                    let mut j = i + 1;
                    loop {
                        let colons = matches!((&tokens.get(j), &tokens.get(j + 1)),
                            (Some(proc_macro2::TokenTree::Punct(a)), Some(proc_macro2::TokenTree::Punct(b)))
                                if a.as_char() == ':' && b.as_char() == ':');
                        match (colons, tokens.get(j + 2)) {
                            (true, Some(proc_macro2::TokenTree::Ident(next))) => {
                                segs.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if segs.len() > 1 {
                        self.note(segs, line);
                    }
                    i = j;
                    continue;
                }
            }
            i += 1;
        }
        syn::visit::visit_macro(self, m);
    }
}

/// A token stream with its groups opened, in order.
fn flatten(ts: proc_macro2::TokenStream) -> Vec<proc_macro2::TokenTree> {
    let mut out = Vec::new();
    for t in ts {
        match t {
            proc_macro2::TokenTree::Group(g) => out.extend(flatten(g.stream())),
            other => out.push(other),
        }
    }
    out
}

/// Every reference from each module's file to another module of the crate under `src`.
pub fn edges(src: &Path) -> Result<Vec<Edge>> {
    let known = modules(src)?;
    let mut out = Vec::new();
    for (module, file) in &known {
        let text = std::fs::read_to_string(file)?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let children = ast
            .items
            .iter()
            .filter_map(|i| match i {
                syn::Item::Mod(m) if m.content.is_none() => Some(m.ident.to_string()),
                _ => None,
            })
            .collect();
        let mut refs = Refs { here: module, children, found: Vec::new() };
        refs.visit_file(&ast);
        let name = file.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(file).display().to_string();
        for (path, line) in refs.found {
            let to = module_of(&known, &path);
            if &to != module {
                out.push(Edge { from: module.clone(), to, at: format!("{name}:{line}") });
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.from == b.from && a.to == b.to);
    Ok(out)
}

/// The cycles among `nodes` given `links` (node -> node, with evidence): one per strongly
/// connected component of more than one node, walked along a shortest circle.
fn cycles(links: &BTreeMap<(String, String), String>) -> Vec<Cycle> {
    let nodes: BTreeSet<&String> = links.keys().flat_map(|(a, b)| [a, b]).collect();
    let next = |n: &String| -> Vec<&String> { links.keys().filter(|(a, _)| a == n).map(|(_, b)| b).collect() };
    let mut seen_components: Vec<BTreeSet<String>> = Vec::new();
    let mut out = Vec::new();
    for &start in &nodes {
        // A shortest path from each successor back to `start` (breadth first).
        let mut best: Option<Vec<String>> = None;
        for first in next(start) {
            let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([first]);
            let mut visited = BTreeSet::from([first]);
            while let Some(n) = queue.pop_front() {
                if n == start {
                    // first -> ... -> start, walked back through `prev`.
                    let mut back = vec![n.clone()];
                    let mut at = n;
                    while at != first {
                        at = prev[at];
                        back.push(at.clone());
                    }
                    back.reverse();
                    let mut path = vec![start.clone()];
                    path.extend(back);
                    if best.as_ref().is_none_or(|b| path.len() < b.len()) {
                        best = Some(path);
                    }
                    break;
                }
                for m in next(n) {
                    if visited.insert(m) {
                        prev.insert(m, n);
                        queue.push_back(m);
                    }
                }
            }
        }
        if let Some(path) = best {
            let members: BTreeSet<String> = path.iter().cloned().collect();
            if seen_components.iter().any(|c| c == &members) {
                continue;
            }
            seen_components.push(members);
            let evidence = path
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], links[&(w[0].clone(), w[1].clone())]))
                .collect();
            out.push(Cycle { modules: path, evidence });
        }
    }
    out
}

fn display(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// The cycles of the crate under `src`, at both levels (see the module's documentation).
pub fn crate_cycles(src: &Path) -> Result<Vec<Cycle>> {
    let edges = edges(src)?;
    let mut out = Vec::new();
    // Top level: each edge between two different top-level modules (the root excluded: it
    // only declares them).
    let mut top: BTreeMap<(String, String), String> = BTreeMap::new();
    for e in &edges {
        let (Some(a), Some(b)) = (e.from.first(), e.to.first()) else { continue };
        if a != b {
            top.entry((a.clone(), b.clone())).or_insert_with(|| e.at.clone());
        }
    }
    out.extend(cycles(&top));
    // Inside each folder module: its children, each with what lies below it.
    let folders: BTreeSet<ModPath> =
        edges.iter().flat_map(|e| [&e.from, &e.to]).flat_map(|m| (1..m.len()).map(|n| m[..n].to_vec())).collect();
    for folder in folders {
        let mut inner: BTreeMap<(String, String), String> = BTreeMap::new();
        for e in &edges {
            let child = |m: &ModPath| {
                (m.len() > folder.len() && m[..folder.len()] == folder[..]).then(|| m[folder.len()].clone())
            };
            if let (Some(a), Some(b)) = (child(&e.from), child(&e.to)) {
                if a != b {
                    inner
                        .entry((
                            display(&[folder.clone(), vec![a]].concat()),
                            display(&[folder.clone(), vec![b]].concat()),
                        ))
                        .or_insert_with(|| e.at.clone());
                }
            }
        }
        out.extend(cycles(&inner));
    }
    Ok(out)
}

/// Runs the check on socktrace's userspace crate; an error lists every cycle.
pub fn check(root: &Path) -> Result<()> {
    let src = root.join("socktrace/src");
    let found = crate_cycles(&src)?;
    if found.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{} import cycle(s) between socktrace's modules:\n", found.len());
    for c in &found {
        msg.push_str(&format!("  {}\n", c.modules.join(" -> ")));
        for e in &c.evidence {
            msg.push_str(&format!("      {e}\n"));
        }
    }
    anyhow::bail!("{msg}(a module must not import one that imports it back; see ARCHITECTURE.md)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("modgraph-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("src")
    }

    /// A two-module cycle through a `use`, one through a path in a macro, and a folder whose
    /// children import each other are all found; a child using its own `mod.rs` is not.
    #[test]
    fn finds_cycles_at_both_levels() {
        let src = scratch("cycles");
        write(
            &src,
            &[
                ("main.rs", "mod a; mod b; mod c; mod f;"),
                ("a.rs", "use crate::b::thing; pub fn x() {}"),
                ("b.rs", "pub fn thing() { println!(\"{}\", crate::a::x()); }"),
                ("c.rs", "use crate::a::x;"),
                ("f/mod.rs", "mod one; mod two; pub struct T; pub fn run() { one::go(); }"),
                ("f/one.rs", "use super::T; pub fn go() { super::two::back(); }"),
                ("f/two.rs", "pub fn back() { crate::f::one::go(); }"),
            ],
        );
        let found = crate_cycles(&src).unwrap();
        let names: Vec<String> = found.iter().map(|c| c.modules.join(" -> ")).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().any(|n| n == "a -> b -> a"), "{names:?}");
        assert!(names.iter().any(|n| n == "f::one -> f::two -> f::one"), "{names:?}");
        assert!(found[0].evidence.iter().all(|e| e.contains(".rs:")), "{found:?}");
    }

    /// A tree that only points one way has none.
    #[test]
    fn a_one_way_tree_has_no_cycle() {
        let src = scratch("clean");
        write(
            &src,
            &[
                ("main.rs", "mod a; mod b; mod f; fn main() { b::y(); }"),
                ("a.rs", "pub fn x() {}"),
                ("b.rs", "use crate::{a::x, f::run}; pub fn y() { x(); run(); }"),
                ("f/mod.rs", "mod one; mod two; pub struct T; pub fn run() { one::go(); two::back(); }"),
                ("f/one.rs", "use super::{two, T}; pub fn go() { two::back(); crate::a::x(); }"),
                ("f/two.rs", "pub fn back() -> super::T { super::T }"),
            ],
        );
        assert_eq!(crate_cycles(&src).unwrap(), vec![]);
    }

    /// socktrace's own userspace: no cycle.
    #[test]
    fn socktrace_has_no_import_cycle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        check(root).unwrap();
    }
}
