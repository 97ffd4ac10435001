//! public-web's handlers.

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::middleware::Next;
use axum::response::Response;
use common::Event;
use common::callback_auth::SIGNATURE_HEADER;
use common::event::HandlerError;
use common::http::{self, ApiError, CALLBACK_URL_HEADER, JsonEvent, JsonResponseEvent};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::PublicWebError;
use crate::startup::AppState;

/// `POST /`: park the request, forward the event to the dispatcher, and
/// answer with the response event when `/dispatch` delivers it.
///
/// A handler's future is allocated once, at the size of its largest
/// state, and a parked request keeps it for as long as it waits (there may
/// be 100,000 of them). So the event is extracted here, in a box of its
/// own that is freed before the request parks, rather than by an extractor
/// in the signature, whose state axum would build into this future: that
/// made each parked request's future 1.9 KB.
pub async fn submit(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Event>, PublicWebError> {
    let JsonEvent(event) = Box::pin(JsonEvent::from_request(request, &state))
        .await
        .map_err(PublicWebError::Rejected)?;
    let deadline = Instant::now() + state.config.request_timeout;
    let mut parked = state.pending.park(&event.id)?;
    let id = event.id.clone();
    let timed_out = |_| {
        common::metrics::request_timed_out();
        tracing::warn!(event_id = %id, "no response in time");
        PublicWebError::Timeout(state.config.request_timeout.as_millis())
    };
    // The deadline covers the forward too: a slow dispatcher must not
    // stretch a request past REQUEST_TIMEOUT_MS. The forward is boxed and
    // takes the event, so neither its large state nor the event stays
    // allocated while the request is parked.
    tokio::time::timeout_at(deadline, Box::pin(forward(&state, event)))
        .await
        .map_err(timed_out)??;
    let response = tokio::time::timeout_at(deadline, parked.response())
        .await
        .map_err(timed_out)?
        .ok_or(PublicWebError::Abandoned)?;
    match HandlerError::from_event(&response) {
        Some(error) => Err(PublicWebError::Listener(error)),
        None => Ok(Json(response)),
    }
}

/// Hands the event to the dispatcher, with this instance's callback URL.
async fn forward(state: &AppState, event: Event) -> Result<(), PublicWebError> {
    let span = http::client_span("POST", &state.dispatcher_url);
    let sent = state
        .http
        .post(state.dispatcher_url.clone())
        .headers(http::client_headers(&span))
        .header(CALLBACK_URL_HEADER, state.callback_url.clone())
        .json(&event)
        .send()
        .instrument(span.clone())
        .await;
    http::record_client_outcome(&span, sent.as_ref().map(|r| r.status()));
    let response = sent.map_err(PublicWebError::DispatcherUnreachable)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // Passed on with the refusal: a client told to retry (503 while the
    // broker is away) must be told when.
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.parse().ok());
    let body = response.bytes().await.unwrap_or_default();
    let mut refusal = ApiError::from_body(status, &body).unwrap_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "dispatcher_error",
            format!("the dispatcher answered {status}"),
        )
    });
    if let Some(seconds) = retry_after {
        refusal = refusal.with_retry_after(seconds);
    }
    Err(PublicWebError::DispatcherRefused(refusal))
}

/// Lets a `/dispatch` callback through only if it carries the body's
/// signature under the shared secret (when one is configured): 401 else.
pub async fn require_signature(
    State(state): State<AppState>,
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

/// `POST /dispatch`: the dispatcher delivers a response event.
pub async fn dispatch(
    State(state): State<AppState>,
    JsonResponseEvent(response): JsonResponseEvent,
) -> Result<StatusCode, PublicWebError> {
    let id = response.id.clone();
    state.pending.complete(response).inspect_err(|_| {
        tracing::warn!(event_id = %id, "response for a request that is not waiting");
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /ping`: answered here, without the dispatcher.
pub async fn ping(JsonEvent(request): JsonEvent) -> Result<Json<Event>, PublicWebError> {
    common::ping::answer(&request)
        .map(Json)
        .map_err(PublicWebError::Listener)
}
