//! The Kubernetes manifests under deploy/kubernetes, as kustomize renders
//! them. [`render`] runs deploy/kubernetes/check, which renders every
//! kustomization and validates it against the Kubernetes API's schemas and
//! the vendored CRD schemas, and keeps what it wrote; [`Manifests`] reads
//! one rendering, so the tests can hold the objects to what the services
//! really do.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_norway::Value;

use crate::files;

/// The script that renders and validates (it makes its own Python virtual
/// environment from PyPI the first time).
pub const CHECK_SCRIPT: &str = "deploy/kubernetes/check";

/// The renderings the script writes, `<name>.yaml` each.
pub const RENDERINGS: [&str; 2] = ["base", "production"];

/// Runs [`CHECK_SCRIPT`] with its renderings written to `out`: what it
/// printed (stdout and stderr) when it passed, the same as the error when
/// it did not.
pub fn render(out: &Path) -> Result<String, String> {
    let output = Command::new(files::repo_root().join(CHECK_SCRIPT))
        .arg("--out")
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run {CHECK_SCRIPT}: {e}"))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(printed)
    } else {
        Err(format!(
            "{CHECK_SCRIPT} failed ({}):\n{printed}",
            output.status
        ))
    }
}

/// The objects of one rendering.
pub struct Manifests {
    /// Its name, for messages: `base`, `production`.
    pub name: String,
    pub objects: Vec<Value>,
}

impl Manifests {
    /// `<out>/<name>.yaml` as [`render`] wrote it: kustomize separates the
    /// objects with `---` lines.
    pub fn load(out: &Path, name: &str) -> Self {
        let path = out.join(format!("{name}.yaml"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let objects = text
            .split("\n---\n")
            .map(|doc| {
                serde_norway::from_str(doc)
                    .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
            })
            .collect();
        Self {
            name: name.to_owned(),
            objects,
        }
    }

    /// The objects of `kind`, by name.
    pub fn of_kind(&self, kind: &str) -> BTreeMap<String, &Value> {
        self.objects
            .iter()
            .filter(|o| o["kind"].as_str() == Some(kind))
            .map(|o| (name(o).to_owned(), o))
            .collect()
    }

    /// The object of `kind` named `wanted`; panics naming the rendering
    /// when there is none.
    pub fn get(&self, kind: &str, wanted: &str) -> &Value {
        self.of_kind(kind)
            .remove(wanted)
            .unwrap_or_else(|| panic!("{}: no {kind} {wanted}", self.name))
    }
}

/// An object's `metadata.name`.
pub fn name(object: &Value) -> &str {
    object["metadata"]["name"]
        .as_str()
        .expect("every object has a name")
}

/// The container of a Deployment named after it.
pub fn container(deployment: &Value) -> &Value {
    let wanted = name(deployment);
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == Some(wanted))
        .unwrap_or_else(|| panic!("Deployment {wanted} has no container named {wanted}"))
}

/// A container's `env` entries in order: name and entry.
pub fn env(container: &Value) -> Vec<(&str, &Value)> {
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|entry| {
            (
                entry["name"].as_str().expect("env entries are named"),
                entry,
            )
        })
        .collect()
}

/// The literal `value` the container gives `variable`, if it gives one.
pub fn env_value<'a>(container: &'a Value, variable: &str) -> Option<&'a str> {
    env(container)
        .into_iter()
        .find(|(name, _)| *name == variable)
        .and_then(|(_, entry)| entry["value"].as_str())
}

/// The names `$(NAME)` refers to in `value`, as Kubernetes expands them.
pub fn references(value: &str) -> Vec<&str> {
    value
        .split("$(")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(name, _)| name))
        .collect()
}

/// `labels` (a mapping of strings) as a map.
pub fn labels(labels: &Value) -> BTreeMap<String, String> {
    labels
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.as_str().expect("label keys are strings").to_owned(),
                v.as_str().expect("label values are strings").to_owned(),
            )
        })
        .collect()
}

/// Whether a `matchLabels` selector selects pods labelled `pod`.
pub fn selects(match_labels: &Value, pod: &BTreeMap<String, String>) -> bool {
    let wanted = labels(match_labels);
    !wanted.is_empty() && wanted.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// A memory quantity (`512Mi`, `2Gi`, `64M`, plain bytes) in bytes.
pub fn bytes(quantity: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| quantity.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((quantity, 1));
    number
        .parse::<u64>()
        .unwrap_or_else(|e| panic!("memory quantity {quantity:?}: {e}"))
        * unit
}

/// A CPU quantity (`250m`, `1`, `"2"`) in millicores.
pub fn millicores(quantity: &str) -> u64 {
    match quantity.strip_suffix('m') {
        Some(millis) => millis.parse(),
        None => quantity.parse::<u64>().map(|cores| cores * 1000),
    }
    .unwrap_or_else(|e| panic!("CPU quantity {quantity:?}: {e}"))
}

/// A quantity as written: a string, or a bare number YAML read as one.
pub fn quantity(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_references_read_as_kubernetes_reads_them() {
        assert_eq!(bytes("512Mi"), 512 << 20);
        assert_eq!(bytes("2Gi"), 2 << 30);
        assert_eq!(bytes("1000"), 1000);
        assert_eq!(millicores("250m"), 250);
        assert_eq!(millicores("2"), 2000);
        assert_eq!(
            references("amqp://$(USER):$(PASS)@$(HOST):5672/%2f"),
            ["USER", "PASS", "HOST"]
        );
        assert!(references("no $ref here").is_empty());
    }

    #[test]
    fn a_selector_selects_pods_with_all_its_labels() {
        let selector: Value = serde_norway::from_str("{a: x, b: y}").unwrap();
        let pod = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(selects(
            &selector,
            &pod(&[("a", "x"), ("b", "y"), ("c", "z")])
        ));
        assert!(!selects(&selector, &pod(&[("a", "x")])));
        assert!(!selects(&Value::Null, &pod(&[("a", "x")])));
    }
}
