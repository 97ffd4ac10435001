//! OTLP export requests in the protobuf encoding, written straight from the
//! SDK's span and log data.
//!
//! The OTLP crates convert each batch into `opentelemetry-proto`'s owned
//! message types (a copy of every name, id and attribute) and then prost
//! encodes them; prost asks every nested message for its length before
//! writing it, and again at each level above it, so a span's attributes are
//! measured once per level of nesting (request, resource, scope, span,
//! attribute, value) before they are written. With every request traced
//! that is the largest single item of tracing's cost (BENCHMARKS.md has
//! the profile). Here each message is written once, front to back: a
//! nested message gets a one-byte length, and when its body turns out to
//! be 128 bytes or more (most spans) the body moves over by the one or two
//! bytes the longer length needs.
//!
//! The output decodes to exactly what the crates' conversion produces (the
//! tests check that with `opentelemetry-proto`'s own types); only the
//! HTTP/protobuf exporter uses it (export.rs).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue as LogValue, Severity};
use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::logs::{LogBatch, SdkLogRecord};
use opentelemetry_sdk::trace::SpanData;
use prost::Message as _;

/// The resource every request of one exporter names, encoded once.
#[derive(Debug, Clone, Default)]
pub struct EncodedResource {
    resource: Vec<u8>,
    schema_url: String,
}

impl From<&ResourceAttributesWithSchema> for EncodedResource {
    fn from(resource: &ResourceAttributesWithSchema) -> Self {
        Self {
            resource: ProtoResource {
                attributes: resource.attributes.0.clone(),
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }
            .encode_to_vec(),
            schema_url: resource.schema_url.clone().unwrap_or_default(),
        }
    }
}

/// An `ExportTraceServiceRequest` for `spans`: one resource, a scope per
/// instrumentation scope in order of first appearance.
pub fn trace_request(spans: &[SpanData], resource: &EncodedResource) -> Vec<u8> {
    let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    for span in spans {
        match scopes
            .iter_mut()
            .find(|(scope, _)| **scope == span.instrumentation_scope)
        {
            Some((_, members)) => members.push(span),
            None => scopes.push((&span.instrumentation_scope, vec![span])),
        }
    }
    let mut out = Writer::with_capacity(256 * spans.len() + 128);
    out.message(1, |out| {
        out.raw_message(1, &resource.resource);
        for (scope, members) in &scopes {
            out.message(2, |out| {
                out.message(1, |out| instrumentation_scope(out, scope.name(), scope));
                for span in members {
                    out.message(2, |out| self::span(out, span));
                }
                out.string(3, scope.schema_url().unwrap_or_default());
            });
        }
        out.string(3, &resource.schema_url);
    });
    out.buf
}

/// An `ExportLogsServiceRequest` for `batch`: one resource, a scope per
/// record target (or instrumentation scope) in order of first appearance.
pub fn logs_request(batch: &LogBatch<'_>, resource: &EncodedResource) -> Vec<u8> {
    type Group<'a> = (&'a str, &'a InstrumentationScope, Vec<&'a SdkLogRecord>);
    let mut scopes: Vec<Group<'_>> = Vec::new();
    for (record, scope) in batch.iter() {
        let name = record.target().map_or(scope.name(), |target| target);
        // The exported scope: the target replaces only the name.
        let same = |other: &InstrumentationScope| {
            other.version() == scope.version()
                && other.schema_url() == scope.schema_url()
                && other.attributes().eq(scope.attributes())
        };
        match scopes.iter_mut().find(|(n, s, _)| *n == name && same(s)) {
            Some((_, _, members)) => members.push(record),
            None => scopes.push((name, scope, vec![record])),
        }
    }
    let mut out =
        Writer::with_capacity(256 * scopes.iter().map(|g| g.2.len()).sum::<usize>() + 128);
    out.message(1, |out| {
        out.raw_message(1, &resource.resource);
        for (name, scope, members) in &scopes {
            out.message(2, |out| {
                out.message(1, |out| instrumentation_scope(out, name, scope));
                for record in members {
                    out.message(2, |out| log_record(out, record));
                }
                out.string(3, scope.schema_url().unwrap_or_default());
            });
        }
        out.string(3, &resource.schema_url);
    });
    out.buf
}

fn instrumentation_scope(out: &mut Writer, name: &str, scope: &InstrumentationScope) {
    out.string(1, name);
    out.string(2, scope.version().unwrap_or_default());
    for attribute in scope.attributes() {
        out.message(3, |out| key_value(out, attribute));
    }
}

