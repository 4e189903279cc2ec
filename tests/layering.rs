//! Holds the layering invariants of ARCHITECTURE.md: reads the layer table there and every
//! `crate::` / `super::` path and external-crate path in `src/`, and fails on an upward or
//! sideways import, a module missing from the table, a concrete sibling used as a shared rule,
//! or a protocol crate used outside its component.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Components made of interchangeable concrete parts (one source, one sink, one handler
/// family): a part may use the component's root and these shared modules only, never another
/// concrete part (where a shared rule would be hiding). Modules of other components (store,
/// config) are steps of one thing and may use each other.
const SHARED_SIBLINGS: &[(&str, &[&str])] = &[
    ("sources", &["topic", "serial_port"]),
    ("sinks", &[]),
    ("api", &["guard", "history", "alarms"]),
];

/// External crates that only one component may know.
const OWNED_CRATES: &[(&str, &str)] = &[
    ("rumqttd", "sources"),
    ("rumqttc", "sources"),
    ("tokio_modbus", "sources"),
    ("tokio_serial", "sources"),
    ("socketioxide", "api"),
    ("engineioxide", "api"),
    ("axum", "api"),
    ("hyper", "api"),
    ("hyper_util", "api"),
    ("redis", "sinks"),
    ("rskafka", "sinks"),
];

/// Modules that sources must not know: they hand `Ingest` to the pipeline and that is all.
const SOURCES_DO_NOT_KNOW: &[&str] = &["store", "hub", "pipeline", "sinks", "api"];

