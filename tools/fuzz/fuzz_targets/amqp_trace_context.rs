//! Trace-context extraction from AMQP headers: whatever field table a
//! publisher sends (parsed by the AMQP codec from raw bytes), extraction
//! never panics, and a valid context it yields re-injects to the same ids.
#![no_main]

use amq_protocol_types::parsing::parse_field_table;
use common::amqp::message;
use lapin::types::FieldTable;
use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::TraceContextExt;

fuzz_target!(|data: &[u8]| {
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
