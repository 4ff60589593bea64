//! Imports go one way (issue 10; the layers are stated in `src/lib.rs`): every `crate::…` path in a
//! library module names a module of a lower layer (or its own module), and the binary's front end uses
//! the library only through `pharos::…`. Checked on the source text, comments excluded, so a new import
//! from above fails here rather than in review.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level library module's layer (`src/lib.rs`, "Layers"). A module may use its own items and
/// those of strictly lower layers.
const LAYERS: &[(&str, u32)] = &[
    ("error", 1),
    ("pixels", 1),
    ("metrics", 1),
    ("synth", 1),
    ("image", 2),
    ("hash", 2),
    ("gpu", 3),
    ("matcher", 3),
    ("engine", 4),
    ("store", 4),
    ("pipeline", 5),
    ("banks", 5),
    ("server", 6),
];

fn layer(module: &str) -> u32 {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l).unwrap_or_else(|| {
        panic!("module `{module}` is not in LAYERS: add it to src/lib.rs's layers and here")
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source text without `//` comments (doc comments included: they may link anywhere).
fn code_of(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules a text names as `crate::X`, plus those inside `use crate::{X, Y::…}` groups.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident =
        |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // The first path segment of each top-level item of the group (nested groups skipped).
            let (mut depth, mut start) = (0, true);
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        let name = ident(&group[k..]);
                        if !name.is_empty() {
                            out.push(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(after));
        }
        rest = after;
    }
    out
}

#[test]
fn no_module_imports_from_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs");
        if matches!(first, "lib" | "main" | "cli") {
            continue; // the crate root declares the modules; the binary's front end is checked below
        }
        let own = layer(first);
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(&code_of(&text)) {
            if matches!(used.as_str(), "Result" | "Error" | "self" | "") {
                continue; // `crate::Result` / `crate::Error` are the `error` leaf's re-exports
            }
            if used == first {
                continue;
            }
            *edges.entry((first.to_string(), used.clone())).or_default() += 1;
            if layer(&used) >= own {
                violations.push(format!(
                    "{}: `{first}` (layer {own}) uses `crate::{used}` (layer {})",
                    rel.display(),
                    layer(&used)
                ));
            }
        }
    }
    for ((from, to), n) in &edges {
        eprintln!("{from} -> {to} ({n})");
    }
    assert!(violations.is_empty(), "imports against the layers:\n{}", violations.join("\n"));
}

#[test]
fn the_front_end_uses_the_library_only_through_its_public_api() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let mut files = Vec::new();
    rust_files(&cli, &mut files);
    for file in files {
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        // `crate::` in the binary is the binary's own root; the library is `pharos::`. Nothing in the
        // front end may reach into a module the library keeps private.
        for private in ["pharos::gpu::layout", "pharos::gpu::pipelines", "pharos::pipeline::workers"] {
            assert!(!code.contains(private), "{} uses {private}", file.display());
        }
    }
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    let code =
        "use crate::{error::Result, hash::{Hash256, Hash64}};\nlet x = crate::gpu::probe(); // crate::server";
    assert_eq!(crate_paths(&code_of(code)), vec!["error", "hash", "gpu"]);
}
