//! deploy/kubernetes, checked without a cluster. deploy/kubernetes/check
//! (its pinned tools installed from PyPI into a virtual environment under
//! out/ on first use) renders the base and the production overlay with
//! `kubectl kustomize` and validates every object against the Kubernetes
//! API's schemas (1.33 and 1.37, strict) and the vendored CRD schemas of
//! `RabbitmqCluster` and `ScaledObject`. These tests run it, then hold both
//! renderings to the code and to the repository's documents:
//!
//! - every environment variable a container gets is one its service reads
//!   (`stack_check::config_vars`), a standard `OTEL_` one, or one the
//!   manifest itself uses (`$(NAME)` in a later variable, a
//!   `ScaledObject`'s `…FromEnv`), and every `$(NAME)` is defined before;
//! - one Deployment per service, probed on its `PORT` (`/healthz`,
//!   `/readyz`), taking the telemetry ConfigMap whole, and the broker one
//!   when it declares work queues;
//! - public-web's `CALLBACK_URL` is its own pod's IP and `DISPATCH_PORT`,
//!   and the NetworkPolicy opens that port to the dispatcher's pods only,
//!   the public port to all;
//! - every PodDisruptionBudget selects one Deployment's pods (or the
//!   broker's), the autoscalers target existing Deployments, each listener
//!   scales on its own queue;
//! - grace periods outlast the preStop wait plus each service's drain, at
//!   the timeouts the manifests set (their own, or a ConfigMap's);
//! - requests and limits everywhere, public-web's memory limit holding
//!   `MAX_PENDING` parked requests at BENCHMARKS.md's measured cost;
//! - Secrets referenced, documented, never written; the broker a
//!   three-node quorum cluster configured like the compose one, the
//!   dispatcher routing like compose;
//! - the broker's failure detection (its rabbitmq.conf lines, Erlang's
//!   `net_ticktime`), the AMQP heartbeat and the timeouts as the cluster
//!   test (tests/cluster/main.rs) ran them;
//! - production: replica floors, replicas spread over nodes, memory
//!   requested up to its limit, released images, one namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use serde_norway::Value;
use stack_check::compose::{self, COMPOSE_FILE, Compose};
use stack_check::kubernetes::{self, Manifests, RENDERINGS};
use stack_check::platform::{self, RUST_SERVICES};
use stack_check::{config_vars, files};

const DEPLOY_README: &str = "deploy/kubernetes/README.md";
/// The three-node cluster test: its nodes' settings, and the services'.
const CLUSTER_SETUP: &str = "tests/src/cluster.rs";
const CLUSTER_TEST: &str = "tests/cluster/main.rs";
const SCHEMAS_DIR: &str = "deploy/kubernetes/schemas";
/// The ConfigMaps every Deployment takes whole.
const TELEMETRY_CONFIG: &str = "platform-telemetry";
const BROKER_CONFIG: &str = "platform-broker";
/// The pod label that names the service, as every selector here uses it.
const NAME_LABEL: &str = "app.kubernetes.io/name";

/// Where the one run of the check script wrote its renderings, and what
/// it printed; or why it failed, for every test to report.
fn rendered() -> &'static (PathBuf, String) {
    static RENDERED: OnceLock<Result<(PathBuf, String), String>> = OnceLock::new();
    RENDERED
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("kubernetes-{}", std::process::id()));
            kubernetes::render(&out).map(|printed| (out, printed))
        })
        .as_ref()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Both renderings: the base and the production overlay.
fn renderings() -> Vec<Manifests> {
    RENDERINGS
        .iter()
        .map(|name| Manifests::load(&rendered().0, name))
        .collect()
}

fn production() -> Manifests {
    Manifests::load(&rendered().0, "production")
}

