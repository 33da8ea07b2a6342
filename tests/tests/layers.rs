//! The workspace's architecture, checked: code imports in one direction only,
//! and stays readable.
//!
//! - Crates: each depends only on crates below it (bottom to top: the
//!   executor; the engine; the service and the tools; the `squall` binary; the
//!   tests), and the engine and the executor's library build no web server,
//!   store, CLI or Lambda runtime.
//! - Files, in every crate: no cycle between files, and no module imports one
//!   from a higher layer of its crate. Read from the `crate::`, `super::` and
//!   `self::` paths in each crate's `src`. A facade (`lib.rs`, a `mod.rs` that
//!   only declares) re-exports: a path through a re-export counts as a path to
//!   the module that defines the item.
//! - Size: no file over 800 lines of code (its unit tests not counted), no
//!   function over 100 lines, but for the declarations listed in `DECLARATIVE`.
//! - One build: `cargo run --bin squall` (the README's first command) and the
//!   test build (its second) compile every crate outside the workspace with the
//!   same features, so DataFusion is built once for both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate of the workspace: where its code is and its layers, lowest first.
/// A module may import from its own layer and below; a module listed in
/// `inner` has layers of its own for its children.
struct Spec {
    name: &'static str,
    dir: &'static str,
    layers: &'static [&'static [&'static str]],
    inner: &'static [(&'static str, &'static [&'static [&'static str]])],
    /// Workspace crates it may depend on.
    depends_on: &'static [&'static str],
}

const CRATES: &[Spec] = &[
    Spec {
        name: "squall-executor",
        dir: "executor",
        layers: &[
            &["usage", "bounds", "stop", "hedge", "telemetry"],
            &["protocol", "stores"],
            &["context", "faults", "keys", "compressed"],
            &["writer"],
            &["result_writer", "shuffle"],
            &["root", "codec"],
            &["combine", "partitions"],
            &["run"],
            &["lambda"],
        ],
        inner: &[("shuffle", &[&["format"], &["reader", "writer"]])],
        depends_on: &[],
    },
    Spec {
        name: "squall-engine",
        dir: "control-plane/engine",
        layers: &[
            &["error"],
            &[
                "commit",
                "access",
                "urls",
                "cost",
                "formats",
                "hive",
                "csv_nulls",
            ],
            &["tables", "platform"],
            &["planner", "backend"],
            &["scheduler"],
            &["engine"],
        ],
        inner: &[(
            "scheduler",
            &[
                &["coalesce", "exchange", "speculation", "fusion"],
                &["options", "events"],
                &["retry", "context"],
                &["tasks"],
                &["attempt"],
                &["stage"],
                &["combine"],
                &["job"],
            ],
        )],
        depends_on: &["squall-executor"],
    },
    Spec {
        name: "squall-service",
        dir: "control-plane/service",
        // Its HTTP types at the bottom, the HTTP layer at the top.
        layers: &[
            &["api", "cron", "limits", "principals"],
            &["store"],
            &[
                "catalog",
                "core",
                "dispatch",
                "errors",
                "journal",
                "metrics",
                "progress",
                "results",
                "retention",
                "schedules",
                "submission",
                "timetable",
            ],
            &["http", "client", "flight"],
        ],
        inner: &[],
        depends_on: &["squall-executor", "squall-engine"],
    },
    Spec {
        name: "squall-tools",
        dir: "control-plane/tools",
        layers: &[
            &["tpch", "simulate"],
            &["bench", "skew", "combine_model", "replay"],
            &["faults", "exchange", "burst"],
        ],
        inner: &[],
        depends_on: &["squall-executor", "squall-engine"],
    },
    Spec {
        name: "squall",
        dir: "control-plane/squall",
        layers: &[&["cli"]],
        inner: &[(
            "cli",
            &[
                &["error", "units", "progress", "machine"],
                &["output", "tasks", "backend", "principals", "limits"],
                &["query", "skew", "views", "operators"],
                &["client", "serve", "faults", "exchange", "sql"],
                &["simulate", "burst"],
                &["bench"],
            ],
        )],
        depends_on: &[
            "squall-executor",
            "squall-engine",
            "squall-service",
            "squall-tools",
        ],
    },
];

/// What the engine and the executor's library must not build (the executor's
/// Lambda runtime is an optional feature, for the `squall-lambda` binary).
const NOT_IN_THE_ENGINE: &[&str] = &[
    "axum",
    "rusqlite",
    "utoipa",
    "clap",
    "indicatif",
    "lambda_runtime",
    "prometheus",
    "toml",
];

struct Module {
    /// Facade re-exports: item name → the path it re-exports.
    reexports: BTreeMap<String, Vec<String>>,
    /// Paths named outside `pub use` re-exports, as written (with `crate`,
    /// `super`, `self`).
    paths: Vec<Vec<String>>,
}

fn module_name(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") || parts == ["main"] {
        parts.pop();
    }
    parts.join("::")
}

