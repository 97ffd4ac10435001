//! A scenario request's trace, as OpenTelemetry exports it: every service
//! runs in this process under one OpenTelemetry layer whose finished spans
//! are kept in memory, so the test reads the trace the collector would get,
//! with the trace context crossing public-web, the dispatcher, the broker
//! and each listener exactly as between processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use integration_tests::*;
use opentelemetry::trace::{SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use serde_json::json;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps every finished span.
#[derive(Debug, Clone, Default)]
struct Finished(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Finished {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap().push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Installs the process-wide subscriber and propagator once; the spans
/// finished since.
fn finished() -> &'static Finished {
    static INSTALLED: OnceLock<(SdkTracerProvider, Finished)> = OnceLock::new();
    let (_, finished) = INSTALLED.get_or_init(|| {
        let finished = Finished::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(finished.clone())
            .build();
        // The hops' spans and the handlers' `tracing` spans on one
        // provider, set up as in a service.
        let layer = common::telemetry::span_layer(provider.tracer("integration-tests"))
            .with_filter(LevelFilter::INFO);
        tracing_subscriber::registry().with(layer).init();
        (provider, finished)
    });
    finished
}

/// One trace's spans, once `complete` says they are all there (some end
/// just after the response has gone, e.g. a listener's span around its
/// ack).
async fn trace(trace_id: &str, complete: impl Fn(&Trace) -> bool) -> Trace {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let spans: Vec<SpanData> = finished()
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.span_context.trace_id().to_string() == trace_id)
            .cloned()
            .collect();
        let trace = Trace(spans);
        if complete(&trace) {
            return trace;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace {trace_id} incomplete after 10 s; it has {:?}",
            trace.names()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Trace(Vec<SpanData>);

impl Trace {
    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|span| span.name.as_ref()).collect()
    }

    fn has(&self, names: &[&str]) -> bool {
        let present = self.names();
        names.iter().all(|name| present.contains(name))
    }

    fn span(&self, name: &str) -> &SpanData {
        let mut found = self.0.iter().filter(|span| span.name == name);
        let span = found
            .next()
            .unwrap_or_else(|| panic!("no span {name:?} in {:?}", self.names()));
        assert!(found.next().is_none(), "more than one span {name:?}");
        span
    }

    /// The names of `name`'s ancestors, nearest first.
    fn ancestors(&self, name: &str) -> Vec<&str> {
        let by_id: HashMap<SpanId, &SpanData> = self
            .0
            .iter()
            .map(|span| (span.span_context.span_id(), span))
            .collect();
        let mut names = Vec::new();
        let mut parent = self.span(name).parent_span_id;
        while let Some(span) = by_id.get(&parent) {
            names.push(span.name.as_ref());
            parent = span.parent_span_id;
        }
        names
    }

    fn failed(&self, name: &str) -> bool {
        matches!(self.span(name).status, Status::Error { .. })
    }

    /// The span's events named "step failed": the error recorded where a
    /// failure happened.
    fn step_failures(&self, name: &str) -> usize {
        self.span(name)
            .events
            .iter()
            .filter(|event| event.name == "step failed")
            .count()
    }
}

/// `names` in the order they appear in `ancestors`.
fn in_order<'a>(ancestors: &[&'a str], names: &[&str]) -> Vec<&'a str> {
    ancestors
        .iter()
        .copied()
        .filter(|name| names.contains(name))
        .collect()
}

/// The trace id public-web answered with.
fn trace_id(response: &reqwest::Response) -> String {
    let id = response.headers()[common::wire::TRACE_ID_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32, "{id}");
    id
}

