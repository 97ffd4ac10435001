//! public-web's handlers: a client's `POST /`, the dispatcher's signed
//! `POST /dispatch` callback and the local `POST /ping`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use common::http::{CallbackHop, JsonEvent, SignedEvent};
use common::telemetry::HOP_TARGET;
use common::wire::{Event, HandlerError};
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
    let started = Instant::now();
    let accepted = Box::pin(accept(state, request));
    async move {
        let answer = match accepted.await {
            Ok(waiting) => waiting.response().await,
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

/// Extracts the event, parks the request and forwards the event.
async fn accept(state: Arc<AppState>, request: Request) -> Result<Waiting, PublicWebError> {
    let JsonEvent(event) = JsonEvent::from_request(request, &state)
        .await
        .map_err(PublicWebError::Rejected)?;
    forward(&state, &event).await
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
    let forward = state.dispatcher.forward(event, parked.correlation());
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
