//! A real OTLP receiver for the tests: gRPC and HTTP/protobuf endpoints
//! that accept traces and logs with the official opentelemetry-proto types
//! and keep them for the test to inspect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

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

/// The receiver, listening on two loopback ports until dropped.
pub struct Receiver {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    store: Arc<Store>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let store = Arc::new(Store::default());

        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let grpc_addr = grpc.local_addr().expect("addr");
        let sink = Sink(store.clone());
        let grpc_task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .add_service(LogsServiceServer::new(sink))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc))
                .await
                .expect("the gRPC receiver serves");
        });

        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let http_addr = http.local_addr().expect("addr");
        let app = Router::new()
            .route("/v1/traces", post(http_traces))
            .route("/v1/logs", post(http_logs))
            .with_state(store.clone());
        let http_task = tokio::spawn(async move {
            axum::serve(http, app)
                .await
                .expect("the HTTP receiver serves");
        });

        Self {
            grpc_addr,
            http_addr,
            store,
            tasks: vec![grpc_task, http_task],
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
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct Sink(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.add_logs(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

async fn http_traces(State(store): State<Arc<Store>>, body: Bytes) -> Result<Vec<u8>, String> {
    let request = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
    store.add_traces(request);
    Ok(ExportTraceServiceResponse::default().encode_to_vec())
}

async fn http_logs(State(store): State<Arc<Store>>, body: Bytes) -> Result<Vec<u8>, String> {
    let request = ExportLogsServiceRequest::decode(body).map_err(|e| e.to_string())?;
    store.add_logs(request);
    Ok(ExportLogsServiceResponse::default().encode_to_vec())
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
