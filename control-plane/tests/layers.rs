//! The library's files import each other in one direction only: no cycle
//! between files, and no module imports one from a higher layer
//! (service → engine → scheduler → planner/backend → tables → commit/access/cost →
//! error). Read from the `crate::`, `super::` and `self::` paths in
//! `control-plane/src` (the `squall` binary's `main.rs` and `cli/` are the top
//! and not read). A facade (`lib.rs`, a `mod.rs`) only declares and re-exports:
//! a path through a re-export counts as a path to the module that defines the item.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, lowest first; a module may import from its own layer and below.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["commit", "access", "urls", "cost"],
    &["tables"],
    &["planner", "backend"],
    &["scheduler"],
    &["engine"],
    &["tools", "service"],
];

/// Inside `service`: its HTTP types at the bottom, the HTTP layer at the top.
const SERVICE_LAYERS: &[&[&str]] = &[
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
    &["http", "client"],
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
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn is_facade(file: &Path) -> bool {
    matches!(
        file.file_name().and_then(|n| n.to_str()),
        Some("mod.rs" | "lib.rs")
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
        let mut modules = BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if path != src.join("cli") {
                        stack.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") && path != src.join("main.rs")
                {
                    modules.insert(module_name(src, &path), read_module(&path));
                }
            }
        }
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

/// The layer of a module: its top-level name, and inside `service` its second.
fn layer_of(module: &str) -> Option<(usize, Option<usize>)> {
    let mut parts = module.split("::");
    let top = parts.next()?;
    let top_rank = rank(LAYERS, top)?;
    if top == "service" {
        // The facade (re-exports only) sits above what it re-exports.
        let Some(inner) = parts.next() else {
            return Some((top_rank, Some(SERVICE_LAYERS.len())));
        };
        return Some((top_rank, Some(rank(SERVICE_LAYERS, inner)?)));
    }
    Some((top_rank, None))
}

#[test]
fn imports_go_down_the_layers_and_never_round() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::read(&src);
    let edges = krate.edges();
    let mut problems = Vec::new();

    // Every module has a layer; no edge goes up.
    for (from, targets) in &edges {
        if from.is_empty() {
            continue;
        }
        let Some(from_layer) = layer_of(from) else {
            problems.push(format!("{from}: no layer (add it to LAYERS)"));
            continue;
        };
        for to in targets {
            if to.is_empty() {
                continue;
            }
            let Some(to_layer) = layer_of(to) else {
                continue;
            };
            let up = match (from_layer, to_layer) {
                ((a, Some(x)), (b, Some(y))) if a == b => y > x,
                ((a, _), (b, _)) => b > a,
            };
            if up {
                problems.push(format!("{from} imports {to}, a higher layer"));
            }
        }
    }

    // No cycle between files.
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
            visit(node, &edges, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    problems.extend(cycles.into_iter().map(|c| format!("cycle: {c}")));
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn paths_resolve_through_facades() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::read(&src);
    let edges = krate.edges();
    // The engine uses the scheduler, and the scheduler never the engine.
    assert!(
        edges["engine"].contains("scheduler"),
        "{:?}",
        edges["engine"]
    );
    assert!(!edges["scheduler"].contains("engine"));
}
