//! `GET /ws`: one WebSocket for many requests in flight and live
//! subscriptions.
//!
//! Client → server, one JSON text frame each:
//! - an event, `{"id"?, "type", "data"?, "traceparent"?}`: parked and
//!   forwarded like `POST /` (same timeout and `MAX_PENDING`), answered with
//!   the response event's JSON exactly as `POST /` answers it, or with
//!   `{"id", "status", "error": {"code", "message"}}` carrying the HTTP
//!   status and code `POST /` would give. Each frame is its own trace, a
//!   child of `traceparent` when the frame has one.
//! - `{"subscribe": {"id", "filters", "from"?}}` → `{"subscribed": id}`,
//!   then `{"subscription": id, "offset", "event"}` per matching event;
//!   `{"unsubscribe": id}` → `{"unsubscribed": id}`. A refused or ended
//!   subscription is `{"subscription": id, "status", "error"}`.
//!
//! A frame that is none of these gets `{"status": 400 or 422, "error"}`
//! and the socket goes on. Limits (`WS_*`, README): frame size (closed
//! with 1009 beyond it), requests in flight and subscriptions per socket
//! (refused with 429 frames), the send queue (a client that does not read
//! is closed with 1008 and counted), ping every interval and close after
//! the idle timeout without a frame or pong, allowed origins. The socket's
//! requests and subscriptions end with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::http::{ApiError, ConnectionHeld, UpgradeHold};
use common::telemetry::{HOP_TARGET, HopSpan, propagation};
use common::wire::{ErrorDetail, EventInput};
use futures_util::SinkExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::live::auth::Grant;
use crate::live::hub::{Outgoing, Sink, Subscription};
use crate::live::{SubscribeError, bearer_token};
use crate::state::AppState;

/// `access_token`, for browsers (they cannot set `Authorization` on a
/// WebSocket).
#[derive(serde::Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

/// `GET /ws`: checks the origin and any token, then upgrades.
pub async fn upgrade(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let config = &state.config.ws;
    if !config.origin_allowed(&parts.headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not open a WebSocket here (WS_ALLOWED_ORIGINS)",
        )
        .into_response();
    }
    let query = match axum::extract::Query::<TokenQuery>::try_from_uri(&parts.uri) {
        Ok(query) => query.0,
        Err(rejection) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    // A token is needed only to subscribe; one that is present but
    // invalid is refused now rather than at the first subscription.
    let grant = match bearer_token(&parts.headers, query.access_token.as_deref()) {
        Some(token) => match state.live.grant(Some(token)) {
            Ok(grant) => grant,
            Err(error) => return SubscribeError::from(error).into_response(),
        },
        None => None,
    };
    let hold = parts.extensions.remove::<UpgradeHold>();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(rejection) => {
            let status = rejection.status();
            return ApiError::new(status, "websocket_upgrade_required", rejection.body_text())
                .into_response();
        }
    };
    let held = hold.map(UpgradeHold::hold);
    ws.max_message_size(config.max_frame_bytes)
        .max_frame_size(config.max_frame_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| Session::new(state, grant, held).run(socket))
}

