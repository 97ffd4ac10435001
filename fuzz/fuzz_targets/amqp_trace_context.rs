//! Trace-context extraction from AMQP headers: whatever field table a
//! publisher sends (parsed by the AMQP codec from raw bytes), extraction
//! never panics, and a valid context it yields re-injects to the same ids.
#![no_main]

use std::sync::Once;

use amq_protocol_types::parsing::parse_field_table;
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
    let context = common::propagation::extract_amqp(Some(&headers));
    let span_context = context.span().span_context().clone();
    let _ = common::amqp::header(
        &lapin::BasicProperties::default().with_headers(headers.clone()),
        common::amqp::CALLBACK_URL_HEADER,
    );
    if span_context.is_valid() {
        let mut out = FieldTable::default();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut common::propagation::FieldTableInjector(&mut out))
        });
        let again = common::propagation::extract_amqp(Some(&out));
        assert_eq!(again.span().span_context().trace_id(), span_context.trace_id());
        assert_eq!(again.span().span_context().span_id(), span_context.span_id());
    }
});
