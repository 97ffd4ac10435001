//! Reading a Compose project the way `docker compose` would: several files
//! merged in order, relative paths resolved against the first file's
//! directory (the repository root here), short and long port and volume
//! syntax.

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::{Mapping, Value};

use crate::files;

/// The stack: `docker compose up` in the repository root.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// Added by `.devcontainer/devcontainer.json` for "Reopen in Container".
pub const DEVCONTAINER_COMPOSE_FILE: &str = ".devcontainer/docker-compose.devcontainer.yml";

/// A Compose project: the merged document of its files.
pub struct Compose {
    pub doc: Value,
}

impl Compose {
    /// The files merged in order, as `docker compose -f a -f b` merges them:
    /// mappings key by key, sequences appended, scalars replaced.
    pub fn load(files: &[&str]) -> Self {
        let mut doc = Value::Mapping(Mapping::new());
        for file in files {
            merge(&mut doc, files::load_yaml(file));
        }
        Self { doc }
    }

    /// Service names and definitions, sorted by name.
    pub fn services(&self) -> BTreeMap<String, &Value> {
        self.doc["services"]
            .as_mapping()
            .expect("the compose file has a services mapping")
            .iter()
            .map(|(name, service)| {
                (
                    name.as_str().expect("service names are strings").to_owned(),
                    service,
                )
            })
            .collect()
    }

    pub fn service(&self, name: &str) -> &Value {
        let service = &self.doc["services"][name];
        assert!(!service.is_null(), "no service {name} in the compose file");
        service
    }

    /// The named volumes declared at the top level.
    pub fn declared_volumes(&self) -> BTreeSet<String> {
        self.doc["volumes"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(name, _)| name.as_str().map(str::to_owned))
            .collect()
    }
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (Value::Sequence(base), Value::Sequence(overlay)) => base.extend(overlay),
        (base, overlay) => *base = overlay,
    }
}

/// A port a service publishes on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// The host address it binds; empty for all addresses.
    pub host_ip: String,
    pub port: u16,
    pub protocol: String,
    pub container_port: u16,
}

/// The host ports `service` publishes (a port given without a host side
/// gets a random host port and is not listed).
pub fn published_ports(service: &Value) -> Vec<HostPort> {
    let mut published = Vec::new();
    for entry in service["ports"].as_sequence().into_iter().flatten() {
        match entry {
            Value::Mapping(_) => {
                let Some(port) = entry["published"]
                    .as_u64()
                    .or_else(|| entry["published"].as_str().and_then(|p| p.parse().ok()))
                else {
                    continue;
                };
                published.push(HostPort {
                    host_ip: entry["host_ip"].as_str().unwrap_or_default().to_owned(),
                    port: u16::try_from(port).expect("a port number"),
                    protocol: entry["protocol"].as_str().unwrap_or("tcp").to_owned(),
                    container_port: u16::try_from(entry["target"].as_u64().expect("port target"))
                        .expect("a port number"),
                });
            }
            other => published.extend(parse_short_port(&scalar_text(other))),
        }
    }
    published
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => panic!("unexpected port entry {other:?}"),
    }
}

/// `[HOST_IP:][HOST:]CONTAINER[/PROTOCOL]`, each port possibly a range.
fn parse_short_port(spec: &str) -> Vec<HostPort> {
    let (ports, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
    let (container, host, host_ip) = match parts.as_slice() {
        [container] => (*container, None, ""),
        [container, host] => (*container, Some(*host), ""),
        [container, host, ip] => (*container, Some(*host), *ip),
        _ => unreachable!("rsplitn(3) yields one to three parts"),
    };
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Vec::new();
    };
    let host_range = port_range(host);
    let container_range = port_range(container);
    host_range
        .iter()
        .enumerate()
        .map(|(i, &port)| HostPort {
            host_ip: host_ip.to_owned(),
            port,
            protocol: protocol.to_owned(),
            container_port: *container_range.get(i).unwrap_or(&container_range[0]),
        })
        .collect()
}

fn port_range(spec: &str) -> Vec<u16> {
    let parse = |p: &str| -> u16 { p.parse().unwrap_or_else(|e| panic!("bad port {p:?}: {e}")) };
    match spec.split_once('-') {
        Some((from, to)) => (parse(from)..=parse(to)).collect(),
        None => vec![parse(spec)],
    }
}

