//! What the dispatcher answers when it cannot take an event, mapped once to
//! an HTTP status and the shared JSON error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::amqp::PublishError;
use common::http::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no route for event type {0:?}")]
    UnknownType(String),
    #[error("invalid callback URL: {0}")]
    InvalidCallback(String),
    #[error("could not publish the event: {0}")]
    Publish(#[from] PublishError),
}

impl IntoResponse for DispatchError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            DispatchError::UnknownType(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unknown_event_type")
            }
            DispatchError::InvalidCallback(_) => (StatusCode::BAD_REQUEST, "invalid_callback"),
            DispatchError::Publish(PublishError::Timeout(_)) => {
                (StatusCode::GATEWAY_TIMEOUT, "broker_timeout")
            }
            DispatchError::Publish(_) => (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable"),
        };
        let mut error = ApiError::new(status, code, self.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            error = error.with_retry_after(1);
        }
        error.into_response()
    }
}
