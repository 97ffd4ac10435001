//! Text for the terminal: one trace as a waterfall, recent traces as a list.
//! Colour is plain ANSI, only when [`Style::color`] says so (the binary
//! decides from the terminal), so the text is the same minus the escapes.

use std::fmt::Write as _;

use crate::otlp::{LogLine, Span, StatusCode};
use crate::trace::{Row, Trace};

/// How to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours: services told apart, errors in red.
    pub color: bool,
    /// Columns of the timeline bar, which spans the whole trace.
    pub bar_width: usize,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
/// Cyan, magenta, yellow, blue, green: one per service, in order of appearance.
const SERVICE_COLORS: [&str; 5] = ["\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[34m", "\x1b[32m"];

/// The trace as a waterfall: a header line, then one line per span, indented
/// two spaces per level under its parent, with its kind, start offset and
/// duration in ms, a bar placed on the trace's timeline, and its status when
/// it is set. Under each span, one level deeper, the log lines written in
/// it; the lines of no span in the trace last, under a heading of their own.
pub fn waterfall(trace: &Trace, style: &Style) -> String {
    let rows = trace.rows();
    let services = trace.services();
    let total = trace.duration_nanos();
    let trace_start = trace.start_unix_nano();
    let span_logs = trace.span_logs();
    let mut out = String::new();

    let roots = rows.iter().filter(|row| row.depth == 0).count();
    let logs = match trace.logs.len() {
        0 => String::new(),
        n => format!("  ·  {n} log line{}", plural(n)),
    };
    let header = format!(
        "trace {}  ·  {} span{}{logs}  ·  {} service{}  ·  {} ms  ·  started {}{}",
        trace.trace_id,
        rows.len(),
        plural(rows.len()),
        services.len(),
        plural(services.len()),
        millis(total),
        utc(trace.start_unix_nano()),
        if roots > 1 {
            format!("  ·  {roots} roots (parents not in the files)")
        } else {
            String::new()
        },
    );
    writeln!(out, "{}\n", paint(&header, BOLD, style)).unwrap();

    let label_width = rows
        .iter()
        .map(|row| label_width(row))
        .max()
        .unwrap_or(0)
        .max("SPAN".len());
    let column_header = format!(
        "{:<label_width$}  {:<8}  {:>10}  {:>10}  {:<bar$}  STATUS",
        "SPAN",
        "KIND",
        "START ms",
        "DUR ms",
        "TIMELINE",
        bar = style.bar_width + 2,
    );
    writeln!(out, "{}", paint(column_header.trim_end(), DIM, style)).unwrap();

    for row in &rows {
        let span = row.span;
        let service_color = services
            .iter()
            .position(|s| *s == span.service)
            .map_or(RESET, |i| SERVICE_COLORS[i % SERVICE_COLORS.len()]);
        let error = span.status.code == StatusCode::Error;
        let status = match span.status.code {
            StatusCode::Unset => String::new(),
            StatusCode::Ok => paint("ok", DIM, style),
            StatusCode::Error => paint(&error_status(span), RED, style),
        };
        let padding = label_width - self::label_width(row);
        let line = format!(
            "{indent}{service} {name}{pad}  {kind:<8}  {offset:>10}  {duration:>10}  │{bar}│  {status}",
            indent = "  ".repeat(row.depth),
            service = paint(&span.service, service_color, style),
            name = span.name,
            pad = " ".repeat(padding),
            kind = span.kind.as_str(),
            offset = millis(row.offset_nanos),
            duration = millis(row.duration_nanos),
            bar = paint(
                &bar(row.offset_nanos, row.duration_nanos, total, style.bar_width),
                if error { RED } else { service_color },
                style
            ),
        );
        writeln!(out, "{}", line.trim_end()).unwrap();
        for log in span_logs.of(&span.span_id) {
            let text = log_text(log, trace_start, false);
            write_log_line(&mut out, &text, row.depth + 1, style);
        }
    }
    if !span_logs.other.is_empty() {
        let heading = "other log lines (not in a span of this trace)";
        writeln!(out, "\n{}", paint(heading, DIM, style)).unwrap();
        for log in &span_logs.other {
            write_log_line(&mut out, &log_text(log, trace_start, true), 1, style);
        }
    }
    out
}

/// `· +12.345 ms INFO event published queue=ping-requests`: the offset from
/// the trace's start, the service when `with_service` (a line under no span
/// has nothing else to say where it comes from), the severity, the body and
/// the attributes, each escaped ([`escape`]).
fn log_text(log: &LogLine, trace_start: u64, with_service: bool) -> String {
    let mut text = format!("· {} ms", signed_offset(log.time_unix_nano, trace_start));
    if with_service {
        write!(text, " {}", escape(&log.service)).unwrap();
    }
    write!(text, " {}", escape(&log.severity)).unwrap();
    if !log.body.is_empty() {
        write!(text, " {}", escape(&log.body)).unwrap();
    }
    for (key, value) in &log.attributes {
        write!(text, " {}={}", escape(key), escape(value)).unwrap();
    }
    text
}

/// A log line, indented two spaces per level and dimmed: it is detail
/// under the span rows.
fn write_log_line(out: &mut String, text: &str, depth: usize, style: &Style) {
    writeln!(out, "{}{}", "  ".repeat(depth), paint(text, DIM, style)).unwrap();
}

