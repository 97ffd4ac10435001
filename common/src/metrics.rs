//! Prometheus metrics: one recorder per process, rendered by `GET /metrics`.
//!
//! Code records through the `metrics` facade; the names live here, as
//! functions, so each metric is spelled once and the dashboard's list of
//! names (grafana/) can be checked against what the services export.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds; from a fast loopback hop to the default request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it) and
/// returns the handle that renders it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".to_owned()),
                LATENCY_BUCKETS,
            )
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first, in which case
        // this handle renders an empty registry: acceptable for a test
        // harness, impossible in the binaries.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    handle().render()
}

/// Dead-lettering reasons, the `reason` label of
/// `amqp_messages_dead_lettered_total`.
pub const DEAD_LETTER_REASONS: &[&str] = &[
    "malformed",
    "no_reply_to",
    "reply_failed",
    "no_callback_url",
    "callback_failed",
    "handler_panicked",
];

/// Callback failure reasons, the `reason` label of
/// `dispatcher_callback_failures_total`.
pub const CALLBACK_FAILURE_REASONS: &[&str] = &[
    "unknown_id",
    "timeout",
    "unreachable",
    "server_error",
    "refused",
];

/// Creates a consumer's counters at zero, so dashboards and `rate()` see
/// the series before the first event rather than a gap.
pub fn init_consumer(queue: &str) {
    for name in [
        "amqp_messages_consumed_total",
        "amqp_messages_acked_total",
        "amqp_messages_nacked_total",
        "amqp_messages_redelivered_total",
    ] {
        metrics::counter!(name, "queue" => queue.to_owned()).increment(0);
    }
    for reason in DEAD_LETTER_REASONS {
        metrics::counter!(
            "amqp_messages_dead_lettered_total",
            "queue" => queue.to_owned(),
            "reason" => *reason,
        )
        .increment(0);
    }
}

/// Creates public-web's own counters at zero.
pub fn init_public_web() {
    metrics::counter!("public_web_request_timeouts_total").increment(0);
    pending_requests_gauge().set(0.0);
}

/// Creates the dispatcher's own counters at zero.
pub fn init_dispatcher() {
    for reason in CALLBACK_FAILURE_REASONS {
        metrics::counter!("dispatcher_callback_failures_total", "reason" => *reason).increment(0);
    }
}

pub fn http_request_finished(route: &str, method: &str, status: u16, elapsed: Duration) {
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "http_route" => route.to_owned(),
        "http_request_method" => method.to_owned(),
        "http_response_status_code" => status.to_string(),
    )
    .record(elapsed.as_secs_f64());
}

pub fn amqp_published(queue: &str) {
    metrics::counter!("amqp_messages_published_total", "queue" => queue.to_owned()).increment(1);
}

pub fn amqp_consumed(queue: &str, redelivered: bool) {
    metrics::counter!("amqp_messages_consumed_total", "queue" => queue.to_owned()).increment(1);
    if redelivered {
        metrics::counter!("amqp_messages_redelivered_total", "queue" => queue.to_owned())
            .increment(1);
    }
}

pub fn amqp_acked(queue: &str) {
    metrics::counter!("amqp_messages_acked_total", "queue" => queue.to_owned()).increment(1);
}

pub fn amqp_nacked(queue: &str) {
    metrics::counter!("amqp_messages_nacked_total", "queue" => queue.to_owned()).increment(1);
}

pub fn amqp_dead_lettered(queue: &str, reason: &'static str) {
    metrics::counter!(
        "amqp_messages_dead_lettered_total",
        "queue" => queue.to_owned(),
        "reason" => reason,
    )
    .increment(1);
}

pub fn amqp_connected(connected: bool) {
    metrics::gauge!("amqp_connected").set(if connected { 1.0 } else { 0.0 });
}

/// Creates the export failure counter of `signal` at zero.
pub fn init_telemetry_export(signal: &'static str) {
    metrics::counter!("telemetry_export_failures_total", "signal" => signal).increment(0);
}

pub fn telemetry_export_failed(signal: &'static str) {
    metrics::counter!("telemetry_export_failures_total", "signal" => signal).increment(1);
}

/// The gauge of parked requests; keep the handle, updating it is an
/// atomic add.
pub fn pending_requests_gauge() -> metrics::Gauge {
    metrics::gauge!("public_web_pending_requests")
}

pub fn request_timed_out() {
    metrics::counter!("public_web_request_timeouts_total").increment(1);
}

pub fn callback_failed(reason: &'static str) {
    metrics::counter!("dispatcher_callback_failures_total", "reason" => reason).increment(1);
}
