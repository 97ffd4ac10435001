//! The dispatcher's own metrics, beside the shared HTTP and AMQP ones.

/// Counts a callback that did not complete a request, by why.
pub fn callback_failed(reason: CallbackFailure) {
    metrics::counter!("dispatcher_callback_failures_total", "reason" => reason.label())
        .increment(1);
}

/// Counts an event the broker confirmed in the event stream.
pub fn stream_appended() {
    metrics::counter!("dispatcher_stream_records_total").increment(1);
}

/// Counts an event the event stream did not get, by why.
pub fn stream_lost(reason: StreamLoss) {
    metrics::counter!("dispatcher_stream_lost_total", "reason" => reason.label()).increment(1);
}

/// Creates the metrics at zero, so dashboards see them before the first
/// event.
pub fn init() {
    metrics::counter!("dispatcher_stream_records_total").increment(0);
    for reason in StreamLoss::ALL {
        metrics::counter!("dispatcher_stream_lost_total", "reason" => reason.label()).increment(0);
    }
    for reason in CallbackFailure::ALL {
        metrics::counter!("dispatcher_callback_failures_total", "reason" => reason.label())
            .increment(0);
    }
}

/// Why a callback did not complete a request: the `reason` label of
/// `dispatcher_callback_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackFailure {
    /// public-web answered 404: no one waits for that id.
    UnknownId,
    Timeout,
    Unreachable,
    ServerError,
    /// Any other 4xx.
    Refused,
    /// The target timed out or refused connections recently: not called
    /// until its cooldown ends.
    TargetDown,
    /// The target already had its share of callbacks in flight and
    /// waiting: the response was dead-lettered.
    TargetBusy,
}

impl CallbackFailure {
    pub const ALL: [Self; 7] = [
        Self::UnknownId,
        Self::Timeout,
        Self::Unreachable,
        Self::ServerError,
        Self::Refused,
        Self::TargetDown,
        Self::TargetBusy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownId => "unknown_id",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::ServerError => "server_error",
            Self::Refused => "refused",
            Self::TargetDown => "target_down",
            Self::TargetBusy => "target_busy",
        }
    }
}

/// Why an event is missing from the event stream: the `reason` label of
/// `dispatcher_stream_lost_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamLoss {
    /// The buffer was full: the broker did not keep up.
    Lagging,
    /// No AMQP session, or the stream could not be declared.
    Unavailable,
    /// The broker refused the record.
    Nacked,
    /// The channel failed before the record was confirmed.
    BrokerError,
    /// No confirm in time.
    Timeout,
}

impl StreamLoss {
    pub const ALL: [Self; 5] = [
        Self::Lagging,
        Self::Unavailable,
        Self::Nacked,
        Self::BrokerError,
        Self::Timeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Lagging => "lagging",
            Self::Unavailable => "unavailable",
            Self::Nacked => "nacked",
            Self::BrokerError => "broker_error",
            Self::Timeout => "timeout",
        }
    }
}
