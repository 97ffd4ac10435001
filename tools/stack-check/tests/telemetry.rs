//! The telemetry path's configs under grafana/: the collector routes all
//! three signals to exporters that exist and point at the right stores,
//! Tempo and Loki keep data on the local filesystem and listen where the
//! others send, and Prometheus's config passes `promtool` and scrapes every
//! service where compose runs it.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;

use serde_norway::Value;
use stack_check::compose::{self, COMPOSE_FILE, Compose, Mount};
use stack_check::files;
use stack_check::platform::{self, RUST_SERVICES};

const COLLECTOR: &str = "grafana/otel-collector.yaml";
const TEMPO: &str = "grafana/tempo.yaml";
const LOKI: &str = "grafana/loki.yaml";
const PROMETHEUS: &str = "grafana/prometheus.yml";
const RULES: &str = "grafana/prometheus-rules.yml";

/// Collector exporter types that send to a store, current and deprecated
/// names (otlp_grpc/otlp_http since collector 0.144).
const STORE_EXPORTERS: &[&str] = &[
    "otlp_grpc",
    "otlp",
    "otlp_http",
    "otlphttp",
    "prometheusremotewrite",
];

fn stack() -> Compose {
    Compose::load(&[COMPOSE_FILE])
}

/// `host:port` of a URL or bare endpoint.
fn host_port(endpoint: &str) -> (String, u16) {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{endpoint} has no port"));
    (host.to_owned(), port.parse().expect("a port number"))
}