fn is_facade(file: &Path) -> bool {
    matches!(
        file.file_name().and_then(|n| n.to_str()),
        Some("mod.rs" | "lib.rs" | "main.rs")
    )
}

/// The code of a file without comments and string literals (so doc text and
/// SQL do not count as paths).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // Lifetimes and chars: skip a char literal like 'x' or '\n'.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let mut it = rest.chars();
                match (it.next(), it.next(), it.next()) {
                    (Some('\\'), Some(_), Some('\'')) => {
                        chars.nth(2);
                    }
                    (Some(_), Some('\''), _) => {
                        chars.nth(1);
                    }
                    _ => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into full paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let prefix: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        parts
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .flat_map(|p| {
                expand(p).into_iter().map(|tail| {
                    let mut full = prefix.clone();
                    full.extend(tail);
                    full
                })
            })
            .collect()
    } else {
        let path = tree.split(" as ").next().unwrap_or(tree);
        vec![
            path.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ]
    }
}

fn read_module(file: &Path) -> Module {
    let code = code_of(&std::fs::read_to_string(file).unwrap());
    let facade = is_facade(file);
    let mut reexports = BTreeMap::new();
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    // `use` statements (possibly over several lines).
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let starts_statement = before
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || c == ';' || c == '{' || c == '}');
        let public = before.trim_end().ends_with("pub") || before.trim_end().ends_with(')');
        let after = &rest[at + 4..];
        let Some(end) = after.find(';') else { break };
        if starts_statement {
            let statement = &after[..end];
            for mut path in expand(statement) {
                // `use super::*` stands in test modules inside a file: it names
                // the file's own module, not its parent.
                if path == ["super", "*"] {
                    continue;
                }
                // A facade's `use child::X` names its own child module.
                if !matches!(
                    path.first().map(String::as_str),
                    Some("crate" | "super" | "self")
                ) {
                    if !facade {
                        continue;
                    }
                    path.insert(0, "self".to_string());
                }
                if facade && public {
                    if let Some(last) = path.last() {
                        reexports.insert(last.clone(), path.clone());
                    }
                } else {
                    paths.push(path);
                }
            }
            rest = &after[end + 1..];
        } else {
            rest = after;
        }
    }
    // Paths written in code: `crate::a::b(...)`, `super::x::Y`.
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let mut end = at;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
            {
                end += 1;
            }
            let text = code[at..end].trim_end_matches(':');
            let path: Vec<String> = text.split("::").map(str::to_string).collect();
            // `super::*` (a glob, in test modules) or a bare `crate::{...}`.
            if path.len() < 2 {
                continue;
            }
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    Module { reexports, paths }
}

struct Crate {
    modules: BTreeMap<String, Module>,
}

impl Crate {
    fn read(src: &Path) -> Self {
        // `src/bin`: binaries, crates of their own.
        let modules = rust_files(src)
            .into_iter()
            .filter(|path| !path.starts_with(src.join("bin")))
            .map(|path| (module_name(src, &path), read_module(&path)))
            .collect();
        Self { modules }
    }

    /// The module `path` (written in module `from`) names, through re-exports.
    /// `super` is the parent of the module a file defines (for `a/b/mod.rs`,
    /// module `a::b`, that is `a`; for `a/b/c.rs` it is `a::b`).
    fn resolve(&self, from: &str, path: &[String]) -> Option<String> {
        let mut base: Vec<String> = if from.is_empty() {
            vec![]
        } else {
            from.split("::").map(str::to_string).collect()
        };
        let rest = match path.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                &path[1..]
            }
            Some("super") => {
                let supers = path.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    base.pop();
                }
                &path[supers..]
            }
            Some("self") => {
                // `self::x` that is no child module: an external crate a
                // facade re-exports (`pub use squall_executor::...`).
                let child = format!("{from}::{}", path.get(1)?);
                let child = child.trim_start_matches("::");
                if !self.modules.contains_key(child) && path.len() > 2 {
                    return None;
                }
                &path[1..]
            }
            _ => return None,
        };
        self.follow(base, rest, 0)
    }

    fn follow(&self, mut base: Vec<String>, rest: &[String], depth: usize) -> Option<String> {
        if depth > 10 {
            return None;
        }
        let mut i = 0;
        while i < rest.len() {
            let mut next = base.clone();
            next.push(rest[i].clone());
            if self.modules.contains_key(&next.join("::")) {
                base = next;
                i += 1;
            } else {
                break;
            }
        }
        let module = base.join("::");
        // An item re-exported by a facade: the module that defines it.
        if i < rest.len()
            && let Some(target) = self
                .modules
                .get(&module)
                .and_then(|m| m.reexports.get(&rest[i]))
        {
            let resolved = self.resolve(&module, target)?;
            return Some(resolved);
        }
        self.modules.contains_key(&module).then_some(module)
    }

    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, module) in &self.modules {
            let targets = edges.entry(name.clone()).or_default();
            for path in &module.paths {
                if let Some(target) = self.resolve(name, path)
                    && target != *name
                {
                    targets.insert(target);
                }
            }
        }
        edges
    }
}