/// A container port: a number, or the name of one of its `ports`.
fn port_number(container: &Value, port: &Value) -> u64 {
    match port {
        Value::Number(n) => n.as_u64().expect("a port number"),
        Value::String(name) => container["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("a port is a number or a name, not {other:?}"),
    }
}

/// The pods' labels of a Deployment.
fn pod_labels(deployment: &Value) -> BTreeMap<String, String> {
    kubernetes::labels(&deployment["spec"]["template"]["metadata"]["labels"])
}

/// The labels the RabbitMQ Cluster Operator puts on the pods of the
/// cluster `name` (its internal/metadata/label.go).
fn broker_pod_labels(name: &str) -> BTreeMap<String, String> {
    [
        (NAME_LABEL, name),
        ("app.kubernetes.io/component", "rabbitmq"),
        ("app.kubernetes.io/part-of", "rabbitmq"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The only `RabbitmqCluster` of a rendering.
fn broker(manifests: &Manifests) -> &Value {
    let clusters = manifests.of_kind("RabbitmqCluster");
    assert_eq!(clusters.len(), 1, "{}: one RabbitmqCluster", manifests.name);
    clusters.into_values().next().expect("one cluster")
}

/// The value the manifests give `variable` in a container, as Kubernetes
/// resolves it: its own `env` entry, else the last ConfigMap it takes whole
/// (`envFrom`) that has the key; `None` when neither sets it. An entry the
/// manifests cannot know (`valueFrom`) fails the test.
fn given<'a>(manifests: &'a Manifests, container: &'a Value, variable: &str) -> Option<&'a str> {
    if let Some((_, entry)) = kubernetes::env(container)
        .into_iter()
        .find(|(name, _)| *name == variable)
    {
        let value = entry["value"].as_str();
        assert!(
            value.is_some(),
            "{}: {variable} is not written in the manifests: {entry:?}",
            manifests.name
        );
        return value;
    }
    let config_maps = manifests.of_kind("ConfigMap");
    config_maps_taken(container)
        .into_iter()
        .rev()
        .filter_map(|map| config_maps.get(map).copied())
        .find_map(|map| map["data"][variable].as_str())
}

/// The number a container's service runs with for `variable`: what the
/// manifests give it ([`given`]), else README.md's default.
fn setting(manifests: &Manifests, container: &Value, variable: &str) -> u64 {
    match given(manifests, container, variable) {
        Some(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{}: {variable}={value:?} is not a number", manifests.name)),
        None => config_vars::readme_table()
            .get(variable)
            .unwrap_or_else(|| panic!("README.md's configuration table lacks {variable}"))
            .default_number(variable),
    }
}

/// `value` with each `$(NAME)` replaced as Kubernetes does: by `given`'s
/// value for NAME, else the container's literal value for it.
fn expand(container: &Value, value: &str, given: &[(&str, &str)]) -> String {
    let mut expanded = value.to_owned();
    for name in kubernetes::references(value) {
        let with = given
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .or_else(|| kubernetes::env_value(container, name))
            .unwrap_or_else(|| panic!("$({name}) has no literal value"));
        expanded = expanded.replace(&format!("$({name})"), with);
    }
    expanded
}

/// The names of the ConfigMaps a container takes whole.
fn config_maps_taken(container: &Value) -> Vec<&str> {
    container["envFrom"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|source| source["configMapRef"]["name"].as_str())
        .collect()
}

/// The keys of a ConfigMap's `data`.
fn config_map_keys(config_map: &Value) -> Vec<&str> {
    config_map["data"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str().expect("ConfigMap keys are strings"))
        .collect()
}

/// The `ScaledObject`s and `HorizontalPodAutoscaler`s of a rendering, by
/// the Deployment they scale: kind, minimum, maximum.
fn autoscalers(manifests: &Manifests) -> BTreeMap<String, Vec<(&'static str, u64, u64)>> {
    let mut found: BTreeMap<String, Vec<(&'static str, u64, u64)>> = BTreeMap::new();
    for hpa in manifests.of_kind("HorizontalPodAutoscaler").values() {
        let spec = &hpa["spec"];
        let target = &spec["scaleTargetRef"];
        assert_eq!(
            (target["apiVersion"].as_str(), target["kind"].as_str()),
            (Some("apps/v1"), Some("Deployment")),
            "{}: {} scales a Deployment",
            manifests.name,
            kubernetes::name(hpa)
        );
        found
            .entry(target["name"].as_str().expect("a target").to_owned())
            .or_default()
            .push((
                "HorizontalPodAutoscaler",
                spec["minReplicas"].as_u64().unwrap_or(1),
                spec["maxReplicas"].as_u64().expect("maxReplicas"),
            ));
    }
    for scaled in manifests.of_kind("ScaledObject").values() {
        let spec = &scaled["spec"];
        let target = &spec["scaleTargetRef"];
        assert!(
            target["kind"].as_str().is_none_or(|k| k == "Deployment"),
            "{}: {} scales a Deployment",
            manifests.name,
            kubernetes::name(scaled)
        );
        found
            .entry(target["name"].as_str().expect("a target").to_owned())
            .or_default()
            .push((
                "ScaledObject",
                spec["minReplicaCount"].as_u64().unwrap_or(0),
                spec["maxReplicaCount"].as_u64().unwrap_or(100),
            ));
    }
    found
}

#[test]
fn the_manifests_render_and_validate_against_the_schemas() {
    let (out, printed) = rendered();
    eprintln!("{printed}");
    assert!(printed.contains("valid:"), "{printed}");
    for name in RENDERINGS {
        assert!(
            out.join(format!("{name}.yaml")).is_file(),
            "no {name} rendering"
        );
    }
}

#[test]
fn every_variable_a_container_gets_is_one_its_service_reads() {
    for manifests in renderings() {
        let config_maps = manifests.of_kind("ConfigMap");
        let scaled = manifests.of_kind("ScaledObject");
        for (service, deployment) in manifests.of_kind("Deployment") {
            let reads = config_vars::read_by(&service);
            let container = kubernetes::container(deployment);
            let entries = kubernetes::env(container);
            let mut defined: BTreeSet<&str> = BTreeSet::new();
            for map in config_maps_taken(container) {
                let map = config_maps
                    .get(map)
                    .unwrap_or_else(|| panic!("{}: no ConfigMap {map}", manifests.name));
                defined.extend(config_map_keys(map));
            }
            // Variables the manifests use themselves: in a later variable's
            // value, or as a ScaledObject's `…FromEnv` of this Deployment.
            let mut used: BTreeSet<&str> = BTreeSet::new();
            for (name, entry) in &entries {
                for reference in kubernetes::references(entry["value"].as_str().unwrap_or("")) {
                    assert!(
                        defined.contains(reference),
                        "{}: {service}'s {name} refers to $({reference}), which is not defined \
                         before it (Kubernetes would leave it as written)",
                        manifests.name
                    );
                    used.insert(reference);
                }
                defined.insert(name);
            }
            for object in scaled.values() {
                if object["spec"]["scaleTargetRef"]["name"].as_str() != Some(service.as_str()) {
                    continue;
                }
                for trigger in object["spec"]["triggers"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                {
                    for (key, value) in trigger["metadata"].as_mapping().into_iter().flatten() {
                        if key.as_str().is_some_and(|k| k.ends_with("FromEnv")) {
                            let variable = value.as_str().expect("a variable name");
                            assert!(
                                defined.contains(variable),
                                "{}: the ScaledObject of {service} reads {variable}, which its \
                                 container does not define",
                                manifests.name
                            );
                            used.insert(variable);
                        }
                    }
                }
            }
            for variable in &defined {
                assert!(
                    reads.contains(*variable)
                        || config_vars::is_standard(variable)
                        || used.contains(variable),
                    "{}: {service} is given {variable}, which {service} does not read (neither \
                     its crate nor common passes it to common::config, or README.md's \
                     configuration table gives it to other services) and nothing in the \
                     manifests uses",
                    manifests.name
                );
            }
        }
    }
}

#[test]
fn one_deployment_per_service_probed_on_its_port() {
    for manifests in renderings() {
        let deployments = manifests.of_kind("Deployment");
        let names: BTreeSet<&str> = deployments.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = RUST_SERVICES.iter().map(|s| s.name).collect();
        assert_eq!(names, expected, "{}: the Deployments", manifests.name);
        for service in RUST_SERVICES {
            let name = service.name;
            let deployment = deployments[name];
            let container = kubernetes::container(deployment);
            let at = &manifests.name;
            assert_eq!(
                kubernetes::env_value(container, "PORT"),
                Some(service.port.to_string().as_str()),
                "{at}: {name}'s PORT"
            );
            assert_eq!(
                kubernetes::env_value(container, "OTEL_SERVICE_NAME"),
                Some(name),
                "{at}: {name}'s OTEL_SERVICE_NAME"
            );
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"].as_str(), Some(path), "{at}: {name}'s {probe}");
                assert_eq!(
                    port_number(container, &get["port"]),
                    u64::from(service.port),
                    "{at}: {name}'s {probe} asks its PORT"
                );
            }
            let pods = pod_labels(deployment);
            assert_eq!(pods.get(NAME_LABEL).map(String::as_str), Some(name));
            assert!(
                kubernetes::selects(&deployment["spec"]["selector"]["matchLabels"], &pods),
                "{at}: {name}'s selector selects its own pods"
            );
            let image = container["image"].as_str().expect("an image");
            if manifests.name == "base" {
                assert_eq!(image, name, "{at}: the Dockerfile target's image");
            } else {
                let tag = image
                    .strip_prefix("registry.example.com/research-dispatcher/")
                    .and_then(|rest| rest.strip_prefix(name))
                    .and_then(|rest| rest.strip_prefix(':'))
                    .unwrap_or_else(|| panic!("{at}: {name} runs {image}: not its released image"));
                assert!(
                    !tag.is_empty() && tag != "latest",
                    "{at}: {image} is pinned"
                );
            }
            assert_eq!(
                deployment["spec"]["template"]["spec"]["automountServiceAccountToken"].as_bool(),
                Some(false),
                "{at}: {name} needs no API token"
            );
            assert_eq!(
                container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{at}: {name} writes no file"
            );
        }
    }
}

#[test]
fn every_deployment_takes_the_shared_telemetry_and_broker_settings() {
    for manifests in renderings() {
        let at = &manifests.name;
        let telemetry = manifests.get("ConfigMap", TELEMETRY_CONFIG);
        let endpoint = telemetry["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
            .as_str()
            .expect("the collector's endpoint");
        assert!(
            endpoint.starts_with("http://") || endpoint.starts_with("https://"),
            "{at}: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint}"
        );
        let protocol = telemetry["data"]["OTEL_EXPORTER_OTLP_PROTOCOL"].as_str();
        assert!(
            matches!(protocol, Some("grpc" | "http/protobuf")),
            "{at}: OTEL_EXPORTER_OTLP_PROTOCOL {protocol:?}"
        );
        let broker = manifests.get("ConfigMap", BROKER_CONFIG);
        assert_eq!(
            broker["data"]["QUEUE_TYPE"].as_str(),
            Some("quorum"),
            "{at}"
        );
        for (name, deployment) in manifests.of_kind("Deployment") {
            let container = kubernetes::container(deployment);
            let taken = config_maps_taken(container);
            assert!(
                taken.contains(&TELEMETRY_CONFIG),
                "{at}: {name} takes {TELEMETRY_CONFIG} (envFrom)"
            );
            // The broker's settings go to every service that declares work
            // queues (it reads QUEUE_TYPE), and to no other: a service
            // given a variable it does not read fails
            // every_variable_a_container_gets_is_one_its_service_reads.
            let declares = config_vars::read_by(&name).contains("QUEUE_TYPE");
            assert_eq!(
                taken.contains(&BROKER_CONFIG),
                declares,
                "{at}: {name} takes {BROKER_CONFIG} (envFrom) exactly when it reads QUEUE_TYPE"
            );
            let own: BTreeSet<&str> = kubernetes::env(container)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            for shared in config_map_keys(telemetry)
                .into_iter()
                .chain(config_map_keys(broker))
            {
                assert!(
                    !own.contains(shared),
                    "{at}: {name} sets {shared} itself, over the shared ConfigMap"
                );
            }
        }
    }
}

#[test]
fn public_web_is_called_back_on_its_own_pod() {
    for manifests in renderings() {
        let at = &manifests.name;
        let web = kubernetes::container(manifests.get("Deployment", "public-web"));
        let pod_ip = kubernetes::env(web)
            .into_iter()
            .find(|(_, entry)| {
                entry["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("status.podIP")
            })
            .map(|(name, _)| name)
            .unwrap_or_else(|| panic!("{at}: public-web gets no variable from status.podIP"));
        let dispatch_port = kubernetes::env_value(web, "DISPATCH_PORT")
            .unwrap_or_else(|| panic!("{at}: public-web's DISPATCH_PORT is set (0 picks any)"));
        let callback = kubernetes::env_value(web, "CALLBACK_URL").expect("CALLBACK_URL");
        assert_eq!(
            expand(web, callback, &[(pod_ip, "10.1.2.3")]),
            format!("http://10.1.2.3:{dispatch_port}/dispatch"),
            "{at}: CALLBACK_URL is this pod's /dispatch on DISPATCH_PORT"
        );
        assert_eq!(
            port_number(web, &Value::from("dispatch")).to_string(),
            dispatch_port,
            "{at}: the container port named dispatch is DISPATCH_PORT"
        );
        for service in ["public-web", "dispatcher", "webhook-sender"] {
            let container = kubernetes::container(manifests.get("Deployment", service));
            assert_eq!(
                kubernetes::env_value(container, "INTERNAL_BIND_ADDR"),
                Some("0.0.0.0"),
                "{at}: {service}'s internal port listens on the pod's address"
            );
        }
        // The forward goes to the dispatcher's Service, which sends it to
        // the dispatcher's port.
        let dispatcher = manifests.get("Deployment", "dispatcher");
        let service = manifests.get("Service", "dispatcher");
        let port = &service["spec"]["ports"][0];
        assert!(kubernetes::selects(
            &service["spec"]["selector"],
            &pod_labels(dispatcher)
        ));
        assert_eq!(
            port_number(kubernetes::container(dispatcher), &port["targetPort"]),
            u64::from(platform::service("dispatcher").port)
        );
        assert_eq!(
            kubernetes::env_value(web, "DISPATCHER_URL"),
            Some(
                format!(
                    "http://dispatcher:{}",
                    port["port"].as_u64().expect("a port")
                )
                .as_str()
            ),
            "{at}: DISPATCHER_URL"
        );
        // Callbacks go to pod addresses, so the allow-list names networks.
        let allow = kubernetes::env_value(kubernetes::container(dispatcher), "CALLBACK_ALLOW")
            .expect("CALLBACK_ALLOW");
        for entry in allow.split(',').map(str::trim) {
            let (address, prefix) = entry
                .split_once('/')
                .unwrap_or_else(|| panic!("{at}: CALLBACK_ALLOW {entry} is not a network"));
            assert!(
                address.parse::<std::net::IpAddr>().is_ok()
                    && prefix.parse::<u8>().is_ok_and(|p| p <= 128),
                "{at}: CALLBACK_ALLOW {entry} is not a network"
            );
        }
    }
}

#[test]
fn only_the_dispatcher_reaches_the_dispatch_port() {
    for manifests in renderings() {
        let at = &manifests.name;
        let deployments = manifests.of_kind("Deployment");
        let web = deployments["public-web"];
        let container = kubernetes::container(web);
        let public: u64 = setting(&manifests, container, "PORT");
        let dispatch: u64 = setting(&manifests, container, "DISPATCH_PORT");
        let policies: Vec<&Value> = manifests
            .of_kind("NetworkPolicy")
            .into_values()
            .filter(|p| {
                kubernetes::selects(&p["spec"]["podSelector"]["matchLabels"], &pod_labels(web))
            })
            .collect();
        assert_eq!(policies.len(), 1, "{at}: one NetworkPolicy for public-web");
        let spec = &policies[0]["spec"];
        assert!(
            spec["policyTypes"]
                .as_sequence()
                .is_some_and(|t| t.iter().any(|t| t.as_str() == Some("Ingress"))),
            "{at}: the policy restricts ingress"
        );
        let (mut public_open, mut dispatch_rules) = (false, 0);
        for rule in spec["ingress"].as_sequence().into_iter().flatten() {
            let ports: Vec<u64> = rule["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|p| port_number(container, &p["port"]))
                .collect();
            assert!(
                !ports.is_empty(),
                "{at}: a rule without ports opens them all"
            );
            let from = rule["from"].as_sequence();
            if ports.contains(&public) && from.is_none_or(Vec::is_empty) {
                public_open = true;
            }
            if !ports.contains(&dispatch) {
                continue;
            }
            dispatch_rules += 1;
            let peers = from.unwrap_or_else(|| panic!("{at}: DISPATCH_PORT open to all"));
            assert!(!peers.is_empty(), "{at}: DISPATCH_PORT open to all");
            for peer in peers {
                let selector = &peer["podSelector"]["matchLabels"];
                assert!(
                    peer["namespaceSelector"].is_null() && peer["ipBlock"].is_null(),
                    "{at}: DISPATCH_PORT open beyond the namespace's pods: {peer:?}"
                );
                let reached: Vec<&str> = deployments
                    .iter()
                    .filter(|(_, d)| kubernetes::selects(selector, &pod_labels(d)))
                    .map(|(n, _)| n.as_str())
                    .collect();
                assert_eq!(
                    reached,
                    ["dispatcher"],
                    "{at}: DISPATCH_PORT {dispatch} is for the dispatcher's pods only"
                );
            }
        }
        assert_eq!(
            dispatch_rules, 1,
            "{at}: one rule opens DISPATCH_PORT {dispatch}"
        );
        assert!(
            public_open,
            "{at}: public-web's PORT {public} is open to all"
        );
    }
}

#[test]
fn budgets_and_autoscalers_point_at_what_exists() {
    for manifests in renderings() {
        let at = &manifests.name;
        let deployments = manifests.of_kind("Deployment");
        let cluster = kubernetes::name(broker(&manifests)).to_owned();
        let mut pods: BTreeMap<String, BTreeMap<String, String>> = deployments
            .iter()
            .map(|(name, d)| (name.clone(), pod_labels(d)))
            .collect();
        pods.insert(
            format!("RabbitmqCluster {cluster}"),
            broker_pod_labels(&cluster),
        );
        let mut budgeted: BTreeMap<String, usize> = BTreeMap::new();
        for (name, budget) in manifests.of_kind("PodDisruptionBudget") {
            let selector = &budget["spec"]["selector"]["matchLabels"];
            let selected: Vec<&String> = pods
                .iter()
                .filter(|(_, labels)| kubernetes::selects(selector, labels))
                .map(|(owner, _)| owner)
                .collect();
            assert_eq!(
                selected.len(),
                1,
                "{at}: PodDisruptionBudget {name} selects {selected:?}"
            );
            *budgeted.entry(selected[0].clone()).or_default() += 1;
            assert!(
                !budget["spec"]["maxUnavailable"].is_null()
                    || !budget["spec"]["minAvailable"].is_null(),
                "{at}: PodDisruptionBudget {name} bounds something"
            );
        }
        for owner in pods.keys() {
            assert_eq!(
                budgeted.get(owner),
                Some(&1),
                "{at}: one budget for {owner}"
            );
        }

        let scaled = autoscalers(&manifests);
        for (target, scalers) in &scaled {
            assert!(
                deployments.contains_key(target),
                "{at}: {scalers:?} scale missing {target}"
            );
            assert_eq!(
                scalers.len(),
                1,
                "{at}: {target} has one autoscaler: {scalers:?}"
            );
            let (kind, min, max) = scalers[0];
            assert!(
                1 <= min && min <= max,
                "{at}: {target}'s {kind} scales {min}..{max}"
            );
            let service = platform::service(target);
            let expected = if service.is_listener() {
                "ScaledObject"
            } else {
                "HorizontalPodAutoscaler"
            };
            assert_eq!(kind, expected, "{at}: {target} is scaled by a {expected}");
        }
        for name in ["public-web", "dispatcher"]
            .into_iter()
            .chain(platform::listeners().map(|l| l.name))
        {
            assert!(scaled.contains_key(name), "{at}: {name} has an autoscaler");
        }
        for (name, deployment) in &deployments {
            // An autoscaled Deployment leaves its count to the autoscaler:
            // a count in the manifest would reset it at every apply.
            assert_eq!(
                deployment["spec"]["replicas"].is_null(),
                scaled.contains_key(name),
                "{at}: {name}'s replicas are set where no autoscaler sets them"
            );
        }
        for hpa in manifests.of_kind("HorizontalPodAutoscaler").values() {
            let cpu = hpa["spec"]["metrics"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|m| m["resource"]["name"].as_str() == Some("cpu"));
            assert!(cpu, "{at}: {} scales on CPU", kubernetes::name(hpa));
        }
        for listener in platform::listeners() {
            let name = listener.name;
            let container = kubernetes::container(deployments[name]);
            let queue = kubernetes::env_value(container, "QUEUE")
                .unwrap_or(listener.queue.expect("a listener has a queue"));
            let object = manifests.get("ScaledObject", name);
            let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
            assert!(!triggers.is_empty(), "{at}: {name} scales on something");
            for trigger in triggers {
                assert_eq!(trigger["type"].as_str(), Some("rabbitmq"), "{at}: {name}");
                assert_eq!(
                    trigger["metadata"]["queueName"].as_str(),
                    Some(queue),
                    "{at}: {name} scales on the queue it consumes"
                );
            }
        }
    }
}

#[test]
fn grace_periods_outlast_the_drain() {
    for manifests in renderings() {
        let at = &manifests.name;
        let services = manifests.of_kind("Service");
        for service in RUST_SERVICES {
            let name = service.name;
            let deployment = manifests.get("Deployment", name);
            let container = kubernetes::container(deployment);
            let grace_ms = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or_else(|| panic!("{at}: {name} sets terminationGracePeriodSeconds"))
                * 1000;
            let pre_stop_ms = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_u64()
                .unwrap_or(0)
                * 1000;
            // Behind a Service, a pod waits until it is out of the
            // endpoints before it stops accepting.
            let behind_a_service = services
                .values()
                .any(|s| kubernetes::selects(&s["spec"]["selector"], &pod_labels(deployment)));
            assert_eq!(
                pre_stop_ms > 0,
                behind_a_service,
                "{at}: {name} waits in preStop exactly when a Service sends it traffic"
            );
            // What a stopping service still finishes, at most.
            let drain_ms = match name {
                // Parked requests, within the whole-request limit
                // (REQUEST_TIMEOUT_MS + 5 s, public-web/src/startup.rs).
                "public-web" => setting(&manifests, container, "REQUEST_TIMEOUT_MS") + 5_000,
                // Requests in flight, within the whole-request limit
                // (PUBLISH_TIMEOUT_MS + 5 s, dispatcher/src/startup.rs: a
                // publish waits for a session and its confirm), and at the
                // same time the callbacks of the responses in hand with
                // all their attempts.
                "dispatcher" => (setting(&manifests, container, "PUBLISH_TIMEOUT_MS") + 5_000).max(
                    setting(&manifests, container, "CALLBACK_TIMEOUT_MS")
                        * (setting(&manifests, container, "CALLBACK_RETRIES") + 1),
                ),
                // The attempts in flight.
                "webhook-sender" => setting(&manifests, container, "WEBHOOK_TIMEOUT_MS"),
                // The replies in flight, each waiting for its confirm.
                _ if service.is_listener() => setting(&manifests, container, "PUBLISH_TIMEOUT_MS"),
                other => panic!("no drain bound known for {other}"),
            };
            assert!(
                grace_ms > pre_stop_ms + drain_ms,
                "{at}: {name}'s grace period ({grace_ms} ms) must outlast preStop ({pre_stop_ms} \
                 ms) plus its drain ({drain_ms} ms)"
            );
        }
    }
}

#[test]
fn every_container_has_requests_and_limits_and_public_web_holds_its_parked_requests() {
    // public-web's memory limit must hold MAX_PENDING parked requests at the
    // cost the last full bench run measured (HTTP/1.1, a connection each:
    // the costliest protocol) above its idle RSS with tracing on.
    let results = files::read_text("BENCHMARKS.md");
    let results = results
        .split("<!-- bench:results:begin -->")
        .nth(1)
        .expect("BENCHMARKS.md has its latest results");
    let per_request: u64 =
        Regex::new(r"Parked requests over HTTP/1\.1[^\n]*\((\d+) bytes per parked request\)")
            .expect("a valid pattern")
            .captures(results)
            .expect("BENCHMARKS.md: bytes per parked request over HTTP/1.1")[1]
            .parse()
            .expect("a number");
    let idle_mib: f64 = Regex::new(r"\| public-web \| tracing on \| ([0-9.]+) \|")
        .expect("a valid pattern")
        .captures(results)
        .expect("BENCHMARKS.md: public-web's idle RSS, tracing on")[1]
        .parse()
        .expect("a number");
    for manifests in renderings() {
        let at = &manifests.name;
        for (name, deployment) in manifests.of_kind("Deployment") {
            let resources = &kubernetes::container(deployment)["resources"];
            for resource in ["cpu", "memory"] {
                let get = |side: &str| {
                    kubernetes::quantity(&resources[side][resource])
                        .unwrap_or_else(|| panic!("{at}: {name} has no {resource} {side}"))
                };
                let (request, limit) = (get("requests"), get("limits"));
                let (request, limit) = if resource == "cpu" {
                    (
                        kubernetes::millicores(&request),
                        kubernetes::millicores(&limit),
                    )
                } else {
                    (kubernetes::bytes(&request), kubernetes::bytes(&limit))
                };
                assert!(
                    request <= limit,
                    "{at}: {name}'s {resource} request over its limit"
                );
            }
        }
        // Parked requests are what public-web's memory grows with.
        let web = kubernetes::container(manifests.get("Deployment", "public-web"));
        let pending = setting(&manifests, web, "MAX_PENDING");
        let needed = (idle_mib * f64::from(1 << 20)) as u64 + pending * per_request;
        let limit = kubernetes::bytes(
            &kubernetes::quantity(&web["resources"]["limits"]["memory"]).expect("a limit"),
        );
        assert!(
            limit >= needed,
            "{at}: public-web's memory limit ({limit} B) must hold {pending} parked requests of \
             {per_request} B above {idle_mib} MiB idle: {needed} B"
        );
    }
}

#[test]
fn secrets_are_referenced_and_documented_never_written() {
    let readme = files::read_text(DEPLOY_README);
    for manifests in renderings() {
        let at = &manifests.name;
        assert!(
            manifests.of_kind("Secret").is_empty(),
            "{at}: no Secret is written here: they exist in the cluster before the manifests are applied"
        );
        let broker_secret = format!("{}-default-user", kubernetes::name(broker(&manifests)));
        let mut callback_secrets = BTreeSet::new();
        for (service, deployment) in manifests.of_kind("Deployment") {
            let container = kubernetes::container(deployment);
            for (variable, entry) in kubernetes::env(container) {
                let reference = &entry["valueFrom"]["secretKeyRef"];
                if reference.is_null() {
                    continue;
                }
                let secret = reference["name"].as_str().expect("a Secret's name");
                let key = reference["key"].as_str().expect("a key");
                let documented = readme.lines().any(|line| {
                    line.starts_with(&format!("| `{secret}` |"))
                        && line.contains(&format!("`{key}`"))
                });
                assert!(
                    documented,
                    "{at}: {service}'s {variable} comes from Secret {secret} key {key}, which \
                     {DEPLOY_README}'s table of Secrets must list"
                );
                if variable == "CALLBACK_SECRET" {
                    callback_secrets.insert((secret, key));
                }
            }
            // The broker's account is the one the operator makes.
            let amqp = kubernetes::env_value(container, "AMQP_URL").expect("AMQP_URL");
            for part in kubernetes::references(amqp) {
                let (_, entry) = kubernetes::env(container)
                    .into_iter()
                    .find(|(n, _)| *n == part)
                    .expect("defined");
                assert_eq!(
                    entry["valueFrom"]["secretKeyRef"]["name"].as_str(),
                    Some(broker_secret.as_str()),
                    "{at}: {service}'s AMQP_URL takes {part} from {broker_secret}"
                );
            }
            assert!(
                kubernetes::env(container)
                    .iter()
                    .all(|(n, _)| !matches!(*n, "CALLBACK_SECRET_FILE" | "INSECURE_DEV_MODE")),
                "{at}: {service} runs with its secret in the environment, never in dev mode"
            );
        }
        assert_eq!(
            callback_secrets.len(),
            1,
            "{at}: public-web and the dispatcher share one CALLBACK_SECRET: {callback_secrets:?}"
        );
    }
}

#[test]
fn the_broker_is_a_three_node_quorum_cluster_configured_like_compose() {
    let compose = Compose::load(&[COMPOSE_FILE]);
    let compose_image = compose.service("rabbitmq")["image"]
        .as_str()
        .expect("an image");
    let compose_config = files::read_text("grafana/rabbitmq/rabbitmq.conf");
    for manifests in renderings() {
        let at = &manifests.name;
        let spec = &broker(&manifests)["spec"];
        assert_eq!(
            spec["replicas"].as_u64(),
            Some(3),
            "{at}: three broker nodes"
        );
        assert_eq!(
            spec["image"].as_str(),
            Some(compose_image),
            "{at}: compose's broker image"
        );
        let config = spec["rabbitmq"]["additionalConfig"].as_str().unwrap_or("");
        let lines: BTreeSet<&str> = config.lines().map(str::trim).collect();
        assert!(
            lines.contains("default_queue_type = quorum"),
            "{at}: {config}"
        );
        for setting in compose_config
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            assert!(
                lines.contains(setting),
                "{at}: the broker lacks compose's {setting}"
            );
        }
        let urls: BTreeSet<&str> = manifests
            .of_kind("Deployment")
            .values()
            .map(|d| kubernetes::env_value(kubernetes::container(d), "AMQP_URL").expect("AMQP_URL"))
            .collect();
        assert_eq!(
            urls.len(),
            1,
            "{at}: every service on the same broker: {urls:?}"
        );
    }
}

/// The text of `source` from the line that starts `start` to the first
/// line after it that starts `end` (exclusive).
fn excerpt<'a>(source: &'a str, path: &str, start: &str, end: &str) -> &'a str {
    let from = source
        .find(start)
        .unwrap_or_else(|| panic!("{path} has no {start:?}"));
    let rest = &source[from..];
    let to = rest
        .find(end)
        .unwrap_or_else(|| panic!("{path}: nothing ends {start:?} with {end:?}"));
    &rest[..to]
}

/// The first capture of `pattern` in `text`; panics naming `what`.
fn capture<'a>(pattern: &str, text: &'a str, what: &str) -> &'a str {
    Regex::new(pattern)
        .expect("a valid pattern")
        .captures(text)
        .and_then(|c| c.get(1))
        .unwrap_or_else(|| panic!("no {what} (/{pattern}/)"))
        .as_str()
}

#[test]
fn the_broker_and_the_timeouts_are_set_as_the_cluster_test_ran_them() {
    // The nodes: every line the test's nodes add to rabbitmq.conf, and
    // their Erlang net_ticktime (advanced.config).
    let setup = files::read_text(CLUSTER_SETUP);
    let conf = excerpt(&setup, CLUSTER_SETUP, "pub const CLUSTER_CONFIG", "\";");
    let conf_lines: Vec<&str> = conf
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        !conf_lines.is_empty(),
        "{CLUSTER_SETUP}: CLUSTER_CONFIG lists settings"
    );
    let ticktime_pattern = r"\{\s*net_ticktime\s*,\s*(\d+)\s*\}";
    let ticktime = capture(
        ticktime_pattern,
        excerpt(&setup, CLUSTER_SETUP, "const ADVANCED_CONFIG", ";\n"),
        "net_ticktime in the test's ADVANCED_CONFIG",
    );
    // The services: the heartbeat in the nodes' URLs, and every setting
    // the test gives every service as a literal.
    let heartbeat = capture(
        r"\?heartbeat=(\d+)",
        excerpt(&setup, CLUSTER_SETUP, "pub fn amqp_urls", "\n    }\n"),
        "heartbeat in the test's AMQP URLs",
    );
    let test = files::read_text(CLUSTER_TEST);
    let env = excerpt(&test, CLUSTER_TEST, "    fn env(", "\n    }\n");
    let tested: Vec<(&str, &str)> = Regex::new(r#"\(\s*"([A-Z][A-Z0-9_]*)"\s*,\s*"([^"]*)"\s*\)"#)
        .expect("a valid pattern")
        .captures_iter(env)
        .map(|c| {
            let (_, [name, value]) = c.extract();
            (name, value)
        })
        .collect();
    for variable in [
        "QUEUE_TYPE",
        "PUBLISH_TIMEOUT_MS",
        "DISPATCHER_TIMEOUT_MS",
        "REQUEST_TIMEOUT_MS",
    ] {
        assert!(
            tested.iter().any(|(name, _)| *name == variable),
            "{CLUSTER_TEST}'s env() no longer sets {variable}: {tested:?}"
        );
    }

    for manifests in renderings() {
        let at = &manifests.name;
        let spec = &broker(&manifests)["spec"]["rabbitmq"];
        let config: BTreeSet<&str> = spec["additionalConfig"]
            .as_str()
            .unwrap_or("")
            .lines()
            .map(str::trim)
            .collect();
        for line in &conf_lines {
            assert!(
                config.contains(line),
                "{at}: the broker lacks the tested {line}"
            );
        }
        let advanced = spec["advancedConfig"].as_str().unwrap_or("");
        assert_eq!(
            capture(ticktime_pattern, advanced, "net_ticktime in advancedConfig"),
            ticktime,
            "{at}: the broker's net_ticktime as tested"
        );
        for (service, deployment) in manifests.of_kind("Deployment") {
            let container = kubernetes::container(deployment);
            let url = given(&manifests, container, "AMQP_URL").expect("AMQP_URL");
            let query = url.split_once('?').map_or("", |(_, q)| q);
            let wanted = format!("heartbeat={heartbeat}");
            assert!(
                query.split('&').any(|pair| pair == wanted),
                "{at}: {service}'s AMQP_URL asks for the tested heartbeat={heartbeat}: {url}"
            );
            let reads = config_vars::read_by(&service);
            for (variable, value) in &tested {
                if !reads.contains(*variable) {
                    continue;
                }
                let set = given(&manifests, container, variable);
                assert_eq!(
                    set,
                    Some(*value),
                    "{at}: {service} reads {variable}, which {CLUSTER_TEST} ran at {value}"
                );
            }
        }
        // A publish ends before the forward, the forward before the
        // client's deadline: each answer reaches the one waiting for it.
        let web = kubernetes::container(manifests.get("Deployment", "public-web"));
        let dispatcher = kubernetes::container(manifests.get("Deployment", "dispatcher"));
        let request = setting(&manifests, web, "REQUEST_TIMEOUT_MS");
        let forward = setting(&manifests, web, "DISPATCHER_TIMEOUT_MS");
        let publish = setting(&manifests, dispatcher, "PUBLISH_TIMEOUT_MS");
        assert!(
            publish <= forward && forward < request,
            "{at}: PUBLISH_TIMEOUT_MS {publish} <= DISPATCHER_TIMEOUT_MS {forward} < \
             REQUEST_TIMEOUT_MS {request}"
        );
    }
}

#[test]
fn the_dispatcher_routes_like_compose_to_listeners_that_scale() {
    let compose = Compose::load(&[COMPOSE_FILE]);
    let table =
        compose::interpolate_unset(&compose::environment(compose.service("dispatcher"))["ROUTES"]);
    let expected = platform::parse_routes(&table).expect("compose's ROUTES parse");
    for manifests in renderings() {
        let at = &manifests.name;
        let dispatcher = kubernetes::container(manifests.get("Deployment", "dispatcher"));
        let routes = platform::parse_routes(
            kubernetes::env_value(dispatcher, "ROUTES").expect("the dispatcher's ROUTES"),
        )
        .unwrap_or_else(|e| panic!("{at}: ROUTES: {e}"));
        assert_eq!(routes, expected, "{at}: ROUTES as docker-compose.yml's");
        let scaled: BTreeSet<&str> = manifests
            .of_kind("ScaledObject")
            .into_values()
            .flat_map(|o| o["spec"]["triggers"].as_sequence().into_iter().flatten())
            .filter_map(|t| t["metadata"]["queueName"].as_str())
            .collect();
        for queue in routes.values() {
            assert!(
                scaled.contains(queue.as_str()),
                "{at}: queue {queue} has no scaled listener"
            );
        }
    }
}

#[test]
fn production_keeps_replicas_spread_over_nodes() {
    let manifests = production();
    let scaled = autoscalers(&manifests);
    for (name, deployment) in manifests.of_kind("Deployment") {
        let floor = match name.as_str() {
            "ping-listener" => 3,
            _ => 2,
        };
        let least = match scaled.get(&name) {
            Some(scalers) => scalers[0].1,
            None => deployment["spec"]["replicas"].as_u64().unwrap_or(1),
        };
        assert!(
            least >= floor,
            "production: {name} runs {least} replicas at least, not {floor}"
        );

        let pod = &deployment["spec"]["template"]["spec"];
        let spread = pod["topologySpreadConstraints"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|c| c["topologyKey"].as_str() == Some("kubernetes.io/hostname"))
            .unwrap_or_else(|| panic!("production: {name} is not spread over nodes"));
        assert_eq!(
            spread["whenUnsatisfiable"].as_str(),
            Some("DoNotSchedule"),
            "{name}"
        );
        assert_eq!(spread["maxSkew"].as_u64(), Some(1), "{name}");
        // Its own pods: the selector matches them, and the name label's
        // value narrows it to this Deployment.
        assert!(
            kubernetes::selects(
                &spread["labelSelector"]["matchLabels"],
                &pod_labels(deployment)
            ),
            "production: {name}'s spread counts its own pods"
        );
        let keys = spread["matchLabelKeys"].as_sequence();
        assert!(
            keys.is_some_and(|k| k.iter().any(|k| k.as_str() == Some(NAME_LABEL))),
            "production: {name}'s spread is per service (matchLabelKeys: {NAME_LABEL})"
        );

        let resources = &kubernetes::container(deployment)["resources"];
        assert_eq!(
            resources["requests"]["memory"], resources["limits"]["memory"],
            "production: {name} requests all the memory it may use"
        );
    }
    let cluster = broker(&manifests);
    let anti = &cluster["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let apart = anti.as_sequence().into_iter().flatten().any(|term| {
        term["topologyKey"].as_str() == Some("kubernetes.io/hostname")
            && kubernetes::selects(
                &term["labelSelector"]["matchLabels"],
                &broker_pod_labels(kubernetes::name(cluster)),
            )
    });
    assert!(apart, "production: the broker nodes run on different nodes");

    let namespaces = manifests.of_kind("Namespace");
    assert_eq!(namespaces.len(), 1, "production: its own namespace");
    let namespace = namespaces.keys().next().expect("one");
    for object in &manifests.objects {
        if object["kind"].as_str() != Some("Namespace") {
            assert_eq!(
                object["metadata"]["namespace"].as_str(),
                Some(namespace.as_str()),
                "production: {} in {namespace}",
                kubernetes::name(object)
            );
        }
    }
}

#[test]
fn the_vendored_schemas_carry_their_release_and_are_documented() {
    let readme = files::read_text(&format!("{SCHEMAS_DIR}/README.md"));
    let named = Regex::new(r"^[a-z]+_v[0-9a-z]+-[0-9]+\.[0-9]+\.[0-9]+\.json$").expect("a pattern");
    let mut schemas = BTreeSet::new();
    for group in std::fs::read_dir(files::repo_root().join(SCHEMAS_DIR)).expect("schemas/") {
        let group = group.expect("an entry").path();
        if !group.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&group).expect("a group folder") {
            let file = file.expect("an entry").path();
            let file_name = file.file_name().and_then(|n| n.to_str()).expect("a name");
            let group_name = group.file_name().and_then(|n| n.to_str()).expect("a name");
            let relative = format!("{group_name}/{file_name}");
            assert!(
                named.is_match(file_name),
                "{relative}: schemas are named <kind>_<version>-<release>.json"
            );
            assert!(
                readme.contains(&format!("`{relative}`")),
                "{SCHEMAS_DIR}/README.md says where {relative} comes from"
            );
            schemas.insert(relative);
        }
    }
    for manifests in renderings() {
        for object in &manifests.objects {
            let api_version = object["apiVersion"].as_str().expect("an apiVersion");
            let Some((group, version)) = api_version.split_once('/') else {
                continue;
            };
            if !group.contains('.') || group.ends_with(".k8s.io") {
                continue;
            }
            let kind = object["kind"].as_str().expect("a kind").to_lowercase();
            let prefix = format!("{group}/{kind}_{version}-");
            assert!(
                schemas.iter().any(|s| s.starts_with(&prefix)),
                "{}: {api_version} {kind} has no vendored schema {prefix}<release>.json",
                manifests.name
            );
        }
    }
    let guide = files::read_text("README.md");
    for link in ["docs/scaling.md", "deploy/kubernetes"] {
        assert!(guide.contains(link), "README.md links {link}");
    }
}
