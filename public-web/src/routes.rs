//! public-web's handlers: a client's `POST /`, the dispatcher's signed
//! `POST /dispatch` callback and the local `POST /ping`.
//!
//! `POST /` with `Prefer: respond-async` (RFC 7240) is not parked: it is
//! answered `202 Accepted` with the event's id once the dispatcher has it,
//! and its answer goes to the event stream (and so to webhooks and live
//! subscribers) instead of a held connection.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::http::{CallbackHop, JsonEvent, SignedEvent};
use common::telemetry::HOP_TARGET;
use common::wire::{Event, HandlerError};
use tokio::time::Instant;

use crate::dispatcher_client::Reply;
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
    let started = Instant::now();
    let accepted = Box::pin(accept(state, request));
    async move {
        let answer = match accepted.await {
            Ok(Accepted::Parked(waiting)) => waiting.response().await,
            Ok(Accepted::Async(response)) => Ok(response),
            Err(error) => Err(error),
        };
        let response = answer.into_response();
        tracing::info!(
            target: HOP_TARGET,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "request answered"
        );
        Ok(response)
    }
}

/// What `POST /` does with an event it took.
enum Accepted {
    /// Parked for its answer.
    Parked(Waiting),
    /// Asynchronous: answered already.
    Async(Response),
}

/// Extracts the event, then parks the request and forwards the event, or
/// forwards it asynchronously when the client prefers.
async fn accept(state: Arc<AppState>, request: Request) -> Result<Accepted, PublicWebError> {
    let respond_async = prefers_async(request.headers());
    let JsonEvent(event) = JsonEvent::from_request(request, &state)
        .await
        .map_err(PublicWebError::Rejected)?;
    if respond_async {
        return forward_async(&state, &event).await.map(Accepted::Async);
    }
    forward(&state, &event).await.map(Accepted::Parked)
}

/// The `Prefer` header's value that asks for an asynchronous answer.
const RESPOND_ASYNC: &str = "respond-async";

/// Whether a `Prefer` header asks for `respond-async` (RFC 7240: a
/// comma-separated list of preferences, each maybe with parameters).
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| preference.split(';').next())
        .any(|token| token.trim().eq_ignore_ascii_case(RESPOND_ASYNC))
}

/// Forwards `event` with no callback: `202 Accepted` with its id and
/// `Preference-Applied: respond-async` once the dispatcher has it.
async fn forward_async(state: &AppState, event: &Event) -> Result<Response, PublicWebError> {
    let timeout = state.config.request_timeout;
    let deadline = Instant::now() + timeout;
    let correlation = crate::pending::new_correlation_id();
    let forward = state
        .dispatcher
        .forward(event, &correlation, Reply::ToStream, deadline);
    tokio::time::timeout_at(deadline, forward)
        .await
        .map_err(|_| PublicWebError::Timeout(timeout.as_millis()))??;
    tracing::info!(target: HOP_TARGET, event_id = %event.id, event_type = %event.kind, "asynchronous request accepted");
    let body = serde_json::json!({"id": event.id});
    Ok((
        StatusCode::ACCEPTED,
        [("preference-applied", RESPOND_ASYNC)],
        Json(body),
    )
        .into_response())
}

/// Parks a request for `event`'s response and forwards the event: what
/// `POST /` and a WebSocket request frame share, so both count against
/// `MAX_PENDING` and wait at most `REQUEST_TIMEOUT_MS`.
pub(crate) async fn forward(state: &AppState, event: &Event) -> Result<Waiting, PublicWebError> {
    let timeout = state.config.request_timeout;
    let deadline = Instant::now() + timeout;
    let parked = state.pending.park(&event.id)?;
    tracing::info!(target: HOP_TARGET, event_id = %event.id, event_type = %event.kind, "request accepted");
    // The deadline covers the forward too: a slow dispatcher must not
    // stretch a request past REQUEST_TIMEOUT_MS.
    let forward = state
        .dispatcher
        .forward(event, parked.correlation(), Reply::Callback, deadline);
    match tokio::time::timeout_at(deadline, forward).await {
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
pub(crate) struct Waiting {
    parked: Parked,
    deadline: Instant,
    timeout: Duration,
}

impl Waiting {
    /// The response event's JSON, as the listener wrote it.
    pub(crate) async fn answer(mut self) -> Result<Bytes, PublicWebError> {
        let answer = tokio::time::timeout_at(self.deadline, self.parked.response())
            .await
            .map_err(|_| timed_out(&self.parked, self.timeout))?
            .ok_or(PublicWebError::Abandoned)?;
        answer.map_err(PublicWebError::Listener)
    }

    async fn response(self) -> Result<Response, PublicWebError> {
        let body = self.answer().await?;
        Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
    }
}

fn timed_out(parked: &Parked, timeout: Duration) -> PublicWebError {
    crate::metrics::request_timed_out();
    tracing::warn!(event_id = %parked.event_id(), "no response in time");
    PublicWebError::Timeout(timeout.as_millis())
}

/// `POST /dispatch`: the dispatcher delivers a response event, signed,
/// for the request parked under its correlation id. Its body goes to the
/// waiting client as received, not serialised again; a handler's error
/// event becomes that client's error response.
pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    callback: SignedEvent<CallbackHop>,
) -> Result<StatusCode, PublicWebError> {
    let SignedEvent {
        correlation,
        event,
        body,
        ..
    } = callback;
    let answer = match HandlerError::from_event(&event) {
        Some(error) => Err(error),
        None => Ok(body),
    };
    state
        .pending
        .complete(&correlation, &event.id, answer)
        .inspect_err(|error| {
            tracing::warn!(event_id = %event.id, %error, "response not delivered");
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /ping`: answered here, without the dispatcher.
pub async fn ping(JsonEvent(request): JsonEvent) -> Result<Json<Event>, PublicWebError> {
    ping_listener::answer(&request)
        .map(Json)
        .map_err(PublicWebError::Listener)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn prefer(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("prefer", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn respond_async_is_one_preference_among_others() {
        assert!(prefers_async(&prefer(&["respond-async"])));
        assert!(prefers_async(&prefer(&[
            "return=minimal, Respond-Async; wait=10"
        ])));
        assert!(prefers_async(&prefer(&["wait=5", "respond-async"])));
        assert!(!prefers_async(&prefer(&["return=representation"])));
        assert!(!prefers_async(&prefer(&["respond-asynchronously"])));
        assert!(!prefers_async(&HeaderMap::new()));
    }
}
