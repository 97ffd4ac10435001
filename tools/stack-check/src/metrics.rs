//! The metric names the dashboards and alerts may use, in one place, and
//! the names they actually use.
//!
//! [`SERVICE_METRICS`] is the contract: what public-web, the dispatcher and
//! the listeners export on `GET /metrics`. [`EXTERNAL_SOURCES`] is the
//! allow-list of metrics that other parts of the stack produce. A dashboard
//! or alert query reading anything else is a bug the tests report; and since
//! this list cannot prove the services really export what it says,
//! [`dashboard_metric_names`] hands the service metrics the dashboards rely
//! on to an integration test that compares them with live `/metrics` output.

use std::collections::BTreeSet;

use crate::files;
use crate::promql;

/// Every metric the services export (base names: a histogram's
/// `_bucket`/`_sum`/`_count` series count as its base name).
pub const SERVICE_METRICS: &[&str] = &[
    "http_server_request_duration_seconds",
    "amqp_messages_published_total",
    "amqp_messages_consumed_total",
    "amqp_messages_acked_total",
    "amqp_messages_nacked_total",
    "amqp_messages_dead_lettered_total",
    "amqp_messages_redelivered_total",
    "amqp_connected",
    "telemetry_export_failures_total",
    "public_web_pending_requests",
    "public_web_request_timeouts_total",
    "dispatcher_callback_failures_total",
];

/// Metrics produced by something other than the services, by producer.
/// Each producer's metrics share its prefix, so a name the services might
/// export cannot hide in here.
pub struct ExternalSource {
    pub producer: &'static str,
    pub prefix: &'static str,
    pub metrics: &'static [&'static str],
}

pub const EXTERNAL_SOURCES: &[ExternalSource] = &[
    ExternalSource {
        producer: "RabbitMQ's rabbitmq_prometheus plugin, per-queue endpoint /metrics/detailed (scrape job rabbitmq-queues)",
        prefix: "rabbitmq_",
        metrics: &[
            "rabbitmq_detailed_queue_messages_ready",
            "rabbitmq_detailed_queue_messages_unacked",
            "rabbitmq_detailed_queue_consumers",
        ],
    },
    ExternalSource {
        producer: "Tempo's metrics-generator, span-metrics processor (remote write)",
        prefix: "traces_spanmetrics_",
        metrics: &[
            "traces_spanmetrics_latency",
            "traces_spanmetrics_calls_total",
        ],
    },
    ExternalSource {
        producer: "Tempo's metrics-generator, service-graphs processor (remote write)",
        prefix: "traces_service_graph_",
        metrics: &[
            "traces_service_graph_request_total",
            "traces_service_graph_request_failed_total",
        ],
    },
    ExternalSource {
        producer: "Prometheus itself: the health of every scrape",
        prefix: "up",
        metrics: &["up"],
    },
];

/// The histograms among the known metrics: their series carry a suffix.
pub const HISTOGRAMS: &[&str] = &[
    "http_server_request_duration_seconds",
    "traces_spanmetrics_latency",
];

const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// The dashboards (JSON, provisioned from this folder) and the Prometheus
/// alert rules whose queries are checked.
pub const DASHBOARD_DIR: &str = "grafana/dashboards";
pub const ALERT_RULES: &str = "grafana/prometheus-rules.yml";

/// The base name of a series: a known histogram's `_bucket`, `_sum` and
/// `_count` series map to the histogram.
pub fn base_name(series: &str) -> &str {
    HISTOGRAM_SUFFIXES
        .iter()
        .filter_map(|suffix| series.strip_suffix(suffix))
        .find(|base| HISTOGRAMS.contains(base))
        .unwrap_or(series)
}

/// Whether another part of the stack produces `metric` (a base name).
pub fn is_external(metric: &str) -> bool {
    EXTERNAL_SOURCES
        .iter()
        .any(|source| source.metrics.contains(&metric))
}

/// One PromQL query of a dashboard panel, template variable or alert.
#[derive(Debug, Clone)]
pub struct Query {
    /// Where it is, for messages: file and panel, variable or alert.
    pub origin: String,
    pub expr: String,
    /// The base names of the metrics it reads.
    pub metrics: BTreeSet<String>,
}