/// What a service mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A host path, relative to the repository root unless absolute.
    Bind { source: String, target: String },
    /// A named volume.
    Volume { name: String, target: String },
    /// An anonymous volume or tmpfs.
    Other { target: String },
}

pub fn mounts(service: &Value) -> Vec<Mount> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|entry| match entry {
            Value::String(spec) => parse_short_mount(spec),
            long => {
                let target = long["target"].as_str().unwrap_or_default().to_owned();
                let source = long["source"].as_str().unwrap_or_default().to_owned();
                match long["type"].as_str() {
                    Some("bind") => Mount::Bind { source, target },
                    Some("volume") if !source.is_empty() => Mount::Volume {
                        name: source,
                        target,
                    },
                    _ => Mount::Other { target },
                }
            }
        })
        .collect()
}

fn parse_short_mount(spec: &str) -> Mount {
    let mut parts = spec.splitn(3, ':');
    let first = parts.next().unwrap_or_default().to_owned();
    match parts.next() {
        None => Mount::Other { target: first },
        Some(target) if first.starts_with(['.', '/', '~']) => Mount::Bind {
            source: first,
            target: target.to_owned(),
        },
        Some(target) => Mount::Volume {
            name: first,
            target: target.to_owned(),
        },
    }
}

/// The service's environment (mapping or `KEY=value` list form).
pub fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => serde_norway::to_string(other)
                        .expect("a scalar serialises")
                        .trim()
                        .to_owned(),
                };
                (
                    key.as_str().expect("variable names are strings").to_owned(),
                    value,
                )
            })
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|entry| {
                let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A value as Compose interpolates it when none of the variables it names
/// is set in the environment: `${VAR:-default}` and `${VAR-default}` give
/// the default, `${VAR:+alt}`, `${VAR}` and `$VAR` nothing, `$$` a `$`. A
/// required variable (`${VAR:?message}`) or a bad expression panics.
pub fn interpolate_unset(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {value:?}"));
            let expression = &braced[..end];
            let name_end = expression
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expression.len());
            let operation = &expression[name_end..];
            assert!(name_end > 0, "no variable name in ${{{expression}}}");
            let operator = operation.trim_start_matches(':');
            match operator.chars().next() {
                None | Some('+') => {}
                Some('-') => out.push_str(&operator[1..]),
                Some('?') => panic!("${{{expression}}} requires a variable to be set"),
                Some(_) => panic!("unsupported interpolation ${{{expression}}}"),
            }
            rest = &braced[end + 1..];
        } else {
            assert!(name_len > 0, "a lone $ in {value:?}: write $$");
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    out
}

/// `depends_on` as (service, condition) pairs; the list form has no
/// condition.
pub fn depends_on(service: &Value) -> Vec<(String, Option<String>)> {
    match &service["depends_on"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(name, spec)| {
                (
                    name.as_str().expect("service names are strings").to_owned(),
                    spec["condition"].as_str().map(str::to_owned),
                )
            })
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|name| (name.to_owned(), None))
            .collect(),
        _ => Vec::new(),
    }
}

/// The healthcheck's command as a list (`CMD`/`CMD-SHELL` first), or `None`
/// when there is none or it is disabled.
pub fn healthcheck_test(service: &Value) -> Option<Vec<String>> {
    let healthcheck = &service["healthcheck"];
    if healthcheck["disable"].as_bool() == Some(true) {
        return None;
    }
    let test = match &healthcheck["test"] {
        Value::String(shell) => vec!["CMD-SHELL".to_owned(), shell.clone()],
        Value::Sequence(list) => list
            .iter()
            .map(|part| {
                part.as_str()
                    .expect("healthcheck words are strings")
                    .to_owned()
            })
            .collect(),
        _ => return None,
    };
    (test.first().map(String::as_str) != Some("NONE") && test.len() > 1).then_some(test)
}

/// Whether an image reference names a fixed version: a tag that is not
/// `latest` and contains a digit, or a digest. Compose interpolation in the
/// reference would let the environment change it, so that counts as
/// unpinned too.
pub fn image_is_pinned(image: &str) -> bool {
    if image.contains('$') {
        return false;
    }
    if image.contains("@sha256:") {
        return true;
    }
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].split_once(':') {
        Some((_, tag)) => tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
        None => false,
    }
}

