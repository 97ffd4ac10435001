//! public-web's own metrics, beside the shared HTTP ones.

/// The gauge of parked requests; keep the handle, updating it is an
/// atomic add.
pub fn pending_requests_gauge() -> metrics::Gauge {
    metrics::gauge!("public_web_pending_requests")
}

/// Live subscriptions (WebSocket and SSE) of this instance.
pub fn subscriptions_gauge() -> metrics::Gauge {
    metrics::gauge!("public_web_subscriptions")
}

/// Open WebSockets.
pub fn websockets_gauge() -> metrics::Gauge {
    metrics::gauge!("public_web_websockets")
}

/// Open SSE streams.
pub fn sse_streams_gauge() -> metrics::Gauge {
    metrics::gauge!("public_web_sse_streams")
}

/// A subscriber's queue overflowed: it does not read, and is cut off.
pub fn slow_subscriber_cut_off() {
    metrics::counter!("public_web_slow_subscribers_total").increment(1);
}

/// A WebSocket closed with 1008 because its send queue overflowed.
pub fn websocket_cut_off() {
    metrics::counter!("public_web_websockets_cut_off_total").increment(1);
}

/// A record read from the event stream by the hub.
pub fn stream_record_read() {
    metrics::counter!("public_web_stream_records_total").increment(1);
}

pub fn request_timed_out() {
    metrics::counter!("public_web_request_timeouts_total").increment(1);
}

/// Creates the metrics at zero, so dashboards see them before the first
/// event.
pub fn init() {
    metrics::counter!("public_web_request_timeouts_total").increment(0);
    pending_requests_gauge().set(0.0);
    for gauge in [
        subscriptions_gauge(),
        websockets_gauge(),
        sse_streams_gauge(),
    ] {
        gauge.set(0.0);
    }
    for counter in [
        "public_web_slow_subscribers_total",
        "public_web_websockets_cut_off_total",
        "public_web_stream_records_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
}
