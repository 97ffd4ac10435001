//! W3C trace context (`traceparent`, `tracestate`) and `baggage` in and
//! out of a message's headers, through the global OpenTelemetry
//! propagator: no hand-written parsing. Each transport brings its own
//! carrier (HTTP's `HeaderMap`, AMQP's `FieldTable`) as an
//! `Extractor`/`Injector`.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};

/// The context a sender put in `carrier`; an empty one (a new trace),
/// never the current one, when it carries none.
pub fn extract(carrier: &dyn Extractor) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&Context::new(), carrier)
    })
}

/// Writes `context` into `carrier`, leaving out empty fields: the
/// propagator writes `tracestate` even when a trace has none, and W3C
/// Trace Context asks senders not to send an empty one (receivers read a
/// missing and an empty `tracestate` alike). Carriers are new each time,
/// so an empty field has nothing stale to overwrite.
pub fn inject(context: &Context, carrier: &mut dyn Injector) {
    struct NonEmpty<'a>(&'a mut dyn Injector);

    impl Injector for NonEmpty<'_> {
        fn set(&mut self, key: &str, value: String) {
            if !value.is_empty() {
                self.0.set(key, value);
            }
        }
    }

    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(context, &mut NonEmpty(carrier))
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    #[test]
    fn tracestate_is_sent_only_when_the_trace_has_one() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for tracestate in [None, Some("vendor=opaque")] {
            let mut incoming = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
            if let Some(tracestate) = tracestate {
                incoming.insert("tracestate".to_owned(), tracestate.to_owned());
            }
            let context = extract(&incoming);
            assert!(context.span().span_context().is_remote());

            let mut outgoing = HashMap::new();
            inject(&context, &mut outgoing);
            assert_eq!(
                outgoing.get("traceparent").map(String::as_str),
                Some(traceparent)
            );
            assert_eq!(outgoing.get("tracestate").map(String::as_str), tracestate);
        }
    }

    #[test]
    fn garbage_gives_an_empty_context() {
        let incoming =
            HashMap::from([("traceparent".to_owned(), "zz-not-a-traceparent".to_owned())]);
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let context = extract(&incoming);
        assert!(!context.span().span_context().is_valid());
    }
}
