//! otlp-sink: the stand-in for a collector in "tracing on" benchmarks. It
//! accepts trace and log exports over gRPC and HTTP/protobuf, counts the
//! spans and log records that arrived and drops them. `GET /stats` answers
//! the counts as JSON, so the bench can check that spans really were
//! exported.
//!
//! The services' export cost (conversion, encoding, sending) is the same
//! whatever the receiver does with the bytes. What the sink itself spends
//! is not the platform's cost, yet it shares the benchmark machine's cores,
//! so it spends as little as it can: an export is decoded only as far as
//! counting needs (see [`Export`]): no span or log record is decoded.

use std::convert::Infallible;
use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use futures_util::future::BoxFuture;
use prost::Message;
use tokio::net::TcpListener;
use tonic_prost::ProstCodec;

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

/// `ExportTraceServiceRequest` and `ExportLogsServiceRequest` seen only as
/// deep as counting needs. Both have the same shape — field 1 repeats a
/// resource, whose field 2 repeats a scope, whose field 2 repeats the items
/// (spans or log records) — so one skeleton reads both. prost skips every
/// other field as unknown.
#[derive(Clone, PartialEq, Message)]
struct Export {
    #[prost(message, repeated, tag = "1")]
    resources: Vec<ResourceItems>,
}

/// `ResourceSpans` / `ResourceLogs`: the scopes of one resource.
#[derive(Clone, PartialEq, Message)]
struct ResourceItems {
    #[prost(message, repeated, tag = "2")]
    scopes: Vec<ScopeItems>,
}

/// `ScopeSpans` / `ScopeLogs`: the items of one instrumentation scope, each
/// kept as its encoded bytes — a slice of the received buffer, neither
/// copied nor looked into (decoding them as empty messages instead would
/// step over each of their fields).
#[derive(Clone, PartialEq, Message)]
struct ScopeItems {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    items: Vec<Bytes>,
}

/// The answer to an export: `ExportTraceServiceResponse` and
/// `ExportLogsServiceResponse` without their optional `partial_success`,
/// which is what full success looks like on the wire (no bytes).
#[derive(Clone, PartialEq, Message)]
struct Accepted {}

impl Export {
    fn item_count(&self) -> u64 {
        let items: usize = self
            .resources
            .iter()
            .flat_map(|resource| &resource.scopes)
            .map(|scope| scope.items.len())
            .sum();
        items as u64
    }
}

/// What an export carries.
#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Logs,
}

/// What has arrived so far.
#[derive(Default)]
struct Counts {
    exports: AtomicU64,
    spans: AtomicU64,
    logs: AtomicU64,
}

impl Counts {
    fn record(&self, signal: Signal, export: &Export) {
        let items = match signal {
            Signal::Traces => &self.spans,
            Signal::Logs => &self.logs,
        };
        self.exports.fetch_add(1, Ordering::Relaxed);
        items.fetch_add(export.item_count(), Ordering::Relaxed);
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "exports": self.exports.load(Ordering::Relaxed),
            "spans": self.spans.load(Ordering::Relaxed),
            "logs": self.logs.load(Ordering::Relaxed),
        })
    }
}

/// The unary gRPC method `Export` of the trace or logs collector service,
/// framed and decoded by tonic as a generated server would.
#[derive(Clone)]
struct GrpcExport {
    counts: Arc<Counts>,
    signal: Signal,
}

impl tower::Service<axum::http::Request<Body>> for GrpcExport {
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<Body>) -> Self::Future {
        let Self { counts, signal } = self.clone();
        let export = tower::service_fn(move |export: tonic::Request<Export>| {
            counts.record(signal, export.get_ref());
            ready(Ok::<_, tonic::Status>(tonic::Response::new(Accepted {})))
        });
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Accepted, Export>::default());
            Ok(grpc.unary(export, request).await)
        })
    }
}

async fn http_export(
    State(counts): State<Arc<Counts>>,
    signal: Signal,
    body: Bytes,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let export = Export::decode(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    counts.record(signal, &export);
    Ok(Accepted {}.encode_to_vec())
}

/// One app for both ports: gRPC requests are HTTP/2 POSTs to the method's
/// path, so they route like the HTTP/protobuf ones.
fn app(counts: Arc<Counts>) -> Router {
    let grpc = |signal| GrpcExport {
        counts: counts.clone(),
        signal,
    };
    Router::new()
        .route_service(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            grpc(Signal::Traces),
        )
        .route_service(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            grpc(Signal::Logs),
        )
        .route(
            "/v1/traces",
            post(|counts: State<Arc<Counts>>, body: Bytes| {
                http_export(counts, Signal::Traces, body)
            }),
        )
        .route(
            "/v1/logs",
            post(|counts: State<Arc<Counts>>, body: Bytes| http_export(counts, Signal::Logs, body)),
        )
        .route(
            "/stats",
            get(|State(counts): State<Arc<Counts>>| async move { Json(counts.snapshot()) }),
        )
        .with_state(counts.clone())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let grpc = TcpListener::bind(("127.0.0.1", cli.grpc_port))
        .await
        .context("binding the gRPC port")?;
    let http = TcpListener::bind(("127.0.0.1", cli.http_port))
        .await
        .context("binding the HTTP port")?;
    let grpc_addr: SocketAddr = grpc.local_addr()?;
    let http_addr: SocketAddr = http.local_addr()?;
    println!("otlp-sink grpc=http://{grpc_addr} http=http://{http_addr}");

    let app = app(Arc::new(Counts::default()));
    tokio::select! {
        served = axum::serve(grpc, app.clone()) => served.context("the gRPC server")?,
        served = axum::serve(http, app) => served.context("the HTTP server")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
