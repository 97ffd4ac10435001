//! Spans and log lines grouped into traces, and a trace laid out as a tree:
//! the order, depth and timing of each row of the waterfall, and the span
//! each log line goes under.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use crate::otlp::{LogLine, Span};

/// The spans of one trace, each span id once, and its log lines, each once,
/// in time order.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
    pub logs: Vec<LogLine>,
}

impl Trace {
    /// The earliest span start.
    pub fn start_unix_nano(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.start_unix_nano)
            .min()
            .unwrap_or(0)
    }

    /// From the earliest start to the latest end.
    pub fn duration_nanos(&self) -> u64 {
        let end = self.spans.iter().map(|s| s.end_unix_nano).max();
        end.unwrap_or(0).saturating_sub(self.start_unix_nano())
    }

    /// The distinct service names, in order of first appearance.
    pub fn services(&self) -> Vec<&str> {
        let mut services: Vec<&str> = Vec::new();
        for span in &self.spans {
            if !services.contains(&span.service.as_str()) {
                services.push(&span.service);
            }
        }
        services
    }

    /// The first row of the waterfall: the earliest root.
    pub fn root(&self) -> Option<&Span> {
        self.rows().first().map(|row| row.span)
    }

    /// The log lines by the span they were written in; those of no span in
    /// the trace apart.
    pub fn span_logs(&self) -> SpanLogs<'_> {
        let ids: HashSet<&str> = self.spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut span_logs = SpanLogs::default();
        for log in &self.logs {
            match log.span_id.as_deref() {
                Some(span_id) if ids.contains(span_id) => {
                    span_logs.by_span.entry(span_id).or_default().push(log)
                }
                _ => span_logs.other.push(log),
            }
        }
        span_logs
    }

    /// The spans in waterfall order: depth first, siblings by start time.
    /// Roots are the spans whose parent is not in the trace (none, or a span
    /// that was never written here, like the caller's own client span).
    pub fn rows(&self) -> Vec<Row<'_>> {
        let ids: HashSet<&str> = self.spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut roots = Vec::new();
        for (index, span) in self.spans.iter().enumerate() {
            match span.parent_span_id.as_deref() {
                Some(parent) if ids.contains(parent) => {
                    children.entry(parent).or_default().push(index)
                }
                _ => roots.push(index),
            }
        }
        let by_start = |&a: &usize, &b: &usize| {
            let (a, b) = (&self.spans[a], &self.spans[b]);
            (a.start_unix_nano, &a.span_id).cmp(&(b.start_unix_nano, &b.span_id))
        };
        roots.sort_by(by_start);
        for siblings in children.values_mut() {
            siblings.sort_by(by_start);
        }

        let trace_start = self.start_unix_nano();
        let mut rows = Vec::with_capacity(self.spans.len());
        let mut visited = vec![false; self.spans.len()];
        let mut in_start_order = (0..self.spans.len()).collect::<Vec<_>>();
        in_start_order.sort_by(by_start);
        // A parent cycle (only in corrupt files) leaves spans unreachable from
        // any root; each pass starts from the earliest of those, so every
        // span is printed once whatever the input.
        let mut next_roots = roots;
        loop {
            let mut stack: Vec<(usize, usize)> = next_roots.iter().rev().map(|&i| (i, 0)).collect();
            while let Some((index, depth)) = stack.pop() {
                if std::mem::replace(&mut visited[index], true) {
                    continue;
                }
                let span = &self.spans[index];
                rows.push(Row {
                    span,
                    depth,
                    offset_nanos: span.start_unix_nano.saturating_sub(trace_start),
                    duration_nanos: span.duration_nanos(),
                });
                if let Some(kids) = children.get(span.span_id.as_str()) {
                    stack.extend(kids.iter().rev().map(|&kid| (kid, depth + 1)));
                }
            }
            match in_start_order.iter().find(|&&i| !visited[i]) {
                Some(&orphan) => next_roots = vec![orphan],
                None => return rows,
            }
        }
    }
}

/// One line of the waterfall.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub span: &'a Span,
    /// 0 for a root, its parent's depth + 1 otherwise.
    pub depth: usize,
    /// From the trace's start to the span's.
    pub offset_nanos: u64,
    pub duration_nanos: u64,
}

