//! HTTP pieces every service shares: serving with the standard layers
//! (body limit, timeout, a SERVER span and metrics per request, JSON
//! 404s), the JSON error answer, the event extractors, the operational
//! probes, and the client side of a call to another service.

mod client;
mod error;
mod extract;
mod internal;
mod observe;
mod probes;
mod serve;

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tower::timeout::TimeoutLayer;

pub use client::{client_headers, client_span, error_chain, record_client_outcome, service_client};
pub use error::{ApiError, not_found};
pub use extract::{ApiJson, JsonEvent};
pub use internal::{CallbackHop, HasInternalAuth, InternalAuth, SignedEvent, SignedHop, SubmitHop};
use observe::ObserveLayer;
pub use probes::{ReadinessCheck, operational_routes, readiness};
pub use serve::{FD_RESERVE, ServerLimits, raise_fd_limit, serve};

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
            .layer(HandleErrorLayer::new(
                move |_: tower::BoxError| async move {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!("the request took longer than {} ms", timeout.as_millis()),
                    )
                },
            ))
            .layer(TimeoutLayer::new(timeout))
            .layer(DefaultBodyLimit::max(max_body_bytes)),
    )
}
