//! The dispatcher's HTTP handler: `POST /` takes a signed event from
//! public-web, routes it by its type and publishes it.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::egress::EgressError;
use common::http::{SignedEvent, SubmitHop};
use common::telemetry::HOP_TARGET;
use common::wire::CALLBACK_URL_HEADER;
use serde_json::{Value, json};

use crate::error::DispatchError;
use crate::state::AppState;
use crate::stream::{Direction, REQUEST_SOURCE};

/// `POST /`: 201 once the broker has confirmed the event in its queue.
pub async fn accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    signed: SignedEvent<SubmitHop>,
) -> Result<(StatusCode, Json<Value>), DispatchError> {
    let SignedEvent {
        correlation,
        event,
        body,
        ..
    } = signed;
    let queue = state
        .routes
        .queue_for(&event.kind)
        .ok_or_else(|| DispatchError::UnknownType(event.kind.clone()))?;
    state.listeners.check(queue)?;
    let callback_url = headers
        .get(CALLBACK_URL_HEADER)
        .ok_or(DispatchError::NoCallback)?
        .to_str()
        .map_err(|_| DispatchError::InvalidCallback(EgressError::NotAUrl))?;
    state
        .callback_urls
        .check(callback_url)
        .map_err(DispatchError::InvalidCallback)?;
    // The body as public-web signed it: not serialised again.
    state
        .publisher
        .publish(&event, &body, queue, &correlation, callback_url)
        .await?;
    state
        .events
        .record(Direction::Request, REQUEST_SOURCE, &event, body);
    tracing::info!(target: HOP_TARGET, event_id = %event.id, queue, "event published");
    Ok((StatusCode::CREATED, Json(json!({"id": event.id}))))
}
