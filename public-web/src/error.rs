//! Everything public-web can answer besides a response event, mapped once
//! to an HTTP status and the shared JSON error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::http::ApiError;
use common::wire::{ErrorCode, HandlerError};

use crate::pending::{Full, NotWaiting};

#[derive(Debug, thiserror::Error)]
pub enum PublicWebError {
    /// The request itself is unacceptable (not JSON, not an event, too
    /// large): answered with the extractor's own status and error.
    #[error("the request was refused: {0}")]
    Rejected(ApiError),
    #[error(transparent)]
    Full(#[from] Full),
    #[error(transparent)]
    NotWaiting(#[from] NotWaiting),
    #[error("the dispatcher could not be reached: {}", common::http::error_chain(.0))]
    DispatcherUnreachable(reqwest::Error),
    /// The dispatcher refused the event; its status and JSON error are
    /// passed on (e.g. 422 for an event type it has no route for).
    #[error("the dispatcher refused the event: {0}")]
    DispatcherRefused(ApiError),
    #[error("no response within {0} ms")]
    Timeout(u128),
    #[error("the listener failed: {0}")]
    Listener(HandlerError),
    #[error("the request was dropped before a response arrived")]
    Abandoned,
}

impl From<&PublicWebError> for ApiError {
    fn from(error: &PublicWebError) -> Self {
        let message = error.to_string();
        match error {
            PublicWebError::Full(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
                    .with_retry_after(1)
            }
            PublicWebError::NotWaiting(NotWaiting::Unknown) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_id", message)
            }
            PublicWebError::NotWaiting(NotWaiting::OtherId(_)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "id_mismatch", message)
            }
            PublicWebError::DispatcherUnreachable(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "dispatcher_unreachable", message)
            }
            PublicWebError::Rejected(refusal) | PublicWebError::DispatcherRefused(refusal) => {
                refusal.clone()
            }
            PublicWebError::Timeout(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
            }
            PublicWebError::Listener(handler_error) => {
                let status = match handler_error.code {
                    ErrorCode::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::HandlerFailed => StatusCode::INTERNAL_SERVER_ERROR,
                };
                ApiError::new(status, "listener_error", handler_error.message.clone())
            }
            PublicWebError::Abandoned => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "abandoned", message)
            }
        }
    }
}

impl IntoResponse for PublicWebError {
    fn into_response(self) -> Response {
        ApiError::from(&self).into_response()
    }
}
