//! Extractors that read a request's JSON body as the contract's event,
//! every rejection (syntax, shape, content type, size) answered as an
//! [`ApiError`].

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
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

/// Extracts a valid [`Event`] that must already carry its id (a response),
/// with the body it came in: a relay hands that on as received instead of
/// serialising the event again.
pub struct JsonResponseEvent {
    pub event: Event,
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for JsonResponseEvent {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        // Read under the route's body limit (an extension), then checked
        // and parsed by the JSON extractor from the same bytes. Read
        // first: a body both too large and not JSON is a 413, not a 415.
        let mut body_only = Request::new(body);
        *body_only.extensions_mut() = parts.extensions.clone();
        let body = Bytes::from_request(body_only, state)
            .await
            .map_err(|rejection| ApiError::from(JsonRejection::from(rejection)))?;
        let request = Request::from_parts(parts, Body::from(body.clone()));
        let ApiJson(event) = ApiJson::<Event>::from_request(request, state).await?;
        event.validate()?;
        Ok(JsonResponseEvent { event, body })
    }
}