/// `text` with every control character escaped, and the characters that
/// break or reorder a line without being controls (line and paragraph
/// separators, bidi overrides): `\n`, `\r`, `\t` by name, the others as
/// `\u{..}`, as the services escape their own log lines. A log record
/// holds client input; escaped, it stays one line and cannot restyle the
/// terminal.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if needs_escape(c) => write!(escaped, "\\u{{{:x}}}", u32::from(c)).unwrap(),
            c => escaped.push(c),
        }
    }
    escaped
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The newest `limit` traces, newest first: id, start, span count, duration
/// and the root span, then how many older ones were left out.
pub fn list(traces: &[Trace], limit: usize, style: &Style) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<32}  {:<27}  {:>5}  {:>10}  ROOT",
        "TRACE ID", "STARTED", "SPANS", "DUR ms"
    );
    writeln!(out, "{}", paint(&header, DIM, style)).unwrap();
    for trace in traces.iter().take(limit) {
        let root = trace
            .root()
            .map(|span| format!("{} {}", span.service, span.name))
            .unwrap_or_default();
        let errors = trace
            .spans
            .iter()
            .filter(|span| span.status.code == StatusCode::Error)
            .count();
        let errors = if errors > 0 {
            paint(&format!("  ({errors} error{})", plural(errors)), RED, style)
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:<32}  {:<27}  {:>5}  {:>10}  {root}{errors}",
            trace.trace_id,
            utc(trace.start_unix_nano()),
            trace.spans.len(),
            millis(trace.duration_nanos()),
        )
        .unwrap();
    }
    if traces.len() > limit {
        let older = traces.len() - limit;
        let note = format!(
            "… and {older} older trace{} (--limit to see more)",
            plural(older)
        );
        writeln!(out, "{}", paint(&note, DIM, style)).unwrap();
    }
    out
}

/// `ERROR: <message>`; without a message, what the span's error event or
/// attributes say instead.
fn error_status(span: &Span) -> String {
    if !span.status.message.is_empty() {
        return format!("ERROR: {}", span.status.message);
    }
    if let Some(event) = &span.error_event {
        return format!("ERROR: {event}");
    }
    match (&span.error_type, &span.http_status_code) {
        (Some(error_type), _) => format!("ERROR ({error_type})"),
        (None, Some(code)) => format!("ERROR (HTTP {code})"),
        (None, None) => "ERROR".to_owned(),
    }
}

/// The row's label as printed, indent included, without colour.
fn label_width(row: &Row<'_>) -> usize {
    2 * row.depth + row.span.service.chars().count() + 1 + row.span.name.chars().count()
}

/// `width` columns with the span's share of the trace filled: from its start
/// (rounded down) to its end (rounded up), at least one column so that the
/// shortest span still shows where it happened.
fn bar(offset: u64, duration: u64, total: u64, width: usize) -> String {
    if width == 0 {
        return String::new();
    }
    let (from, to) = if total == 0 {
        (0, width)
    } else {
        let scale = |nanos: u64, round_up: bool| {
            let scaled = u128::from(nanos) * width as u128;
            let total = u128::from(total);
            let column = if round_up {
                scaled.div_ceil(total)
            } else {
                scaled / total
            };
            usize::try_from(column).unwrap_or(usize::MAX).min(width)
        };
        let from = scale(offset, false).min(width - 1);
        let to = scale(offset.saturating_add(duration), true).max(from + 1);
        (from, to)
    };
    format!(
        "{}{}{}",
        " ".repeat(from),
        "█".repeat(to - from),
        " ".repeat(width - to)
    )
}

/// `+1.234` from `start` to `time` in ms, `-1.234` when `time` is earlier:
/// a log line stamped before its trace's first span says so rather than
/// passing for its start.
fn signed_offset(time: u64, start: u64) -> String {
    match time.checked_sub(start) {
        Some(after) => format!("+{}", millis(after)),
        None => format!("-{}", millis(start - time)),
    }
}

fn millis(nanos: u64) -> String {
    format!("{:.3}", nanos as f64 / 1e6)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn paint(text: &str, code: &str, style: &Style) -> String {
    if style.color {
        format!("{code}{text}{RESET}")
    } else {
        text.to_owned()
    }
}

/// `2025-01-31 12:34:56.789 UTC`, without a date crate: the days since the
/// epoch turned into a civil date (Howard Hinnant's `civil_from_days`).
pub fn utc(unix_nano: u64) -> String {
    let millis = unix_nano / 1_000_000;
    let secs = millis / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;

    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);

    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        // 2000-02-29 (a leap day in a century leap year) 23:59:59.999
        assert_eq!(utc(951_868_799_999_000_000), "2000-02-29 23:59:59.999 UTC");
        assert_eq!(
            utc(1_735_689_600_000_000_000),
            "2025-01-01 00:00:00.000 UTC"
        );
    }

    #[test]
    fn escape_keeps_a_record_on_one_line() {
        assert_eq!(escape("plain café"), "plain café");
        assert_eq!(
            escape("a\nb\r\tc\x1b[31md\u{7f}\u{2028}\u{202e}"),
            "a\\nb\\r\\tc\\u{1b}[31md\\u{7f}\\u{2028}\\u{202e}"
        );
    }

    #[test]
    fn log_offsets_are_signed() {
        assert_eq!(signed_offset(1_500_000, 1_000_000), "+0.500");
        assert_eq!(signed_offset(1_000_000, 1_000_000), "+0.000");
        assert_eq!(signed_offset(1_000_000, 3_000_000), "-2.000");
    }

    #[test]
    fn bar_places_the_span_on_the_timeline() {
        assert_eq!(bar(0, 100, 100, 10), "██████████");
        assert_eq!(bar(50, 20, 100, 10), "     ██   ");
        // Shorter than one column: still one column, where it starts.
        assert_eq!(bar(99, 0, 100, 10), "         █");
        assert_eq!(bar(0, 0, 0, 4), "████");
    }
}