#[tokio::test]
async fn the_trace_names_every_step_in_every_listener() {
    finished();
    let platform = ScenarioPlatform::start(&["OrderRequest", "InventoryRequest"]).await;
    let _listener = platform
        .scenario_listener(&json!({"handlers": {
            "OrderRequest": {"name": "order-service", "steps": [
                {"sleep": {"name": "validate order", "ms": 1}},
                {"parallel": {"name": "reserve and score", "steps": [
                    {"call": {"name": "reserve stock", "type": "InventoryRequest"}},
                    {"call": {"name": "score risk", "type": "NthPrimeRequest", "data": {"n": 50}}}
                ]}}
            ]},
            "InventoryRequest": {"name": "inventory-service", "steps": [
                {"sequence": {"name": "check and hold", "steps": [
                    {"sleep": {"name": "check stock", "ms": 1}},
                    {"sleep": {"name": "hold item", "ms": 1, "failure_chance": 0.0}}
                ]}}
            ]}
        }}))
        .await;

    let response = reqwest::Client::new()
        .post(platform.public_web.url())
        .json(&json!({"type": "OrderRequest", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace_id = trace_id(&response);

    let scenario_consumer = format!("{} process", platform.scenarios.request_queue);
    let prime_consumer = format!("{} process", platform.primes.request_queue);
    let configured = [
        "order-service",
        "validate order",
        "reserve and score",
        "reserve stock",
        "score risk",
        "inventory-service",
        "check and hold",
        "check stock",
        "hold item",
    ];
    let trace = trace(&trace_id, |trace| {
        trace.has(&configured)
            && trace.has(&[
                "nth_prime",
                scenario_consumer.as_str(),
                prime_consumer.as_str(),
            ])
    })
    .await;

    // One trace from the client's request down to the leaves: the nested
    // scenario's steps sit under the call that caused them, through
    // public-web, the dispatcher and the broker.
    let check_stock = trace.ancestors("check stock");
    assert_eq!(
        in_order(&check_stock, &configured),
        [
            "check and hold",
            "inventory-service",
            "reserve stock",
            "reserve and score",
            "order-service"
        ]
    );
    assert!(check_stock.contains(&scenario_consumer.as_str()));
    let prime = trace.ancestors("nth_prime");
    assert!(prime.contains(&prime_consumer.as_str()), "{prime:?}");
    assert_eq!(
        in_order(&prime, &configured),
        ["score risk", "reserve and score", "order-service"]
    );
    assert!(!configured.iter().any(|name| trace.failed(name)));
}

#[tokio::test]
async fn a_failure_is_an_error_span_where_it_happens_and_on_the_way_up() {
    finished();
    let platform = ScenarioPlatform::start(&["CheckoutRequest", "ChargeRequest"]).await;
    let _listener = platform
        .scenario_listener(&json!({"handlers": {
            "CheckoutRequest": {"name": "checkout-service", "steps": [
                {"parallel": {"name": "pay and pack", "steps": [
                    {"call": {"name": "charge payment", "type": "ChargeRequest"}},
                    {"sleep": {"name": "pack box", "ms": 1}}
                ]}}
            ]},
            "ChargeRequest": {"name": "payment-service", "steps": [
                {"sleep": {"name": "authorize card", "ms": 1, "failure_chance": 1.0}}
            ]}
        }}))
        .await;

    let response = reqwest::Client::new()
        .post(platform.public_web.url())
        .json(&json!({"type": "CheckoutRequest", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let trace_id = trace_id(&response);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "listener_error");

    let names = [
        "checkout-service",
        "pay and pack",
        "charge payment",
        "pack box",
        "payment-service",
        "authorize card",
    ];
    let trace = trace(&trace_id, |trace| trace.has(&names)).await;

    // Recorded where it happened, with its error event...
    assert!(trace.failed("authorize card"));
    assert_eq!(trace.step_failures("authorize card"), 1);
    // ... and the call that got the failure back fails in its own right.
    assert!(trace.failed("charge payment"));
    assert_eq!(trace.step_failures("charge payment"), 1);
    // The enclosing spans are marked, without repeating the event.
    for name in ["payment-service", "pay and pack", "checkout-service"] {
        assert!(trace.failed(name), "{name} is marked as failed");
        assert_eq!(trace.step_failures(name), 0, "{name}");
    }
    assert!(!trace.failed("pack box"));

    // The hop the handler's error was answered from, the CONSUMER span of
    // the delivery (it ends with the ack, after the response), is failed
    // with the handler's message as an `exception` event.
    let failed_consumer = |span: &SpanData| {
        span.span_kind == SpanKind::Consumer
            && matches!(span.status, Status::Error { .. })
            && span.events.iter().any(|event| {
                event.name == "exception"
                    && event.attributes.iter().any(|attribute| {
                        attribute.key.as_str() == "exception.message"
                            && attribute.value.as_str().contains("authorize card")
                    })
            })
    };
    crate::trace(&trace_id, |trace| trace.0.iter().any(failed_consumer)).await;
}
