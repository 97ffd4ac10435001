//! The webhook-sender's own metrics.
//!
//! - `webhook_stream_reading`: 1 while this sender reads the stream (one
//!   sender does);
//! - `webhook_stream_records_total`: stream records read (by the reader);
//! - `webhook_deliveries_owed_total`: deliveries made owed by them;
//! - `webhook_attempts_total{outcome}`: attempts by outcome (`delivered`,
//!   `gone`, `failed_status`, `failed_transport`);
//! - `webhook_attempt_seconds`: how long attempts took;
//! - `webhook_delivery_seconds`: from the answer's recording to its
//!   successful delivery (retries included);
//! - `webhook_exhausted_total`: deliveries given up after the last attempt;
//! - `webhook_pending_deliveries`, `webhook_oldest_pending_seconds`: the
//!   backlog over all endpoints, read from the store every few seconds.

use std::time::Duration;

pub fn init() {
    metrics::describe_gauge!(
        "webhook_stream_reading",
        "1 while this sender is the one reading the event stream"
    );
    reading(false);
    metrics::describe_counter!("webhook_stream_records_total", "Event stream records read");
    metrics::describe_counter!(
        "webhook_deliveries_owed_total",
        "Deliveries made owed by stream records matching endpoints"
    );
    metrics::describe_counter!("webhook_attempts_total", "Delivery attempts, by outcome");
    metrics::describe_histogram!(
        "webhook_attempt_seconds",
        metrics::Unit::Seconds,
        "How long delivery attempts took"
    );
    metrics::describe_histogram!(
        "webhook_delivery_seconds",
        metrics::Unit::Seconds,
        "From an answer's recording to its successful delivery"
    );
    metrics::describe_counter!(
        "webhook_exhausted_total",
        "Deliveries given up after the last scheduled attempt"
    );
    metrics::describe_gauge!(
        "webhook_pending_deliveries",
        "Deliveries waiting to be made"
    );
    metrics::describe_gauge!(
        "webhook_oldest_pending_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest delivery waiting"
    );
}

pub fn reading(yes: bool) {
    metrics::gauge!("webhook_stream_reading").set(if yes { 1.0 } else { 0.0 });
}

pub fn records_read(records: usize, owed: usize) {
    metrics::counter!("webhook_stream_records_total").increment(records as u64);
    metrics::counter!("webhook_deliveries_owed_total").increment(owed as u64);
}

pub fn attempt(outcome: &'static str, took: Duration) {
    metrics::counter!("webhook_attempts_total", "outcome" => outcome).increment(1);
    metrics::histogram!("webhook_attempt_seconds").record(took.as_secs_f64());
}

pub fn delivered(since_recorded: Duration) {
    metrics::histogram!("webhook_delivery_seconds").record(since_recorded.as_secs_f64());
}

pub fn exhausted() {
    metrics::counter!("webhook_exhausted_total").increment(1);
}

pub fn backlog(pending: i64, oldest: Duration) {
    metrics::gauge!("webhook_pending_deliveries").set(pending as f64);
    metrics::gauge!("webhook_oldest_pending_seconds").set(oldest.as_secs_f64());
}
