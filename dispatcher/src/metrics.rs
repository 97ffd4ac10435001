//! The dispatcher's own metrics, beside the shared HTTP and AMQP ones.

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
