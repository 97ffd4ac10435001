//! Grafana's provisioning and dashboards: the data sources' fixed uids and
//! the links between them (trace -> logs, metrics and service map; log ->
//! trace; exemplar -> trace), the dashboard's panels and data sources, and
//! every metric a dashboard or alert query reads checked against the
//! catalogue in stack_check::metrics.

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::Value;
use stack_check::compose::{self, COMPOSE_FILE, Compose, Mount};
use stack_check::logql::DATASOURCES;
use stack_check::metrics::{self, EXTERNAL_SOURCES, SERVICE_METRICS};
use stack_check::platform::RUST_SERVICES;
use stack_check::{files, promql};

const DASHBOARD_PROVIDERS: &str = "grafana/provisioning/dashboards/dashboards.yaml";
const OVERVIEW: &str = "grafana/dashboards/dispatcher-overview.json";

fn datasources() -> Vec<Value> {
    files::load_yaml(DATASOURCES)["datasources"]
        .as_sequence()
        .expect("datasources list")
        .clone()
}

/// Provisioned data sources by uid.
fn datasources_by_uid() -> BTreeMap<String, Value> {
    let mut by_uid = BTreeMap::new();
    for datasource in datasources() {
        let uid = datasource["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("data source {:?} has no fixed uid", datasource["name"]))
            .to_owned();
        assert!(
            by_uid.insert(uid.clone(), datasource).is_none(),
            "uid {uid} twice"
        );
    }
    by_uid
}

/// Every `datasourceUid` anywhere under `value`.
fn referenced_uids(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                if key.as_str() == Some("datasourceUid") {
                    found.push(value.as_str().expect("uids are strings").to_owned());
                }
                referenced_uids(value, found);
            }
        }
        Value::Sequence(list) => list.iter().for_each(|v| referenced_uids(v, found)),
        _ => {}
    }
}

#[test]
fn datasources_have_fixed_uids_and_reachable_urls() {
    let by_uid = datasources_by_uid();
    let kinds: BTreeMap<&str, &str> = by_uid
        .iter()
        .map(|(uid, ds)| (uid.as_str(), ds["type"].as_str().expect("type")))
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("loki", "loki"),
            ("prometheus", "prometheus"),
            ("tempo", "tempo")
        ])
    );
    let compose = Compose::load(&[COMPOSE_FILE]);
    let listen_ports = [
        (
            "tempo",
            files::load_yaml("grafana/tempo.yaml")["server"]["http_listen_port"].as_u64(),
        ),
        (
            "loki",
            files::load_yaml("grafana/loki.yaml")["server"]["http_listen_port"].as_u64(),
        ),
        ("prometheus", Some(9090)),
    ];
    for (uid, port) in listen_ports {
        let url = by_uid[uid]["url"].as_str().expect("url");
        let expected = format!("http://{uid}:{}", port.expect("a listen port"));
        assert_eq!(url, expected, "data source {uid}");
        compose.service(uid);
    }
}

#[test]
fn every_link_between_datasources_resolves() {
    let by_uid = datasources_by_uid();
    let mut links = Vec::new();
    for datasource in by_uid.values() {
        referenced_uids(&datasource["jsonData"], &mut links);
    }
    assert!(
        links.len() >= 6,
        "trace, log and exemplar links are provisioned: {links:?}"
    );
    for uid in &links {
        assert!(
            by_uid.contains_key(uid),
            "a link points to unknown data source {uid}"
        );
    }
}

