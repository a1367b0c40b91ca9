//! The module graph stays a graph of stages: no cycle among the top-level modules of `src/` (the `dstack`
//! binary), and none among the folders of `runtime/src/`. An edge A -> B is a
//! path `crate::B...` (or a `super::` that climbs to the crate root) written in a file of A. Run with
//! `--nocapture` (or `scripts/module-graph`) to print both graphs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> (module it uses -> the first place it does, as `file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `root` (`a/b.rs` and `a/b/mod.rs` are `[a, b]`; the crate root is `[]`).
fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "main.rs" | "lib.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_string()),
    }
    parts
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifiers a path continues with after `at` in `text`: one (`a`), or each item of a group
/// (`{a, b::c}`).
fn following_idents(text: &str) -> Vec<String> {
    if let Some(group) = text.strip_prefix('{') {
        let mut idents = Vec::new();
        let mut depth = 1;
        let mut expect_item = true;
        let mut chars = group.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => expect_item = true,
                c if is_ident_char(c) && depth == 1 && expect_item => {
                    let end = group[i..]
                        .find(|c: char| !is_ident_char(c))
                        .map_or(group.len(), |n| i + n);
                    idents.push(group[i..end].to_string());
                    while chars.peek().is_some_and(|(j, _)| *j < end) {
                        chars.next();
                    }
                    expect_item = false;
                }
                _ => {}
            }
        }
        idents
    } else {
        let end = text.find(|c: char| !is_ident_char(c)).unwrap_or(text.len());
        vec![text[..end].to_string()]
    }
}

/// The graph of the crate whose sources are under `root`, between the top-level modules `nodes`.
fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    let nodes: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(root, f).first().cloned())
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let path = module_path(root, file);
        let Some(from) = path.first().cloned() else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // Text joined so that a `use crate::{...}` group over several lines reads as one.
        let code: String = text
            .lines()
            .map(|l| match l.trim_start().starts_with("//") {
                true => "",
                false => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
        let mut targets: Vec<(String, usize)> = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| is_ident_char(c) || c == ':' || c == '$') {
                continue;
            }
            for ident in following_idents(&code[at + "crate::".len()..]) {
                targets.push((ident, line_of(at)));
            }
        }
        for (at, _) in code.match_indices("super::") {
            if code[..at].ends_with("super::") || code[..at].ends_with(|c: char| is_ident_char(c)) {
                continue;
            }
            let mut rest = &code[at..];
            let mut climbs = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                climbs += 1;
                rest = r;
            }
            // Only a climb to the crate root leaves the module (an inline `mod tests` climbs one less
            // than its file suggests: it never reaches the root from a top-level file's own tests).
            if climbs >= path.len() {
                for ident in following_idents(rest) {
                    targets.push((ident, line_of(at)));
                }
            }
        }
        for (to, line) in targets {
            if to != from && nodes.contains(&to) {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("{}:{line}", file.display()));
            }
        }
        graph.entry(from).or_default();
    }
    graph
}

/// The strongly connected components with more than one module: the cycles.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let reaches = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|n| (n, reaches(n))).collect();
    let mut found: Vec<Vec<String>> = Vec::new();
    for node in graph.keys() {
        if found.iter().any(|c| c.contains(node)) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|other| {
                *other == node || (reach[node].contains(*other) && reach[other].contains(node))
            })
            .cloned()
            .collect();
        if component.len() > 1 {
            found.push(component);
        }
    }
    found
}

fn describe(graph: &Graph) -> String {
    let mut text = String::new();
    for (from, edges) in graph {
        let to: Vec<&str> = edges.keys().map(String::as_str).collect();
        text.push_str(&format!("{from} -> {}\n", to.join(", ")));
    }
    text
}

fn describe_cycles(graph: &Graph, cycles: &[Vec<String>]) -> String {
    let mut text = String::new();
    for cycle in cycles {
        text.push_str(&format!("cycle among {}:\n", cycle.join(", ")));
        for from in cycle {
            for (to, at) in &graph[from] {
                if cycle.contains(to) {
                    text.push_str(&format!("  {from} -> {to} ({at})\n"));
                }
            }
        }
    }
    text
}

fn crate_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn the_binarys_modules_form_no_cycle() {
    let mut graph = graph(&crate_dir("src"));
    // `src/bin/` holds other binaries (each its own crate), not modules of `dstack`.
    graph.remove("bin");
    println!("src/ modules:\n{}", describe(&graph));
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "src/ has module cycles:\n{}",
        describe_cycles(&graph, &found)
    );
}

#[test]
fn the_runtimes_folders_form_no_cycle() {
    let graph = graph(&crate_dir("runtime/src"));
    println!("runtime/src/ folders:\n{}", describe(&graph));
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "runtime/src/ has folder cycles:\n{}",
        describe_cycles(&graph, &found)
    );
}

#[test]
fn a_cycle_is_found_and_a_chain_is_not() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (from, to) in pairs {
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string(), String::new());
            graph.entry(to.to_string()).or_default();
        }
        graph
    };
    assert!(cycles(&edges(&[("a", "b"), ("b", "c")])).is_empty());
    assert_eq!(
        cycles(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
    assert_eq!(
        following_idents("{fsutil, runs::{a, b}, job::x}::y"),
        ["fsutil", "runs", "job"]
    );
}
