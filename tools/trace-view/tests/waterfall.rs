//! The waterfall, --last and --list over span and log files built here: a
//! 9-span round trip across three services like the real one, spread over
//! several files and lines the way the services' batches land, plus a newer
//! and an older trace; and log lines under the spans they were written in.

use std::path::PathBuf;

use serde_json::{Value, json};
use trace_view::{Error, Selection, Style, run};

/// 2023-11-14 22:13:20 UTC.
const T0: u64 = 1_700_000_000_000_000_000;
const ROUND_TRIP: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const NEWER: &str = "0af7651916cd43dd8448eb211c80319c";
const OLDER: &str = "11111111111111111111111111111111";

const PLAIN: Style = Style {
    color: false,
    bar_width: 20,
};

/// A span in OTLP JSON, `start_us`/`end_us` in µs after [`T0`], timestamps as
/// strings like OTLP JSON writes them.
fn span(
    trace: &str,
    id: &str,
    parent: &str,
    name: &str,
    kind: u8,
    start_us: u64,
    end_us: u64,
) -> Value {
    json!({
        "traceId": trace,
        "spanId": id,
        "parentSpanId": parent,
        "flags": 257,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": (T0 + start_us * 1000).to_string(),
        "endTimeUnixNano": (T0 + end_us * 1000).to_string(),
        "attributes": [{"key": "thread.id", "value": {"intValue": "2"}}],
        "events": [],
        "status": {"message": "", "code": 0}
    })
}

fn with_error(mut span: Value, message: &str) -> Value {
    span["status"] = json!({"code": 2, "message": message});
    span
}

/// One `ExportTraceServiceRequest` line from `service`.
fn line(service: &str, spans: Vec<Value>) -> String {
    json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [
                    {"key": "telemetry.sdk.language", "value": {"stringValue": "rust"}},
                    {"key": "service.name", "value": {"stringValue": service}}
                ],
                "droppedAttributesCount": 0
            },
            "scopeSpans": [{"scope": {"name": service, "version": ""}, "spans": spans}],
            "schemaUrl": ""
        }]
    })
    .to_string()
}

/// A log record in OTLP JSON, `at_us` in µs after [`T0`]; `attributes` are
/// `(key, AnyValue)` pairs.
fn log_record(
    trace: &str,
    span: &str,
    at_us: u64,
    severity: &str,
    body: &str,
    attributes: &[(&str, Value)],
) -> Value {
    let attributes: Vec<Value> = attributes
        .iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    json!({
        "timeUnixNano": (T0 + at_us * 1000).to_string(),
        "observedTimeUnixNano": (T0 + at_us * 1000 + 7).to_string(),
        "severityNumber": 9,
        "severityText": severity,
        "body": {"stringValue": body},
        "attributes": attributes,
        "droppedAttributesCount": 0,
        "flags": 1,
        "traceId": trace,
        "spanId": span,
        "eventName": ""
    })
}

/// One `ExportLogsServiceRequest` line from `service`.
fn logs_line(service: &str, records: Vec<Value>) -> String {
    json!({
        "resourceLogs": [{
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": service}}],
                "droppedAttributesCount": 0
            },
            "scopeLogs": [{"scope": {"name": "hop"}, "logRecords": records, "schemaUrl": ""}],
            "schemaUrl": ""
        }]
    })
    .to_string()
}