#[test]
fn traces_link_to_their_logs_metrics_and_service_map() {
    let by_uid = datasources_by_uid();
    let tempo = &by_uid["tempo"]["jsonData"];

    let logs = &tempo["tracesToLogsV2"];
    assert_eq!(logs["datasourceUid"].as_str(), Some("loki"));
    // The link shows the request's story: the whole trace, every service,
    // not only the span's own lines (a line carries its innermost span).
    assert_eq!(logs["filterByTraceID"].as_bool(), Some(true));
    assert_eq!(logs["filterBySpanID"].as_bool(), Some(false));
    // Loki keeps trace_id as structured metadata, so a custom query
    // filters on it; Grafana reads `$$` in provisioning as `$`.
    assert_eq!(logs["customQuery"].as_bool(), Some(true));
    let query = logs["query"].as_str().expect("tracesToLogsV2 query");
    assert!(
        query.contains(r#"trace_id="$${__trace.traceId}""#),
        "{query}"
    );
    assert!(!query.contains("span_id"), "{query}");
    assert!(
        query.starts_with(r#"{service_name=~".+"}"#),
        "every service's stream: {query}"
    );

    let to_metrics = &tempo["tracesToMetrics"];
    assert_eq!(to_metrics["datasourceUid"].as_str(), Some("prometheus"));
    let queries = to_metrics["queries"]
        .as_sequence()
        .expect("tracesToMetrics queries");
    assert!(!queries.is_empty());
    for query in queries {
        let expr = query["query"].as_str().expect("query");
        let names = promql::metric_names(expr).unwrap_or_else(|error| panic!("{expr}: {error}"));
        for name in names {
            let base = metrics::base_name(&name);
            assert!(
                metrics::is_external(base) && base.starts_with("traces_spanmetrics_"),
                "trace-to-metrics query reads {name}, which is no span metric"
            );
        }
    }
    assert_eq!(
        tempo["serviceMap"]["datasourceUid"].as_str(),
        Some("prometheus")
    );
}

#[test]
fn logs_and_exemplars_link_to_traces() {
    let by_uid = datasources_by_uid();
    let derived = by_uid["loki"]["jsonData"]["derivedFields"]
        .as_sequence()
        .expect("Loki derived fields");
    assert!(
        derived
            .iter()
            .any(|field| field["datasourceUid"].as_str() == Some("tempo")
                && field["matcherRegex"].as_str() == Some("trace_id")
                && field["matcherType"].as_str() == Some("label")),
        "Loki's trace_id field links to Tempo"
    );
    let exemplars = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
        .as_sequence()
        .expect("exemplar destinations");
    let names: BTreeSet<&str> = exemplars
        .iter()
        .filter(|e| e["datasourceUid"].as_str() == Some("tempo"))
        .filter_map(|e| e["name"].as_str())
        .collect();
    // traceID: Tempo's metrics-generator; trace_id: OpenTelemetry SDKs.
    assert_eq!(names, BTreeSet::from(["traceID", "trace_id"]));
}

#[test]
fn provisioning_escapes_dollar_signs() {
    // Grafana expands $VAR and ${VAR} from the environment in provisioned
    // values; an unescaped template variable would silently become empty.
    let text = files::read_text(DATASOURCES);
    let values = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with('#'));
    for (number, line) in values {
        assert!(
            !line.replace("$$", "").contains('$'),
            "{DATASOURCES}:{}: write $$ for a literal $: {line}",
            number + 1
        );
    }
}

#[test]
fn dashboards_are_provisioned_from_the_mounted_folder() {
    let compose = Compose::load(&[COMPOSE_FILE]);
    let grafana = compose.service("grafana");
    let mounts = compose::mounts(grafana);
    let mounted = |source: &str| -> String {
        mounts
            .iter()
            .find_map(|m| match m {
                Mount::Bind { source: s, target } if s.trim_start_matches("./") == source => {
                    Some(target.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("grafana does not mount {source}"))
    };
    // Only the folders it fills: all of provisioning/ would hide the
    // image's own alerting/ and plugins/.
    for folder in ["datasources", "dashboards"] {
        assert_eq!(
            mounted(&format!("grafana/provisioning/{folder}")),
            format!("/etc/grafana/provisioning/{folder}")
        );
    }
    let dashboards_dir = mounted(metrics::DASHBOARD_DIR);
    let providers = files::load_yaml(DASHBOARD_PROVIDERS);
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    assert_eq!(
        provider["options"]["path"].as_str(),
        Some(dashboards_dir.as_str())
    );

    let env = compose::environment(grafana);
    assert_eq!(env["GF_AUTH_ANONYMOUS_ENABLED"], "true");
    assert_eq!(env["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Admin");
    let home = &env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"];
    let file = home
        .strip_prefix(&format!("{dashboards_dir}/"))
        .unwrap_or_else(|| panic!("home dashboard {home} is outside {dashboards_dir}"));
    assert!(
        files::repo_root()
            .join(metrics::DASHBOARD_DIR)
            .join(file)
            .is_file(),
        "home dashboard {file} does not exist"
    );
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut found = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        found.push(panel);
        found.extend(all_panels(&panel["panels"]));
    }
    found
}

/// Every `"datasource": {"uid": ...}` anywhere in a dashboard.
fn dashboard_datasource_uids(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if key == "datasource"
                    && let Some(uid) = value["uid"].as_str()
                {
                    found.push(uid.to_owned());
                }
                dashboard_datasource_uids(value, found);
            }
        }
        serde_json::Value::Array(list) => list
            .iter()
            .for_each(|v| dashboard_datasource_uids(v, found)),
        _ => {}
    }
}

#[test]
fn dashboards_parse_and_use_provisioned_datasources() {
    let known = datasources_by_uid();
    let mut uids = BTreeSet::new();
    for file in metrics::dashboard_files() {
        let dashboard = files::load_json(&file);
        let uid = dashboard["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file} has no uid"));
        assert!(uids.insert(uid.to_owned()), "dashboard uid {uid} twice");
        let mut used = Vec::new();
        dashboard_datasource_uids(&dashboard, &mut used);
        assert!(!used.is_empty(), "{file} names its data sources by uid");
        for uid in used {
            assert!(
                known.contains_key(&uid),
                "{file} uses unknown data source {uid}"
            );
        }
        let mut ids = BTreeSet::new();
        for panel in all_panels(&dashboard["panels"]) {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(panel["id"].as_u64()),
                "{file}: panel id of {title:?} repeats"
            );
            let grid = &panel["gridPos"];
            let (x, w) = (
                grid["x"].as_u64().unwrap_or(0),
                grid["w"].as_u64().unwrap_or(0),
            );
            assert!(
                w > 0 && x + w <= 24,
                "{file}: panel {title:?} does not fit the 24-column grid"
            );
            if panel["type"] != "row" {
                assert!(
                    panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "{file}: panel {title:?} has no query"
                );
            }
        }
    }
    assert!(uids.contains("dispatcher-overview"));
}