impl Query {
    /// Panics when the query does not parse: a query Prometheus would
    /// refuse is the finding.
    fn new(origin: String, expr: String, raw_names: Result<BTreeSet<String>, String>) -> Self {
        let raw_names = raw_names.unwrap_or_else(|error| panic!("{origin}: {expr}: {error}"));
        let metrics = raw_names
            .iter()
            .map(|name| base_name(name).to_owned())
            .collect();
        Self {
            origin,
            expr,
            metrics,
        }
    }
}

/// The dashboard files, relative to the repository root, sorted.
pub fn dashboard_files() -> Vec<String> {
    let dir = files::repo_root().join(DASHBOARD_DIR);
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .map(|name| format!("{DASHBOARD_DIR}/{name}"))
        .collect();
    found.sort();
    found
}

/// Every PromQL query of every dashboard (panels, nested rows, template
/// variables on Prometheus) and of the alert rules.
pub fn prometheus_queries() -> Vec<Query> {
    let mut queries = Vec::new();
    for file in dashboard_files() {
        let dashboard = files::load_json(&file);
        collect_panel_queries(&file, &dashboard["panels"], None, &mut queries);
        collect_variable_queries(&file, &dashboard, &mut queries);
    }
    collect_alert_queries(&mut queries);
    queries
}

/// The datasource uid a panel or target names, if any.
pub fn datasource_uid(value: &serde_json::Value) -> Option<&str> {
    value["datasource"]["uid"].as_str()
}

fn is_prometheus(uid: Option<&str>) -> bool {
    uid == Some("prometheus")
}

fn collect_panel_queries(
    file: &str,
    panels: &serde_json::Value,
    inherited_uid: Option<&str>,
    queries: &mut Vec<Query>,
) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let panel_uid = datasource_uid(panel).or(inherited_uid);
        for target in panel["targets"].as_array().into_iter().flatten() {
            let uid = datasource_uid(target).or(panel_uid);
            if let (true, Some(expr)) = (is_prometheus(uid), target["expr"].as_str()) {
                let origin = format!("{file}: panel {title:?} target {}", target["refId"]);
                queries.push(Query::new(
                    origin,
                    expr.to_owned(),
                    promql::metric_names(expr),
                ));
            }
        }
        collect_panel_queries(file, &panel["panels"], panel_uid, queries);
    }
}

fn collect_variable_queries(file: &str, dashboard: &serde_json::Value, queries: &mut Vec<Query>) {
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    for variable in variables.filter(|v| v["type"] == "query") {
        if !is_prometheus(datasource_uid(variable)) {
            continue;
        }
        let query = match &variable["query"] {
            serde_json::Value::String(query) => query.as_str(),
            object => object["query"].as_str().unwrap_or_default(),
        };
        let origin = format!("{file}: variable {}", variable["name"]);
        queries.push(Query::new(
            origin,
            query.to_owned(),
            promql::template_query_metric_names(query),
        ));
    }
}

fn collect_alert_queries(queries: &mut Vec<Query>) {
    let rules = files::load_yaml(ALERT_RULES);
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            let expr = rule["expr"].as_str().unwrap_or_default();
            let origin = format!("{ALERT_RULES}: rule {}", name.unwrap_or("(unnamed)"));
            queries.push(Query::new(
                origin,
                expr.to_owned(),
                promql::metric_names(expr),
            ));
        }
    }
}

/// The metrics the dashboards and alerts read that the services themselves
/// must export (base names; the externally produced ones of
/// [`EXTERNAL_SOURCES`] left out). An integration test can check each
/// against the `/metrics` output of the running services: a histogram
/// appears there as its `_bucket`, `_sum` and `_count` series.
pub fn dashboard_metric_names() -> BTreeSet<String> {
    prometheus_queries()
        .into_iter()
        .flat_map(|query| query.metrics)
        .filter(|metric| !is_external(metric))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_series_count_as_their_base_name() {
        assert_eq!(
            base_name("http_server_request_duration_seconds_bucket"),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            base_name("traces_spanmetrics_latency_count"),
            "traces_spanmetrics_latency"
        );
        // Not a known histogram: left alone, so the catalogue check sees it.
        assert_eq!(base_name("made_up_bucket"), "made_up_bucket");
        assert_eq!(
            base_name("amqp_messages_acked_total"),
            "amqp_messages_acked_total"
        );
    }
}
