//! The dispatcher's HTTP handler: `POST /` takes a signed event from
//! public-web, routes it by its type and publishes it. A request without
//! a callback URL is asynchronous: its answer goes to the event stream
//! only (and from there to webhooks and live subscribers).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::egress::EgressError;
use common::http::{SignedEvent, SubmitHop};
use common::telemetry::HOP_TARGET;
use common::wire::{CALLBACK_URL_HEADER, TIME_BUDGET_HEADER};
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
        .map(|url| {
            let url = url
                .to_str()
                .map_err(|_| DispatchError::InvalidCallback(EgressError::NotAUrl))?;
            let checked = state
                .callback_urls
                .check(url)
                .map_err(DispatchError::InvalidCallback)?;
            state.targets.of(&checked).heard_from();
            Ok::<_, DispatchError>(url)
        })
        .transpose()?;
    // The body as public-web signed it: not serialised again.
    state
        .publisher
        .publish(
            &event,
            &body,
            queue,
            &correlation,
            callback_url,
            time_budget(&headers),
        )
        .await?;
    state
        .events
        .record(Direction::Request, REQUEST_SOURCE, &event, body);
    tracing::info!(target: HOP_TARGET, event_id = %event.id, queue, "event published");
    Ok((StatusCode::CREATED, Json(json!({"id": event.id}))))
}

/// How long the publish may take for the client's sake: the time public-web
/// says it still waits, less [`ANSWER_MARGIN`] for the answer's way back.
/// `None` when it does not say (or says something unreadable): then only
/// `PUBLISH_TIMEOUT_MS` bounds the publish.
fn time_budget(headers: &HeaderMap) -> Option<Duration> {
    let millis: u64 = headers
        .get(TIME_BUDGET_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(millis).saturating_sub(ANSWER_MARGIN))
}

/// Time kept for a `503` to reach the client before its deadline, so it
/// learns the broker is unavailable (and when to retry) rather than
/// timing out.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(TIME_BUDGET_HEADER, value.parse().unwrap());
        time_budget(&headers)
    }

    #[test]
    fn the_time_budget_keeps_a_margin_and_ignores_what_it_cannot_read() {
        assert_eq!(budget("10000"), Some(Duration::from_millis(9_750)));
        assert_eq!(budget("100"), Some(Duration::ZERO));
        assert_eq!(budget("-5"), None);
        assert_eq!(budget("soon"), None);
        assert_eq!(budget("99999999999999999999999"), None);
        assert_eq!(time_budget(&HeaderMap::new()), None);
    }
}