#[test]
fn overview_dashboard_covers_the_platform() {
    let dashboard = files::load_json(OVERVIEW);
    assert_eq!(dashboard["title"], "Dispatcher overview");
    let queries: Vec<_> = metrics::prometheus_queries()
        .into_iter()
        .filter(|q| q.origin.starts_with(OVERVIEW))
        .collect();
    let reads = |metric: &str, shape: &str| {
        queries
            .iter()
            .any(|q| q.metrics.contains(metric) && q.expr.contains(shape))
    };
    let required = [
        (
            "request rate",
            "http_server_request_duration_seconds",
            "rate(http_server_request_duration_seconds_count",
        ),
        (
            "error rate",
            "http_server_request_duration_seconds",
            "http_response_status_code=~\"5..\"",
        ),
        (
            "latency percentiles",
            "http_server_request_duration_seconds",
            "histogram_quantile(0.99",
        ),
        (
            "parked requests",
            "public_web_pending_requests",
            "public_web_pending_requests",
        ),
        (
            "AMQP publish rate",
            "amqp_messages_published_total",
            "rate(",
        ),
        ("AMQP consume rate", "amqp_messages_consumed_total", "rate("),
        (
            "queue depth",
            "rabbitmq_detailed_queue_messages_ready",
            "rabbitmq_detailed_queue_messages_ready",
        ),
    ];
    for (what, metric, shape) in required {
        assert!(
            reads(metric, shape),
            "the overview lacks a {what} query ({shape} on {metric})"
        );
    }
    // Per-service breakdowns group by the scrape job.
    assert!(queries.iter().any(|q| q.expr.contains("by (job)")));
    // Exemplars link latency points to traces, asked for only where the
    // series carry them: Tempo's span metrics do, the services' own
    // Prometheus text does not.
    let exemplar_targets: Vec<&str> = all_panels(&dashboard["panels"])
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| t["exemplar"] == true)
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(
        !exemplar_targets.is_empty(),
        "a latency panel shows exemplars"
    );
    for expr in exemplar_targets {
        assert!(
            expr.contains("histogram_quantile") && expr.contains("traces_spanmetrics_"),
            "exemplars asked of series that carry none: {expr}"
        );
    }
    // The service variable offers exactly the scrape jobs of the services.
    let variable = &dashboard["templating"]["list"][0];
    assert_eq!(variable["name"], "service");
    assert_eq!(
        variable["query"],
        RUST_SERVICES.map(|s| s.name).join(","),
        "the service variable lists every service, in the contract's order"
    );
}

