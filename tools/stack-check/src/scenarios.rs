//! The example scenarios under examples/ (what scenario-listener acts out,
//! see its `config` module): the event types each one answers and the ones
//! its `call` steps send, which the dispatcher's `ROUTES` must cover.

use std::collections::BTreeSet;

use serde_norway::Value;

use crate::files;

/// Where the example scenarios live, relative to the repository root.
pub const EXAMPLES_DIR: &str = "examples";

/// Every example scenario (`examples/*.yaml`, `*.yml`, `*.json`), relative
/// to the repository root, sorted.
pub fn example_files() -> Vec<String> {
    let dir = files::repo_root().join(EXAMPLES_DIR);
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e)))
        .map(|name| format!("{EXAMPLES_DIR}/{name}"))
        .collect();
    found.sort();
    found
}

/// The event types a scenario answers: the keys of its `handlers`.
pub fn handled_types(scenario: &Value) -> BTreeSet<String> {
    scenario["handlers"]
        .as_mapping()
        .expect("a scenario has a handlers mapping")
        .keys()
        .map(|key| key.as_str().expect("event types are strings").to_owned())
        .collect()
}

/// The event types a scenario's `call` steps send, at any depth of
/// `parallel` and `sequence`.
pub fn called_types(scenario: &Value) -> BTreeSet<String> {
    let mut called = BTreeSet::new();
    for handler in scenario["handlers"]
        .as_mapping()
        .expect("a scenario has a handlers mapping")
        .values()
    {
        collect_calls(&handler["steps"], &mut called);
    }
    called
}

fn collect_calls(steps: &Value, called: &mut BTreeSet<String>) {
    for step in steps.as_sequence().into_iter().flatten() {
        let (kind, body) = step
            .as_mapping()
            .and_then(|m| m.iter().next())
            .unwrap_or_else(|| panic!("a step is a one-key mapping: {step:?}"));
        match kind.as_str() {
            Some("call") => {
                called.insert(
                    body["type"]
                        .as_str()
                        .unwrap_or_else(|| panic!("a call step names its type: {body:?}"))
                        .to_owned(),
                );
            }
            Some("parallel" | "sequence") => collect_calls(&body["steps"], called),
            Some("sleep") => {}
            other => panic!("unknown step kind {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_found_inside_groups() {
        let scenario: Value = serde_norway::from_str(
            "handlers:
               A:
                 steps:
                   - sleep: { ms: 1 }
                   - call: { type: B }
                   - parallel:
                       steps:
                         - sequence: { steps: [ { call: { type: C } } ] }
                         - call: { type: B }
               B: {}
               C: { steps: [] }",
        )
        .expect("valid YAML");
        assert_eq!(
            handled_types(&scenario),
            BTreeSet::from(["A".to_owned(), "B".to_owned(), "C".to_owned()])
        );
        assert_eq!(
            called_types(&scenario),
            BTreeSet::from(["B".to_owned(), "C".to_owned()])
        );
    }

    #[test]
    fn the_examples_are_found() {
        let examples = example_files();
        assert!(
            examples.contains(&"examples/scenario-order.yaml".to_owned()),
            "{examples:?}"
        );
    }
}
