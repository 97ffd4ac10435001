//! Trace-context extraction from AMQP headers: whatever field table a
//! publisher sends (parsed by the AMQP codec from raw bytes), extraction
//! never panics, and a valid context it yields re-injects to the same ids.
#![no_main]

use std::sync::Once;

use amq_protocol_types::parsing::parse_field_table;
use common::amqp::message;
use lapin::types::FieldTable;
use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::TraceContextExt;

static PROPAGATOR: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    PROPAGATOR.call_once(|| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    });
    let Ok((_, headers)) = parse_field_table(data) else {
        return;
    };
    let properties = lapin::BasicProperties::default().with_headers(headers);
    let context = message::extract_context(&properties);
    let span_context = context.span().span_context().clone();
    let _ = message::header(&properties, common::wire::CALLBACK_URL_HEADER);
    if span_context.is_valid() {
        let mut out = FieldTable::default();
        message::inject_context(&context, &mut out);
        let again = message::extract_context(&lapin::BasicProperties::default().with_headers(out));
        assert_eq!(again.span().span_context().trace_id(), span_context.trace_id());
        assert_eq!(again.span().span_context().span_id(), span_context.span_id());
    }
});
