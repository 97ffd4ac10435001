//! The slice of the OTLP JSON encoding this tool reads: one
//! `ExportTraceServiceRequest` per line, flattened into [`Span`]s that carry
//! their service name.
//!
//! Own small structs rather than opentelemetry-proto keep the tool light and
//! tolerant: unknown fields are ignored, times may be strings (as OTLP JSON
//! writes 64-bit integers) or numbers, and kinds and status codes may be the
//! integers the services write or the enum names other writers use.

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

/// Parses one line of a span file into its spans.
pub fn parse_line(line: &str) -> serde_json::Result<Vec<Span>> {
    let request: ExportRequest = serde_json::from_str(line)?;
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .and_then(|resource| attribute(&resource.attributes, "service.name"))
            .unwrap_or_else(|| "unknown_service".to_owned());
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            spans.push(Span {
                trace_id: span.trace_id.to_ascii_lowercase(),
                span_id: span.span_id.to_ascii_lowercase(),
                // An absent parent is written as "" (proto3 default); all
                // zeroes is the invalid span id, so no parent either.
                parent_span_id: span
                    .parent_span_id
                    .filter(|id| !id.is_empty() && !id.bytes().all(|b| b == b'0'))
                    .map(|id| id.to_ascii_lowercase()),
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
    Ok(spans)
}

/// The value of attribute `key` as text, if it is a string or an integer.
fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match (&value.string_value, &value.int_value) {
        (Some(text), _) => Some(text.clone()),
        // OTLP JSON writes 64-bit integers as strings, others as numbers.
        (None, Some(serde_json::Value::String(text))) => Some(text.clone()),
        (None, Some(serde_json::Value::Number(number))) => Some(number.to_string()),
        (None, _) => None,
    }
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
    #[serde(default, alias = "int_value")]
    int_value: Option<serde_json::Value>,
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

/// A 64-bit timestamp: OTLP JSON writes it as a decimal string, other writers
/// as a plain number.
#[derive(Deserialize)]
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