fn layers() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let block = text
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```layers block");
    let mut map = BTreeMap::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let (n, modules) = line
            .trim()
            .strip_prefix("layer ")
            .and_then(|l| l.split_once(':'))
            .unwrap_or_else(|| panic!("layer line `{line}` is not `layer N: a b c`"));
        let n: usize = n.trim().parse().expect("layer number");
        for m in modules.split_whitespace() {
            assert!(map.insert(m.to_string(), n).is_none(), "{m} listed twice");
        }
    }
    map
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `src/sources/modbus/bus.rs` → `[sources, modbus, bus]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Code without comments and string literals (so prose and metric names do not count).
fn code_only(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && c == '\\' { ' ' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' {
                in_str = true;
                prev = ' ';
                continue;
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// Every path that starts with `prefix::` and the identifiers that follow it.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let pat = format!("{prefix}::");
    let mut from = 0;
    while let Some(pos) = code[from..].find(&pat) {
        let start = from + pos;
        from = start + pat.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut segs = Vec::new();
        let mut rest = &code[from..];
        loop {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if ident.is_empty() {
                break;
            }
            rest = &rest[ident.len()..];
            segs.push(ident);
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        found.push(segs);
    }
    found
}

#[test]
fn layering_invariants_of_architecture_md_hold() {
    let layers = layers();
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        if rel == Path::new("main.rs") {
            continue;
        }
        let module = module_of(rel);
        let top = module.first().cloned().unwrap_or_else(|| "lib".into());
        let Some(&own_layer) = layers.get(&top) else {
            problems.push(format!(
                "{}: module `{top}` is not in ARCHITECTURE.md's layer table",
                rel.display()
            ));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        // `super::` from a file resolves against its parent module.
        let mut targets: Vec<Vec<String>> = paths_after(&code, "crate");
        for segs in paths_after(&code, "super") {
            let mut t = module[..module.len().saturating_sub(1)].to_vec();
            t.extend(segs.into_iter().filter(|s| s != "super"));
            targets.push(t);
        }
        for target in targets {
            let Some(t_top) = target.first() else {
                continue;
            };
            if !layers.contains_key(t_top) {
                continue; // an item of the crate root, e.g. `crate::GatewayError`
            }
            if *t_top != top {
                let t_layer = layers[t_top];
                if t_layer >= own_layer {
                    problems.push(format!(
                        "{}: uses `{}` (layer {t_layer}) from `{top}` (layer {own_layer})",
                        rel.display(),
                        target.join("::")
                    ));
                }
                if top == "sources" && SOURCES_DO_NOT_KNOW.contains(&t_top.as_str()) {
                    problems.push(format!(
                        "{}: sources must not know `{t_top}`",
                        rel.display()
                    ));
                }
                continue;
            }
            // Inside one component: only the root, its own subtree and the shared siblings.
            let (Some(own_child), Some(t_child)) = (module.get(1), target.get(1)) else {
                continue;
            };
            let Some(shared) = SHARED_SIBLINGS
                .iter()
                .find(|(c, _)| *c == top)
                .map(|(_, s)| *s)
            else {
                continue;
            };
            let is_module = files.iter().any(|f| {
                let m = module_of(f.strip_prefix(&src).unwrap());
                m.len() >= 2 && m[0] == top && m[1] == *t_child
            });
            if own_child != t_child && is_module && !shared.contains(&t_child.as_str()) {
                problems.push(format!(
                    "{}: uses its concrete sibling `{}`; move the shared part below both",
                    rel.display(),
                    target.join("::")
                ));
            }
        }
        for (krate, owner) in OWNED_CRATES {
            if top != *owner && !paths_after(&code, krate).is_empty() {
                problems.push(format!(
                    "{}: uses `{krate}`, which only `{owner}` may know",
                    rel.display()
                ));
            }
        }
    }
    let mut in_src: Vec<String> = files
        .iter()
        .map(|f| module_of(f.strip_prefix(&src).unwrap()))
        .filter_map(|m| m.first().cloned())
        .filter(|m| m != "main")
        .collect();
    in_src.push("lib".into());
    for listed in layers.keys() {
        if !in_src.contains(listed) {
            problems.push(format!(
                "ARCHITECTURE.md lists `{listed}`, which src/ lacks"
            ));
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_violations() {
    let code = code_only(
        "use crate::store::Store; // crate::api in a comment\nlet s = \"crate::hub\";\nuse super::{a, b};\n",
    );
    assert_eq!(paths_after(&code, "crate"), vec![vec!["store", "Store"]]);
    assert_eq!(paths_after(&code, "super"), vec![Vec::<String>::new()]);
    assert_eq!(
        module_of(Path::new("sources/modbus/mod.rs")),
        vec!["sources", "modbus"]
    );
}

/// The paths ARCHITECTURE.md names in backticks, with `dir/{a,b}.rs` groups expanded.
fn mapped_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for quoted in text.split('`').skip(1).step_by(2) {
        if !quoted.starts_with("src/") || quoted == "src/" || quoted.contains(' ') {
            continue;
        }
        match quoted.split_once('{') {
            Some((dir, rest)) => {
                let (names, ext) = rest.split_once('}').unwrap_or((rest, ""));
                out.extend(names.split(',').map(|n| format!("{dir}{n}{ext}")));
            }
            None => out.push(quoted.to_string()),
        }
    }
    out
}

#[test]
fn the_code_map_of_architecture_md_matches_the_tree() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let mapped = mapped_paths(&text);
    let mut problems = Vec::new();
    for path in &mapped {
        if !Path::new(ROOT).join(path).exists() {
            problems.push(format!(
                "ARCHITECTURE.md names `{path}`, which does not exist"
            ));
        }
    }
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    for file in files {
        let rel = file
            .strip_prefix(ROOT)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let covered = mapped
            .iter()
            .any(|m| *m == rel || (m.ends_with('/') && rel.starts_with(m.as_str())));
        if !covered {
            problems.push(format!("`{rel}` is not in ARCHITECTURE.md's code map"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn code_map_groups_expand() {
    assert_eq!(
        mapped_paths("a `src/x/{a,b}.rs` and `src/y.rs`, not `cargo test` or `tests/z.rs`"),
        vec!["src/x/a.rs", "src/x/b.rs", "src/y.rs"]
    );
}
