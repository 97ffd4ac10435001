//! Traces, logs and their export, set up the same way in every binary.
//!
//! - Logs go to stdout: human-readable, or one JSON object per line with
//!   `LOG_FORMAT=json`; `RUST_LOG` filters them (default `info`). Lines
//!   written inside a traced request carry its `trace_id` and `span_id`
//!   (log_line.rs).
//! - Spans and logs are exported over OTLP when an endpoint is configured
//!   through the standard `OTEL_EXPORTER_OTLP_*` variables (gRPC or
//!   HTTP/protobuf by `OTEL_EXPORTER_OTLP_PROTOCOL`), in batches on the SDK's
//!   own threads, so requests never wait on the collector.
//! - With `TRACE_FILE_DIR` set, spans and log records are also written as
//!   OTLP JSON lines to `<dir>/<service>.jsonl` and
//!   `<dir>/<service>.logs.jsonl`, for `bin/trace` when no collector runs.
//! - With neither, no OpenTelemetry layer is installed at all: nothing is
//!   exported and nothing is slowed.
//!
//! `OTEL_SDK_DISABLED=true` turns all export off; `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER(_ARG)` are honoured.

mod export;
mod file;
pub mod hop;
mod log_line;
pub mod propagation;
mod protobuf;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config;

pub use hop::HopSpan;

/// The target of the `info` line each of five steps of a request writes
/// inside its span (accepted, published, handled, called back, answered),
/// so a request's story can be read by its trace id. `RUST_LOG=info,hop=warn`
/// quiets them and keeps every other line.
pub const HOP_TARGET: &str = "hop";

/// Flushes and stops the exporters when the service is done.
#[must_use = "call shutdown() at exit, or spans still in the batch are lost"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    logger_provider: Option<SdkLoggerProvider>,
}

impl Telemetry {
    /// Flushes what is batched and stops the exporters. The SDK's shutdown
    /// blocks, so it runs on the blocking pool.
    pub async fn shutdown(self) {
        let flushed = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = self.tracer_provider
                && let Err(error) = tracer.shutdown()
            {
                eprintln!("flushing spans at shutdown: {error}");
            }
            if let Some(logger) = self.logger_provider
                && let Err(error) = logger.shutdown()
            {
                eprintln!("flushing logs at shutdown: {error}");
            }
        })
        .await;
        if let Err(error) = flushed {
            eprintln!("telemetry shutdown task failed: {error}");
        }
    }
}

/// Where spans and logs go, as the environment says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ExportPlan {
    otlp_traces: bool,
    otlp_logs: bool,
    trace_file_dir: Option<String>,
}

impl ExportPlan {
    fn from_env() -> Self {
        let disabled =
            config::var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if disabled {
            return Self::default();
        }
        let endpoint = config::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let wanted = |exporter_var: &str| {
            config::var(exporter_var).is_none_or(|v| !v.eq_ignore_ascii_case("none"))
        };
        Self {
            otlp_traces: (endpoint || config::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
                && wanted("OTEL_TRACES_EXPORTER"),
            otlp_logs: (endpoint || config::var("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").is_some())
                && wanted("OTEL_LOGS_EXPORTER"),
            trace_file_dir: config::var("TRACE_FILE_DIR"),
        }
    }

    fn traces(&self) -> bool {
        self.otlp_traces || self.trace_file_dir.is_some()
    }

    fn logs(&self) -> bool {
        self.otlp_logs || self.trace_file_dir.is_some()
    }
}

/// Installs the global subscriber. Call once, first thing in
/// `main`, inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(service_name: &str) -> Telemetry {
    // The exporters below create their failure counters: the recorder first.
    crate::metrics::handle();
    let plan = ExportPlan::from_env();
    let resource = resource(service_name);

