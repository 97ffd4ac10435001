//! Prometheus metrics: one recorder per process, rendered by `GET /metrics`,
//! and the metrics every service shares (HTTP, AMQP, telemetry export).
//!
//! Code records through the `metrics` facade; each name is spelled once,
//! in a function here or in the service that owns the metric, so the
//! dashboards' names (grafana/) can be checked against what the services
//! export. A service's own metrics live in the service.

use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Duration;

use hashbrown::{Equivalent, HashMap};
use metrics::{Counter, Histogram};
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

/// Creates a consumer's counters at zero, so dashboards and `rate()` see
/// the series before the first event rather than a gap.
pub fn init_consumer(queue: &str, dead_letter_reasons: impl Iterator<Item = &'static str>) {
    for name in [
        "amqp_messages_consumed_total",
        "amqp_messages_acked_total",
        "amqp_messages_nacked_total",
        "amqp_messages_redelivered_total",
    ] {
        metrics::counter!(name, "queue" => queue.to_owned()).increment(0);
    }
    for reason in dead_letter_reasons {
        metrics::counter!(
            "amqp_messages_dead_lettered_total",
            "queue" => queue.to_owned(),
            "reason" => reason,
        )
        .increment(0);
    }
}

/// Handles of one labelled metric, one per label set, made on first use.
///
/// Taking a handle through the `metrics` macros builds its key (allocating
/// every label) and looks it up in the recorder, on every request and
/// message; a cached handle's update is an atomic add.
struct Handles<K, H> {
    by_labels: RwLock<HashMap<K, H>>,
}

impl<K: Hash + Eq, H: Clone> Handles<K, H> {
    fn new() -> Self {
        Self {
            by_labels: RwLock::new(HashMap::new()),
        }
    }

    /// The handle for `labels`; `make` builds its key and handle the first
    /// time.
    fn get<Q>(&self, labels: &Q, make: impl FnOnce() -> (K, H)) -> H
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        if let Some(handle) = read(&self.by_labels).get(labels) {
            return handle.clone();
        }
        // The recorder before the handle: one taken earlier stays a no-op.
        handle();
        let (key, made) = make();
        write(&self.by_labels).entry(key).or_insert(made).clone()
    }
}

/// A poisoned lock holds a map that is still whole: a panic cannot
/// interrupt an insert halfway.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The labels of `http_server_request_duration_seconds`, borrowed for the
/// lookup; hashed like the owned key `(String, String, u16)`.
struct HttpLabels<'a> {
    route: &'a str,
    method: &'a str,
    status: u16,
}

impl Hash for HttpLabels<'_> {
    fn hash<S: Hasher>(&self, state: &mut S) {
        (self.route, self.method, self.status).hash(state);
    }
}

impl Equivalent<(String, String, u16)> for HttpLabels<'_> {
    fn equivalent(&self, key: &(String, String, u16)) -> bool {
        self.route == key.0 && self.method == key.1 && self.status == key.2
    }
}

pub fn http_request_finished(route: &str, method: &str, status: u16, elapsed: Duration) {
    static DURATIONS: LazyLock<Handles<(String, String, u16), Histogram>> =
        LazyLock::new(Handles::new);
    let labels = HttpLabels {
        route,
        method,
        status,
    };
    let histogram = DURATIONS.get(&labels, || {
        let histogram = metrics::histogram!(
            "http_server_request_duration_seconds",
            "http_route" => route.to_owned(),
            "http_request_method" => method.to_owned(),
            "http_response_status_code" => status.to_string(),
        );
        ((route.to_owned(), method.to_owned(), status), histogram)
    });
    histogram.record(elapsed.as_secs_f64());
}

/// Connections open on this process's HTTP servers.
pub fn http_connections_open(open: usize) {
    metrics::gauge!("http_server_open_connections").set(open as f64);
}

/// A connection closed by the server, or refused, by why: `refused` (at
/// the cap, every connection busy), `displaced` (the longest idle, for a
/// new one), `header_timeout`, `idle`, `shutdown`, `accept_failed`.
pub fn http_connection_closed(reason: &'static str) {
    metrics::counter!("http_server_connections_closed_total", "reason" => reason).increment(1);
}

/// The counter `name` of `queue`, from `cache`.
fn queue_counter(cache: &Handles<String, Counter>, name: &'static str, queue: &str) -> Counter {
    cache.get(queue, || {
        (
            queue.to_owned(),
            metrics::counter!(name, "queue" => queue.to_owned()),
        )
    })
}

pub fn amqp_published(queue: &str) {
    static PUBLISHED: LazyLock<Handles<String, Counter>> = LazyLock::new(Handles::new);
    queue_counter(&PUBLISHED, "amqp_messages_published_total", queue).increment(1);
}

pub fn amqp_consumed(queue: &str, redelivered: bool) {
    static CONSUMED: LazyLock<Handles<String, Counter>> = LazyLock::new(Handles::new);
    queue_counter(&CONSUMED, "amqp_messages_consumed_total", queue).increment(1);
    if redelivered {
        metrics::counter!("amqp_messages_redelivered_total", "queue" => queue.to_owned())
            .increment(1);
    }
}

pub fn amqp_acked(queue: &str) {
    static ACKED: LazyLock<Handles<String, Counter>> = LazyLock::new(Handles::new);
    queue_counter(&ACKED, "amqp_messages_acked_total", queue).increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_http_labels_find_their_owned_key() {
        let cache: Handles<(String, String, u16), u32> = Handles::new();
        let mut made = 0;
        for _ in 0..3 {
            let labels = HttpLabels {
                route: "/dispatch",
                method: "POST",
                status: 204,
            };
            let handle = cache.get(&labels, || {
                made += 1;
                (("/dispatch".into(), "POST".into(), 204), 7)
            });
            assert_eq!(handle, 7);
        }
        let other = HttpLabels {
            route: "/dispatch",
            method: "POST",
            status: 404,
        };
        assert_eq!(
            cache.get(&other, || (("/dispatch".into(), "POST".into(), 404), 8)),
            8
        );
        assert_eq!(
            made, 1,
            "the first lookup made the handle, the others found it"
        );
        assert_eq!(read(&cache.by_labels).len(), 2);
    }

    #[test]
    fn cached_handles_record_into_the_registry() {
        http_request_finished("/cached", "POST", 200, Duration::from_millis(3));
        http_request_finished("/cached", "POST", 200, Duration::from_millis(4));
        amqp_acked("cached-queue");
        amqp_acked("cached-queue");
        let text = render();
        assert!(text.contains(
            r#"http_server_request_duration_seconds_count{http_route="/cached",http_request_method="POST",http_response_status_code="200"} 2"#
        ), "{text}");
        assert!(
            text.contains(r#"amqp_messages_acked_total{queue="cached-queue"} 2"#),
            "{text}"
        );
    }
}
