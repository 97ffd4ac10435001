//! HTTP pieces every service shares: the JSON error shape, the event
//! extractor, health probes, the middleware stack and graceful serving.
//!
//! Every error any service answers has the body
//! `{"error": {"code": "...", "message": "..."}}`, so clients and tests can
//! rely on one shape whatever went wrong.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::event::{EnvelopeError, Event, EventInput};
use crate::telemetry::HopSpan;
use crate::{propagation, telemetry};

mod observe;

pub use observe::{Observe, ObserveLayer};

/// The header that carries the public-web instance's `/dispatch` URL from
/// public-web to the dispatcher.
pub const CALLBACK_URL_HEADER: &str = "x-callback-url";

/// An error answered to an HTTP client: a status and a JSON body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    /// Seconds for a `Retry-After` header (503 on overload).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::JsonDataError(_) => "invalid_event",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) => "body_unreadable",
            _ => "bad_request",
        };
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            code
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

impl From<EnvelopeError> for ApiError {
    fn from(error: EnvelopeError) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            error.to_string(),
        )
    }
}

/// The JSON error body, as parsed back by a service that relays another's.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl ApiError {
    /// Reads an error answered by another of our services, to pass it on.
    pub fn from_body(status: StatusCode, body: &[u8]) -> Option<ApiError> {
        let ErrorBody { error } = serde_json::from_slice(body).ok()?;
        Some(ApiError::new(status, error.code, error.message))
    }
}

/// A JSON body whose every rejection (syntax, shape, content type, size)
/// becomes an [`ApiError`] with the shared body.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

/// Extracts a valid [`Event`], assigning an id when the client sent none.
pub struct JsonEvent(pub Event);

impl<S: Send + Sync> FromRequest<S> for JsonEvent {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJson(input) = ApiJson::<EventInput>::from_request(request, state).await?;
        Ok(JsonEvent(input.into_event()?))
    }
}

/// Extracts a valid [`Event`] that must already carry its id (a response),
/// with the body it came in: a relay hands that on as received instead of
/// serialising the event again.
pub struct JsonResponseEvent {
    pub event: Event,
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for JsonResponseEvent {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        // Read under the route's body limit (an extension), then checked
        // and parsed by the JSON extractor from the same bytes. Read
        // first: a body both too large and not JSON is a 413, not a 415.
        let mut body_only = Request::new(body);
        *body_only.extensions_mut() = parts.extensions.clone();
        let body = Bytes::from_request(body_only, state)
            .await
            .map_err(|rejection| ApiError::from(JsonRejection::from(rejection)))?;
        let request = Request::from_parts(parts, Body::from(body.clone()));
        let ApiJson(event) = ApiJson::<Event>::from_request(request, state).await?;
        event.validate()?;
        Ok(JsonResponseEvent { event, body })
    }
}

/// Answers unknown paths with the JSON error shape instead of an empty 404.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// A check run by `GET /readyz`: `Err` names what is not ready.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Wraps an async closure as a [`ReadinessCheck`].
pub fn readiness<F, Fut>(check: F) -> ReadinessCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(check()))
}

/// `GET /healthz` (the process answers), `GET /readyz` (its dependencies
/// are up, per `check`) and `GET /metrics` (Prometheus text format).
pub fn operational_routes<S: Clone + Send + Sync + 'static>(check: ReadinessCheck) -> Router<S> {
    Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    crate::metrics::render(),
                )
            }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let check = check.clone();
                async move {
                    match check().await {
                        Ok(()) => Json(json!({"status": "ready"})).into_response(),
                        Err(reason) => {
                            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason)
                                .into_response()
                        }
                    }
                }
            }),
        )
}

/// What every service applies to inbound HTTP: a body size cap (413
/// beyond it), a whole-request timeout, a server span and metrics per
/// request ([`ObserveLayer`]), and JSON 404s.
///
/// One `Router::layer` for all three: axum wraps each layer it is given in
/// a boxed route whose future reserves room for a whole request, and a
/// parked request in public-web keeps every such future while it waits.
pub fn with_standard_layers(router: Router, max_body_bytes: usize, timeout: Duration) -> Router {
    router.fallback(not_found).layer(
        tower::ServiceBuilder::new()
            .layer(ObserveLayer)
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            ))
            .layer(DefaultBodyLimit::max(max_body_bytes)),
    )
}

/// The response header that tells the client its request's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// The HTTP client a service keeps for its calls to another service: one
/// per service, reused, so its pool keeps connections alive. Every call is
/// bounded by `timeout`; calls go to our own services, so redirects are
/// never followed (and the redirect machinery is skipped).
pub fn service_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
}

/// A CLIENT span for an outgoing HTTP call: send the request with the
/// headers from [`client_headers`], inside the span
/// (`span.scope(request.send())`), then
/// [`record_client_outcome`].
pub fn client_span(method: &'static str, url: &reqwest::Url) -> HopSpan {
    HopSpan::start(
        || method.into(),
        SpanKind::Client,
        telemetry::hop::current_context,
        || {
            vec![
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.full", url.as_str().to_owned()),
                KeyValue::new(
                    "server.address",
                    url.host_str().unwrap_or_default().to_owned(),
                ),
                KeyValue::new(
                    "server.port",
                    i64::from(url.port_or_known_default().unwrap_or_default()),
                ),
            ]
        },
    )
}

/// Headers carrying `span`'s trace context to the callee.
pub fn client_headers(span: &HopSpan) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(context) = span.context() {
        propagation::inject_http(context, &mut headers);
    }
    headers
}

/// Records how an outgoing call ended on its CLIENT span: 4xx and 5xx
/// answers and transport errors mark it as an error.
pub fn record_client_outcome(span: &HopSpan, outcome: Result<StatusCode, &reqwest::Error>) {
    match outcome {
        Ok(status) => {
            span.set_attribute(|| {
                KeyValue::new("http.response.status_code", i64::from(status.as_u16()))
            });
            if status.is_client_error() || status.is_server_error() {
                span.record_error(format_args!("HTTP {}", status.as_u16()));
            }
        }
        Err(error) => {
            let cause = error_chain(error);
            span.record_error(&cause);
            span.in_scope(|| tracing::warn!(error = %cause, "HTTP call failed"));
        }
    }
}

/// `error` followed by its sources: reqwest's own message names only the
/// URL, the cause (refused, reset, timed out) is in the sources.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting
/// and lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_names_every_cause() {
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(
            error_chain(&error),
            "error sending request: connection refused"
        );
    }
}
