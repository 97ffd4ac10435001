//! Live subscriptions: clients receive the events of the event stream that
//! match their filters, over a WebSocket (`GET /ws`) or server-sent events
//! (`GET /events`), as they are routed.
//!
//! - [`hub`]: this instance's one reader of the stream, fanning records out
//!   to its subscribers; a resuming subscriber catches up on a reader of
//!   its own first.
//! - [`auth`]: the bearer token a subscriber presents and the bounds its
//!   claims put on the filters.
//!
//! [`Live::subscribe`] is the one way in: token, filters and claims
//! checked, then the hub.

pub mod auth;
pub mod hub;

use std::sync::Arc;

use axum::http::StatusCode;
use common::amqp::Broker;
use common::amqp::stream::StreamConfig;
use common::config::{self, ConfigError};
use common::filter::{FilterError, Filters};
use common::http::ApiError;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use self::auth::{AuthError, Grant, Verifier};
use self::hub::{Hub, Sink, Subscription, Unavailable};

/// The stream, who may read it, and the limits of a subscriber's queue.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The broker the stream is on (`AMQP_URL`).
    pub broker: Broker,
    /// The stream (`EVENT_STREAM`, `EVENT_STREAM_*`), declared with the
    /// same arguments as the dispatcher's.
    pub stream: StreamConfig,
    /// Tokens and anonymous access (`SUBSCRIBE_*`).
    pub verifier: Verifier,
    /// Frames waiting to be sent to one connection, at most
    /// (`SEND_QUEUE_FRAMES`): a client that lets more pile up is not
    /// reading and is cut off.
    pub send_queue: usize,
}

impl LiveConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            broker: Broker::from_env()?,
            stream: StreamConfig::from_env()?,
            verifier: Verifier::from_env()?,
            send_queue: config::parse_or("SEND_QUEUE_FRAMES", 1024)?,
        })
    }
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The filter parameter is not JSON.
    #[error("the filters are not JSON: {0}")]
    MalformedFilters(String),
    #[error("invalid filter at {0}")]
    InvalidFilters(#[from] FilterError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<&SubscribeError> for ApiError {
    fn from(error: &SubscribeError) -> Self {
        let message = error.to_string();
        match error {
            SubscribeError::MalformedFilters(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_filter", message)
            }
            SubscribeError::InvalidFilters(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_filter", message)
            }
            SubscribeError::Auth(AuthError::OutsideClaim { .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, "outside_claims", message)
            }
            SubscribeError::Auth(AuthError::Expired) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", message)
            }
            SubscribeError::Auth(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            SubscribeError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stream_unavailable",
                message,
            )
            .with_retry_after(1),
        }
    }
}

impl axum::response::IntoResponse for SubscribeError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(&self).into_response()
    }
}

/// Subscriptions of this instance.
#[derive(Clone)]
pub struct Live {
    hub: Hub,
    verifier: Arc<Verifier>,
    pub send_queue: usize,
}

impl Live {
    /// Reads the stream once the first subscription arrives, until
    /// `shutdown`.
    pub fn new(config: LiveConfig, shutdown: CancellationToken) -> Self {
        Self {
            hub: Hub::new(config.broker, config.stream, shutdown),
            verifier: Arc::new(config.verifier),
            send_queue: config.send_queue.max(1),
        }
    }

    /// What the bearer `token` grants (checked even when anonymous
    /// subscriptions are allowed); `None` for an anonymous subscriber.
    pub fn grant(&self, token: Option<&str>) -> Result<Option<Grant>, AuthError> {
        self.verifier.grant(token)
    }

    /// Subscribes `sink` to `filters` (a JSON list) from `from`, within
    /// `grant`'s claims; anonymous (`grant` `None`) only when allowed.
    pub async fn subscribe(
        &self,
        grant: Option<&Grant>,
        filters: &Value,
        sink: Sink,
        from: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        let filters = Filters::parse(filters)?;
        match grant {
            Some(grant) => grant.allows(&filters)?,
            None if self.verifier.anonymous() => {}
            None => return Err(AuthError::Missing.into()),
        }
        Ok(self.hub.subscribe(filters, sink, from).await?)
    }
}

/// The bearer token of a request: the `Authorization` header, or the
/// `access_token` query parameter (RFC 6750), which browsers' `EventSource`
/// and `WebSocket` need since they cannot set headers.
pub fn bearer_token<'a>(
    headers: &'a axum::http::HeaderMap,
    access_token: Option<&'a str>,
) -> Option<&'a str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .or(access_token)
        .map(str::trim)
        .filter(|token| !token.is_empty())
}
