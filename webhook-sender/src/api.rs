//! The management API: register, list, inspect, delete endpoints, rotate
//! their secrets and enable them again. Every call needs
//! `Authorization: Bearer <ADMIN_TOKEN>`; without a configured token every
//! call is refused, so the API is never open by default.
//!
//! A registration's secret is shown once, in the answer to `POST
//! /webhooks` (and to a rotation); the store keeps it to sign with, and no
//! other answer or log line carries it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use common::filter::Filters;
use common::http::ApiJson;
use common::webhook::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::ApiFailure;
use crate::state::AppState;

/// How many recent attempts an endpoint's state lists.
const RECENT_ATTEMPTS: i64 = 20;

/// The longest description kept.
const MAX_DESCRIPTION: usize = 1024;

/// A registration as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    url: String,
    filters: Value,
    #[serde(default)]
    description: String,
}

/// Proof the caller holds `ADMIN_TOKEN`.
pub struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &state.admin_token else {
            return Err(ApiFailure::AdminOff);
        };
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(ApiFailure::Unauthorized)?;
        if same_token(presented.trim(), expected) {
            Ok(Admin)
        } else {
            Err(ApiFailure::Unauthorized)
        }
    }
}

/// Whether two tokens are equal, in time independent of where they differ
/// (their digests are compared, so not even their lengths leak).
fn same_token(presented: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

/// `POST /webhooks`: 201 with the endpoint and its secret.
pub async fn create(
    _: Admin,
    State(state): State<Arc<AppState>>,
    ApiJson(registration): ApiJson<Registration>,
) -> Result<(StatusCode, Json<Value>), ApiFailure> {
    let url = state.egress.check(registration.url.trim())?;
    Filters::parse(&registration.filters)?;
    if registration.description.len() > MAX_DESCRIPTION {
        return Err(ApiFailure::InvalidBody(format!(
            "the description is longer than {MAX_DESCRIPTION} bytes"
        )));
    }
    let secret = Secret::generate();
    let endpoint = state
        .store
        .create(
            url.as_str(),
            &registration.description,
            &registration.filters,
            &secret,
        )
        .await?;
    tracing::info!(endpoint = %endpoint.id, url = %endpoint.url, "webhook registered");
    let mut body = json!(endpoint);
    body["secret"] = json!(secret.to_string());
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /webhooks`.
pub async fn list(_: Admin, State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiFailure> {
    let endpoints = state.store.list().await?;
    Ok(Json(json!({ "webhooks": endpoints })))
}

/// `GET /webhooks/{id}`: the endpoint with its delivery state.
pub async fn show(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiFailure> {
    let endpoint = state
        .store
        .get(&id)
        .await?
        .ok_or_else(|| ApiFailure::NotFound(id.clone()))?;
    let counts = state.store.counts(&id).await?;
    let attempts = state.store.recent_attempts(&id, RECENT_ATTEMPTS).await?;
    let mut body = json!(endpoint);
    body["deliveries"] = json!(counts);
    body["recent_attempts"] = json!(attempts);
    Ok(Json(body))
}

/// `DELETE /webhooks/{id}`: 204; what was owed to it is dropped.
pub async fn delete(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    if state.store.delete(&id).await? {
        tracing::info!(endpoint = %id, "webhook deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiFailure::NotFound(id))
    }
}

/// `POST /webhooks/{id}/rotate-secret`: a new secret, shown once; the old
/// one keeps signing beside it for `WEBHOOK_ROTATION_OVERLAP_MS`.
pub async fn rotate_secret(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiFailure> {
    let secret = Secret::generate();
    let overlap = state.rotation_overlap;
    if !state.store.rotate(&id, &secret, overlap).await? {
        return Err(ApiFailure::NotFound(id));
    }
    tracing::info!(endpoint = %id, "webhook secret rotated");
    Ok(Json(json!({
        "id": id,
        "secret": secret.to_string(),
        "previous_secret_valid_for_s": overlap.as_secs(),
    })))
}

/// `POST /webhooks/{id}/enable`: a disabled endpoint gets its waiting
/// deliveries again.
pub async fn enable(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiFailure> {
    if !state.store.enable(&id).await? {
        return Err(ApiFailure::NotFound(id));
    }
    tracing::info!(endpoint = %id, "webhook enabled");
    let endpoint = state.store.get(&id).await?;
    Ok(Json(json!(endpoint)))
}
