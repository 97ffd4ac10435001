//! The slice of the OTLP JSON encoding this tool reads: one
//! `ExportTraceServiceRequest` (a span file's line) or
//! `ExportLogsServiceRequest` (a log file's line) per line, flattened into
//! [`Span`]s and [`LogLine`]s that carry their service name.
//!
//! Own small structs rather than opentelemetry-proto keep the tool light and
//! tolerant: unknown fields are ignored, times may be strings (as OTLP JSON
//! writes 64-bit integers) or numbers, and kinds, status codes and severities
//! may be the integers the services write or the enum names other writers
//! use.

use serde::Deserialize;

/// One span, as the waterfall needs it. Ids are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a span that names no parent; a parent that names a span
    /// missing from the files makes a root too, but that is the tree's call.
    pub parent_span_id: Option<String>,
    pub service: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status: Status,
    /// The `http.response.status_code` attribute, on HTTP spans.
    pub http_status_code: Option<String>,
    /// The `error.type` attribute, which says why a span failed when its
    /// status message does not.
    pub error_type: Option<String>,
    /// The last event that reports an error (attribute `exception.message`
    /// or `error`, as a `tracing` event inside the span writes it), as
    /// `<event name>: <message>`.
    pub error_event: Option<String>,
}

impl Span {
    /// Zero rather than an underflow when a clock made the end precede the start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

/// One log record written inside a trace, as the waterfall needs it. Ids
/// are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogLine {
    pub trace_id: String,
    /// `None` for a record written in no span.
    pub span_id: Option<String>,
    pub service: String,
    /// When it happened, else (when the writer did not say) when it was
    /// observed; 0 when neither is known.
    pub time_unix_nano: u64,
    /// The severity text (`INFO`), else the name of the severity number,
    /// else `-`.
    pub severity: String,
    /// The body as text, raw: control characters are the renderer's to
    /// escape.
    pub body: String,
    /// Key and value as text, in the record's order.
    pub attributes: Vec<(String, String)>,
}

/// What one line holds: spans (a span file's line) or log lines (a log
/// file's line).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Records {
    pub spans: Vec<Span>,
    pub logs: Vec<LogLine>,
}

/// OTLP's `Span.SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(from = "EnumRepr")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "-",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