/// A directory removed on drop, unique per test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("trace-view-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, file: &str, lines: &[String]) {
        std::fs::write(self.0.join(file), lines.join("\n") + "\n").unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three services' files. public-web's server span names a parent (the
/// client's span) that no file holds, so it is the root; each service's
/// spans arrive in more than one batch, children before their parents.
fn write_traces(dir: &TempDir) {
    let t = ROUND_TRIP;
    dir.write(
        "public-web.jsonl",
        &[
            line(
                "public-web",
                vec![
                    span(
                        t,
                        "0000000000000009",
                        "0000000000000008",
                        "POST /dispatch",
                        2,
                        7000,
                        8000,
                    ),
                    span(
                        t,
                        "0000000000000002",
                        "0000000000000001",
                        "POST",
                        3,
                        500,
                        3000,
                    ),
                ],
            ),
            line(
                "public-web",
                vec![
                    span(
                        NEWER,
                        "00000000000000b2",
                        "00000000000000b1",
                        "POST",
                        3,
                        1_000_200,
                        1_000_900,
                    ),
                    span(
                        t,
                        "0000000000000001",
                        "ffffffffffffffff",
                        "POST /",
                        2,
                        0,
                        10_000,
                    ),
                ],
            ),
            line(
                "public-web",
                vec![with_error(
                    span(
                        NEWER,
                        "00000000000000b1",
                        "",
                        "POST /",
                        2,
                        1_000_000,
                        1_001_000,
                    ),
                    "dispatcher unreachable",
                )],
            ),
        ],
    );
    dir.write(
        "dispatcher.jsonl",
        &[
            line(
                "dispatcher",
                vec![
                    span(
                        t,
                        "0000000000000004",
                        "0000000000000003",
                        "ping-request publish",
                        4,
                        1500,
                        2000,
                    ),
                    span(
                        t,
                        "0000000000000003",
                        "0000000000000002",
                        "POST /",
                        2,
                        1000,
                        2500,
                    ),
                ],
            ),
            line(
                "dispatcher",
                vec![
                    with_error(
                        span(
                            t,
                            "0000000000000008",
                            "0000000000000007",
                            "POST",
                            3,
                            6000,
                            9000,
                        ),
                        "callback answered 500",
                    ),
                    span(
                        t,
                        "0000000000000007",
                        "0000000000000006",
                        "dispatcher-responses process",
                        5,
                        5500,
                        9500,
                    ),
                ],
            ),
            // The last line written is the oldest trace: --last goes by time.
            line(
                "dispatcher",
                vec![span(OLDER, "00000000000000c1", "", "io_loop", 1, 0, 1)]
                    .into_iter()
                    .map(|mut s| {
                        s["startTimeUnixNano"] = json!((T0 - 5_000_000_000).to_string());
                        s["endTimeUnixNano"] = json!((T0 - 4_000_000_000).to_string());
                        s
                    })
                    .collect(),
            ),
        ],
    );
    // Another writer's spelling: enum names, numeric times, no parent field.
    let mut consumer = span(
        t,
        "0000000000000005",
        "0000000000000004",
        "ping-request process",
        5,
        3000,
        6000,
    );
    consumer["kind"] = json!("SPAN_KIND_CONSUMER");
    consumer["startTimeUnixNano"] = json!(T0 + 3_000_000);
    consumer["status"] = json!({"code": "STATUS_CODE_OK"});
    dir.write(
        "ping-listener.jsonl",
        &[line(
            "ping-listener",
            vec![
                consumer,
                span(
                    t,
                    "0000000000000006",
                    "0000000000000005",
                    "dispatcher-responses publish",
                    4,
                    4000,
                    5000,
                ),
            ],
        )],
    );
}

/// A waterfall row, taken apart: (indent, label, kind, start ms, dur ms, bar, status).
#[derive(Debug, PartialEq)]
struct Parsed {
    indent: usize,
    label: String,
    kind: String,
    start: String,
    duration: String,
    bar: String,
    status: String,
}

fn rows(text: &str) -> Vec<Parsed> {
    text.lines()
        .skip(3) // header, blank line, column titles
        .map(|line| {
            let mut parts = line.split('│');
            let (left, bar, status) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let indent = left.len() - left.trim_start().len();
            let columns: Vec<&str> = left
                .trim()
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            assert_eq!(columns.len(), 4, "{line:?}");
            Parsed {
                indent,
                label: columns[0].to_owned(),
                kind: columns[1].to_owned(),
                start: columns[2].to_owned(),
                duration: columns[3].to_owned(),
                bar: bar.to_owned(),
                status: status.trim().to_owned(),
            }
        })
        .collect()
}

#[test]
fn the_round_trip_prints_as_a_tree_in_time_order() {
    let dir = TempDir::new("tree");
    write_traces(&dir);
    let output = run(&dir.0, &Selection::Trace(ROUND_TRIP.to_owned()), &PLAIN).unwrap();
    assert!(output.warnings.is_empty(), "{:?}", output.warnings);

    let header = output.text.lines().next().unwrap();
    assert_eq!(
        header,
        format!(
            "trace {ROUND_TRIP}  ·  9 spans  ·  3 services  ·  10.000 ms  ·  started 2023-11-14 22:13:20.000 UTC"
        )
    );
    let rows = rows(&output.text);
    let summary: Vec<(usize, &str, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.indent,
                r.label.as_str(),
                r.kind.as_str(),
                r.start.as_str(),
                r.duration.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, "public-web POST /", "server", "0.000", "10.000"),
            (2, "public-web POST", "client", "0.500", "2.500"),
            (4, "dispatcher POST /", "server", "1.000", "1.500"),
            (
                6,
                "dispatcher ping-request publish",
                "producer",
                "1.500",
                "0.500"
            ),
            (
                8,
                "ping-listener ping-request process",
                "consumer",
                "3.000",
                "3.000"
            ),
            (
                10,
                "ping-listener dispatcher-responses publish",
                "producer",
                "4.000",
                "1.000"
            ),
            (
                12,
                "dispatcher dispatcher-responses process",
                "consumer",
                "5.500",
                "4.000"
            ),
            (14, "dispatcher POST", "client", "6.000", "3.000"),
            (16, "public-web POST /dispatch", "server", "7.000", "1.000"),
        ]
    );

    // 20 columns for 10 ms: half a millisecond each.
    assert_eq!(rows[0].bar, "████████████████████");
    assert_eq!(rows[3].bar, "   █                ");
    assert_eq!(rows[4].bar, "      ██████        ");
    assert_eq!(rows[8].bar, "              ██    ");

    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses,
        [
            "",
            "",
            "",
            "",
            "ok",
            "",
            "",
            "ERROR: callback answered 500",
            ""
        ]
    );
}