/// Why a socket is being closed.
enum Close {
    /// The connection is gone.
    Gone,
    /// The client sent a close frame; the answering one is queued.
    ByClient,
    /// A close frame to send: code and reason.
    With(u16, &'static str),
}

struct Session {
    state: Arc<AppState>,
    grant: Option<Grant>,
    _held: Option<ConnectionHeld>,
    outgoing: mpsc::Sender<Outgoing>,
    queue: mpsc::Receiver<Outgoing>,
    /// Cancelled when the send queue overflowed.
    overflow: CancellationToken,
    requests: JoinSet<()>,
    subscriptions: HashMap<Arc<str>, Subscription>,
}

impl Session {
    fn new(state: Arc<AppState>, grant: Option<Grant>, held: Option<ConnectionHeld>) -> Self {
        let (outgoing, queue) = mpsc::channel(state.live.send_queue);
        Self {
            state,
            grant,
            _held: held,
            outgoing,
            queue,
            overflow: CancellationToken::new(),
            requests: JoinSet::new(),
            subscriptions: HashMap::new(),
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        crate::metrics::websockets_gauge().increment(1.0);
        let config = self.state.config.ws.clone();
        let shutdown = self.state.shutdown.clone();
        let mut ping =
            tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        let mut last_heard = Instant::now();
        let expires = self.grant.as_ref().map(Grant::expires_at);
        let close = loop {
            let expiring = expires.filter(|_| !self.subscriptions.is_empty());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Close::With(close_code::AWAY, "server shutting down"),
                _ = self.overflow.cancelled() => {
                    break Close::With(close_code::POLICY, "send queue full: the client does not read");
                }
                Some(_) = self.requests.join_next(), if !self.requests.is_empty() => {}
                _ = tokio::time::sleep_until(expiring.unwrap_or_else(Instant::now)), if expiring.is_some() => {
                    self.end_subscriptions_expired();
                }
                frame = self.queue.recv() => {
                    let frame = frame.expect("the session holds a sender");
                    let sent = tokio::select! {
                        sent = socket.send(Message::text(render(frame))) => sent,
                        _ = self.overflow.cancelled() => break Close::With(close_code::POLICY, "send queue full: the client does not read"),
                    };
                    if sent.is_err() {
                        break Close::Gone;
                    }
                }
                message = socket.recv() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                        Some(Ok(Message::Binary(_))) => self.reply_error(None, &ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "unsupported_frame",
                            "send JSON in text frames",
                        )),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => break Close::ByClient,
                        None => break Close::Gone,
                        Some(Err(error)) => {
                            if is_too_large(error) {
                                break Close::With(close_code::SIZE, "frame over WS_MAX_FRAME_BYTES");
                            }
                            break Close::Gone;
                        }
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= config.idle_timeout {
                        break Close::With(close_code::NORMAL, "idle timeout");
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break Close::Gone;
                    }
                }
            }
        };
        match close {
            Close::Gone => {}
            // RFC 6455 §5.5.1: the close is answered with a close frame;
            // tungstenite queued it, closing the sink writes it.
            Close::ByClient => {
                let _ = tokio::time::timeout(CLOSE_GRACE, SinkExt::close(&mut socket)).await;
            }
            Close::With(code, reason) => {
                if code == close_code::POLICY {
                    crate::metrics::websocket_cut_off();
                }
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Message::Close(Some(frame))))
                    .await;
            }
        }
        crate::metrics::websockets_gauge().decrement(1.0);
        // Dropping `self` aborts the socket's requests (their parked
        // entries go with them) and ends its subscriptions.
    }

    /// One text frame from the client.
    async fn on_text(&mut self, text: &str) {
        let mut frame = match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(frame) => frame,
            Err(error) => {
                return self.reply_error(
                    None,
                    &ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_json",
                        format!("a frame is one JSON object: {error}"),
                    ),
                );
            }
        };
        if let Some(subscribe) = frame.remove("subscribe") {
            return self.subscribe(subscribe).await;
        }
        if let Some(id) = frame.remove("unsubscribe") {
            return self.unsubscribe(id);
        }
        self.request(frame);
    }

    /// A request frame: parked and forwarded in a task of its own.
    fn request(&mut self, mut frame: Map<String, Value>) {
        let traceparent = match frame.remove("traceparent") {
            Some(Value::String(traceparent)) => Some(traceparent),
            _ => None,
        };
        let id = frame.get("id").and_then(Value::as_str).map(str::to_owned);
        let event = serde_json::from_value::<EventInput>(Value::Object(frame))
            .map_err(|error| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_event",
                    error.to_string(),
                )
            })
            .and_then(|input| input.into_event().map_err(ApiError::from));
        let event = match event {
            Ok(event) => event,
            Err(refusal) => return self.reply_error(id.as_deref(), &refusal),
        };
        let max = self.state.config.ws.max_in_flight;
        if self.requests.len() >= max {
            let refusal = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_in_flight",
                format!("{max} requests are already in flight on this socket (WS_MAX_IN_FLIGHT)"),
            );
            return self.reply_error(Some(&event.id), &refusal);
        }
        let state = self.state.clone();
        let outgoing = self.outgoing.clone();
        let overflow = self.overflow.clone();
        self.requests.spawn(async move {
            let span = request_span(&event.kind, traceparent.as_deref());
            let started = Instant::now();
            let answered = span
                .scope(async {
                    let answer = match crate::routes::forward(&state, &event).await {
                        Ok(waiting) => waiting.answer().await,
                        Err(error) => Err(error),
                    };
                    let (status, text) = match answer {
                        Ok(body) => (200, String::from_utf8_lossy(&body).into_owned()),
                        Err(error) => {
                            let refusal = ApiError::from(&error);
                            if refusal.status.is_server_error() {
                                span.record_error(&error);
                            }
                            (
                                refusal.status.as_u16(),
                                error_frame(Some(&event.id), &refusal),
                            )
                        }
                    };
                    tracing::info!(
                        target: HOP_TARGET,
                        status,
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "request answered"
                    );
                    text
                })
                .await;
            offer(&outgoing, &overflow, Outgoing::Text(answered));
        });
    }

    async fn subscribe(&mut self, body: Value) {
        let Value::Object(mut body) = body else {
            return self.reply_error(
                None,
                &ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_subscribe",
                    "subscribe takes an object: {\"id\", \"filters\", \"from\"?}",
                ),
            );
        };
        let id = match body.remove("id") {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_SUBSCRIPTION_ID => id,
            _ => {
                return self.reply_error(
                    None,
                    &ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_subscribe",
                        format!(
                            "subscribe.id must be a string of 1 to {MAX_SUBSCRIPTION_ID} bytes"
                        ),
                    ),
                );
            }
        };
        let key: Arc<str> = Arc::from(json_string(&id));
        let refuse = |session: &mut Self, refusal: ApiError| {
            session.send_text(subscription_error(&key, &refusal));
        };
        let from = match body.remove("from") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(_) => {
                return refuse(
                    self,
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_subscribe",
                        "subscribe.from must be a stream offset (a non-negative integer)",
                    ),
                );
            }
        };
        if self.subscriptions.contains_key(&key) {
            return refuse(
                self,
                ApiError::new(
                    StatusCode::CONFLICT,
                    "subscription_exists",
                    "this socket already has a subscription of that id",
                ),
            );
        }
        let max = self.state.config.ws.max_subscriptions;
        if self.subscriptions.len() >= max {
            return refuse(
                self,
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_subscriptions",
                    format!("{max} subscriptions already on this socket (WS_MAX_SUBSCRIPTIONS)"),
                ),
            );
        }
        let filters = body.remove("filters").unwrap_or(Value::Array(Vec::new()));
        let sink = Sink {
            sender: self.outgoing.clone(),
            subscription: key.clone(),
            overflow: self.overflow.clone(),
        };
        // Acknowledged before the first event can be queued behind it.
        let live = self.state.live.clone();
        match live
            .subscribe(self.grant.as_ref(), &filters, sink, from)
            .await
        {
            Ok(subscription) => {
                self.send_text(format!("{{\"subscribed\":{key}}}"));
                self.subscriptions.insert(key, subscription);
            }
            Err(error) => refuse(self, ApiError::from(&error)),
        }
    }

    fn unsubscribe(&mut self, id: Value) {
        let Value::String(id) = id else {
            return self.reply_error(
                None,
                &ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_unsubscribe",
                    "unsubscribe takes a subscription id",
                ),
            );
        };
        let key = json_string(&id);
        if self.subscriptions.remove(key.as_str()).is_some() {
            self.send_text(format!("{{\"unsubscribed\":{key}}}"));
        } else {
            let refusal = ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_subscription",
                "no subscription of that id on this socket",
            );
            self.send_text(subscription_error(&key, &refusal));
        }
    }

    /// The token expired: every subscription ends, the socket stays.
    fn end_subscriptions_expired(&mut self) {
        let refusal = ApiError::from(&SubscribeError::from(crate::live::auth::AuthError::Expired));
        for (key, _) in std::mem::take(&mut self.subscriptions) {
            self.send_text(subscription_error(&key, &refusal));
        }
    }

    fn reply_error(&self, id: Option<&str>, refusal: &ApiError) {
        self.send_text(error_frame(id, refusal));
    }

    fn send_text(&self, text: String) {
        offer(&self.outgoing, &self.overflow, Outgoing::Text(text));
    }
}