fn span(out: &mut Writer, span: &SpanData) {
    let context = &span.span_context;
    out.bytes(1, &context.trace_id().to_bytes());
    out.bytes(2, &context.span_id().to_bytes());
    out.string(3, &context.trace_state().header());
    if span.parent_span_id != SpanId::INVALID {
        out.bytes(4, &span.parent_span_id.to_bytes());
    }
    out.string(5, &span.name);
    out.varint_field(6, span_kind(&span.span_kind));
    out.fixed64(7, nanos(span.start_time));
    out.fixed64(8, nanos(span.end_time));
    for attribute in &span.attributes {
        out.message(9, |out| key_value(out, attribute));
    }
    out.varint_field(10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        out.message(11, |out| {
            out.fixed64(1, nanos(event.timestamp));
            out.string(2, &event.name);
            for attribute in &event.attributes {
                out.message(3, |out| key_value(out, attribute));
            }
            out.varint_field(4, u64::from(event.dropped_attributes_count));
        });
    }
    out.varint_field(12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        let linked = &link.span_context;
        out.message(13, |out| {
            out.bytes(1, &linked.trace_id().to_bytes());
            out.bytes(2, &linked.span_id().to_bytes());
            out.string(3, &linked.trace_state().header());
            for attribute in &link.attributes {
                out.message(4, |out| key_value(out, attribute));
            }
            out.varint_field(5, u64::from(link.dropped_attributes_count));
            out.fixed32(
                6,
                span_flags(linked.is_remote(), linked.trace_flags().to_u8()),
            );
        });
    }
    out.varint_field(14, u64::from(span.links.dropped_count));
    out.message(15, |out| {
        let (code, message) = match &span.status {
            Status::Unset => (0, ""),
            Status::Ok => (1, ""),
            Status::Error { description } => (2, description.as_ref()),
        };
        out.string(2, message);
        out.varint_field(3, code);
    });
    out.fixed32(
        16,
        span_flags(span.parent_span_is_remote, context.trace_flags().to_u8()),
    );
}

/// `Span.flags`: the W3C trace flags, and whether the parent was remote
/// (with the bit that says that is known).
fn span_flags(parent_is_remote: bool, trace_flags: u8) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    let remote = if parent_is_remote { IS_REMOTE } else { 0 };
    u32::from(trace_flags) | HAS_IS_REMOTE | remote
}

