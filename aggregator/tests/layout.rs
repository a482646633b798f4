//! The module graph of `aggregator/src` has no import circles: every `crate::<module>` a file
//! names is an edge from its top-level module, and the graph must be acyclic (a circle is
//! reported with its edges).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module of each file under `src/` (binaries and the crate roots excluded) and
/// the modules it names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if rel.starts_with("bin/") || rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        let module = rel.trim_end_matches(".rs").split('/').next().unwrap().to_string();
        // Code only: a doc link (`[crate::x]` in a comment) is not an import.
        let text: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let deps = g.entry(module.clone()).or_default();
        // `use crate::a::b`, `use crate::{a, b::c}`, and paths written out (`crate::a::f()`).
        let mut rest = text.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').filter_map(|p| p.trim().split("::").next().map(str::to_string)).collect()
            } else {
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().map(str::to_string).into_iter().collect()
            };
            for n in names {
                if !n.is_empty() && n != module && n != "self" && n.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                    deps.insert(n);
                }
            }
        }
    }
    let modules: BTreeSet<String> = g.keys().cloned().collect();
    for deps in g.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    g
}

/// A circle through `start`, if there is one (depth-first).
fn circle(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(g: &BTreeMap<String, BTreeSet<String>>, start: &str, at: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in &g[at] {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(g, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_circles_among_the_aggregators_modules() {
    let g = graph();
    assert!(g.len() > 20 && g["engine"].contains("policy"), "the graph was not read: {g:?}");
    let circles: Vec<String> = g.keys().filter_map(|m| circle(&g, m)).map(|c| c.join(" -> ")).collect();
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}
