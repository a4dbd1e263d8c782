//! The tree is the pipeline: `src/` is one folder per stage a hit passes through, and
//! no stage reaches to a later one (ARCHITECTURE.md draws it). This test reads every
//! `crate::` path in `src/` and fails on an import that goes against that order.

use std::fs;
use std::path::{Path, PathBuf};

/// The stages, in the order a hit passes through them. A stage may use the stages
/// before it and the shared modules, never one after it.
const STAGES: &[&str] = &["http", "collect", "enrich", "pipeline", "store", "query"];
/// Shared top-level modules: any stage may use them; they use only each other.
const SHARED: &[&str] = &[
    "clock", "config", "db", "hex", "logging", "metrics", "token",
];
/// Assembly at the top: wires stages into listeners and commands; may use anything.
const ASSEMBLY: &[&str] = &["admin", "app", "cli", "lib", "main"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stage(usize),
    Shared,
    Assembly,
}

fn kind_of(top: &str) -> Option<Kind> {
    if let Some(i) = STAGES.iter().position(|s| *s == top) {
        Some(Kind::Stage(i))
    } else if SHARED.contains(&top) {
        Some(Kind::Shared)
    } else if ASSEMBLY.contains(&top) {
        Some(Kind::Assembly)
    } else {
        None
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/enrich/ua.rs` → `enrich`).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src");
    let first = rel.components().next().expect("non-empty path");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_owned()
}

/// Every top-level module named by a `crate::` path in `text`, with its line number.
/// `use crate::{a, b::c}` groups are expanded to their first segments.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        refs.push((n + 1, name));
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.push((n + 1, name));
                }
            }
            rest = &rest[at + "crate::".len()..];
        }
    }
    refs
}

fn allowed(from: Kind, to: Kind) -> bool {
    match (from, to) {
        (Kind::Assembly, _) => true,
        (Kind::Shared, Kind::Shared) => true,
        (Kind::Shared, _) => false,
        (Kind::Stage(_), Kind::Shared) => true,
        (Kind::Stage(a), Kind::Stage(b)) => b <= a,
        (Kind::Stage(_), Kind::Assembly) => false,
    }
}

#[test]
fn no_module_reaches_to_a_later_stage() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} files in src/", files.len());
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    let mut checked = 0;
    for file in &files {
        let top = top_module(&src, file);
        let Some(from) = kind_of(&top) else {
            unknown.push(file.display().to_string());
            continue;
        };
        let text = fs::read_to_string(file).expect("read source");
        for (line, target) in crate_refs(&text) {
            checked += 1;
            let Some(to) = kind_of(&target) else {
                unknown.push(format!("{}:{line}: crate::{target}", file.display()));
                continue;
            };
            if !allowed(from, to) {
                violations.push(format!(
                    "{}:{line}: {top} ({from:?}) uses crate::{target} ({to:?})",
                    file.display()
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} crate:: paths found; is the scan broken?"
    );
    assert!(
        unknown.is_empty(),
        "modules not placed in a stage, shared or assembly list (add them to tests/layout.rs \
         and ARCHITECTURE.md):\n{}",
        unknown.join("\n")
    );
    assert!(
        violations.is_empty(),
        "imports against the stage order:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_catches_a_backward_import() {
    // The rule itself, on made-up lines: a stage reaching forward or into assembly
    // fails, the other directions pass.
    let refs = crate_refs("use crate::{pipeline::writer, config};\nlet x = crate::cli::main;");
    let names: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["pipeline", "config", "cli"]);
    let collect = kind_of("collect").unwrap();
    assert!(!allowed(collect, kind_of("pipeline").unwrap()));
    assert!(!allowed(collect, kind_of("cli").unwrap()));
    assert!(allowed(collect, kind_of("config").unwrap()));
    assert!(allowed(
        kind_of("store").unwrap(),
        kind_of("enrich").unwrap()
    ));
    assert!(!allowed(
        kind_of("metrics").unwrap(),
        kind_of("enrich").unwrap()
    ));
    assert!(allowed(kind_of("app").unwrap(), kind_of("store").unwrap()));
}
