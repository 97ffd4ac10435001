//! public-web's handlers: a client's `POST /`, the dispatcher's
//! `POST /dispatch` callback (behind its signature check) and the local
//! `POST /ping`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::http::{ApiError, ApiJson, JsonEvent};
use common::wire::{Event, HandlerError, SIGNATURE_HEADER};
use tokio::time::Instant;

use crate::error::PublicWebError;
use crate::pending::Parked;
use crate::state::AppState;

/// `POST /`: park the request, forward the event to the dispatcher, and
/// answer with the response event when `/dispatch` delivers it.
///
/// A plain function returning a future, not an axum handler: a parked
/// request keeps its future for as long as it waits (there may be 100,000
/// of them), and a future is as large as its largest state. An axum
/// handler's future holds the request, the state and every extractor's
/// state for its whole life. Here all of that, and the forward call, live
/// in a box that is freed before the request parks; what stays is
/// [`Waiting`].
pub fn submit(
    state: Arc<AppState>,
    request: Request,
) -> impl Future<Output = Result<Response, Infallible>> + Send {
    let accepted = Box::pin(accept(state, request));
    async move {
        let answer = match accepted.await {
            Ok(waiting) => waiting.response().await,
            Err(error) => Err(error),
        };
        Ok(answer.into_response())
    }
}

/// Extracts the event, parks the request and forwards the event.
async fn accept(state: Arc<AppState>, request: Request) -> Result<Waiting, PublicWebError> {
    let JsonEvent(event) = JsonEvent::from_request(request, &state)
        .await
        .map_err(PublicWebError::Rejected)?;
    let timeout = state.config.request_timeout;
    let deadline = Instant::now() + timeout;
    let parked = state.pending.park(&event.id)?;
    // The deadline covers the forward too: a slow dispatcher must not
    // stretch a request past REQUEST_TIMEOUT_MS.
    match tokio::time::timeout_at(deadline, state.dispatcher.forward(&event)).await {
        Ok(forwarded) => forwarded?,
        Err(_) => return Err(timed_out(&parked, timeout)),
    }
    Ok(Waiting {
        parked,
        deadline,
        timeout,
    })
}

/// A forwarded request, parked until its response arrives or its
/// deadline passes.
struct Waiting {
    parked: Parked,
    deadline: Instant,
    timeout: Duration,
}

impl Waiting {
    async fn response(mut self) -> Result<Response, PublicWebError> {
        let answer = tokio::time::timeout_at(self.deadline, self.parked.response())
            .await
            .map_err(|_| timed_out(&self.parked, self.timeout))?
            .ok_or(PublicWebError::Abandoned)?;
        let body = answer.map_err(PublicWebError::Listener)?;
        Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
    }
}

fn timed_out(parked: &Parked, timeout: Duration) -> PublicWebError {
    crate::metrics::request_timed_out();
    tracing::warn!(event_id = %parked.id(), "no response in time");
    PublicWebError::Timeout(timeout.as_millis())
}

/// Lets a `/dispatch` callback through only if it carries the body's
/// signature under the shared secret (when one is configured): 401 else.
pub async fn require_signature(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(secret) = &state.config.callback_secret else {
        return Ok(next.run(request).await);
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "callback body over the limit",
            )
        })?;
    let signature = parts
        .headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    if !secret.verify(&body, signature) {
        tracing::warn!("callback with a missing or wrong signature refused");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the callback is not signed with the shared secret",
        ));
    }
    Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
}

/// `POST /dispatch`: the dispatcher delivers a response event. Its body
/// goes to the waiting client as received, not serialised again; a
/// handler's error event becomes that client's error response.
pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    JsonResponseEvent { event, body }: JsonResponseEvent,
) -> Result<StatusCode, PublicWebError> {
    let answer = match HandlerError::from_event(&event) {
        Some(error) => Err(error),
        None => Ok(body),
    };
    state.pending.complete(&event.id, answer).inspect_err(|_| {
        tracing::warn!(event_id = %event.id, "response for a request that is not waiting");
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /ping`: answered here, without the dispatcher.
pub async fn ping(JsonEvent(request): JsonEvent) -> Result<Json<Event>, PublicWebError> {
    ping_listener::answer(&request)
        .map(Json)
        .map_err(PublicWebError::Listener)
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