fn rank(layers: &[&[&str]], name: &str) -> Option<usize> {
    layers.iter().position(|layer| layer.contains(&name))
}

/// The layer of a module: its top-level name, and inside a module with layers
/// of its own its second.
fn layer_of(spec: &Spec, module: &str) -> Option<(usize, Option<usize>)> {
    let mut parts = module.split("::");
    let top = parts.next()?;
    let top_rank = rank(spec.layers, top)?;
    if let Some((_, inner)) = spec.inner.iter().find(|(name, _)| *name == top) {
        // The parent sits above what it declares.
        let Some(child) = parts.next() else {
            return Some((top_rank, Some(inner.len())));
        };
        return Some((top_rank, Some(rank(inner, child)?)));
    }
    Some((top_rank, None))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, cycles),
                1 => {
                    let at = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    cycles.push(cycle.join(" → "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            visit(node, edges, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}

/// What is wrong with the imports between the files of one crate.
fn problems_in(spec: &Spec, edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    // Every module has a layer; no edge goes up.
    for (from, targets) in edges {
        if from.is_empty() {
            continue;
        }
        let Some(from_layer) = layer_of(spec, from) else {
            problems.push(format!(
                "{}: {from} has no layer (add it to CRATES)",
                spec.name
            ));
            continue;
        };
        for to in targets {
            if to.is_empty() {
                continue;
            }
            let Some(to_layer) = layer_of(spec, to) else {
                continue;
            };
            let up = match (from_layer, to_layer) {
                ((a, Some(x)), (b, Some(y))) if a == b => y > x,
                ((a, _), (b, _)) => b > a,
            };
            if up {
                problems.push(format!(
                    "{}: {from} imports {to}, a higher layer",
                    spec.name
                ));
            }
        }
    }
    problems.extend(
        cycles(edges)
            .into_iter()
            .map(|c| format!("{}: cycle: {c}", spec.name)),
    );
    problems
}

#[test]
fn imports_go_down_the_layers_and_never_round() {
    let mut problems = Vec::new();
    for spec in CRATES {
        let krate = Crate::read(&workspace().join(spec.dir).join("src"));
        assert!(
            krate.modules.len() > 3,
            "{}: read only {} files",
            spec.name,
            krate.modules.len()
        );
        problems.extend(problems_in(spec, &krate.edges()));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn a_cycle_or_an_upward_import_is_found() {
    let spec = &CRATES[1];
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges
        .entry("tables".into())
        .or_default()
        .insert("planner".into());
    edges
        .entry("planner".into())
        .or_default()
        .insert("error".into());
    edges
        .entry("commit".into())
        .or_default()
        .insert("cost".into());
    edges
        .entry("cost".into())
        .or_default()
        .insert("commit".into());
    let problems = problems_in(spec, &edges);
    assert!(
        problems.contains(&"squall-engine: tables imports planner, a higher layer".to_string()),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("cycle: commit → cost → commit")),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn paths_resolve_through_facades() {
    let krate = Crate::read(&workspace().join("control-plane/engine/src"));
    let edges = krate.edges();
    // The engine uses the scheduler, and the scheduler never the engine.
    assert!(
        edges["engine"].contains("scheduler"),
        "{:?}",
        edges["engine"]
    );
    assert!(!edges["scheduler"].contains("engine"));
    // The executor's writer no longer imports its two kinds.
    let executor = Crate::read(&workspace().join("executor/src"));
    let edges = executor.edges();
    assert!(edges["run"].contains("root"), "{:?}", edges["run"]);
    assert!(
        !edges["writer"].contains("result_writer"),
        "{:?}",
        edges["writer"]
    );
}

/// The `[dependencies]` of a crate: name → whether optional.
fn dependencies(dir: &str) -> BTreeMap<String, bool> {
    let text = std::fs::read_to_string(workspace().join(dir).join("Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    let Some(deps) = manifest.get("dependencies").and_then(|d| d.as_table()) else {
        return BTreeMap::new();
    };
    deps.iter()
        .map(|(name, value)| {
            let optional = value
                .get("optional")
                .and_then(|o| o.as_bool())
                .unwrap_or(false);
            (name.replace('-', "_"), optional)
        })
        .collect()
}

#[test]
fn crates_depend_only_on_crates_below_them() {
    let mut problems = Vec::new();
    for spec in CRATES {
        for (dep, optional) in dependencies(spec.dir) {
            if dep.starts_with("squall_")
                && !spec
                    .depends_on
                    .iter()
                    .any(|allowed| allowed.replace('-', "_") == dep)
            {
                problems.push(format!("{} depends on {dep}, not below it", spec.name));
            }
            if matches!(spec.name, "squall-executor" | "squall-engine")
                && !optional
                && NOT_IN_THE_ENGINE.contains(&dep.as_str())
            {
                problems.push(format!("{} builds {dep}", spec.name));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Crates outside the workspace and their features, as `cargo tree` resolves
/// them for `args`.
fn third_party_features(args: &[&str]) -> BTreeMap<String, String> {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--prefix", "none", "-f", "{p}|{f}"])
        .args(args)
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut crates = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = line.replace(" (*)", "");
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        if package.contains(" (/") {
            continue;
        }
        let mut features: Vec<&str> = features.split(',').filter(|f| !f.is_empty()).collect();
        features.sort();
        crates.insert(package.trim().to_string(), features.join(","));
    }
    crates
}

#[test]
fn the_demo_and_the_tests_build_the_same_dependencies() {
    let demo = third_party_features(&["-p", "squall", "-e", "normal,build"]);
    let tests = third_party_features(&[
        "--workspace",
        "--features",
        "squall-tests/emulators,squall-tests/browser",
        "-e",
        "normal,build,dev",
    ]);
    assert!(
        demo.keys()
            .any(|package| package.starts_with("datafusion v")),
        "{demo:?}"
    );
    let differ: Vec<String> = demo
        .iter()
        .filter(|(package, features)| tests.get(*package).is_some_and(|f| f != *features))
        .map(|(package, features)| {
            format!(
                "{package}: [{features}] for the demo, [{}] for the tests",
                tests[package]
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "built twice, with different features:\n{}",
        differ.join("\n")
    );
}

/// Most lines a file's code may have (its unit tests not counted).
const MAX_FILE_LINES: usize = 800;
/// Most lines one function may have.
const MAX_FUNCTION_LINES: usize = 100;
/// Functions that are declarations rather than logic, allowed to be longer:
/// (file, function, why).
const DECLARATIVE: &[(&str, &str, &str)] = &[(
    "control-plane/service/src/metrics.rs",
    "new",
    "registers each metric with its help text, one after the other",
)];

/// Every function in `code` (comments and strings removed) with its length
/// in lines, from `fn` to its closing brace; declarations without a body
/// (trait methods) are not counted.
fn functions(code: &str) -> Vec<(String, usize)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn ") {
        let at = from + at;
        from = at + 3;
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body starts at the first `{` outside the signature's brackets.
        let mut depth = 0i32;
        let mut open = None;
        for (i, c) in code[at..].char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ';' if depth == 0 => break,
                '{' if depth == 0 => {
                    open = Some(at + i);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let mut braces = 0i32;
        let mut end = code.len();
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => braces += 1,
                '}' => {
                    braces -= 1;
                    if braces == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push((name, code[at..end].lines().count()));
    }
    found
}

/// The `.rs` files under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn files_and_functions_stay_readable() {
    let root = workspace();
    let mut problems = Vec::new();
    let mut read = 0;
    for spec in CRATES {
        for file in rust_files(&root.join(spec.dir).join("src")) {
            read += 1;
            let relative = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let code = code_of(&std::fs::read_to_string(&file).unwrap());
            // Unit tests sit at the end of a file, behind `#[cfg(test)]`.
            let code = code.split("#[cfg(test)]").next().unwrap_or_default();
            let lines = code.lines().count();
            if lines > MAX_FILE_LINES {
                problems.push(format!(
                    "{relative}: {lines} lines of code, over {MAX_FILE_LINES}"
                ));
            }
            for (name, lines) in functions(code) {
                let declared = DECLARATIVE
                    .iter()
                    .any(|(f, n, _)| *f == relative && *n == name);
                if lines > MAX_FUNCTION_LINES && !declared {
                    problems.push(format!(
                        "{relative}: fn {name} has {lines} lines, over {MAX_FUNCTION_LINES}"
                    ));
                }
            }
        }
    }
    assert!(read > 100, "read only {read} files");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn function_lengths_are_measured_from_fn_to_the_closing_brace() {
    let code = "trait T {\n    fn declared(&self);\n}\nfn short(a: [u8; 2]) -> u8 {\n    let b = { a[0] };\n    b\n}\n";
    assert_eq!(functions(code), vec![("short".to_string(), 4)]);
}
