//! The house's rules, read off the source (docs/architecture.md): imports between rooms run one
//! way, no source file grows past 600 lines, and the library's errors are typed.

use std::path::{Path, PathBuf};

/// The rooms from the bottom up: a room may import only rooms listed before it.
const ORDER: [&str; 15] =
    ["choice", "files", "labels", "tokenizer", "backend", "selfcheck", "data", "model", "weights", "pipeline", "eval", "train", "bench", "web", "bin"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The room a source file belongs to: its first folder or file under `src/`.
fn room(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
    (first != "lib").then_some(first)
}

/// Rooms named as `crate::room` in a file's code (comments left out).
fn imported_rooms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + 7..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn imports_between_rooms_run_one_way() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let rank = |r: &str| ORDER.iter().position(|o| *o == r);
    let mut upward = Vec::new();
    for file in &files {
        let Some(from) = room(file) else { continue };
        let Some(from_rank) = rank(&from) else { panic!("{}: room '{from}' is not in the house's order", file.display()) };
        for to in imported_rooms(&std::fs::read_to_string(file).unwrap()) {
            match rank(&to) {
                Some(r) if r > from_rank => upward.push(format!("{} ({from}) imports {to}", file.display())),
                _ => {}
            }
        }
    }
    assert!(upward.is_empty(), "imports that run back up:\n{}", upward.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| !f.file_name().is_some_and(|n| n == "tests.rs"))
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 600).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over 600 lines:\n{}", long.join("\n"));
}

#[test]
fn at_most_15_library_signatures_return_a_string_error() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| room(f).as_deref() != Some("bin")) {
        for (i, line) in std::fs::read_to_string(file).unwrap().lines().enumerate() {
            let l = line.trim();
            let returns = l.find("-> Result<").map(|at| &l[at..]);
            if returns.is_some_and(|r| r.contains(", String>") && (r.ends_with('{') || r.ends_with("String>") || r.ends_with("where"))) {
                found.push(format!("{}:{}", file.display(), i + 1));
            }
        }
    }
    assert!(found.len() <= 15, "{} signatures return Result<_, String>:\n{}", found.len(), found.join("\n"));
}
