//! Log lines on stdout that name the trace and span they were written in,
//! and that no logged value can forge.
//!
//! Logged fields carry client input (event ids and types, URLs, error
//! messages). A newline in one would start a line of the attacker's
//! choosing, an escape sequence would rewrite the terminal; so text lines
//! have every control character in their fields escaped
//! ([`EscapedFields`]). JSON lines are escaped by the JSON encoder.
//!
//! The stdout layer sees events only, never spans: formatting every span's
//! fields when the span opens (what a fmt layer does for the spans it sees)
//! is a measurable share of each service's CPU with tracing on
//! (BENCHMARKS.md), for fields that nearly no line ever shows. A line
//! written inside a traced request still carries the request's trace and
//! span ids, read when, and only when, a line is written, from the open
//! `tracing` span if there is one, else from the hop being polled
//! (`hop::current_context`). The current one, not an event's explicit
//! `parent:`: log inside the span (`span.in_scope(..)`) for the line to
//! carry its trace.
//!
//! Log records exported over OTLP get theirs the same way
//! ([`InSpanContext`]): `tracing` spans do not make their OpenTelemetry
//! context current when entered (that would be work at every poll of
//! every instrumented future).

use std::fmt::{self, Write as _};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::field::RecordFields;
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

/// An event format that adds `trace_id` and `span_id` to the lines `inner`
/// writes.
pub(super) struct WithTraceId<F> {
    inner: F,
    json: bool,
}

impl<F> WithTraceId<F> {
    /// Around a text format: ` trace_id=… span_id=…` ends the line.
    pub(super) fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    /// Around a JSON format: `"trace_id"` and `"span_id"` are the object's
    /// first fields.
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
        let Some(ids) = current_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&add_ids(&line, ids, self.json))
    }
}

/// Field formatting that escapes every control character the fields
/// `inner` formats would write, and the characters that break or reorder
/// a line without being controls (line and paragraph separators, bidi
/// overrides): `\n`, `\r`, `\t` by name, the others as `\u{..}`.
pub(super) struct EscapedFields<N>(pub(super) N);

impl<'writer, N> FormatFields<'writer> for EscapedFields<N>
where
    N: for<'a> FormatFields<'a>,
{
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut raw = String::with_capacity(128);
        self.0.format_fields(Writer::new(&mut raw), fields)?;
        write_escaped(&mut writer, &raw)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `text` with its control characters escaped.
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(needs_escape) {
        out.write_str(&rest[..at])?;
        let control = rest[at..].chars().next().expect("found a char there");
        match control {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            other => write!(out, "\\u{{{:x}}}", u32::from(other))?,
        }
        rest = &rest[at + control.len_utf8()..];
    }
    out.write_str(rest)
}

/// The trace and span the current line is written in, if it is traced.
fn current_ids() -> Option<(TraceId, SpanId)> {
    if !super::hop::enabled() {
        return None;
    }
    let context = super::hop::current_context();
    let span = context.span();
    let span = span.span_context();
    span.is_valid().then(|| (span.trace_id(), span.span_id()))
}

/// `line`, one formatted log line, with the trace and span ids added: as
/// the first fields of a JSON object (a line that is not a non-empty
/// object is left as it is), or as the last `key=value`s of a text line.
fn add_ids(line: &str, (trace_id, span_id): (TraceId, SpanId), json: bool) -> String {
    let mut out = String::with_capacity(line.len() + 80);
    if json {
        match line.strip_prefix('{') {
            Some(fields) if !fields.trim_start().starts_with('}') => {
                let _ = write!(
                    out,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{fields}"
                );
            }
            _ => out.push_str(line),
        }
    } else {
        let text = line.strip_suffix('\n').unwrap_or(line);
        let _ = writeln!(out, "{text} trace_id={trace_id} span_id={span_id}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn ids() -> (TraceId, SpanId) {
        (
            TraceId::from_hex(TRACE).unwrap(),
            SpanId::from_hex(SPAN).unwrap(),
        )
    }

    #[test]
    fn json_lines_get_trace_and_span_id_fields() {
        let line = "{\"timestamp\":\"t\",\"level\":\"INFO\",\"message\":\"event published\"}\n";
        let out = add_ids(line, ids(), true);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["trace_id"], TRACE);
        assert_eq!(parsed["span_id"], SPAN);
        assert_eq!(parsed["message"], "event published");
        assert!(out.ends_with("}\n"));
    }

    #[test]
    fn json_that_is_not_a_non_empty_object_is_left_alone() {
        for line in ["{}\n", "[1]\n", "not json\n"] {
            assert_eq!(add_ids(line, ids(), true), line);
        }
    }

    #[test]
    fn text_lines_end_with_the_trace_and_span_ids() {
        let line = "2026-11-30T00:00:00Z  INFO hop: event published queue=\"q\"\n";
        assert_eq!(
            add_ids(line, ids(), false),
            format!(
                "2026-11-30T00:00:00Z  INFO hop: event published queue=\"q\" trace_id={TRACE} span_id={SPAN}\n"
            )
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        write_escaped(
            &mut out,
            "id=x\n2026-12-02T00:00:00Z  INFO public_web: FAKE\u{1b}[2J\r\t\u{85}é\u{2028}\u{202e}",
        )
        .unwrap();
        assert_eq!(
            out,
            "id=x\\n2026-12-02T00:00:00Z  INFO public_web: FAKE\\u{1b}[2J\\r\\t\\u{85}é\\u{2028}\\u{202e}"
        );
    }

    #[test]
    fn a_forged_line_stays_inside_its_field() {
        use tracing_subscriber::fmt::format::DefaultFields;
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .fmt_fields(EscapedFields(DefaultFields::new()))
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let id = "x\n2026-12-02T00:00:00Z  INFO public_web: FAKE admin login ok\u{1b}[2J";
            tracing::warn!(event_id = %id, "no response in time");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("event_id=x\\n2026"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn outside_a_span_there_is_no_trace() {
        assert_eq!(current_ids(), None);
    }
}
