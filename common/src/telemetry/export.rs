//! OTLP exporters built from the standard environment variables, wrapped so
//! that a failing collector is counted on every failure but reported in the
//! log only when it starts and when it recovers.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry_otlp::{LogExporter, SpanExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::LogBatch;
use opentelemetry_sdk::trace::SpanData;

/// Which telemetry signal an exporter carries (the `signal` label).
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    Traces,
    Logs,
}

impl Signal {
    fn label(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

/// An exporter that counts and reports its failures.
#[derive(Debug)]
pub struct Reported<E> {
    inner: E,
    signal: Signal,
    failing: AtomicBool,
}

impl<E> Reported<E> {
    fn new(inner: E, signal: Signal) -> Self {
        crate::metrics::init_telemetry_export(signal.label());
        Self {
            inner,
            signal,
            failing: AtomicBool::new(false),
        }
    }

    fn observe(&self, result: &OTelSdkResult) {
        let signal = self.signal.label();
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    eprintln!("OTLP {signal} export recovered");
                }
            }
            Err(error) => {
                crate::metrics::telemetry_export_failed(signal);
                // The first failure of a streak is news; the rest only repeat it.
                // stderr, not tracing: an export error logged through tracing
                // would be exported too.
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "OTLP {signal} export failing ({error}); counting further failures in telemetry_export_failures_total"
                    );
                }
            }
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Reported<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter for Reported<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Whether the signal's protocol is gRPC (`OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL`
/// or `OTEL_EXPORTER_OTLP_PROTOCOL`; the spec's default is HTTP/protobuf).
fn is_grpc(signal: Signal) -> bool {
    let specific = format!(
        "OTEL_EXPORTER_OTLP_{}_PROTOCOL",
        signal.label().to_uppercase()
    );
    crate::config::var(&specific)
        .or_else(|| crate::config::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .is_some_and(|p| p.trim() == "grpc")
}

/// Builds an exporter. The gRPC one must be built inside the Tokio runtime;
/// the HTTP one owns a blocking reqwest client, which must be built (and so
/// dropped) outside it, on a thread of its own.
fn build<T, E>(signal: Signal, build: fn() -> Result<T, E>) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    if is_grpc(signal) {
        return build().map_err(|e| e.to_string());
    }
    std::thread::spawn(build)
        .join()
        .map_err(|_| "the exporter builder panicked".to_owned())?
        .map_err(|e| e.to_string())
}

pub fn otlp_span_exporter() -> Result<Reported<SpanExporter>, String> {
    build(Signal::Traces, || SpanExporter::builder().build())
        .map(|exporter| Reported::new(exporter, Signal::Traces))
}

pub fn otlp_log_exporter() -> Result<Reported<LogExporter>, String> {
    build(Signal::Logs, || LogExporter::builder().build())
        .map(|exporter| Reported::new(exporter, Signal::Logs))
}
