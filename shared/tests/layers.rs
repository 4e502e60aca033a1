//! The layers of `shared/src` hold: each module imports only its own layer and those below, no
//! module imports the composition root, adapters and flows never see each other, and no two
//! modules import each other, however indirectly. Read from the sources, so a new import that
//! breaks the shape fails here, with the file and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `shared/src` and its layer; a module may import its own layer
/// (between different modules) and the ones below. Adapters and flows share a rank but may not
/// import each other ([`FORBIDDEN`]). `testing` is test-only and may import anything.
const LAYERS: &[(&str, u8)] = &[
    ("models", 0),
    ("signing", 0),
    ("time", 0),
    ("random", 0),
    ("rules", 1),
    ("ports", 2),
    ("adapters", 3),
    ("flows", 3),
    ("queued", 4),
    ("app", 5),
];

const FORBIDDEN: &[(&str, &str)] = &[("adapters", "flows"), ("flows", "adapters")];

fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("shared/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module path of a source file: `flows/manager_typing.rs` → `flows::manager_typing`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts: Vec<_> = parts.iter().filter(|p| *p != "mod").cloned().collect();
    parts.join("::")
}

/// The module paths a source file names outside comments, with their line numbers:
/// `crate::a::b` as `a::b`, and `super::b` in module `a::c` as `a::b`.
fn crate_paths(module: &str, text: &str) -> Vec<(usize, String)> {
    let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for (prefix, base) in [("crate::", ""), ("super::", parent)] {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                let path = path.trim_end_matches(':');
                // `use super::*` in a test module, or a type or macro named at the root.
                if !path.starts_with(|c: char| c.is_ascii_lowercase()) || (prefix == "super::" && base.is_empty()) {
                    continue;
                }
                let full = if base.is_empty() { path.to_owned() } else { format!("{base}::{path}") };
                found.push((number + 1, full));
            }
        }
    }
    found
}

fn layer(module: &str) -> Option<u8> {
    let top = module.split("::").next().unwrap_or_default();
    LAYERS.iter().find(|(name, _)| *name == top).map(|(_, rank)| *rank)
}

#[test]
fn every_import_points_down_or_across_and_nothing_imports_the_root() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let top = module.split("::").next().unwrap().to_owned();
        if top == "testing" || top == "lib" {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| panic!("{module} is in no layer: add it to LAYERS"));
        let text = std::fs::read_to_string(file).unwrap();
        for (line, path) in crate_paths(&module, &text) {
            let target_top = path.split("::").next().unwrap_or_default().to_owned();
            if target_top == "testing" {
                continue; // only under cfg(test)
            }
            let Some(target) = layer(&path) else {
                continue; // a macro exported at the crate root (`crate::store_conformance_tests!`)
            };
            let shown = format!("{}:{line}: {module} imports crate::{path}", file.display());
            if target > own || FORBIDDEN.contains(&(top.as_str(), target_top.as_str())) {
                violations.push(shown);
            }
            // Module-level graph, two levels deep (`flows::manager_typing`), for the cycle check.
            let node = |m: &str| m.split("::").take(2).collect::<Vec<_>>().join("::");
            let (from, to) = (node(&module), node(&path));
            if from != to {
                edges.entry(from).or_default().insert(to);
            }
        }
    }
    assert!(violations.is_empty(), "imports against the layers:\n{}", violations.join("\n"));

    // No circle: a depth-first search finds no module on its own path.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| *n == node) {
            panic!("an import circle: {} -> {node}", path[at..].join(" -> "));
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
        done.insert(node);
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done);
    }
    assert!(edges.len() > 20, "the graph was read: {} modules import others", edges.len());
}