#[test]
fn errors_are_red_only_with_colour() {
    let dir = TempDir::new("colour");
    write_traces(&dir);
    let selection = Selection::Trace(ROUND_TRIP.to_owned());
    let plain = run(&dir.0, &selection, &PLAIN).unwrap().text;
    assert!(!plain.contains('\x1b'));

    let coloured = run(
        &dir.0,
        &selection,
        &Style {
            color: true,
            ..PLAIN
        },
    )
    .unwrap()
    .text;
    let error_line = coloured
        .lines()
        .find(|line| line.contains("callback answered 500"))
        .unwrap();
    assert!(error_line.contains("\x1b[31mERROR: callback answered 500\x1b[0m"));
    // The error span's bar is red too; the others are their service's colour.
    assert!(error_line.contains("│\x1b[31m"));
    assert_eq!(coloured.matches("\x1b[31m").count(), 2);
}

#[test]
fn last_is_the_trace_that_started_last_not_the_last_line() {
    let dir = TempDir::new("last");
    write_traces(&dir);
    let output = run(&dir.0, &Selection::Last, &PLAIN).unwrap();
    let header = output.text.lines().next().unwrap();
    assert!(
        header.starts_with(&format!(
            "trace {NEWER}  ·  2 spans  ·  1 service  ·  1.000 ms"
        )),
        "{header}"
    );
    let rows = rows(&output.text);
    // The root has no parent field value at all (""), its child is indented.
    assert_eq!(
        (rows[0].indent, rows[0].label.as_str()),
        (0, "public-web POST /")
    );
    assert_eq!(
        (rows[1].indent, rows[1].label.as_str()),
        (2, "public-web POST")
    );
    assert_eq!(rows[0].status, "ERROR: dispatcher unreachable");
}

#[test]
fn list_is_newest_first_and_limited() {
    let dir = TempDir::new("list");
    write_traces(&dir);
    let text = run(&dir.0, &Selection::List(2), &PLAIN).unwrap().text;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TRACE ID"));
    let columns = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        columns(lines[1]),
        [
            NEWER,
            "2023-11-14",
            "22:13:21.000",
            "UTC",
            "2",
            "1.000",
            "public-web",
            "POST",
            "/",
            "(1",
            "error)"
        ]
    );
    assert_eq!(
        columns(lines[2]),
        [
            ROUND_TRIP,
            "2023-11-14",
            "22:13:20.000",
            "UTC",
            "9",
            "10.000",
            "public-web",
            "POST",
            "/",
            "(1",
            "error)"
        ]
    );
    assert_eq!(lines[3], "… and 1 older trace (--limit to see more)");
    assert_eq!(lines.len(), 4);

    let all = run(&dir.0, &Selection::List(20), &PLAIN).unwrap().text;
    assert!(all.lines().nth(3).unwrap().starts_with(OLDER));
    assert!(all.lines().nth(3).unwrap().ends_with("dispatcher io_loop"));
}