fn span_kind(kind: &opentelemetry::trace::SpanKind) -> u64 {
    use opentelemetry::trace::SpanKind;
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn log_record(out: &mut Writer, record: &SdkLogRecord) {
    out.fixed64(1, record.timestamp().map(nanos).unwrap_or_default());
    out.varint_field(2, record.severity_number().map_or(0, severity_number));
    out.string(3, record.severity_text().unwrap_or_default());
    if let Some(body) = record.body() {
        out.message(5, |out| log_value(out, body));
    }
    for (key, value) in record.attributes_iter() {
        out.message(6, |out| {
            out.string(1, key.as_str());
            out.message(2, |out| log_value(out, value));
        });
    }
    let context = record.trace_context();
    out.fixed32(
        8,
        context
            .and_then(|c| c.trace_flags)
            .map_or(0, |flags| u32::from(flags.to_u8())),
    );
    if let Some(context) = context {
        out.bytes(9, &context.trace_id.to_bytes());
        out.bytes(10, &context.span_id.to_bytes());
    }
    out.fixed64(
        11,
        record.observed_timestamp().map(nanos).unwrap_or_default(),
    );
    out.string(12, record.event_name().unwrap_or_default());
}

fn severity_number(severity: Severity) -> u64 {
    // OTLP numbers severities as the API does, 1 (TRACE) to 24 (FATAL4).
    severity as u64
}

fn key_value(out: &mut Writer, attribute: &KeyValue) {
    out.string(1, attribute.key.as_str());
    out.message(2, |out| value(out, &attribute.value));
}

/// An `AnyValue`: its one field is written even when it holds the type's
/// default (it is a `oneof`, whose presence is the value).
fn value(out: &mut Writer, value: &Value) {
    match value {
        Value::Bool(flag) => out.any_bool(*flag),
        Value::I64(number) => out.any_int(*number),
        Value::F64(number) => out.any_double(*number),
        Value::String(text) => out.any_string(text.as_str()),
        Value::Array(array) => out.message(5, |out| match array {
            Array::Bool(items) => each(out, items, |out, flag| out.any_bool(*flag)),
            Array::I64(items) => each(out, items, |out, number| out.any_int(*number)),
            Array::F64(items) => each(out, items, |out, number| out.any_double(*number)),
            Array::String(items) => each(out, items, |out, text: &StringValue| {
                out.any_string(text.as_str())
            }),
            _ => {}
        }),
        _ => {}
    }
}

/// The `values` of an `ArrayValue`, each an `AnyValue` written by `write`.
fn each<T>(out: &mut Writer, items: &[T], write: impl Fn(&mut Writer, &T)) {
    for item in items {
        out.message(1, |out| write(out, item));
    }
}

fn log_value(out: &mut Writer, value: &LogValue) {
    match value {
        LogValue::Int(number) => out.any_int(*number),
        LogValue::Double(number) => out.any_double(*number),
        LogValue::String(text) => out.any_string(text.as_str()),
        LogValue::Boolean(flag) => out.any_bool(*flag),
        LogValue::Bytes(bytes) => {
            out.key(7, LEN);
            out.length_delimited(bytes);
        }
        LogValue::ListAny(items) => out.message(5, |out| {
            for item in items.iter() {
                out.message(1, |out| log_value(out, item));
            }
        }),
        LogValue::Map(entries) => out.message(6, |out| {
            for (key, item) in entries.iter() {
                out.message(1, |out| {
                    out.string(1, key.as_str());
                    out.message(2, |out| log_value(out, item));
                });
            }
        }),
        _ => {}
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// Protobuf written front to back. Scalar fields holding their type's
/// default are left out, as proto3 encoders do.
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire_type)));
    }

    fn length_delimited(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    fn varint_field(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, VARINT);
            self.varint(value);
        }
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, I64);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn fixed32(&mut self, field: u32, value: u32) {
        if value != 0 {
            self.key(field, I32);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.key(field, LEN);
            self.length_delimited(bytes);
        }
    }

    fn string(&mut self, field: u32, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    fn any_string(&mut self, text: &str) {
        self.key(1, LEN);
        self.length_delimited(text.as_bytes());
    }

    fn any_bool(&mut self, flag: bool) {
        self.key(2, VARINT);
        self.varint(u64::from(flag));
    }

    fn any_int(&mut self, number: i64) {
        self.key(3, VARINT);
        self.varint(number as u64);
    }

    fn any_double(&mut self, number: f64) {
        self.key(4, I64);
        self.buf.extend_from_slice(&number.to_le_bytes());
    }

    /// An already encoded message as field `field`.
    fn raw_message(&mut self, field: u32, encoded: &[u8]) {
        self.key(field, LEN);
        self.length_delimited(encoded);
    }

    /// A nested message as field `field`, written by `body`. Its length
    /// is given one byte first and widened once it is known, if need be.
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Self)) {
        self.key(field, LEN);
        let at = self.buf.len();
        self.buf.push(0);
        body(self);
        let mut len = self.buf.len() - at - 1;
        if len < 0x80 {
            self.buf[at] = len as u8;
        } else {
            let mut prefix = [0_u8; 10];
            let mut width = 0;
            while len >= 0x80 {
                prefix[width] = len as u8 | 0x80;
                len >>= 7;
                width += 1;
            }
            prefix[width] = len as u8;
            self.buf.splice(at..=at, prefix[..=width].iter().copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
    use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Key, KeyValue};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn resource() -> ResourceAttributesWithSchema {
        (&Resource::builder()
            .with_attribute(KeyValue::new("service.name", "dispatcher"))
            .build())
            .into()
    }

    fn span(name: &'static str, scope: &InstrumentationScope, long: bool) -> SpanData {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let mut attributes = vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 201_i64),
            KeyValue::new("ratio", 0.5),
            KeyValue::new("ok", true),
            KeyValue::new("empty", ""),
            KeyValue::new(
                "list",
                Value::Array(Array::String(vec!["a".into(), "".into()])),
            ),
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, i64::MAX]))),
        ];
        if long {
            attributes.push(KeyValue::new("long", "x".repeat(20_000)));
        }
        let mut events = SpanEvents::default();
        events.events.push(opentelemetry::trace::Event::new(
            "exception",
            UNIX_EPOCH + Duration::from_nanos(1_764_700_000_123_456_789),
            vec![KeyValue::new("exception.message", "HTTP 502")],
            1,
        ));
        let mut links = SpanLinks::default();
        links.links.push(Link::new(
            SpanContext::new(
                trace_id,
                SpanId::from(7),
                TraceFlags::SAMPLED,
                true,
                TraceState::from_key_value([("k", "v")]).unwrap(),
            ),
            vec![KeyValue::new("link", 1_i64)],
            0,
        ));
        SpanData {
            span_context: SpanContext::new(
                trace_id,
                SpanId::from(0x00f0_67aa_0ba9_02b7),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: if long {
                SpanId::INVALID
            } else {
                SpanId::from(3)
            },
            parent_span_is_remote: !long,
            span_kind: if long {
                SpanKind::Consumer
            } else {
                SpanKind::Server
            },
            name: Cow::Borrowed(name),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_764_700_000_000_000_001),
            end_time: UNIX_EPOCH + Duration::from_nanos(1_764_700_000_200_000_002),
            attributes,
            dropped_attributes_count: u32::from(long),
            events,
            links,
            status: if long {
                Status::error("dead-lettered: oversized")
            } else {
                Status::Unset
            },
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn spans_decode_to_what_the_crate_s_conversion_makes() {
        let dispatcher = InstrumentationScope::builder("dispatcher").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", "x")])
            .build();
        let spans = vec![
            span("POST /", &dispatcher, false),
            span("queue process", &other, true),
            span("POST", &dispatcher, false),
        ];
        let resource = resource();
        let ours = trace_request(&spans, &EncodedResource::from(&resource));
        let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).unwrap();
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        };
        assert_eq!(decoded, expected);
    }

    #[test]
    fn log_records_decode_to_what_the_crate_s_conversion_makes() {
        use std::sync::{Arc, Mutex};

        use opentelemetry_sdk::error::OTelSdkResult;
        use opentelemetry_sdk::logs::{LogProcessor, SdkLoggerProvider};

        /// Keeps every record emitted, with its scope.
        #[derive(Debug, Clone, Default)]
        struct Keep(Arc<Mutex<Vec<(SdkLogRecord, InstrumentationScope)>>>);
        impl LogProcessor for Keep {
            fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
                self.0.lock().unwrap().push((record.clone(), scope.clone()));
            }
            fn force_flush(&self) -> OTelSdkResult {
                Ok(())
            }
            fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
                Ok(())
            }
        }

        let kept = Keep::default();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(kept.clone())
            .build();
        let logger = provider.logger("public-web");
        let mut record = logger.create_log_record();
        record.set_target("hop");
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        record.set_body(LogValue::from("request answered"));
        record.set_timestamp(UNIX_EPOCH + Duration::from_nanos(1_764_700_000_000_000_123));
        record.add_attribute(Key::new("status"), 200_i64);
        record.add_attribute(Key::new("elapsed_ms"), 1.25);
        record.add_attribute(Key::new("event_id"), "");
        record.add_attribute(
            Key::new("list"),
            LogValue::ListAny(Box::new(vec![
                LogValue::Boolean(false),
                LogValue::Bytes(Box::new(vec![1, 2])),
            ])),
        );
        record.add_attribute(
            Key::new("map"),
            LogValue::Map(Box::new([(Key::new("k"), LogValue::Int(0))].into())),
        );
        record.set_trace_context(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from(9),
            Some(TraceFlags::SAMPLED),
        );
        logger.emit(record);
        let mut plain = logger.create_log_record();
        plain.set_body(LogValue::from("x".repeat(300)));
        logger.emit(plain);
        let other = provider.logger("other");
        other.emit(other.create_log_record());

        let emitted = kept.0.lock().unwrap().clone();
        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> = emitted
            .iter()
            .map(|(record, scope)| (record, scope))
            .collect();
        let batch = LogBatch::new(&pairs);
        let resource = resource();
        let ours = logs_request(&batch, &EncodedResource::from(&resource));
        let mut decoded = ExportLogsServiceRequest::decode(ours.as_slice()).unwrap();
        let mut expected = ExportLogsServiceRequest {
            resource_logs: group_logs_by_resource_and_scope(&batch, &resource),
        };
        // The crate groups scopes in a hash map: compare them in name order.
        for request in [&mut decoded, &mut expected] {
            request.resource_logs[0].scope_logs.sort_by(|a, b| {
                a.scope
                    .as_ref()
                    .unwrap()
                    .name
                    .cmp(&b.scope.as_ref().unwrap().name)
            });
        }
        assert_eq!(decoded.resource_logs[0].scope_logs.len(), 3);
        assert_eq!(decoded, expected);
    }

    #[test]
    fn long_messages_get_a_wide_length() {
        let mut out = Writer::with_capacity(0);
        out.message(1, |out| out.string(1, &"y".repeat(300)));
        // key, a two-byte length (303 = 0xaf 0x02), then the body.
        assert_eq!(&out.buf[..3], &[0x0a, 0xaf, 0x02]);
        assert_eq!(out.buf.len(), 3 + 303);
    }
}
