//! The shape of the server's code, checked so that it stays easy to change:
//! no two top-level modules import each other in a cycle, and no function
//! outside tests is longer than 80 lines (docs/architecture.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines a function may take, its signature and closing brace included.
const LONGEST_FUNCTION: usize = 80;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The file's lines before its test module (by convention at the end of the
/// file), with comments removed; empty for test-only files.
fn code_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    if name == "tests.rs" || name == "test_util.rs" {
        return Vec::new();
    }
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => line[..at].to_string(),
            _ => line.to_string(),
        })
        .collect()
}

/// The top-level module a file of `src` belongs to (`None`: the crate root or
/// the binary).
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_string_lossy();
    let module = first.trim_end_matches(".rs").to_string();
    (module != "lib" && module != "bin").then_some(module)
}

/// The top-level modules named by `crate::…` paths in `line`.
fn crate_references(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let tail = &rest[at + "crate::".len()..];
        let before = &rest[..at];
        let word_start = before
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if word_start {
            if let Some(group) = tail.strip_prefix('{') {
                // `use crate::{a, b::c}`: each item's first segment.
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push(name);
                    }
                }
            } else {
                let name: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
        rest = &rest[at + "crate::".len()..];
    }
    found
}

/// A cycle in `graph`, if any, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_another_in_a_cycle() {
    let src = src();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in sources(&src) {
        let Some(module) = module_of(&src, &path) else {
            continue;
        };
        let entry = graph.entry(module.clone()).or_default();
        for line in code_lines(&path) {
            for used in crate_references(&line) {
                if used != module && used != "self" && used != "super" {
                    entry.insert(used);
                }
            }
        }
    }
    assert!(graph.len() > 10, "modules found: {:?}", graph.keys());
    assert!(
        graph.values().any(|uses| !uses.is_empty()),
        "no imports found"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other in a cycle: {}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph).map(|c| c.join(" ")),
        Some("a b c a".to_string())
    );
    assert_eq!(
        crate_references("use crate::{streams::X, rooms}; crate::metrics::inc(x)"),
        vec!["streams", "rooms", "metrics"]
    );
}

/// Functions of `lines` as (name, first line number, length in lines): a
/// `fn` line up to the closing brace at its own indentation (rustfmt's layout).
fn functions(lines: &[String]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(fn_at) = trimmed.find("fn ") else {
            continue;
        };
        let head = &trimmed[..fn_at];
        let is_item = head.split_whitespace().all(|w| {
            matches!(
                w,
                "pub" | "pub(crate)" | "pub(super)" | "async" | "const" | "unsafe"
            )
        });
        if !is_item || line.trim_end().ends_with(';') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let close = format!("{}}}", " ".repeat(indent));
        let name: String = trimmed[fn_at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if let Some(end) = lines[at..].iter().position(|l| l.trim_end() == close) {
            found.push((name, at + 1, end + 1));
        }
    }
    found
}

#[test]
fn no_function_outside_tests_is_longer_than_80_lines() {
    let src = src();
    let mut long = Vec::new();
    let mut counted = 0;
    for path in sources(&src) {
        let lines = code_lines(&path);
        for (name, line, length) in functions(&lines) {
            counted += 1;
            if length > LONGEST_FUNCTION {
                long.push(format!(
                    "{}:{line} fn {name}: {length} lines",
                    path.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(counted > 200, "only {counted} functions found");
    assert!(
        long.is_empty(),
        "functions over {LONGEST_FUNCTION} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_length_check_measures_a_function() {
    let lines: Vec<String> = [
        "fn short() {",
        "    one();",
        "}",
        "",
        "    pub async fn inner(",
        "    ) {",
        "    }",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        functions(&lines),
        vec![("short".to_string(), 1, 3), ("inner".to_string(), 5, 3)]
    );
}