#[test]
fn unknown_or_malformed_ids_and_a_missing_dir_are_errors() {
    let dir = TempDir::new("errors");
    write_traces(&dir);
    let unknown = "00000000000000000000000000000abc";
    let error = run(&dir.0, &Selection::Trace(unknown.to_owned()), &PLAIN).unwrap_err();
    assert!(matches!(&error, Error::TraceNotFound { trace_id, .. } if trace_id == unknown));
    assert!(error.to_string().starts_with(&format!(
        "no spans for trace {unknown} in {}; were the services started with TRACE_FILE_DIR? bin/restart.sh does that",
        dir.0.display()
    )));

    // Upper case and surrounding space are fine; 31 characters are not.
    let upper = format!(" {} ", ROUND_TRIP.to_uppercase());
    assert!(run(&dir.0, &Selection::Trace(upper), &PLAIN).is_ok());
    let short = &ROUND_TRIP[1..];
    assert!(matches!(
        run(&dir.0, &Selection::Trace(short.to_owned()), &PLAIN),
        Err(Error::InvalidTraceId(id)) if id == short
    ));

    let missing = dir.0.join("nope");
    let error = run(&missing, &Selection::Last, &PLAIN).unwrap_err();
    assert!(matches!(error, Error::DirMissing { .. }));
    assert!(
        error
            .to_string()
            .contains("were the services started with TRACE_FILE_DIR?")
    );

    let empty = TempDir::new("empty");
    assert!(matches!(
        run(&empty.0, &Selection::List(20), &PLAIN),
        Err(Error::NoTraces { .. })
    ));
}

#[test]
fn a_half_written_line_is_skipped_with_a_warning_and_duplicates_count_once() {
    let dir = TempDir::new("partial");
    write_traces(&dir);
    let public_web = dir.0.join("public-web.jsonl");
    let complete = std::fs::read_to_string(&public_web).unwrap();
    // The whole file again (a replayed batch), then a line cut mid-write.
    let first_line = complete.lines().next().unwrap();
    let cut = &first_line[..first_line.len() / 2];
    std::fs::write(&public_web, format!("{complete}{complete}{cut}")).unwrap();

    let output = run(&dir.0, &Selection::Trace(ROUND_TRIP.to_owned()), &PLAIN).unwrap();
    assert_eq!(rows(&output.text).len(), 9);
    assert!(
        output
            .text
            .lines()
            .next()
            .unwrap()
            .contains("  ·  9 spans  ·  ")
    );

    // A lookup by id parses only the lines that mention it (this cut ends
    // before its first traceId); a list parses every line.
    let output = run(&dir.0, &Selection::List(20), &PLAIN).unwrap();
    assert_eq!(output.warnings.len(), 1);
    assert!(
        output.warnings[0].starts_with(&format!(
            "skipped 1 line that is not OTLP JSON (first: {}:7:",
            public_web.display()
        )),
        "{:?}",
        output.warnings
    );
}

#[test]
fn a_span_whose_parent_is_missing_is_a_root() {
    let dir = TempDir::new("orphans");
    write_traces(&dir);
    // Without the ping-listener's file, the dispatcher's consumer span lost
    // its parent: two roots, each with its subtree.
    std::fs::remove_file(dir.0.join("ping-listener.jsonl")).unwrap();
    let output = run(&dir.0, &Selection::Trace(ROUND_TRIP.to_owned()), &PLAIN).unwrap();
    assert!(
        output
            .text
            .lines()
            .next()
            .unwrap()
            .ends_with("2 roots (parents not in the files)")
    );
    let summary: Vec<(usize, String)> = rows(&output.text)
        .into_iter()
        .map(|r| (r.indent, r.label))
        .collect();
    let expected = [
        (0, "public-web POST /"),
        (2, "public-web POST"),
        (4, "dispatcher POST /"),
        (6, "dispatcher ping-request publish"),
        (0, "dispatcher dispatcher-responses process"),
        (2, "dispatcher POST"),
        (4, "public-web POST /dispatch"),
    ];
    assert_eq!(
        summary,
        expected.map(|(indent, label)| (indent, label.to_owned()))
    );
}

/// Log files next to [`write_traces`]' span files: lines in the round
/// trip's spans (written out of time order, one of them twice), lines of
/// no span of it, a start-up line outside any trace, and a line of a trace
/// that has no spans.
fn write_logs(dir: &TempDir) {
    let t = ROUND_TRIP;
    let published = log_record(
        t,
        "0000000000000003",
        1200,
        "INFO",
        "event published",
        &[
            ("queue", json!({"stringValue": "ping-requests"})),
            ("event_id", json!({"stringValue": "abc"})),
            ("attempts", json!({"intValue": "1"})),
            ("elapsed_ms", json!({"doubleValue": 1.25})),
        ],
    );
    dir.write(
        "dispatcher.logs.jsonl",
        &[
            logs_line(
                "dispatcher",
                vec![
                    log_record("", "", 0, "INFO", "listening on 127.0.0.1:8080", &[]),
                    published.clone(),
                    log_record(t, "00000000000000ff", 9000, "WARN", "late reply", &[]),
                ],
            ),
            logs_line(
                "dispatcher",
                vec![
                    log_record(t, "0000000000000003", 1100, "INFO", "event accepted", &[]),
                    log_record(
                        t,
                        "0000000000000008",
                        8500,
                        "ERROR",
                        "callback failed\nERROR forged line",
                        &[("url", json!({"stringValue": "http://x/\u{1b}[2J"}))],
                    ),
                    log_record(
                        "22222222222222222222222222222222",
                        "0000000000000001",
                        0,
                        "INFO",
                        "no spans",
                        &[],
                    ),
                    published,
                ],
            ),
        ],
    );
    dir.write(
        "public-web.logs.jsonl",
        &[logs_line(
            "public-web",
            vec![
                log_record(t, "0000000000000001", 200, "INFO", "request accepted", &[]),
                log_record(t, "", 50, "DEBUG", "no span here", &[]),
            ],
        )],
    );
}