/// The component type of a collector id such as `otlp_http/loki`.
fn component_type(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// The container path a repository file is mounted at by `service`.
fn mount_target(compose: &Compose, service: &str, source: &str) -> String {
    compose::mounts(compose.service(service))
        .into_iter()
        .find_map(|m| match m {
            Mount::Bind { source: s, target } if s.trim_start_matches("./") == source => {
                Some(target)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{service} does not mount {source}"))
}

/// The target of `service`'s named-volume mount.
fn volume_target(compose: &Compose, service: &str) -> String {
    compose::mounts(compose.service(service))
        .into_iter()
        .find_map(|m| match m {
            Mount::Volume { name, target } if name != "probe" => Some(target),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{service} has no data volume"))
}

fn command_args(compose: &Compose, service: &str) -> Vec<String> {
    string_list(&compose.service(service)["command"])
}

#[test]
fn collector_routes_every_signal_to_its_store() {
    let config = files::load_yaml(COLLECTOR);
    let compose = stack();
    assert_eq!(
        mount_target(&compose, "otel-collector", COLLECTOR),
        "/etc/otelcol-contrib/config.yaml"
    );

    // Every component a pipeline names is defined, and every defined one
    // is used.
    let service = &config["service"];
    for section in ["receivers", "processors", "exporters"] {
        let defined: BTreeSet<String> = config[section]
            .as_mapping()
            .unwrap_or_else(|| panic!("collector config has no {section}"))
            .keys()
            .map(|k| k.as_str().expect("component ids are strings").to_owned())
            .collect();
        let mut used = BTreeSet::new();
        for (pipeline, definition) in service["pipelines"].as_mapping().expect("pipelines") {
            let pipeline = pipeline.as_str().expect("pipeline ids are strings");
            for id in string_list(&definition[section]) {
                assert!(
                    defined.contains(&id),
                    "pipeline {pipeline} uses undefined {section} {id}"
                );
                used.insert(id);
            }
        }
        assert_eq!(used, defined, "defined but unused {section}");
    }
    for id in string_list(&service["extensions"]) {
        assert!(
            !config["extensions"][id.as_str()].is_null(),
            "extension {id} undefined"
        );
    }

    // Each signal the services export goes to the store that keeps it, at
    // an address compose serves. They export no OTLP metrics (Prometheus
    // scrapes /metrics), so there is no metrics pipeline to feed nothing.
    assert!(
        service["pipelines"]["metrics"].is_null(),
        "a metrics pipeline with no sender"
    );
    let services = compose.services();
    let routes = [
        ("traces", "tempo", 4317, ""),
        ("logs", "loki", 3100, "/otlp"),
    ];
    for (signal, store, port, path) in routes {
        let pipeline = &service["pipelines"][signal];
        assert_eq!(
            string_list(&pipeline["receivers"]),
            ["otlp"],
            "{signal} arrive over OTLP"
        );
        assert_eq!(
            string_list(&pipeline["processors"])
                .first()
                .map(String::as_str),
            Some("memory_limiter"),
            "{signal}: memory_limiter comes first"
        );
        let exporters = string_list(&pipeline["exporters"]);
        assert_eq!(exporters.len(), 1, "{signal} have one exporter");
        let exporter = &config["exporters"][exporters[0].as_str()];
        assert!(
            STORE_EXPORTERS.contains(&component_type(&exporters[0])),
            "{signal}: unknown exporter type {}",
            exporters[0]
        );
        let endpoint = exporter["endpoint"].as_str().expect("exporter endpoint");
        let (host, endpoint_port) = host_port(endpoint);
        assert!(
            services.contains_key(&host),
            "{signal}: {host} is no compose service"
        );
        assert_eq!(
            (host.as_str(), endpoint_port),
            (store, port),
            "{signal} go to {store}"
        );
        assert!(
            endpoint.ends_with(path),
            "{signal}: {endpoint} must end with {path:?}"
        );
    }
    // Tempo's gRPC receiver is plain text inside the compose network.
    assert_eq!(
        config["exporters"]["otlp_grpc/tempo"]["tls"]["insecure"].as_bool(),
        Some(true)
    );
    // Nor does Prometheus open an OTLP receiver nobody sends to.
    let prometheus = command_args(&compose, "prometheus");
    assert!(!prometheus.iter().any(|a| a == "--web.enable-otlp-receiver"));

    // Receivers listen beyond localhost on the ports compose publishes and
    // the services send to.
    let protocols = &config["receivers"]["otlp"]["protocols"];
    assert_eq!(protocols["grpc"]["endpoint"].as_str(), Some("0.0.0.0:4317"));
    assert_eq!(protocols["http"]["endpoint"].as_str(), Some("0.0.0.0:4318"));
    // The services export over HTTP/protobuf, their default.
    for name in RUST_SERVICES.map(|s| s.name) {
        let env = compose::environment(compose.service(name));
        assert_eq!(
            host_port(&env["OTEL_EXPORTER_OTLP_ENDPOINT"]),
            ("otel-collector".into(), 4318)
        );
    }

    // The compose healthcheck asks the health_check extension.
    let (_, health_port) = host_port(
        config["extensions"]["health_check"]["endpoint"]
            .as_str()
            .expect("health_check endpoint"),
    );
    let probe = compose::healthcheck_test(compose.service("otel-collector")).expect("healthcheck");
    assert!(
        probe
            .iter()
            .any(|w| w.contains(&format!("127.0.0.1:{health_port}/"))),
        "the collector's healthcheck must query health_check on {health_port}: {probe:?}"
    );
}

/// Every key anywhere in `value`, for spotting object-store settings.
fn all_keys(value: &Value, keys: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                if let Some(key) = key.as_str() {
                    keys.insert(key.to_owned());
                }
                all_keys(value, keys);
            }
        }
        Value::Sequence(list) => list.iter().for_each(|v| all_keys(v, keys)),
        _ => {}
    }
}

fn assert_no_object_store(file: &str, config: &Value) {
    let mut keys = BTreeSet::new();
    all_keys(config, &mut keys);
    for store in ["s3", "gcs", "azure", "swift", "minio"] {
        assert!(
            !keys.contains(store),
            "{file} configures object store {store}"
        );
    }
}

#[test]
fn tempo_stores_locally_and_feeds_prometheus() {
    let config = files::load_yaml(TEMPO);
    let compose = stack();
    assert_eq!(
        mount_target(&compose, "tempo", TEMPO),
        "/etc/tempo/tempo.yaml"
    );
    assert!(
        command_args(&compose, "tempo").contains(&"-config.file=/etc/tempo/tempo.yaml".to_owned())
    );
    assert_no_object_store(TEMPO, &config);

    let trace = &config["storage"]["trace"];
    assert_eq!(trace["backend"].as_str(), Some("local"));
    let data = volume_target(&compose, "tempo");
    let generator = &config["metrics_generator"];
    for path in [
        &trace["wal"]["path"],
        &trace["local"]["path"],
        &generator["storage"]["path"],
        &generator["traces_storage"]["path"],
    ] {
        let path = path.as_str().expect("a storage path");
        assert!(
            path.starts_with(&data),
            "{path} is outside the tempo volume {data}"
        );
    }

    let protocols = &config["distributor"]["receivers"]["otlp"]["protocols"];
    assert_eq!(protocols["grpc"]["endpoint"].as_str(), Some("0.0.0.0:4317"));
    assert_eq!(protocols["http"]["endpoint"].as_str(), Some("0.0.0.0:4318"));

    let port = config["server"]["http_listen_port"]
        .as_u64()
        .expect("Tempo's HTTP port");
    let probe = compose::healthcheck_test(compose.service("tempo")).expect("healthcheck");
    assert!(
        probe
            .iter()
            .any(|w| w.contains(&format!("127.0.0.1:{port}/ready")))
    );

    // Service graphs and span metrics go to Prometheus, with exemplars.
    let processors =
        string_list(&config["overrides"]["defaults"]["metrics_generator"]["processors"]);
    for processor in ["service-graphs", "span-metrics"] {
        assert!(
            processors.iter().any(|p| p == processor),
            "metrics-generator lacks {processor}"
        );
    }
    let remote_write = generator["storage"]["remote_write"]
        .as_sequence()
        .expect("remote_write list");
    assert!(!remote_write.is_empty());
    for target in remote_write {
        let url = target["url"].as_str().expect("remote_write url");
        assert_eq!(host_port(url), ("prometheus".into(), 9090));
        assert!(url.ends_with("/api/v1/write"), "{url}");
        assert_eq!(target["send_exemplars"].as_bool(), Some(true));
    }
    let prometheus = command_args(&compose, "prometheus");
    for flag in [
        "--web.enable-remote-write-receiver",
        "--enable-feature=exemplar-storage",
    ] {
        assert!(
            prometheus.iter().any(|a| a == flag),
            "Prometheus needs {flag}"
        );
    }
}

#[test]
fn loki_stores_locally_and_takes_otlp_with_structured_metadata() {
    let config = files::load_yaml(LOKI);
    let compose = stack();
    let target = mount_target(&compose, "loki", LOKI);
    assert!(command_args(&compose, "loki").contains(&format!("-config.file={target}")));
    assert_no_object_store(LOKI, &config);

    let data = volume_target(&compose, "loki");
    let common = &config["common"];
    for path in [
        &common["path_prefix"],
        &common["storage"]["filesystem"]["chunks_directory"],
        &common["storage"]["filesystem"]["rules_directory"],
        &config["compactor"]["working_directory"],
    ] {
        let path = path.as_str().expect("a storage path");
        assert!(
            path.starts_with(&data),
            "{path} is outside the loki volume {data}"
        );
    }
    let schemas = config["schema_config"]["configs"]
        .as_sequence()
        .expect("schemas");
    let current = schemas.last().expect("a schema");
    assert_eq!(
        current["schema"].as_str(),
        Some("v13"),
        "OTLP ingestion needs v13"
    );
    assert_eq!(current["store"].as_str(), Some("tsdb"));
    assert_eq!(current["object_store"].as_str(), Some("filesystem"));
    assert_eq!(
        config["limits_config"]["allow_structured_metadata"].as_bool(),
        Some(true),
        "trace_id and span_id arrive as structured metadata"
    );
    let port = config["server"]["http_listen_port"]
        .as_u64()
        .expect("Loki's HTTP port");
    let probe = compose::healthcheck_test(compose.service("loki")).expect("healthcheck");
    assert!(
        probe
            .iter()
            .any(|w| w.contains(&format!("127.0.0.1:{port}/ready")))
    );
}

/// Runs promtool in grafana/ (where the config's relative rule_files
/// resolve). Missing promtool fails under CI and is skipped, loudly,
/// elsewhere.
fn promtool(args: &[&str]) {
    let dir = files::repo_root().join("grafana");
    match Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let in_ci =
                std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
            assert!(
                !in_ci,
                "promtool is not installed and CI is set: install Debian's prometheus package"
            );
            // Straight to stderr: the test harness captures eprintln! of
            // passing tests, and this note must be seen.
            let note = format!(
                "\n***** NOTE: promtool not found: SKIPPING `promtool {}`.\n\
                 ***** Install it with `apt-get install --no-install-recommends prometheus` \
                 (bin/test does); CI fails without it.\n\n",
                args.join(" ")
            );
            std::io::stderr()
                .write_all(note.as_bytes())
                .expect("stderr is writable");
        }
        Err(error) => panic!("cannot run promtool: {error}"),
    }
}

#[test]
fn promtool_accepts_the_prometheus_config_and_rules() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "prometheus-rules.yml"]);
}