    let tracer_provider = plan.traces().then(|| {
        let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
        if plan.otlp_traces {
            builder = export::with_otlp_spans(builder);
        }
        if let Some(dir) = &plan.trace_file_dir {
            match file::JsonLinesSpanExporter::create(dir, service_name) {
                Ok(exporter) => builder = builder.with_batch_exporter(exporter),
                Err(error) => eprintln!("trace file export disabled: {error}"),
            }
        }
        builder.build()
    });
    let logger_provider = plan.logs().then(|| {
        let mut builder = SdkLoggerProvider::builder().with_resource(resource.clone());
        if plan.otlp_logs {
            builder = export::with_otlp_logs(builder);
        }
        if let Some(dir) = &plan.trace_file_dir {
            match file::JsonLinesLogExporter::create(dir, service_name) {
                Ok(exporter) => builder = builder.with_batch_exporter(exporter),
                Err(error) => eprintln!("log file export disabled: {error}"),
            }
        }
        builder.build()
    });

    let json = config::var("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let stdout = if json {
        tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(log_line::WithTraceId::json(
                tracing_subscriber::fmt::format()
                    .with_timer(log_line::UtcMicros)
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ))
            .boxed()
    } else {
        // Colours are set on the format, not only on the layer: lines with a
        // trace id are formatted into a buffer first (log_line.rs).
        let ansi = std::io::stdout().is_terminal();
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .fmt_fields(log_line::EscapedFields)
            .event_format(log_line::WithTraceId::text(
                tracing_subscriber::fmt::format()
                    .with_timer(log_line::UtcMicros)
                    .with_ansi(ansi),
            ))
            .boxed()
    };
    // The stdout layer takes events only (log_line.rs says why), so when
    // nothing is exported no layer wants spans and they cost next to nothing.
    let stdout = stdout.with_filter(filter_fn(|metadata| metadata.is_event()));
    // Exported spans and logs are the platform's own: the exporters' HTTP and
    // gRPC stacks must not feed their logs back into the export they are
    // performing, and lapin's connection-long `io_loop` span is not a
    // request.
    let directives = config::string_or("RUST_LOG", "info");
    let exported = || {
        EnvFilter::new(format!(
            "{directives},lapin=off,amq_protocol=off,hyper=off,hyper_util=off,h2=off,tonic=off,tower=off,reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off"
        ))
    };
    let traces = tracer_provider.as_ref().map(|provider| {
        span_layer(provider.tracer(service_name.to_owned())).with_filter(exported())
    });
    let logs = logger_provider.as_ref().map(|provider| {
        log_line::InSpanContext::new(OpenTelemetryTracingBridge::new(provider))
            .with_filter(exported())
    });
    let filter = EnvFilter::new(directives);
    tracing_subscriber::registry()
        .with(filter)
        .with(stdout)
        .with(traces)
        .with(logs)
        .init();
    tracing::info!(
        service = service_name,
        otlp_traces = plan.otlp_traces,
        otlp_logs = plan.otlp_logs,
        trace_file_dir = plan.trace_file_dir.as_deref().unwrap_or("-"),
        "starting"
    );
    Telemetry {
        tracer_provider,
        logger_provider,
    }
}

/// The layer that exports the spans handlers make with `tracing`, set up
/// as in every service, with `tracer` also installed for the hop spans
/// (`hop`): one tracer for both, so they share a trace. Tests that keep
/// spans in memory build their subscriber with it too.
pub fn span_layer<S>(tracer: SdkTracer) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    hop::install_tracer(tracer.clone());
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_error_events_to_status(true)
        // Busy/idle time per span costs a clock read at every poll;
        // activating a span's OpenTelemetry context at every poll is for
        // other OpenTelemetry instrumentation to see it (hops read a span's
        // context from the span itself, and the log bridge gets it per
        // event); source locations, thread and target attributes are six
        // more attributes on every span, to build, export and store, that
        // no dashboard or query reads.
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
}

/// Marks `span` as failed, with `message` as its status description. The
/// span must declare `otel.status_code` and `otel.status_description`.
pub fn record_error(span: &tracing::Span, message: impl std::fmt::Display) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message.to_string());
}

/// The resource from the environment, named `service_name` unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names it.
fn resource(service_name: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::new("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_attribute(KeyValue::new("service.name", service_name.to_owned()))
            .build()
    }
}
