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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use otlp_receiver::{Exports, Ports};
use prost::Message;

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

/// What has arrived so far.
#[derive(Default)]
struct Counts {
    exports: AtomicU64,
    spans: AtomicU64,
    logs: AtomicU64,
}

impl Counts {
    fn record(&self, items: &AtomicU64, export: &Export) {
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

/// Counting is all the sink does with an export.
#[derive(Clone, Default)]
struct Counter(Arc<Counts>);

impl Exports for Counter {
    type Traces = Export;
    type Logs = Export;

    fn traces(&self, export: Export) {
        self.0.record(&self.0.spans, &export);
    }

    fn logs(&self, export: Export) {
        self.0.record(&self.0.logs, &export);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ports = Ports::bind(cli.grpc_port, cli.http_port)
        .await
        .context("binding the sink's ports")?;
    println!(
        "otlp-sink grpc=http://{} http=http://{}",
        ports.grpc_addr(),
        ports.http_addr()
    );
    let counter = Counter::default();
    let app = otlp_receiver::router(counter.clone()).merge(
        Router::new()
            .route(
                "/stats",
                get(|State(counts): State<Arc<Counts>>| async move { Json(counts.snapshot()) }),
            )
            .with_state(counter.0),
    );
    tokio::select! {
        served = ports.serve(app) => served.context("the sink's servers")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