impl From<EnumRepr> for SpanKind {
    fn from(repr: EnumRepr) -> Self {
        match repr.normalized("SPAN_KIND_").as_str() {
            "1" | "INTERNAL" => SpanKind::Internal,
            "2" | "SERVER" => SpanKind::Server,
            "3" | "CLIENT" => SpanKind::Client,
            "4" | "PRODUCER" => SpanKind::Producer,
            "5" | "CONSUMER" => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

/// OTLP's `Status.StatusCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "EnumRepr")]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

impl From<EnumRepr> for StatusCode {
    fn from(repr: EnumRepr) -> Self {
        match repr.normalized("STATUS_CODE_").as_str() {
            "1" | "OK" => StatusCode::Ok,
            "2" | "ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub code: StatusCode,
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
}

/// Parses one line of a span or log file into its records.
pub fn parse_line(line: &str) -> serde_json::Result<Records> {
    let request: ExportRequest = serde_json::from_str(line)?;
    Ok(Records {
        spans: spans(request.resource_spans),
        logs: log_lines(request.resource_logs),
    })
}

fn spans(resource_spans: Vec<ResourceSpans>) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource_spans in resource_spans {
        let service = service_name(resource_spans.resource);
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            spans.push(Span {
                trace_id: span.trace_id.to_ascii_lowercase(),
                span_id: span.span_id.to_ascii_lowercase(),
                parent_span_id: valid_id(span.parent_span_id),
                service: service.clone(),
                name: span.name,
                kind: span.kind.unwrap_or(SpanKind::Unspecified),
                start_unix_nano: span.start_time_unix_nano.0,
                end_unix_nano: span.end_time_unix_nano.0,
                status: span.status.unwrap_or_default(),
                http_status_code: attribute(&span.attributes, "http.response.status_code"),
                error_type: attribute(&span.attributes, "error.type"),
                error_event: span.events.iter().rev().find_map(|event| {
                    let message = attribute(&event.attributes, "exception.message")
                        .or_else(|| attribute(&event.attributes, "error"))?;
                    Some(format!("{}: {message}", event.name))
                }),
            });
        }
    }
    spans
}

/// The records that name a trace; the others (start-up and shutdown
/// lines) belong to no waterfall.
fn log_lines(resource_logs: Vec<ResourceLogs>) -> Vec<LogLine> {
    let mut lines = Vec::new();
    for resource_logs in resource_logs {
        let service = service_name(resource_logs.resource);
        for record in resource_logs
            .scope_logs
            .into_iter()
            .flat_map(|scope| scope.log_records)
        {
            let Some(trace_id) = valid_id(record.trace_id) else {
                continue;
            };
            lines.push(LogLine {
                trace_id,
                span_id: valid_id(record.span_id),
                service: service.clone(),
                time_unix_nano: match record.time_unix_nano.0 {
                    0 => record.observed_time_unix_nano.0,
                    time => time,
                },
                severity: severity(record.severity_text, record.severity_number),
                body: record.body.and_then(|body| body.text()).unwrap_or_default(),
                attributes: record
                    .attributes
                    .into_iter()
                    .map(|kv| (kv.key, kv.value.and_then(|v| v.text()).unwrap_or_default()))
                    .collect(),
            });
        }
    }
    lines
}

/// The resource's `service.name`, as the SDK names a service that set none.
fn service_name(resource: Option<Resource>) -> String {
    resource
        .and_then(|resource| attribute(&resource.attributes, "service.name"))
        .unwrap_or_else(|| "unknown_service".to_owned())
}

/// An optional id, lowercased. An absent id is written as "" (proto3
/// default), and all zeroes is the invalid id: no id either way.
fn valid_id(id: Option<String>) -> Option<String> {
    id.filter(|id| !id.is_empty() && !id.bytes().all(|b| b == b'0'))
        .map(|id| id.to_ascii_lowercase())
}

/// The severity text; without one, the name of the severity number
/// (`9` and `SEVERITY_NUMBER_INFO` are `INFO`, `10` is `INFO2`); `-` when
/// neither says anything.
fn severity(text: String, number: Option<EnumRepr>) -> String {
    const NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    if !text.is_empty() {
        return text;
    }
    let Some(number) = number else {
        return "-".to_owned();
    };
    let name = number.normalized("SEVERITY_NUMBER_");
    match name.parse::<i64>() {
        Ok(n @ 1..=24) => {
            let index = (n - 1) as usize;
            match (NAMES[index / 4], index % 4) {
                (name, 0) => name.to_owned(),
                (name, step) => format!("{name}{}", step + 1),
            }
        }
        Ok(_) => "-".to_owned(),
        Err(_) if name == "UNSPECIFIED" => "-".to_owned(),
        Err(_) => name,
    }
}

/// The value of attribute `key` as text, if it has a value.
fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .text()
}

// Field names are OTLP JSON's lowerCamelCase; the snake_case aliases accept
// the protobuf field names, which protobuf JSON parsers accept too.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest {
    #[serde(
        default,
        alias = "resource_spans",
        deserialize_with = "null_as_default"
    )]
    resource_spans: Vec<ResourceSpans>,
    #[serde(default, alias = "resource_logs", deserialize_with = "null_as_default")]
    resource_logs: Vec<ResourceLogs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans {
    #[serde(default)]
    resource: Option<Resource>,
    #[serde(default, alias = "scope_spans", deserialize_with = "null_as_default")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default, deserialize_with = "null_as_default")]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: Option<AnyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyValue {
    #[serde(default, alias = "string_value")]
    string_value: Option<String>,
    #[serde(default, alias = "bool_value")]
    bool_value: Option<bool>,
    /// A string as OTLP JSON writes 64-bit integers, or a number.
    #[serde(default, alias = "int_value")]
    int_value: Option<serde_json::Value>,
    /// A number, or a string for `NaN` and the infinities.
    #[serde(default, alias = "double_value")]
    double_value: Option<serde_json::Value>,
    #[serde(default, alias = "array_value")]
    array_value: Option<ArrayValue>,
    #[serde(default, alias = "kvlist_value")]
    kvlist_value: Option<KeyValueList>,
    /// Base64, as OTLP JSON writes bytes.
    #[serde(default, alias = "bytes_value")]
    bytes_value: Option<String>,
}

