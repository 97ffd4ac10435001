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

pub use client::{
    client_builder, client_headers, client_span, client_span_in, error_chain,
    record_client_outcome, service_client,
};
pub use error::{ApiError, not_found};
pub use extract::{ApiJson, JsonEvent};
pub use internal::{CallbackHop, HasInternalAuth, InternalAuth, SignedEvent, SignedHop, SubmitHop};
use observe::ObserveLayer;
pub use probes::{ReadinessCheck, operational_routes, readiness};
pub use serve::{ConnectionHeld, ServerLimits, UpgradeHold, raise_fd_limit, serve};

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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_request_over_its_time_is_a_json_408() {
        let slow = Router::new().route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let app = with_standard_layers(slow, 1024, Duration::from_millis(50));
        let response = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "request_timeout");
    }
}