#[test]
fn the_service_down_alert_watches_every_service() {
    let rules = files::load_yaml(metrics::ALERT_RULES);
    let expr = rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_sequence().into_iter().flatten())
        .find(|rule| rule["alert"].as_str() == Some("ServiceDown"))
        .and_then(|rule| rule["expr"].as_str())
        .expect("a ServiceDown alert");
    let jobs: BTreeSet<&str> = expr
        .split_once("job=~\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(alternatives, _)| alternatives.split('|').collect())
        .unwrap_or_else(|| panic!("ServiceDown selects jobs with job=~\"...\": {expr}"));
    for name in RUST_SERVICES
        .map(|s| s.name)
        .into_iter()
        .chain(["rabbitmq"])
    {
        assert!(
            jobs.contains(name),
            "ServiceDown does not watch {name}: {expr}"
        );
    }
}

#[test]
fn every_queried_metric_is_in_the_catalogue() {
    let queries = metrics::prometheus_queries();
    assert!(
        queries.len() >= 20,
        "dashboards and alerts were read: {}",
        queries.len()
    );
    assert!(
        queries
            .iter()
            .any(|q| q.origin.contains("prometheus-rules.yml"))
    );
    for query in &queries {
        assert!(
            !query.metrics.is_empty(),
            "{}: reads no metric: {}",
            query.origin,
            query.expr
        );
        for metric in &query.metrics {
            assert!(
                SERVICE_METRICS.contains(&metric.as_str()) || metrics::is_external(metric),
                "{}: {metric} is neither a service metric (stack_check::metrics::SERVICE_METRICS) \
                 nor produced by RabbitMQ, Tempo or Prometheus (EXTERNAL_SOURCES): {}",
                query.origin,
                query.expr
            );
        }
    }
}

#[test]
fn the_external_allow_list_is_separate_from_the_services() {
    // The services' metrics use none of the producers' prefixes, and each
    // producer's metrics carry its own: nothing the services export can
    // pass as RabbitMQ's, Tempo's or Prometheus's.
    for source in EXTERNAL_SOURCES {
        for metric in source.metrics {
            assert!(
                metric.starts_with(source.prefix),
                "{metric} is listed under {} but lacks its prefix {}",
                source.producer,
                source.prefix
            );
        }
        for metric in SERVICE_METRICS {
            assert!(
                !metric.starts_with(source.prefix),
                "service metric {metric} has the prefix of {}",
                source.producer
            );
        }
    }
}

#[test]
fn dashboard_metric_names_are_the_service_metrics_in_use() {
    let names = stack_check::dashboard_metric_names();
    for name in &names {
        assert!(
            SERVICE_METRICS.contains(&name.as_str()),
            "{name} is not a service metric"
        );
    }
    for expected in [
        "http_server_request_duration_seconds",
        "public_web_pending_requests",
        "amqp_messages_published_total",
        "amqp_messages_consumed_total",
        "amqp_connected",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.ends_with("_bucket")
            || n.starts_with("rabbitmq_")
            || n.starts_with("traces_")),
        "base names only, external metrics left out: {names:?}"
    );
}