/// The external base images of a Dockerfile's `FROM` lines (stages built
/// from an earlier stage of the same file are left out), with the stage
/// names it defines.
pub fn dockerfile_stages(text: &str) -> (Vec<String>, Vec<String>) {
    let mut bases = Vec::new();
    let mut stages = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(rest) = line
            .strip_prefix("FROM ")
            .or_else(|| line.strip_prefix("from "))
        else {
            continue;
        };
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let image = words.first().copied().unwrap_or_default();
        if !stages.iter().any(|stage| stage == image) {
            bases.push(image.to_owned());
        }
        if let [_, as_keyword, name, ..] = words.as_slice()
            && as_keyword.eq_ignore_ascii_case("as")
        {
            stages.push((*name).to_owned());
        }
    }
    (bases, stages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_port_syntax() {
        let ports = parse_short_port("127.0.0.1:3300:3000/udp");
        assert_eq!(
            ports,
            [HostPort {
                host_ip: "127.0.0.1".into(),
                port: 3300,
                protocol: "udp".into(),
                container_port: 3000
            }]
        );
        assert_eq!(parse_short_port("3000:3000")[0].port, 3000);
        assert!(
            parse_short_port("3002").is_empty(),
            "no host side, no host port"
        );
        assert_eq!(parse_short_port("8000-8002:9000-9002").len(), 3);
    }

    #[test]
    fn short_mount_syntax() {
        assert_eq!(
            parse_short_mount("./grafana/x.yaml:/etc/x.yaml:ro"),
            Mount::Bind {
                source: "./grafana/x.yaml".into(),
                target: "/etc/x.yaml".into()
            }
        );
        assert_eq!(
            parse_short_mount("data:/var/lib/x"),
            Mount::Volume {
                name: "data".into(),
                target: "/var/lib/x".into()
            }
        );
        assert_eq!(
            parse_short_mount("/scratch"),
            Mount::Other {
                target: "/scratch".into()
            }
        );
    }

    #[test]
    fn interpolation_with_nothing_set_gives_the_defaults() {
        assert_eq!(interpolate_unset("${A:-x,y=z}"), "x,y=z");
        assert_eq!(interpolate_unset("a ${B-b} ${C} $D."), "a b  .");
        assert_eq!(interpolate_unset("${E:+alt}$$F"), "$F");
        assert_eq!(interpolate_unset("plain"), "plain");
    }

    #[test]
    fn pinned_images() {
        assert!(image_is_pinned("grafana/tempo:2.10.7"));
        assert!(image_is_pinned("localhost:5000/x:1.2"));
        assert!(image_is_pinned("busybox@sha256:abc"));
        assert!(!image_is_pinned("grafana/grafana"));
        assert!(!image_is_pinned("localhost:5000/x"));
        assert!(!image_is_pinned("rabbitmq:latest"));
        assert!(!image_is_pinned("rabbitmq:management"));
        assert!(!image_is_pinned("rabbitmq:${TAG:-3.13}"));
    }

    #[test]
    fn dockerfile_bases_skip_own_stages() {
        let (bases, stages) = dockerfile_stages(
            "FROM rust:1.95.0 AS chef\nFROM chef AS builder\nFROM --platform=linux/amd64 debian:12.13-slim AS runtime\nFROM runtime AS app\n",
        );
        assert_eq!(bases, ["rust:1.95.0", "debian:12.13-slim"]);
        assert_eq!(stages, ["chef", "builder", "runtime", "app"]);
    }

    #[test]
    fn merging_appends_sequences_and_merges_mappings() {
        let mut base: Value = serde_norway::from_str("a: {x: 1, l: [1]}\nb: 2").unwrap();
        merge(
            &mut base,
            serde_norway::from_str("a: {y: 3, l: [2]}\nb: 4").unwrap(),
        );
        assert_eq!(base["a"]["x"].as_u64(), Some(1));
        assert_eq!(base["a"]["y"].as_u64(), Some(3));
        assert_eq!(base["a"]["l"].as_sequence().map(Vec::len), Some(2));
        assert_eq!(base["b"].as_u64(), Some(4));
    }
}