/// The line after the span row labelled `label`, and the one after that.
fn after_span<'a>(lines: &[&'a str], label: &str) -> [&'a str; 2] {
    let row = lines
        .iter()
        .position(|line| line.trim_start().starts_with(&format!("{label}  ")))
        .unwrap_or_else(|| panic!("no row {label:?} in {lines:#?}"));
    [lines[row + 1], lines[row + 2]]
}

#[test]
fn log_lines_print_under_their_span_in_time_order() {
    let dir = TempDir::new("logs");
    write_traces(&dir);
    write_logs(&dir);
    let output = run(&dir.0, &Selection::Trace(ROUND_TRIP.to_owned()), &PLAIN).unwrap();
    assert!(output.warnings.is_empty(), "{:?}", output.warnings);
    let lines: Vec<&str> = output.text.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "trace {ROUND_TRIP}  ·  9 spans  ·  6 log lines  ·  3 services  ·  10.000 ms"
        )),
        "{}",
        lines[0]
    );

    // The root is at depth 0, dispatcher's server span at depth 2: their
    // lines one level deeper, each right under its span.
    assert_eq!(
        after_span(&lines, "public-web POST /")[0],
        "  · +0.200 ms INFO request accepted"
    );
    assert_eq!(
        after_span(&lines, "dispatcher POST /"),
        [
            "      · +1.100 ms INFO event accepted",
            "      · +1.200 ms INFO event published queue=ping-requests event_id=abc attempts=1 elapsed_ms=1.25",
        ]
    );
    // One record stays one line, and cannot write escapes of its own.
    assert_eq!(
        after_span(&lines, "dispatcher POST")[0],
        "                · +8.500 ms ERROR callback failed\\nERROR forged line url=http://x/\\u{1b}[2J"
    );
    assert!(!output.text.contains('\x1b'));
    assert!(!lines.iter().any(|line| line.starts_with("ERROR forged")));

    // Lines of no span of the trace come last, with their service.
    assert_eq!(
        lines[lines.len() - 4..],
        [
            "",
            "other log lines (not in a span of this trace)",
            "  · +0.050 ms public-web DEBUG no span here",
            "  · +9.000 ms dispatcher WARN late reply",
        ]
    );
    // Nine span rows, six log lines, the blank line and the heading.
    assert_eq!(lines.len(), 3 + 9 + 6 + 2);
}

#[test]
fn log_lines_are_dimmed_with_colour() {
    let dir = TempDir::new("logs-colour");
    write_traces(&dir);
    write_logs(&dir);
    let style = Style {
        color: true,
        ..PLAIN
    };
    let text = run(&dir.0, &Selection::Trace(ROUND_TRIP.to_owned()), &style)
        .unwrap()
        .text;
    assert!(
        text.lines()
            .any(|line| line == "  \x1b[2m· +0.200 ms INFO request accepted\x1b[0m"),
        "{text}"
    );
}

#[test]
fn log_lines_without_a_span_in_the_files_make_no_trace() {
    let dir = TempDir::new("logs-orphans");
    write_traces(&dir);
    write_logs(&dir);
    let no_spans = "22222222222222222222222222222222";
    assert!(matches!(
        run(&dir.0, &Selection::Trace(no_spans.to_owned()), &PLAIN),
        Err(Error::TraceNotFound { .. })
    ));
    let list = run(&dir.0, &Selection::List(20), &PLAIN).unwrap().text;
    assert_eq!(list.lines().count(), 1 + 3, "{list}");

    // A trace without log lines says nothing of them.
    let last = run(&dir.0, &Selection::Last, &PLAIN).unwrap().text;
    assert!(last.starts_with(&format!("trace {NEWER}  ·  2 spans  ·  1 service")));
    assert!(!last.contains("log line"));
}
