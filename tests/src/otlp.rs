//! A real OTLP receiver for the tests: the collector's gRPC and
//! HTTP/protobuf export endpoints, decoding traces and logs into the
//! official opentelemetry-proto types and keeping them for the test to
//! inspect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp_receiver::{Exports, Ports};

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// A string, integer or boolean attribute rendered as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        attribute(&self.span.attributes, key)
    }
}

/// A log record as received, with the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    pub service: String,
    pub record: LogRecord,
}

impl ReceivedLog {
    pub fn trace_id(&self) -> String {
        hex(&self.record.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.record.span_id)
    }

    /// A string, integer, boolean or float attribute rendered as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        attribute(&self.record.attributes, key)
    }

    /// The record as Loki's OTLP ingestion stores it: `service.name` (the
    /// one resource attribute these services set) as the stream label
    /// `service_name`; the trace and span ids (hex), the severity and the
    /// attributes (dots made underscores) as structured metadata.
    pub fn loki_entry(&self) -> stack_check::logql::Entry {
        let mut metadata: std::collections::BTreeMap<String, String> = self
            .record
            .attributes
            .iter()
            .filter_map(|kv| {
                let value = attribute(std::slice::from_ref(kv), &kv.key)?;
                Some((kv.key.replace('.', "_"), value))
            })
            .collect();
        for (key, value) in [
            ("trace_id", self.trace_id()),
            ("span_id", self.span_id()),
            ("severity_text", self.record.severity_text.clone()),
        ] {
            if !value.is_empty() {
                metadata.insert(key.to_owned(), value);
            }
        }
        stack_check::logql::Entry {
            labels: [("service_name".to_owned(), self.service.clone())].into(),
            structured_metadata: metadata,
        }
    }

    pub fn body(&self) -> String {
        match self.record.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(AnyValue::StringValue(text)) => text.clone(),
            other => format!("{other:?}"),
        }
    }
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    logs: Mutex<Vec<ReceivedLog>>,
}

impl Store {
    fn add_traces(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("store lock");
        for resource_spans in request.resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    fn add_logs(&self, request: ExportLogsServiceRequest) {
        let mut logs = self.logs.lock().expect("store lock");
        for resource_logs in request.resource_logs {
            let service = service_name(resource_logs.resource.as_ref());
            for scope in resource_logs.scope_logs {
                for record in scope.log_records {
                    logs.push(ReceivedLog {
                        service: service.clone(),
                        record,
                    });
                }
            }
        }
    }
}

/// OTLP span kinds, as the proto numbers them.
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const PRODUCER: i32 = 4;
pub const CONSUMER: i32 = 5;

/// The one span among `spans` by `service` of `kind` named `name`; panics,
/// listing what there is, unless there is exactly one.
pub fn only_span<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    kind: i32,
    name: &str,
) -> &'a ReceivedSpan {
    let matching: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.span.kind == kind && s.span.name == name)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "exactly one {service} {name} span of kind {kind}; have {:?}",
        spans
            .iter()
            .map(|s| (&s.service, &s.span.name, s.span.kind))
            .collect::<Vec<_>>()
    );
    matching[0]
}

/// The receiver, listening on two loopback ports until dropped.
pub struct Receiver {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    store: Arc<Store>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let store = Arc::new(Store::default());
        let ports = Ports::bind(0, 0).await.expect("bind the receiver's ports");
        let (grpc_addr, http_addr) = (ports.grpc_addr(), ports.http_addr());
        let app = otlp_receiver::router(Keep(store.clone()));
        let task = tokio::spawn(async move {
            ports.serve(app).await.expect("the receiver serves");
        });
        Self {
            grpc_addr,
            http_addr,
            store,
            task,
        }
    }

    /// The base endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT` with `protocol`
    /// (`grpc` or `http/protobuf`).
    pub fn endpoint(&self, protocol: &str) -> String {
        match protocol {
            "grpc" => format!("http://{}", self.grpc_addr),
            _ => format!("http://{}", self.http_addr),
        }
    }

    /// The environment that points a service's telemetry here over
    /// `protocol`, exporting every 100 ms.
    pub fn service_env(&self, protocol: &str) -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint(protocol)),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().expect("store lock").clone()
    }

    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.store.logs.lock().expect("store lock").clone()
    }

    pub fn spans_of(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|span| span.trace_id() == trace_id)
            .collect()
    }

    /// Waits until `trace_id` has at least `count` spans (panics after
    /// `timeout`), then returns them.
    pub async fn wait_for_spans(
        &self,
        trace_id: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans_of(trace_id);
            if spans.len() >= count {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "trace {trace_id}: {} of {count} spans within {timeout:?}: {:#?}",
                spans.len(),
                spans
                    .iter()
                    .map(|s| (s.service.as_str(), s.span.name.as_str()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps every export in the store.
#[derive(Clone)]
struct Keep(Arc<Store>);

impl Exports for Keep {
    type Traces = ExportTraceServiceRequest;
    type Logs = ExportLogsServiceRequest;

    fn traces(&self, export: ExportTraceServiceRequest) {
        self.0.add_traces(export);
    }

    fn logs(&self, export: ExportLogsServiceRequest) {
        self.0.add_logs(export);
    }
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| attribute(&r.attributes, "service.name"))
        .unwrap_or_default()
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        AnyValue::StringValue(text) => text.clone(),
        AnyValue::IntValue(number) => number.to_string(),
        AnyValue::BoolValue(flag) => flag.to_string(),
        AnyValue::DoubleValue(number) => number.to_string(),
        other => format!("{other:?}"),
    })
}

/// Lowercase hex, the text form of trace and span ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