/// The read buffer a socket starts with. tungstenite's default (128 KiB)
/// is zero-filled on the first read, so every idle subscriber would hold
/// it; frames larger than this grow the buffer as they arrive (up to
/// `WS_MAX_FRAME_BYTES`). Writes go out as each frame is sent, unbuffered.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// How long a close frame may wait to be written: a client that does not
/// read gets this long to find out why it is being closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Longest subscription id, in bytes.
const MAX_SUBSCRIPTION_ID: usize = 128;

/// Queues a frame; a full queue means the client does not read.
fn offer(outgoing: &mpsc::Sender<Outgoing>, overflow: &CancellationToken, frame: Outgoing) {
    if let Err(mpsc::error::TrySendError::Full(_)) = outgoing.try_send(frame) {
        overflow.cancel();
    }
}

/// The frame's text.
fn render(frame: Outgoing) -> String {
    match frame {
        Outgoing::Text(text) => text,
        Outgoing::Event {
            subscription,
            event,
        } => format!(
            "{{\"subscription\":{subscription},\"offset\":{},\"event\":{}}}",
            event.offset, event.json
        ),
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// `{"id", "status", "error"}`: a request's failure, as `POST /` would
/// have answered it.
fn error_frame(id: Option<&str>, refusal: &ApiError) -> String {
    let mut frame = serde_json::json!({
        "status": refusal.status.as_u16(),
        "error": ErrorDetail { code: refusal.code.to_string(), message: refusal.message.clone() },
    });
    if let Some(id) = id {
        frame["id"] = Value::String(id.to_owned());
    }
    frame.to_string()
}

/// `{"subscription", "status", "error"}`: a subscription refused or ended.
fn subscription_error(key: &str, refusal: &ApiError) -> String {
    let error = ErrorDetail {
        code: refusal.code.to_string(),
        message: refusal.message.clone(),
    };
    format!(
        "{{\"subscription\":{key},\"status\":{},\"error\":{}}}",
        refusal.status.as_u16(),
        serde_json::to_string(&error).expect("an error serialises")
    )
}

/// A request frame's SERVER span: its own trace, or a child of the frame's
/// `traceparent`.
fn request_span(kind: &str, traceparent: Option<&str>) -> HopSpan {
    HopSpan::start(
        || "WS request".into(),
        SpanKind::Server,
        || {
            let carrier: HashMap<String, String> = traceparent
                .map(|value| HashMap::from([("traceparent".to_owned(), value.to_owned())]))
                .unwrap_or_default();
            propagation::extract(&carrier)
        },
        || {
            vec![
                KeyValue::new("network.protocol.name", "websocket"),
                KeyValue::new("http.route", "/ws"),
                KeyValue::new("event.type", kind.to_owned()),
            ]
        },
    )
}

/// Whether a read failed because the frame was over the size limit.
fn is_too_large(error: axum::Error) -> bool {
    matches!(
        error.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}
