//! W3C trace context (`traceparent`, `tracestate`, `baggage`) across every
//! hop: HTTP headers and AMQP message headers, through the global
//! OpenTelemetry propagator and `Injector`/`Extractor` adapters — no
//! hand-written parsing.

use lapin::types::{FieldTable, ShortString};
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
    inject(context, &mut HeaderInjector(headers));
}

/// Writes `context` through `injector`, leaving out empty fields: the
/// propagator writes `tracestate` even when a trace has none, and W3C
/// Trace Context asks senders not to send an empty one (receivers read a
/// missing and an empty `tracestate` alike). On the hot path that is one
/// header less to build, send and parse per hop. The carriers are new
/// each time, so an empty field has nothing stale to overwrite.
fn inject(context: &Context, injector: &mut dyn Injector) {
    struct NonEmpty<'a>(&'a mut dyn Injector);

    impl Injector for NonEmpty<'_> {
        fn set(&mut self, key: &str, value: String) {
            if !value.is_empty() {
                self.0.set(key, value);
            }
        }
    }

    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(context, &mut NonEmpty(injector))
    });
}

/// Reads trace context out of AMQP message headers.
pub struct FieldTableExtractor<'a>(pub &'a FieldTable);

impl Extractor for FieldTableExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        crate::amqp::text_header(self.0, key)
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
    inject(context, &mut FieldTableInjector(headers));
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;
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
    fn tracestate_is_sent_only_when_the_trace_has_one() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for tracestate in [None, Some("vendor=opaque")] {
            let mut incoming = FieldTable::default();
            crate::amqp::set_header(&mut incoming, "traceparent", traceparent);
            if let Some(tracestate) = tracestate {
                crate::amqp::set_header(&mut incoming, "tracestate", tracestate);
            }
            let context = extract_amqp(Some(&incoming));

            let mut amqp = FieldTable::default();
            inject_amqp(&context, &mut amqp);
            let mut http = http::HeaderMap::new();
            inject_http(&context, &mut http);

            let amqp = FieldTableExtractor(&amqp);
            let http = HeaderExtractor(&http);
            for carrier in [&amqp as &dyn Extractor, &http] {
                assert_eq!(carrier.get("traceparent"), Some(traceparent));
                assert_eq!(carrier.get("tracestate"), tracestate);
            }
        }
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
