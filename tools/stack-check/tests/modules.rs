//! The crates' module boundaries: no module of a crate imports, directly
//! or through others, a module that imports it back. A circle means two
//! modules are one job split in two, or one leans on the other's
//! internals; either way the next change must touch both.
//!
//! Read from the sources as text: every `crate::` and `super::` path
//! outside `#[cfg(test)]` code, braces expanded, resolved to the module
//! (file) it names. A parent's `mod child;` declaration is not an import;
//! its `pub use child::…` re-export is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use stack_check::files::{repo_root, rust_files};

/// The crates whose modules are checked: the product and the tooling.
const CRATES: &[&str] = &[
    "common",
    "public-web",
    "dispatcher",
    "ping-listener",
    "prime-listener",
    "scenario-listener",
    "webhook-sender",
    "tools/bench",
    "tools/otlp-receiver",
    "tools/req",
    "tools/stack-check",
    "tools/trace-view",
    "tests",
];

#[test]
fn no_crate_has_a_module_import_circle() {
    let mut circles = Vec::new();
    for krate in CRATES {
        let modules = modules(&repo_root().join(krate).join("src"));
        assert!(!modules.is_empty(), "{krate} has no modules");
        let graph = imports(&modules);
        if let Some(circle) = find_circle(&graph) {
            circles.push(format!("{krate}: {}", circle.join(" -> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "module import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found() {
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(find_circle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let tree = BTreeMap::from([("a".to_owned(), BTreeSet::from(["b".to_owned()]))]);
    assert_eq!(find_circle(&tree), None);
}

#[test]
fn paths_are_expanded_and_resolved() {
    let known: BTreeSet<String> = ["", "amqp", "amqp::message", "wire"]
        .map(str::to_owned)
        .into();
    let code = "use super::{message, publish::x};\nuse crate::wire::{Event, CALLBACK};\nlet a = crate::amqp::message::header(p);";
    let found = referenced_modules(code, "amqp::consume", &known);
    assert_eq!(
        found,
        BTreeSet::from([
            "amqp::message".to_owned(),
            "amqp".to_owned(),
            "wire".to_owned()
        ])
    );
    let reexports = referenced_modules("pub use message::header;", "amqp", &known);
    assert_eq!(reexports, BTreeSet::from(["amqp::message".to_owned()]));
}

/// Each library module of the crate whose sources are in `src` (binaries
/// left out: they reach the library by its name, not `crate::`), by path
/// (`""` for the crate root), with its source outside test code.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("under src");
        let parts: Vec<&str> = relative
            .iter()
            .map(|p| p.to_str().expect("UTF-8 path"))
            .collect();
        if parts[0] == "bin" || parts == ["main.rs"] {
            continue;
        }
        let mut path: Vec<&str> = parts.iter().map(|p| p.trim_end_matches(".rs")).collect();
        if matches!(path.last(), Some(&"mod" | &"lib")) {
            path.pop();
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let code = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_owned();
        found.insert(path.join("::"), code);
    }
    found
}

/// Module → the other modules it imports.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(module, code)| {
            let mut targets = referenced_modules(code, module, &known);
            targets.remove(module);
            (module.clone(), targets)
        })
        .collect()
}

/// The modules `code` (of `module`) names through `crate::` or `super::`
/// paths, each resolved to the longest known module prefix.
fn referenced_modules(code: &str, module: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let tokens: Vec<char> = code.chars().collect();
    let mut at = 0;
    while at < tokens.len() {
        let rest: String = tokens[at..tokens.len().min(at + 7)].iter().collect();
        let own: Vec<String> = module
            .split("::")
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let (base, skip) = if preceded_by_word(&tokens, at) {
            at += 1;
            continue;
        } else if rest.starts_with("crate::") {
            (Vec::new(), 7)
        } else if rest.starts_with("super::") {
            (own[..own.len().saturating_sub(1)].to_vec(), 7)
        } else if starts_child_path(&tokens[at..], module, known) {
            // A path relative to this module: `child::…`.
            (own, 0)
        } else {
            at += 1;
            continue;
        };
        let (paths, end) = expand(&tokens, at + skip);
        for path in paths {
            let mut full = base.clone();
            full.extend(
                path.split("::")
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
            while !full.is_empty() && !known.contains(&full.join("::")) {
                full.pop();
            }
            found.insert(full.join("::"));
        }
        at = end;
    }
    found
}

/// Whether `tokens` start with `child::` for a child module of `module`.
fn starts_child_path(tokens: &[char], module: &str, known: &BTreeSet<String>) -> bool {
    let word: String = tokens
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '_')
        .collect();
    let followed_by_path = tokens.get(word.len()..word.len() + 2) == Some(&[':', ':'][..]);
    let child = if module.is_empty() {
        word.clone()
    } else {
        format!("{module}::{word}")
    };
    !word.is_empty() && followed_by_path && known.contains(&child)
}

fn preceded_by_word(tokens: &[char], at: usize) -> bool {
    at > 0 && (tokens[at - 1].is_alphanumeric() || tokens[at - 1] == '_' || tokens[at - 1] == ':')
}

/// The paths written from `start` on (`a::b`, `a::{b, c::d}`), and where
/// they end.
fn expand(tokens: &[char], start: usize) -> (Vec<String>, usize) {
    let mut prefix = String::new();
    let mut at = start;
    while at < tokens.len() {
        let c = tokens[at];
        if c.is_alphanumeric() || c == '_' || c == ':' {
            prefix.push(c);
            at += 1;
        } else if c == '{' {
            let mut paths = Vec::new();
            at += 1;
            loop {
                while at < tokens.len() && (tokens[at].is_whitespace() || tokens[at] == ',') {
                    at += 1;
                }
                if at >= tokens.len() || tokens[at] == '}' {
                    return (paths, at + 1);
                }
                let (inner, end) = expand(tokens, at);
                paths.extend(inner.into_iter().map(|p| format!("{prefix}{p}")));
                at = end;
            }
        } else {
            break;
        }
    }
    (vec![prefix.trim_end_matches(':').to_owned()], at)
}

/// A circle of `graph`, as the modules in order with the first repeated.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
