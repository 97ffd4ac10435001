//! The dispatcher's own metrics, beside the shared HTTP and AMQP ones.

use crate::callback::CallbackFailure;

/// Counts a callback that did not complete a request, by why.
pub fn callback_failed(reason: CallbackFailure) {
    metrics::counter!("dispatcher_callback_failures_total", "reason" => reason.label())
        .increment(1);
}

/// Creates the metrics at zero, so dashboards see them before the first
/// event.
pub fn init() {
    for reason in CallbackFailure::ALL {
        metrics::counter!("dispatcher_callback_failures_total", "reason" => reason.label())
            .increment(0);
    }
}