impl AnyValue {
    /// The value as text: scalars as written, an array as `[a, b]`, a map
    /// as `{k=v, l=w}`, bytes as their base64. `None` for an empty value.
    fn text(&self) -> Option<String> {
        let scalar = |value: &serde_json::Value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if let Some(text) = &self.string_value {
            Some(text.clone())
        } else if let Some(flag) = self.bool_value {
            Some(flag.to_string())
        } else if let Some(number) = self.int_value.as_ref().or(self.double_value.as_ref()) {
            Some(scalar(number))
        } else if let Some(array) = &self.array_value {
            let items: Vec<String> = array
                .values
                .iter()
                .map(|value| value.text().unwrap_or_default())
                .collect();
            Some(format!("[{}]", items.join(", ")))
        } else if let Some(map) = &self.kvlist_value {
            let entries: Vec<String> = map
                .values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().and_then(AnyValue::text);
                    format!("{}={}", kv.key, value.unwrap_or_default())
                })
                .collect();
            Some(format!("{{{}}}", entries.join(", ")))
        } else {
            self.bytes_value.clone()
        }
    }
}

#[derive(Deserialize)]
struct ArrayValue {
    #[serde(default, deserialize_with = "null_as_default")]
    values: Vec<AnyValue>,
}

#[derive(Deserialize)]
struct KeyValueList {
    #[serde(default, deserialize_with = "null_as_default")]
    values: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct ScopeSpans {
    #[serde(default, deserialize_with = "null_as_default")]
    spans: Vec<WireSpan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpan {
    #[serde(alias = "trace_id")]
    trace_id: String,
    #[serde(alias = "span_id")]
    span_id: String,
    #[serde(default, alias = "parent_span_id")]
    parent_span_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default)]
    kind: Option<SpanKind>,
    #[serde(alias = "start_time_unix_nano")]
    start_time_unix_nano: Nanos,
    #[serde(alias = "end_time_unix_nano")]
    end_time_unix_nano: Nanos,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default, deserialize_with = "null_as_default")]
    attributes: Vec<KeyValue>,
    #[serde(default, deserialize_with = "null_as_default")]
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceLogs {
    #[serde(default)]
    resource: Option<Resource>,
    #[serde(default, alias = "scope_logs", deserialize_with = "null_as_default")]
    scope_logs: Vec<ScopeLogs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScopeLogs {
    #[serde(default, alias = "log_records", deserialize_with = "null_as_default")]
    log_records: Vec<WireLogRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireLogRecord {
    #[serde(default, alias = "trace_id")]
    trace_id: Option<String>,
    #[serde(default, alias = "span_id")]
    span_id: Option<String>,
    /// "0" or absent when the writer did not say.
    #[serde(
        default,
        alias = "time_unix_nano",
        deserialize_with = "null_as_default"
    )]
    time_unix_nano: Nanos,
    #[serde(
        default,
        alias = "observed_time_unix_nano",
        deserialize_with = "null_as_default"
    )]
    observed_time_unix_nano: Nanos,
    #[serde(default, alias = "severity_number")]
    severity_number: Option<EnumRepr>,
    #[serde(default, alias = "severity_text", deserialize_with = "null_as_default")]
    severity_text: String,
    #[serde(default)]
    body: Option<AnyValue>,
    #[serde(default, deserialize_with = "null_as_default")]
    attributes: Vec<KeyValue>,
}

/// A 64-bit timestamp: OTLP JSON writes it as a decimal string, other writers
/// as a plain number.
#[derive(Default, Deserialize)]
#[serde(try_from = "NumberOrString")]
struct Nanos(u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    String(String),
}

impl TryFrom<NumberOrString> for Nanos {
    type Error = String;

    fn try_from(value: NumberOrString) -> Result<Self, Self::Error> {
        match value {
            NumberOrString::Number(n) => Ok(Nanos(n)),
            NumberOrString::String(s) => s
                .parse()
                .map(Nanos)
                .map_err(|e| format!("timestamp {s:?}: {e}")),
        }
    }
}

/// An OTLP enum: its integer, or its name (`SPAN_KIND_SERVER`).
#[derive(Deserialize)]
#[serde(untagged)]
enum EnumRepr {
    Number(i64),
    Name(String),
}

impl EnumRepr {
    /// The integer as a string, or the name upper-cased without `prefix`.
    fn normalized(self, prefix: &str) -> String {
        match self {
            EnumRepr::Number(n) => n.to_string(),
            EnumRepr::Name(name) => {
                let upper = name.to_ascii_uppercase();
                upper.strip_prefix(prefix).unwrap_or(&upper).to_owned()
            }
        }
    }
}

