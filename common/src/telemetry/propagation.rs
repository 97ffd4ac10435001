//! W3C trace context (`traceparent`, `tracestate`) and `baggage` in and
//! out of a message's headers. Each transport brings its own carrier
//! (HTTP's `HeaderMap`, AMQP's `FieldTable`) as an `Extractor`/`Injector`.
//!
//! `traceparent` is written and read here, by the W3C Trace Context
//! grammar, rather than by the SDK's `TraceContextPropagator`: that one
//! formats the header with `format!` and parses it through a `Vec` of
//! parts and radix parsing, and a traced request crosses eight of these
//! boundaries (BENCHMARKS.md has the profile). `tracestate` and `baggage`,
//! rare and free-form, still go through the SDK (`TraceState`,
//! `BaggagePropagator`). No global propagator is installed: code that
//! asks `opentelemetry::global` for one gets a no-op, so carry context
//! with [`extract`] and [`inject`].

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::BaggagePropagator;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The context a sender put in `carrier`; an empty one (a new trace),
/// never the current one, when it carries none (or a malformed one).
pub fn extract(carrier: &dyn Extractor) -> Context {
    let context = match carrier.get(TRACEPARENT).and_then(parse_traceparent) {
        Some((trace_id, span_id, flags)) => {
            let state = carrier
                .get(TRACESTATE)
                .and_then(|state| TraceState::from_str(state).ok())
                .unwrap_or_default();
            Context::new()
                .with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state))
        }
        None => Context::new(),
    };
    BaggagePropagator::new().extract_with_context(&context, carrier)
}

/// Writes `context` into `carrier`: `traceparent` for a valid span
/// context, `tracestate` only when the trace has one (W3C asks senders not
/// to send an empty one), `baggage` when there is some.
pub fn inject(context: &Context, carrier: &mut dyn Injector) {
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        carrier.set(TRACEPARENT, traceparent(span_context));
        let state = span_context.trace_state().header();
        if !state.is_empty() {
            carrier.set(TRACESTATE, state);
        }
    }
    BaggagePropagator::new().inject_context(context, carrier);
}

/// `00-<trace id>-<span id>-<flags>`, lowercase hex, only the sampled flag
/// kept.
fn traceparent(span_context: &SpanContext) -> String {
    let mut out = [0_u8; 55];
    out[..3].copy_from_slice(b"00-");
    let sampled = span_context.trace_flags() & TraceFlags::SAMPLED;
    let fields: [(&[u8], std::ops::Range<usize>); 3] = [
        (&span_context.trace_id().to_bytes(), 3..35),
        (&span_context.span_id().to_bytes(), 36..52),
        (&[sampled.to_u8()], 53..55),
    ];
    for (bytes, at) in fields {
        hex::encode_to_slice(bytes, &mut out[at]).expect("each field has room for its digits");
    }
    out[35] = b'-';
    out[52] = b'-';
    String::from_utf8(out.to_vec()).expect("hex digits and dashes")
}

/// A `traceparent` by the W3C grammar: `version-traceid-parentid-flags`,
/// lowercase hex of 2, 32, 16 and 2 digits; version `ff` and all-zero ids
/// are invalid; version `00` is exactly that, a later version may append
/// `-` and more. Unknown flags are dropped, as the specification asks.
fn parse_traceparent(header: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let header = header.trim().as_bytes();
    if header.len() < 55 || header[2] != b'-' || header[35] != b'-' || header[52] != b'-' {
        return None;
    }
    let version = hex_byte(&header[0..2])?;
    let well_formed = match version {
        0xff => false,
        0 => header.len() == 55,
        _ => header.len() == 55 || header[55] == b'-',
    };
    if !well_formed {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex_array::<16>(&header[3..35])?);
    let span_id = SpanId::from_bytes(hex_array::<8>(&header[36..52])?);
    let flags = TraceFlags::new(hex_byte(&header[53..55])?) & TraceFlags::SAMPLED;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID)
        .then_some((trace_id, span_id, flags))
}

fn hex_array<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(out)
}

/// Two lowercase hex digits (W3C Trace Context allows no uppercase).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::baggage::BaggageExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    const TRACEPARENT_VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn carrier(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn tracestate_is_sent_only_when_the_trace_has_one() {
        for tracestate in [None, Some("vendor=opaque")] {
            let mut incoming = carrier(&[("traceparent", TRACEPARENT_VALUE)]);
            if let Some(tracestate) = tracestate {
                incoming.insert("tracestate".to_owned(), tracestate.to_owned());
            }
            let context = extract(&incoming);
            assert!(context.span().span_context().is_remote());

            let mut outgoing = HashMap::new();
            inject(&context, &mut outgoing);
            assert_eq!(
                outgoing.get("traceparent").map(String::as_str),
                Some(TRACEPARENT_VALUE)
            );
            assert_eq!(outgoing.get("tracestate").map(String::as_str), tracestate);
        }
    }

    #[test]
    fn what_the_sdk_reads_and_writes_agrees_with_this() {
        let sdk = TraceContextPropagator::new();
        for header in [
            TRACEPARENT_VALUE,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            // Unknown flags are dropped.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
            // A later version may append fields.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        ] {
            let incoming = carrier(&[("traceparent", header)]);
            let ours = extract(&incoming);
            let theirs = sdk.extract(&incoming);
            assert_eq!(
                ours.span().span_context(),
                theirs.span().span_context(),
                "{header}"
            );
            let (mut ours_out, mut theirs_out) = (HashMap::new(), HashMap::new());
            inject(&ours, &mut ours_out);
            sdk.inject_context(&theirs, &mut theirs_out);
            assert_eq!(ours_out.get("traceparent"), theirs_out.get("traceparent"));
        }
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for header in [
            "zz-not-a-traceparent",
            "",
            // Uppercase, short or long fields, bad separators.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // Invalid version, all-zero ids.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            let context = extract(&carrier(&[("traceparent", header)]));
            assert!(!context.span().span_context().is_valid(), "{header:?}");
        }
    }

    #[test]
    fn baggage_travels_both_ways() {
        let incoming = carrier(&[
            ("traceparent", TRACEPARENT_VALUE),
            ("baggage", "tenant=acme"),
        ]);
        let context = extract(&incoming);
        assert_eq!(
            context
                .baggage()
                .get("tenant")
                .map(|v| v.as_str().to_owned()),
            Some("acme".to_owned())
        );
        let mut outgoing = HashMap::new();
        inject(&context, &mut outgoing);
        assert_eq!(
            outgoing.get("baggage").map(String::as_str),
            Some("tenant=acme")
        );
    }
}
