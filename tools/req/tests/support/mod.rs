//! A small in-process HTTP server standing in for public-web in req's tests:
//! it answers pings like public-web's `/ping`, counts what it sees, and can
//! be made to hang or to refuse.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The trace id the stub returns in `x-trace-id`.
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// What the stub has seen.
#[derive(Default)]
pub struct Seen {
    /// Requests to `/ping`.
    pub pings: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
}

pub struct Stub {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl Stub {
    /// The base URL, as `PUBLIC_WEB_URL` would give it.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves, on a free loopback port:
/// - `POST /ping`: a `PingRequest` gets `PingResponse` with `receivedAt`
///   and `x-trace-id`; anything else 422, as public-web does;
/// - `POST /hang`: never answers;
/// - anything else: 404 with the JSON error body.
pub async fn start() -> Stub {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/ping", post(ping))
        .route("/hang", post(std::future::pending::<()>))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = seen.clone();
    let listener = listener.tap_io(move |_| {
        counted.connections.fetch_add(1, Ordering::Relaxed);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Stub { addr, seen }
}

/// A loopback URL nothing listens on.
pub async fn refusing_url() -> reqwest::Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    req::target_url(&format!("http://{addr}"), "/").unwrap()
}

async fn ping(State(seen): State<Arc<Seen>>, Json(request): Json<Value>) -> impl IntoResponse {
    seen.pings.fetch_add(1, Ordering::Relaxed);
    if request["type"] != "PingRequest" {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "listener_error",
            "expected a PingRequest",
        );
    }
    let Some(sent_at) = request["data"]["sentAt"].as_u64() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "listener_error",
            "no sentAt",
        );
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-trace-id", HeaderValue::from_static(TRACE_ID));
    let response = json!({
        "id": "stub-id",
        "type": "PingResponse",
        "data": {"sentAt": sent_at, "receivedAt": req::payload::now_millis()},
    });
    (headers, Json(response)).into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> axum::response::Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}
