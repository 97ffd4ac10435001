//! The spans of a request's hops: SERVER and CLIENT for each HTTP call,
//! PRODUCER and CONSUMER for each AMQP message — nine per ping, the ones
//! Tempo's service graph pairs.
//!
//! They are made with the OpenTelemetry API directly, not as `tracing`
//! spans bridged by `tracing-opentelemetry`: that bridge keeps a registry
//! slot, an extension map and a builder per span, formats every field into
//! a string attribute and runs three layers' bookkeeping at each poll of an
//! instrumented future, several times what a hop needs (BENCHMARKS.md
//! has the measurements). A hop span is started once, with its
//! attributes, and its context is made current only while its future is
//! polled.
//!
//! `tracing` stays what handlers use for their own spans and for logs: a
//! handler's `tracing` span opened inside a hop is the hop's child, and a
//! hop opened inside a handler's span is that span's child. Which context
//! a new hop, a log line or an exported log record belongs to is
//! [`current_context`]: the open `tracing` span's if there is one, else
//! the hop being polled. So nest a handler's spans inside hops, not around
//! them, and open no hop or span inside a hop that is itself inside a
//! handler's span (it would be the handler span's child, not the hop's).
//!
//! A hop's failure is its status plus an `exception` event carrying the
//! message, so a span that fails twice keeps both causes (the SDK keeps
//! one status description). Other log lines written inside a hop are not
//! copied onto it as events: they are exported as log records with the
//! hop's trace id.
//!
//! With tracing off no tracer is installed: no span is made, no trace
//! context is read or written, and the attribute closures never run.

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use pin_project_lite::pin_project;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Makes `tracer` the one hop spans are started with (once per process;
/// later calls are ignored). `telemetry::init` calls it when spans are
/// exported; tests that install their own provider call it themselves.
pub fn install_tracer(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// Whether hop spans are made (a tracer is installed).
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The trace context a new hop or log record belongs to: the current
/// `tracing` span's, when a handler's span is open, else the hop being
/// polled.
pub fn current_context() -> Context {
    let span = tracing::Span::current();
    if !span.is_none() {
        let context = span.context();
        if context.span().span_context().is_valid() {
            return context;
        }
    }
    Context::current()
}

/// A hop's span, ended when the last of it (this or a future it
/// instruments) is dropped.
#[derive(Debug)]
#[must_use = "a hop span ends when dropped"]
pub struct HopSpan {
    /// The parent's context with this span in it; `None` with tracing off.
    context: Option<Context>,
}

impl HopSpan {
    /// Starts a span `name` of `kind`, a child of `parent`, with
    /// `attributes`. The closures run only when tracing is on, and
    /// `attributes` only when the span is sampled.
    pub fn start(
        name: impl FnOnce() -> Cow<'static, str>,
        kind: SpanKind,
        parent: impl FnOnce() -> Context,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        let Some(tracer) = TRACER.get() else {
            return Self { context: None };
        };
        let parent = parent();
        let mut span = tracer
            .span_builder(name())
            .with_kind(kind)
            .start_with_context(tracer, &parent);
        // After the sampler, not given to it: the samplers the SDK reads
        // from the environment decide by trace id and parent alone, and a
        // span it drops then builds no attributes.
        if span.is_recording() {
            span.set_attributes(attributes());
        }
        Self {
            context: Some(parent.with_span(span)),
        }
    }

    /// The span's context, to inject into an outgoing message; `None`
    /// with tracing off.
    pub fn context(&self) -> Option<&Context> {
        self.context.as_ref()
    }

    /// The trace the span belongs to, when tracing is on.
    pub fn trace_id(&self) -> Option<TraceId> {
        let trace_id = self.context.as_ref()?.span().span_context().trace_id();
        (trace_id != TraceId::INVALID).then_some(trace_id)
    }

    /// Adds an attribute, built only when the span is recorded.
    pub fn set_attribute(&self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(context) = &self.context {
            context.span().set_attribute(attribute());
        }
    }

    /// Marks the span as failed, `message` saying why.
    pub fn record_error(&self, message: impl Display) {
        if let Some(context) = &self.context {
            fail(context, message);
        }
    }

    /// Runs `f` with the span current (for log lines that name its trace).
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _current = self.context.clone().map(Context::attach);
        f()
    }

    /// `future`, with the span current whenever it is polled. (Not
    /// `instrument`: `tracing::Instrument` gives every type a method of
    /// that name.)
    pub fn scope<F: Future>(&self, future: F) -> InHop<F> {
        InHop {
            inner: future,
            context: self.context.clone(),
        }
    }
}

/// Marks the hop being polled as failed (a handler's error or a
/// dead-lettered message), `message` saying why.
pub fn record_error_in_current_hop(message: impl Display) {
    if enabled() {
        Context::map_current(|context| fail(context, message));
    }
}

/// Error status and an `exception` event with `message` on the span of
/// `context` (a no-op for a span that is not recorded).
fn fail(context: &Context, message: impl Display) {
    let span = context.span();
    if !span.is_recording() {
        return;
    }
    let message = message.to_string();
    span.add_event(
        "exception",
        vec![KeyValue::new("exception.message", message.clone())],
    );
    span.set_status(Status::error(message));
}

pin_project! {
    /// A future polled inside a hop's span (see [`HopSpan::scope`]).
    pub struct InHop<F> {
        #[pin]
        inner: F,
        context: Option<Context>,
    }
}

impl<F> InHop<F> {
    /// `future` polled outside any hop (a request that is not traced).
    pub(crate) fn untraced(future: F) -> Self {
        Self {
            inner: future,
            context: None,
        }
    }
}

impl<F: Future> Future for InHop<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _current = this.context.clone().map(Context::attach);
        this.inner.poll(cx)
    }
}