/// A trace's log lines, each under its span, in time order.
#[derive(Debug, Default)]
pub struct SpanLogs<'a> {
    by_span: HashMap<&'a str, Vec<&'a LogLine>>,
    /// The lines that name no span, or a span that is not in the files.
    pub other: Vec<&'a LogLine>,
}

impl<'a> SpanLogs<'a> {
    /// The lines written in span `span_id`.
    pub fn of(&self, span_id: &str) -> &[&'a LogLine] {
        self.by_span.get(span_id).map_or(&[], Vec::as_slice)
    }
}

/// Groups spans and log lines by trace, newest trace (latest start) first.
/// A trace is made of spans: the log lines of a trace without any are
/// dropped. A span id or log record seen twice in a trace (a file appended
/// to twice) counts once.
pub fn group(spans: Vec<Span>, logs: Vec<LogLine>) -> Vec<Trace> {
    let mut by_id: HashMap<String, Trace> = HashMap::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for span in spans {
        if !seen.insert((span.trace_id.clone(), span.span_id.clone())) {
            continue;
        }
        by_id
            .entry(span.trace_id.clone())
            .or_insert_with(|| Trace {
                trace_id: span.trace_id.clone(),
                spans: Vec::new(),
                logs: Vec::new(),
            })
            .spans
            .push(span);
    }
    for log in logs {
        if let Some(trace) = by_id.get_mut(&log.trace_id) {
            trace.logs.push(log);
        }
    }
    for trace in by_id.values_mut() {
        // Whole records break ties, so that copies end up side by side.
        trace
            .logs
            .sort_by(|a, b| (a.time_unix_nano, a).cmp(&(b.time_unix_nano, b)));
        trace.logs.dedup();
    }
    let mut traces: Vec<Trace> = by_id.into_values().collect();
    traces.sort_by_cached_key(|trace| Reverse((trace.start_unix_nano(), trace.trace_id.clone())));
    traces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{SpanKind, Status};

    fn span(id: &str, parent: Option<&str>, start: u64) -> Span {
        Span {
            trace_id: "t".to_owned(),
            span_id: id.to_owned(),
            parent_span_id: parent.map(str::to_owned),
            service: "s".to_owned(),
            name: id.to_owned(),
            kind: SpanKind::Internal,
            start_unix_nano: start,
            end_unix_nano: start + 10,
            status: Status::default(),
            http_status_code: None,
            error_type: None,
            error_event: None,
        }
    }

    fn log(trace: &str, span: Option<&str>, time: u64, body: &str) -> LogLine {
        LogLine {
            trace_id: trace.to_owned(),
            span_id: span.map(str::to_owned),
            service: "s".to_owned(),
            time_unix_nano: time,
            severity: "INFO".to_owned(),
            body: body.to_owned(),
            attributes: Vec::new(),
        }
    }

    #[test]
    fn log_lines_join_their_trace_in_time_order_once_each() {
        let logs = vec![
            log("t", Some("root"), 5, "late"),
            log("t", None, 1, "early"),
            log("no spans", Some("root"), 0, "dropped"),
            log("t", Some("root"), 5, "late"),
            log("t", Some("gone"), 3, "orphan"),
        ];
        let traces = group(vec![span("root", None, 0)], logs);
        assert_eq!(traces.len(), 1);
        let bodies = |logs: &[&LogLine]| logs.iter().map(|l| l.body.clone()).collect::<Vec<_>>();
        let all: Vec<&LogLine> = traces[0].logs.iter().collect();
        assert_eq!(bodies(&all), ["early", "orphan", "late"]);

        let span_logs = traces[0].span_logs();
        assert_eq!(bodies(span_logs.of("root")), ["late"]);
        assert_eq!(bodies(&span_logs.other), ["early", "orphan"]);
        assert!(span_logs.of("gone").is_empty());
    }

    #[test]
    fn a_parent_cycle_still_prints_every_span_once() {
        // a and b name each other as parent: neither is a root.
        let trace = Trace {
            trace_id: "t".to_owned(),
            spans: vec![
                span("b", Some("a"), 2),
                span("root", None, 0),
                span("a", Some("b"), 1),
            ],
            logs: Vec::new(),
        };
        let rows: Vec<(&str, usize, u64)> = trace
            .rows()
            .iter()
            .map(|row| (row.span.span_id.as_str(), row.depth, row.offset_nanos))
            .collect();
        assert_eq!(rows, [("root", 0, 0), ("a", 0, 1), ("b", 1, 2)]);
    }
}
