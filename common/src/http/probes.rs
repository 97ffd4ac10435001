//! The operational routes every service serves: liveness, readiness and
//! Prometheus metrics.

use std::future::Future;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::error::ApiError;

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
