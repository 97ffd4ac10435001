//! HTTP pieces every service shares: serving with the standard layers
//! (body limit, timeout, a SERVER span and metrics per request, JSON
//! 404s), the JSON error answer, the event extractors, the operational
//! probes, and the client side of a call to another service.

mod client;
mod error;
mod extract;
mod observe;
mod probes;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

pub use client::{client_headers, client_span, error_chain, record_client_outcome, service_client};
pub use error::{ApiError, not_found};
pub use extract::{ApiJson, JsonEvent};
use observe::ObserveLayer;
pub use probes::{ReadinessCheck, operational_routes, readiness};

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
