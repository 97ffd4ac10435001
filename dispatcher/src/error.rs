//! What the dispatcher answers when it cannot take an event, mapped once to
//! an HTTP status and the shared JSON error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::amqp::PublishError;
use common::egress::EgressError;
use common::http::ApiError;

use crate::listeners::NoListener;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no route for event type {0:?}")]
    UnknownType(String),
    #[error("callback URL refused: {0}")]
    InvalidCallback(EgressError),
    #[error(transparent)]
    NoListener(#[from] NoListener),
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
            DispatchError::NoListener(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_listener"),
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
