//! Every `docs/protocol.md §N` cited in the sources names a section that exists.

use std::path::{Path, PathBuf};

/// The section numbers of `docs/protocol.md`: `N` of `## N. …`, `N.M` of `### N.M …`.
fn sections(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|line| {
            let title = line
                .strip_prefix("### ")
                .or_else(|| line.strip_prefix("## "))?;
            let number = title.split_whitespace().next()?.trim_end_matches('.');
            number
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
                .then(|| number.to_string())
        })
        .collect()
}

/// Every file under `dir` with one of `extensions`.
fn files(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "node_modules") {
                continue;
            }
            files(&path, extensions, out);
        } else if path
            .extension()
            .is_some_and(|ext| extensions.iter().any(|e| ext == *e))
        {
            out.push(path);
        }
    }
}

#[test]
fn cited_protocol_sections_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/protocol.md")).unwrap();
    let known = sections(&doc);
    assert!(known.contains(&"2.3".to_string()), "{known:?}");
    let mut paths = Vec::new();
    for dir in [
        "server/src",
        "server/tests",
        "js-reference/src",
        "conformance",
    ] {
        files(&root.join(dir), &["rs", "js"], &mut paths);
    }
    let mut cited = 0;
    for path in paths.into_iter().filter(|path| !path.ends_with(file!())) {
        let text = std::fs::read_to_string(&path).unwrap();
        // A citation may wrap onto the next comment line.
        let flat = text
            .replace("\n", " ")
            .replace("//!", "")
            .replace("///", "")
            .replace("//", "");
        for (at, _) in flat.match_indices("docs/protocol.md") {
            let after = flat[at + "docs/protocol.md".len()..].trim_start();
            let mut rest = after;
            // `§3–§5`, `§2.4, §2.7 and §8`: every number of the list.
            while let Some(tail) = rest.strip_prefix('§') {
                let number: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                let number = number.trim_end_matches('.').to_string();
                assert!(
                    known.contains(&number),
                    "{} cites docs/protocol.md §{number}, which does not exist",
                    path.display()
                );
                cited += 1;
                rest = tail[number.len()..].trim_start_matches([',', ' ', '–', '-']);
                rest = rest.strip_prefix("and ").unwrap_or(rest);
            }
        }
    }
    assert!(cited > 10, "only {cited} citations found");
}
