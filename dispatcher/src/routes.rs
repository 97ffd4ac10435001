//! The dispatcher's HTTP handlers.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::amqp::{self, CALLBACK_URL_HEADER, PublishError};
use common::http::JsonEvent;
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::error::DispatchError;
use crate::startup::AppState;

/// `POST /`: route the event by its type and publish it; 201 once the
/// broker has confirmed it.
pub async fn accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonEvent(event): JsonEvent,
) -> Result<(StatusCode, Json<Value>), DispatchError> {
    let queue = state
        .config
        .routes
        .queue_for(&event.kind)
        .ok_or_else(|| DispatchError::UnknownType(event.kind.clone()))?;

    let mut amqp_headers = FieldTable::default();
    if let Some(callback) = headers.get(CALLBACK_URL_HEADER) {
        let callback = callback
            .to_str()
            .ok()
            .filter(|url| state.callback_urls.parse(url).is_some())
            .ok_or_else(|| DispatchError::InvalidCallback(format!("{callback:?}")))?;
        amqp::set_header(&mut amqp_headers, CALLBACK_URL_HEADER, callback);
    }
    let properties = amqp::event_properties(&event.id, &event.kind)
        .with_reply_to(state.config.response_queue.as_str().into())
        .with_expiration(state.message_ttl_ms.as_ref().into())
        .with_headers(amqp_headers);

    let channel = state.publisher.get().ok_or(PublishError::NotConnected)?;
    amqp::publish_confirmed(
        &channel,
        "",
        queue,
        &event.to_vec(),
        properties,
        state.config.publish_timeout,
    )
    .await?;
    tracing::debug!(event_id = %event.id, queue, "event published");
    Ok((StatusCode::CREATED, Json(json!({"id": event.id}))))
}