#[test]
fn prometheus_scrapes_every_service_where_compose_runs_it() {
    let config = files::load_yaml(PROMETHEUS);
    let compose = stack();
    let config_target = mount_target(&compose, "prometheus", PROMETHEUS);
    assert!(
        command_args(&compose, "prometheus").contains(&format!("--config.file={config_target}"))
    );
    // Rule files are named relative to the config: they must sit beside it
    // in the container as they do in the repository.
    let config_dir = config_target.rsplit_once('/').expect("absolute path").0;
    for rule_file in string_list(&config["rule_files"]) {
        let source = format!("grafana/{rule_file}");
        assert_eq!(source, RULES, "the one rule file is {RULES}");
        assert_eq!(
            mount_target(&compose, "prometheus", &source),
            format!("{config_dir}/{rule_file}")
        );
    }

    let jobs: Vec<&Value> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .collect();
    let job = |name: &str| -> &Value {
        jobs.iter()
            .find(|j| j["job_name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no scrape job {name}"))
    };
    let names: Vec<&str> = jobs.iter().filter_map(|j| j["job_name"].as_str()).collect();
    let unique: BTreeSet<&&str> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "job names are unique: {names:?}");

    // Job names are the service names (the metrics carry no service label),
    // and each target is where compose serves the service's PORT.
    for service in RUST_SERVICES {
        let name = service.name;
        let port = &compose::environment(compose.service(name))["PORT"];
        if !service.is_listener() {
            let targets = string_list(&job(name)["static_configs"][0]["targets"]);
            assert_eq!(targets, [format!("{name}:{port}")]);
            continue;
        }
        // Scaled replicas are found through DNS, one target per container.
        let discovery = job(name)["dns_sd_configs"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} is scraped through dns_sd_configs"));
        assert_eq!(discovery.len(), 1, "{name}: one DNS discovery");
        let listener = &discovery[0];
        assert_eq!(string_list(&listener["names"]), [name]);
        assert_eq!(listener["type"].as_str(), Some("A"), "{name}");
        assert_eq!(
            listener["port"].as_u64().map(|p| p.to_string()).as_ref(),
            Some(port),
            "{name}'s scrape port is its PORT"
        );
        assert!(
            job(name)["static_configs"].is_null(),
            "{name}: a static target would see one replica only"
        );
    }
    assert_eq!(
        platform::listeners().count(),
        3,
        "ping-, prime- and scenario-listener are scraped"
    );

    // RabbitMQ's plugin: node totals and the per-queue endpoint the queue
    // depth panels read.
    assert_eq!(
        string_list(&job("rabbitmq")["static_configs"][0]["targets"]),
        ["rabbitmq:15692"]
    );
    let queues = job("rabbitmq-queues");
    assert_eq!(queues["metrics_path"].as_str(), Some("/metrics/detailed"));
    assert_eq!(
        string_list(&queues["static_configs"][0]["targets"]),
        ["rabbitmq:15692"]
    );
    let families = string_list(&queues["params"]["family"]);
    for family in ["queue_coarse_metrics", "queue_consumer_count"] {
        assert!(
            families.iter().any(|f| f == family),
            "per-queue family {family} is scraped"
        );
    }
    let plugins = files::read_text("grafana/rabbitmq/enabled_plugins");
    assert!(
        plugins.contains("rabbitmq_prometheus"),
        "RabbitMQ serves :15692"
    );
    assert_eq!(
        mount_target(&compose, "rabbitmq", "grafana/rabbitmq/enabled_plugins"),
        "/etc/rabbitmq/enabled_plugins"
    );

    // Every scrape host is a compose service (or Prometheus itself).
    let services = compose.services();
    for job in &jobs {
        for static_config in job["static_configs"].as_sequence().into_iter().flatten() {
            for target in string_list(&static_config["targets"]) {
                let (host, _) = host_port(&target);
                assert!(
                    host == "localhost" || services.contains_key(&host),
                    "scrape target {target} is no compose service"
                );
            }
        }
    }
}
