//! otlp-sink: a minimal OTLP receiver for "tracing on" benchmarks. It
//! accepts trace and log exports over gRPC and HTTP/protobuf, decodes them
//! (so the services pay the real export cost), counts what arrived and drops
//! it. `GET /stats` on the HTTP port answers the counts as JSON, so the bench
//! can check that spans really were exported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
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
use prost::Message;
use tokio::net::TcpListener;

/// Receive OTLP exports on loopback and drop them, counting.
#[derive(Debug, Parser)]
#[command(name = "otlp-sink")]
struct Cli {
    /// gRPC port (0 picks one).
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// HTTP/protobuf port, also serving GET /stats (0 picks one).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
}

/// What has arrived so far.
#[derive(Default)]
struct Counts {
    exports: AtomicU64,
    spans: AtomicU64,
    logs: AtomicU64,
}

impl Counts {
    fn traces(&self, request: &ExportTraceServiceRequest) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.exports.fetch_add(1, Ordering::Relaxed);
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
    }

    fn logs(&self, request: &ExportLogsServiceRequest) {
        let records: usize = request
            .resource_logs
            .iter()
            .flat_map(|resource| &resource.scope_logs)
            .map(|scope| scope.log_records.len())
            .sum();
        self.exports.fetch_add(1, Ordering::Relaxed);
        self.logs.fetch_add(records as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "exports": self.exports.load(Ordering::Relaxed),
            "spans": self.spans.load(Ordering::Relaxed),
            "logs": self.logs.load(Ordering::Relaxed),
        })
    }
}

#[derive(Clone)]
struct Sink(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.traces(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.logs(request.get_ref());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

async fn http_traces(State(counts): State<Arc<Counts>>, body: Bytes) -> Result<Vec<u8>, String> {
    let request = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
    counts.traces(&request);
    Ok(ExportTraceServiceResponse::default().encode_to_vec())
}

async fn http_logs(State(counts): State<Arc<Counts>>, body: Bytes) -> Result<Vec<u8>, String> {
    let request = ExportLogsServiceRequest::decode(body).map_err(|e| e.to_string())?;
    counts.logs(&request);
    Ok(ExportLogsServiceResponse::default().encode_to_vec())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let counts = Arc::new(Counts::default());

    let grpc = TcpListener::bind(("127.0.0.1", cli.grpc_port))
        .await
        .context("binding the gRPC port")?;
    let http = TcpListener::bind(("127.0.0.1", cli.http_port))
        .await
        .context("binding the HTTP port")?;
    let grpc_addr: SocketAddr = grpc.local_addr()?;
    let http_addr: SocketAddr = http.local_addr()?;
    println!("otlp-sink grpc=http://{grpc_addr} http=http://{http_addr}");

    let sink = Sink(counts.clone());
    let grpc_server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .add_service(LogsServiceServer::new(sink))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc));
    let app = Router::new()
        .route("/v1/traces", post(http_traces))
        .route("/v1/logs", post(http_logs))
        .route(
            "/stats",
            get(|State(counts): State<Arc<Counts>>| async move { Json(counts.snapshot()) }),
        )
        .with_state(counts);
    let http_server = axum::serve(http, app);
    tokio::select! {
        served = grpc_server => served.context("the gRPC server")?,
        served = http_server => served.context("the HTTP server")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
