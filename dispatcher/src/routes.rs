//! The dispatcher's HTTP handler: `POST /` routes an event by its type and
//! publishes it.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::http::JsonEvent;
use common::wire::CALLBACK_URL_HEADER;
use serde_json::{Value, json};

use crate::error::DispatchError;
use crate::state::AppState;

/// `POST /`: 201 once the broker has confirmed the event in its queue.
pub async fn accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonEvent(event): JsonEvent,
) -> Result<(StatusCode, Json<Value>), DispatchError> {
    let queue = state
        .routes
        .queue_for(&event.kind)
        .ok_or_else(|| DispatchError::UnknownType(event.kind.clone()))?;
    let callback_url = match headers.get(CALLBACK_URL_HEADER) {
        Some(callback) => Some(
            callback
                .to_str()
                .ok()
                .filter(|url| state.callback_urls.parse(url).is_some())
                .ok_or_else(|| DispatchError::InvalidCallback(format!("{callback:?}")))?,
        ),
        None => None,
    };
    state.publisher.publish(&event, queue, callback_url).await?;
    tracing::debug!(event_id = %event.id, queue, "event published");
    Ok((StatusCode::CREATED, Json(json!({"id": event.id}))))
}
