//! Log lines on stdout that name the trace they were written in.
//!
//! The stdout layer sees events only, never spans: formatting every span's
//! fields when the span opens (what a fmt layer does for the spans it sees)
//! is a measurable share of each service's CPU with tracing on
//! (BENCHMARKS.md), for fields that nearly no line ever shows. A line
//! written inside a traced
//! request still carries the request's trace id, read when, and only when,
//! a line is written, from the open `tracing` span if there is one, else
//! from the hop being polled (`hop::current_context`). The current one, not an
//! event's explicit `parent:`: log inside the span (`span.in_scope(..)`)
//! for the line to carry its trace.
//!
//! Log records exported over OTLP get theirs the same way
//! ([`InSpanContext`]): `tracing` spans do not make their OpenTelemetry
//! context current when entered (that would be work at every poll of
//! every instrumented future).

use std::fmt::{self, Write as _};

use opentelemetry::trace::{TraceContextExt, TraceId};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A layer (the OTLP log bridge) that is handed each event with the
/// current span's OpenTelemetry context active, so the record it makes
/// carries the span's trace and span ids. Only events are passed on: the
/// bridge, as configured here, does nothing with spans.
pub(super) struct InSpanContext<L> {
    inner: L,
}

impl<L> InSpanContext<L> {
    pub(super) fn new(inner: L) -> Self {
        Self { inner }
    }
}

impl<S, L> Layer<S> for InSpanContext<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let _active = super::hop::current_context().attach();
        self.inner.on_event(event, ctx);
    }
}

/// An event format that adds `trace_id` to the lines `inner` writes.
pub(super) struct WithTraceId<F> {
    inner: F,
    json: bool,
}

impl<F> WithTraceId<F> {
    /// Around a text format: ` trace_id=…` ends the line.
    pub(super) fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    /// Around a JSON format: `"trace_id"` is the object's first field.
    pub(super) fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some(trace_id) = current_trace_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&add_trace_id(&line, trace_id, self.json))
    }
}

/// The trace of the span the current line is written in, if it is traced.
fn current_trace_id() -> Option<TraceId> {
    if !super::hop::enabled() {
        return None;
    }
    let trace_id = super::hop::current_context()
        .span()
        .span_context()
        .trace_id();
    (trace_id != TraceId::INVALID).then_some(trace_id)
}

/// `line`, one formatted log line, with `trace_id` added: as the first
/// field of a JSON object (a line that is not a non-empty object is left
/// as it is), or as the last `key=value` of a text line.
fn add_trace_id(line: &str, trace_id: TraceId, json: bool) -> String {
    let mut out = String::with_capacity(line.len() + 48);
    if json {
        match line.strip_prefix('{') {
            Some(fields) if !fields.trim_start().starts_with('}') => {
                let _ = write!(out, "{{\"trace_id\":\"{trace_id}\",{fields}");
            }
            _ => out.push_str(line),
        }
    } else {
        let text = line.strip_suffix('\n').unwrap_or(line);
        let _ = writeln!(out, "{text} trace_id={trace_id}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn trace_id() -> TraceId {
        TraceId::from_hex(TRACE).unwrap()
    }

    #[test]
    fn json_lines_get_a_trace_id_field() {
        let line = "{\"timestamp\":\"t\",\"level\":\"DEBUG\",\"message\":\"event published\"}\n";
        let out = add_trace_id(line, trace_id(), true);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["trace_id"], TRACE);
        assert_eq!(parsed["message"], "event published");
        assert!(out.ends_with("}\n"));
    }

    #[test]
    fn json_that_is_not_a_non_empty_object_is_left_alone() {
        for line in ["{}\n", "[1]\n", "not json\n"] {
            assert_eq!(add_trace_id(line, trace_id(), true), line);
        }
    }

    #[test]
    fn text_lines_end_with_the_trace_id() {
        let line = "2026-11-30T00:00:00Z  INFO dispatcher: event published queue=\"q\"\n";
        assert_eq!(
            add_trace_id(line, trace_id(), false),
            format!(
                "2026-11-30T00:00:00Z  INFO dispatcher: event published queue=\"q\" trace_id={TRACE}\n"
            )
        );
    }

    #[test]
    fn outside_a_span_there_is_no_trace() {
        assert_eq!(current_trace_id(), None);
    }
}
