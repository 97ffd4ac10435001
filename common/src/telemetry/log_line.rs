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
//! Every line is formatted by `tracing-subscriber`; what this module adds
//! is written without going through `fmt` machinery where that is the
//! cost: the ids in hex from a table, the timestamp's date and time of day
//! once a second ([`UtcMicros`]), fields escaped as they are written.
//!
//! Log records exported over OTLP get theirs the same way
//! ([`InSpanContext`]): `tracing` spans do not make their OpenTelemetry
//! context current when entered (that would be work at every poll of
//! every instrumented future).

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
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
        LINE.with_borrow_mut(|line| {
            line.clear();
            // One huge line must not keep its buffer for the thread's life.
            line.shrink_to(LINE_CAPACITY);
            self.inner.format_event(ctx, Writer::new(line), event)?;
            write_with_ids(&mut writer, line, ids, self.json)
        })
    }
}

/// Field formatting that escapes every control character in the fields,
/// and the characters that break or reorder a line without being controls
/// (line and paragraph separators, bidi overrides): `\n`, `\r`, `\t` by
/// name, the others as `\u{..}`.
pub(super) struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes fields as `tracing-subscriber`'s default visitor does (the
/// message bare, then `name=value` with values as `Debug`, an error's
/// sources after it; no terminal styling of the names), each value
/// escaped as it is written: one pass, no buffer.
struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    /// The error, then its sources as `<name>.sources=[..]`.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
        let mut sources = std::iter::successors(value.source(), |error| error.source()).peekable();
        if sources.peek().is_some() && self.result.is_ok() {
            let name = field.name().strip_prefix("r#").unwrap_or(field.name());
            let mut out = Escaping(&mut self.writer);
            self.result = write!(out, " {name}.sources=[").and_then(|()| {
                for (at, source) in sources.enumerate() {
                    let separator = if at == 0 { "" } else { ", " };
                    write!(out, "{separator}{source}")?;
                }
                out.write_str("]")
            });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Lines bridged from the `log` crate carry their metadata as fields.
        if name.starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let mut out = Escaping(&mut self.writer);
        self.result = if name == "message" {
            write!(out, "{separator}{value:?}")
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(out, "{separator}{name}={value:?}")
        };
    }
}

/// Escapes what passes through it on its way to the writer.
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.0, text)
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

thread_local! {
    /// The line being formatted, kept between lines of the thread.
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(LINE_CAPACITY));
}

/// What the per-thread line buffer keeps between lines.
const LINE_CAPACITY: usize = 1024;

/// Writes `line`, one formatted log line, to `out` with the trace and
/// span ids added: as the first fields of a JSON object (a line that is
/// not a non-empty object is written as it is), or as the last
/// `key=value`s of a text line.
fn write_with_ids(
    out: &mut impl fmt::Write,
    line: &str,
    (trace_id, span_id): (TraceId, SpanId),
    json: bool,
) -> fmt::Result {
    let mut trace_hex = [0; 32];
    let mut span_hex = [0; 16];
    let trace_id = hex(&trace_id.to_bytes(), &mut trace_hex);
    let span_id = hex(&span_id.to_bytes(), &mut span_hex);
    if json {
        match line.strip_prefix('{') {
            Some(fields) if !fields.trim_start().starts_with('}') => {
                out.write_str("{\"trace_id\":\"")?;
                out.write_str(trace_id)?;
                out.write_str("\",\"span_id\":\"")?;
                out.write_str(span_id)?;
                out.write_str("\",")?;
                out.write_str(fields)
            }
            _ => out.write_str(line),
        }
    } else {
        out.write_str(line.strip_suffix('\n').unwrap_or(line))?;
        out.write_str(" trace_id=")?;
        out.write_str(trace_id)?;
        out.write_str(" span_id=")?;
        out.write_str(span_id)?;
        out.write_str("\n")
    }
}

/// `bytes` in lowercase hex, written into `out` (twice their length).
fn hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    hex::encode_to_slice(bytes, out).expect("room for two digits a byte");
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// Timestamps as `tracing-subscriber`'s default writes them (RFC 3339,
/// UTC, microseconds: `2026-12-02T16:35:00.123456Z`), with the date and
/// time of day formatted once a second per thread instead of for every
/// line.
pub(super) struct UtcMicros;

impl FormatTime for UtcMicros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        write_utc(w, now.as_secs(), now.subsec_micros())
    }
}

thread_local! {
    /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

fn write_utc(out: &mut impl fmt::Write, secs: u64, micros: u32) -> fmt::Result {
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = date_time(secs);
        SECOND.set((secs, text));
    }
    out.write_str(std::str::from_utf8(&text).expect("digits and separators"))?;
    let mut fraction = *b".000000Z";
    let mut rest = micros;
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.write_str(std::str::from_utf8(&fraction).expect("digits"))
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` after the Unix epoch, in UTC (the
/// civil-from-days algorithm of Howard Hinnant's date library).
fn date_time(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day % 3600 / 60);
    put(17, 2, of_day % 60);
    text
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

    fn add_ids(line: &str, ids: (TraceId, SpanId), json: bool) -> String {
        let mut out = String::new();
        write_with_ids(&mut out, line, ids, json).unwrap();
        out
    }

    #[test]
    fn timestamps_are_rfc_3339_utc_with_microseconds() {
        for (secs, micros, expected) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
            (1_764_693_300, 123_456, "2025-12-02T16:35:00.123456Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
        ] {
            let mut out = String::new();
            write_utc(&mut out, secs, micros).unwrap();
            assert_eq!(out, expected);
            // Again, from the cached second.
            out.clear();
            write_utc(&mut out, secs, micros).unwrap();
            assert_eq!(out, expected);
        }
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
        let text = captured_lines(EscapedFields, || {
            let id = "x\n2026-12-02T00:00:00Z  INFO public_web: FAKE admin login ok\u{1b}[2J";
            tracing::warn!(event_id = %id, "no response in time");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("event_id=x\\n2026"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn ordinary_fields_read_as_tracing_subscriber_writes_them() {
        let log = || {
            let r#type = "PingRequest";
            tracing::info!(target: "hop", event_id = %"e-1", r#type, queue = "q", status = 200_u16, ok = true, ms = 1.5, "request accepted");
            tracing::info!(code = ?Some("x"), "no fields but this");
            tracing::info!(message = "a message as a str");
            let error = std::io::Error::other(std::fmt::Error);
            tracing::warn!(
                error = &error as &(dyn std::error::Error + 'static),
                "failed"
            );
        };
        let ours = captured_lines(EscapedFields, log);
        let theirs = captured_lines(tracing_subscriber::fmt::format::DefaultFields::new(), log);
        assert_eq!(ours, theirs);
        assert!(ours.contains("hop: request accepted event_id=e-1 type=\"PingRequest\" queue=\"q\" status=200 ok=true ms=1.5"), "{ours}");
    }

    /// What a text layer with `fields` writes (no timestamps, no colours)
    /// for the events `log` makes.
    fn captured_lines<N>(fields: N, log: impl FnOnce()) -> String
    where
        N: for<'a> FormatFields<'a> + Send + Sync + 'static,
    {
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
                .without_time()
                .fmt_fields(fields)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn outside_a_span_there_is_no_trace() {
        assert_eq!(current_ids(), None);
    }
}
