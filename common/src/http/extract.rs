//! Extractors that read a request's JSON body as the contract's event,
//! every rejection (syntax, shape, content type, size) answered as an
//! [`ApiError`].

use axum::Json;
use axum::extract::{FromRequest, Request};

use super::error::ApiError;
use crate::wire::{Event, EventInput};

/// A JSON body whose every rejection (syntax, shape, content type, size)
/// becomes an [`ApiError`] with the shared body.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

/// Extracts a valid [`Event`], assigning an id when the client sent none.
pub struct JsonEvent(pub Event);

impl<S: Send + Sync> FromRequest<S> for JsonEvent {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJson(input) = ApiJson::<EventInput>::from_request(request, state).await?;
        Ok(JsonEvent(input.into_event()?))
    }
}