/// `null` where the encoder wrote an empty value: the field's default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example record of an `ExportLogsServiceRequest` line, as the
    /// services write it.
    const LOGS_LINE: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"dispatcher"}}]},
      "scopeLogs":[{"scope":{"name":"hop"},"logRecords":[
        {"timeUnixNano":"1764700000123456789","observedTimeUnixNano":"1764700000123460000","severityNumber":9,"severityText":"INFO",
         "body":{"stringValue":"event published"},
         "attributes":[{"key":"event_id","value":{"stringValue":"abc"}},{"key":"queue","value":{"stringValue":"ping-requests"}},{"key":"attempts","value":{"intValue":"1"}},{"key":"elapsed_ms","value":{"doubleValue":1.25}}],
         "traceId":"4BF92F3577B34DA6A3CE929D0E0E4736","spanId":"00f067aa0ba902b7","flags":1}]}]}]}"#;

    fn one_log(line: &str) -> LogLine {
        let records = parse_line(line).unwrap();
        assert!(records.spans.is_empty());
        let [log] = <[LogLine; 1]>::try_from(records.logs).unwrap();
        log
    }

    #[test]
    fn a_logs_line_parses_into_log_lines_with_text_attributes() {
        assert_eq!(
            one_log(LOGS_LINE),
            LogLine {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
                span_id: Some("00f067aa0ba902b7".to_owned()),
                service: "dispatcher".to_owned(),
                time_unix_nano: 1_764_700_000_123_456_789,
                severity: "INFO".to_owned(),
                body: "event published".to_owned(),
                attributes: [
                    ("event_id", "abc"),
                    ("queue", "ping-requests"),
                    ("attempts", "1"),
                    ("elapsed_ms", "1.25"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .to_vec(),
            }
        );
    }

    #[test]
    fn a_missing_time_is_the_observed_time_and_a_missing_severity_text_the_number() {
        let line = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"timeUnixNano":"0","observedTimeUnixNano":1764700000000000007,"severityNumber":17,
             "traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"",
             "attributes":[{"key":"ok","value":{"boolValue":false}},{"key":"n","value":{"intValue":-3}},
                           {"key":"list","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"2"}]}}},
                           {"key":"empty","value":{}}]},
            {"observedTimeUnixNano":"5","severityNumber":"SEVERITY_NUMBER_WARN2",
             "traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"0000000000000000"}]}]}]}"#;
        let logs = parse_line(line).unwrap().logs;
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].time_unix_nano, 1_764_700_000_000_000_007);
        assert_eq!(logs[0].severity, "ERROR");
        assert_eq!(logs[0].service, "unknown_service");
        assert_eq!(logs[0].span_id, None);
        assert_eq!(logs[0].body, "");
        let attributes: Vec<(&str, &str)> = logs[0]
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attributes,
            [
                ("ok", "false"),
                ("n", "-3"),
                ("list", "[a, 2]"),
                ("empty", "")
            ]
        );
        assert_eq!(logs[1].time_unix_nano, 5);
        assert_eq!(logs[1].severity, "WARN2");
        assert_eq!(logs[1].span_id, None);
    }

    #[test]
    fn records_outside_a_trace_are_ignored() {
        let line = r#"{"resource_logs":[{"scope_logs":[{"log_records":[
            {"time_unix_nano":"1","severity_text":"INFO","body":{"string_value":"listening"},"trace_id":""},
            {"time_unix_nano":"2","body":{"stringValue":"starting"}},
            {"time_unix_nano":"3","trace_id":"00000000000000000000000000000000"},
            {"time_unix_nano":"4","severity_number":0,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}]}]}]}"#;
        let log = one_log(line);
        assert_eq!((log.time_unix_nano, log.severity.as_str()), (4, "-"));
        assert_eq!(log.span_id.as_deref(), Some("00f067aa0ba902b7"));
    }

    #[test]
    fn a_spans_line_has_no_log_lines() {
        let line = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","parentSpanId":"",
             "name":"POST /","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
        let records = parse_line(line).unwrap();
        assert!(records.logs.is_empty());
        assert_eq!(records.spans.len(), 1);
        assert_eq!(records.spans[0].parent_span_id, None);
        assert_eq!(parse_line("{}").unwrap(), Records::default());
    }
}
