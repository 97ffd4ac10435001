//! `GET /events`: the events matching the query's filters as server-sent
//! events, for `curl -N` and the browser's `EventSource`.
//!
//! Filters: `filter=<JSON list>` and/or `type=<type>` (a shorthand for
//! `{"exact": {"type": ...}}`), all of which must match; a token in
//! `Authorization: Bearer` or `access_token`. Each event is
//! `id: <offset>` and `data: <event JSON>`; a reconnecting client's
//! `Last-Event-ID` resumes right after that offset, so nothing is missed
//! or repeated. A comment line every `SSE_KEEPALIVE_MS` keeps proxies from
//! closing a quiet stream. The stream ends when the token expires, when
//! the client stops reading (its queue overflows) or at shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use common::http::ApiError;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::live::hub::{Outgoing, Sink};
use crate::live::{SubscribeError, bearer_token};
use crate::state::AppState;

/// The header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: &str = "last-event-id";

#[derive(serde::Deserialize)]
struct EventsQuery {
    filter: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    access_token: Option<String>,
}

/// `GET /events`.
pub async fn events(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    match subscribe(&state, &parts).await {
        Ok(stream) => stream.into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn subscribe(
    state: &Arc<AppState>,
    request: &Parts,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>> + use<>>, ApiError> {
    let query = axum::extract::Query::<EventsQuery>::try_from_uri(&request.uri)
        .map_err(|rejection| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            )
        })?
        .0;
    let headers = &request.headers;
    let from = match headers.get(LAST_EVENT_ID) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_last_event_id",
                        "Last-Event-ID must be an offset this endpoint sent",
                    )
                })?
                + 1,
        ),
    };
    let mut filters = match &query.filter {
        Some(text) => serde_json::from_str::<Value>(text).map_err(|error| {
            ApiError::from(&SubscribeError::MalformedFilters(error.to_string()))
        })?,
        None => Value::Array(Vec::new()),
    };
    if let (Some(kind), Value::Array(list)) = (&query.kind, &mut filters) {
        list.push(json!({"exact": {"type": kind}}));
    }
    let live = &state.live;
    let grant = live
        .grant(bearer_token(headers, query.access_token.as_deref()))
        .map_err(|error| ApiError::from(&SubscribeError::from(error)))?;
    let (sender, receiver) = mpsc::channel(live.send_queue);
    let overflow = CancellationToken::new();
    let sink = Sink {
        sender,
        subscription: Arc::from(""),
        overflow: overflow.clone(),
    };
    let subscription = live
        .subscribe(grant.as_ref(), &filters, sink, from)
        .await
        .map_err(|error| ApiError::from(&error))?;
    let ends = Ends {
        overflow,
        shutdown: state.shutdown.clone(),
        expires: grant.as_ref().map(|grant| grant.expires_at()),
    };
    let stream = futures_util::stream::unfold(
        (receiver, subscription, ends),
        |(mut receiver, subscription, ends)| async move {
            let next = ends.next(&mut receiver).await?;
            Some((Ok(next), (receiver, subscription, ends)))
        },
    );
    crate::metrics::sse_streams_gauge().increment(1.0);
    let keep_alive = state.config.sse_keepalive;
    Ok(Sse::new(Counted::wrap(stream))
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive")))
}

/// What ends a stream besides the client leaving.
struct Ends {
    overflow: CancellationToken,
    shutdown: CancellationToken,
    expires: Option<Instant>,
}

impl Ends {
    /// The next event to send; `None` when the stream must end.
    async fn next(&self, receiver: &mut mpsc::Receiver<Outgoing>) -> Option<SseEvent> {
        let expired = tokio::time::sleep_until(self.expires.unwrap_or_else(far_future));
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            _ = self.overflow.cancelled() => None,
            _ = expired => None,
            frame = receiver.recv() => match frame? {
                Outgoing::Event { event, .. } => {
                    Some(SseEvent::default().id(event.offset.to_string()).data(&*event.json))
                }
                Outgoing::Text(_) => None,
            },
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Counts the open streams: the gauge goes down when the stream (and its
/// subscription) is dropped.
struct Counted<S> {
    inner: std::pin::Pin<Box<S>>,
}

impl<S> Counted<S> {
    fn wrap(inner: S) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        crate::metrics::sse_streams_gauge().decrement(1.0);
    }
}

impl<S: futures_util::Stream> futures_util::Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
