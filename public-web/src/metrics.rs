//! public-web's own metrics, beside the shared HTTP ones.

/// The gauge of parked requests; keep the handle, updating it is an
/// atomic add.
pub fn pending_requests_gauge() -> metrics::Gauge {
    metrics::gauge!("public_web_pending_requests")
}

pub fn request_timed_out() {
    metrics::counter!("public_web_request_timeouts_total").increment(1);
}

/// Creates the metrics at zero, so dashboards see them before the first
/// event.
pub fn init() {
    metrics::counter!("public_web_request_timeouts_total").increment(0);
    pending_requests_gauge().set(0.0);
}
