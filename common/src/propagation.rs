//! W3C trace context (`traceparent`, `tracestate`, `baggage`) across every
//! hop: HTTP headers and AMQP message headers, through the global
//! OpenTelemetry propagator and `Injector`/`Extractor` adapters — no
//! hand-written parsing.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};

/// The context sent by the caller in HTTP `headers`; an empty one (a new
/// trace), never the current one, when they carry none.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&Context::new(), &HeaderExtractor(headers))
    })
}

/// Writes `context` into outgoing HTTP `headers`.
pub fn inject_http(context: &Context, headers: &mut http::HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(context, &mut HeaderInjector(headers))
    });
}

/// Reads trace context out of AMQP message headers.
pub struct FieldTableExtractor<'a>(pub &'a FieldTable);

impl Extractor for FieldTableExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

/// Writes trace context into AMQP message headers.
pub struct FieldTableInjector<'a>(pub &'a mut FieldTable);

impl Injector for FieldTableInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        crate::amqp::set_header(self.0, key, &value);
    }
}

/// The context a publisher put in AMQP `headers`; an empty one, never the
/// current one, when they carry none.
pub fn extract_amqp(headers: Option<&FieldTable>) -> Context {
    match headers {
        Some(headers) => opentelemetry::global::get_text_map_propagator(|p| {
            p.extract_with_context(&Context::new(), &FieldTableExtractor(headers))
        }),
        None => Context::new(),
    }
}

/// Writes `context` into outgoing AMQP `headers`.
pub fn inject_amqp(context: &Context, headers: &mut FieldTable) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(context, &mut FieldTableInjector(headers))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    #[test]
    fn amqp_headers_carry_traceparent_both_ways() {
        let mut headers = FieldTable::default();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        crate::amqp::set_header(&mut headers, "traceparent", traceparent);

        let propagator = TraceContextPropagator::new();
        let context = propagator.extract(&FieldTableExtractor(&headers));
        let span_context = context.span().span_context().clone();
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span_context.is_remote());

        let mut out = FieldTable::default();
        propagator.inject_context(&context, &mut FieldTableInjector(&mut out));
        assert_eq!(
            FieldTableExtractor(&out).get("traceparent"),
            Some(traceparent)
        );
    }

    #[test]
    fn garbage_headers_give_an_empty_context() {
        let mut headers = FieldTable::default();
        crate::amqp::set_header(&mut headers, "traceparent", "zz-not-a-traceparent");
        headers.insert("tracestate".into(), AMQPValue::LongLongInt(7));
        let context = TraceContextPropagator::new().extract(&FieldTableExtractor(&headers));
        assert!(!context.span().span_context().is_valid());
    }
}
