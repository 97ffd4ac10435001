//! What the management API answers when it cannot do what was asked,
//! mapped once to a status and the shared JSON error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::egress::EgressError;
use common::filter::FilterError;
use common::http::ApiError;

/// The store could not be reached or refused a statement.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("the claim on the delivery lapsed and was taken over")]
    ClaimLost,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiFailure {
    #[error("ADMIN_TOKEN is not set: the management API is off")]
    AdminOff,
    #[error("a bearer token (ADMIN_TOKEN) is required")]
    Unauthorized,
    #[error("the body is not a registration: {0}")]
    InvalidBody(String),
    #[error("the URL is refused: {0}")]
    UrlRefused(#[from] EgressError),
    #[error("invalid filters: {0}")]
    InvalidFilters(#[from] FilterError),
    #[error("no webhook {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiFailure::AdminOff => (StatusCode::UNAUTHORIZED, "admin_disabled"),
            ApiFailure::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiFailure::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiFailure::UrlRefused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "url_refused"),
            ApiFailure::InvalidFilters(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_filter"),
            ApiFailure::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiFailure::Store(error) => {
                tracing::error!(%error, "the store failed a management call");
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
        };
        let mut error = ApiError::new(status, code, self.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            error = error.with_retry_after(1);
        }
        error.into_response()
    }
}
