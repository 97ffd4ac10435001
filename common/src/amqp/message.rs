//! What a message carries besides its body: properties, string headers,
//! and the trace context in those headers.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::{Context, KeyValue};

use crate::telemetry::propagation;

/// Properties of a JSON event message (see [`crate::wire`]).
pub fn event_properties(id: &str, kind: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(id.into())
        .with_type(kind.into())
}

pub(crate) fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Sets a string header.
pub fn set_header(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(ShortString::from(name), long_string(value));
}

/// A string header of a message, if present and textual.
pub fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    text_header(properties.headers().as_ref()?, name)
}

/// A string entry of a header table, if present and textual.
fn text_header<'a>(headers: &'a FieldTable, name: &str) -> Option<&'a str> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}

/// Reads trace context out of AMQP message headers.
struct FieldTableExtractor<'a>(pub &'a FieldTable);

impl Extractor for FieldTableExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        text_header(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

/// Writes trace context into AMQP message headers.
struct FieldTableInjector<'a>(&'a mut FieldTable);

impl Injector for FieldTableInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        set_header(self.0, key, &value);
    }
}

/// The context a publisher put in a message's headers; an empty one,
/// never the current one, when they carry none.
pub fn extract_context(properties: &BasicProperties) -> Context {
    match properties.headers() {
        Some(headers) => propagation::extract(&FieldTableExtractor(headers)),
        None => Context::new(),
    }
}

/// Writes `context` into outgoing headers.
pub fn inject_context(context: &Context, headers: &mut FieldTable) {
    propagation::inject(context, &mut FieldTableInjector(headers));
}

/// The semantic-convention attributes of a PRODUCER or CONSUMER span:
/// `operation` is (`messaging.operation.type`, `messaging.operation.name`).
pub(crate) fn span_attributes(
    (operation_type, operation_name): (&'static str, &'static str),
    destination: &str,
    properties: &BasicProperties,
    body_size: usize,
) -> Vec<KeyValue> {
    let message_id = properties
        .message_id()
        .as_ref()
        .map_or("", |id| id.as_str());
    vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.operation.type", operation_type),
        KeyValue::new("messaging.operation.name", operation_name),
        KeyValue::new("messaging.destination.name", destination.to_owned()),
        KeyValue::new("messaging.message.id", message_id.to_owned()),
        KeyValue::new("messaging.message.body.size", body_size as i64),
    ]
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn headers_carry_traceparent_both_ways() {
        let mut headers = FieldTable::default();
        set_header(&mut headers, "traceparent", TRACEPARENT);
        let context = extract_context(&BasicProperties::default().with_headers(headers));
        let span_context = context.span().span_context().clone();
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span_context.is_remote());

        let mut out = FieldTable::default();
        inject_context(&context, &mut out);
        assert_eq!(
            FieldTableExtractor(&out).get("traceparent"),
            Some(TRACEPARENT)
        );
        assert_eq!(FieldTableExtractor(&out).get("tracestate"), None);
    }

    #[test]
    fn headers_that_are_not_text_are_not_read() {
        let mut headers = FieldTable::default();
        headers.insert("tracestate".into(), AMQPValue::LongLongInt(7));
        set_header(&mut headers, "x-callback-url", "http://web/dispatch");
        let properties = BasicProperties::default().with_headers(headers);
        assert_eq!(header(&properties, "tracestate"), None);
        assert_eq!(
            header(&properties, "x-callback-url"),
            Some("http://web/dispatch")
        );
        assert_eq!(header(&BasicProperties::default(), "x-callback-url"), None);
    }
}
