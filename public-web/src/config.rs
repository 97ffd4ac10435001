//! public-web's configuration, read from the environment once, at start.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use common::config::{self, ConfigError};
use common::http::{InternalAuth, ServerLimits};
use reqwest::Url;

use crate::live::LiveConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// The public port (`PORT`); 0 picks a free one.
    pub port: u16,
    /// Where events are forwarded (`DISPATCHER_URL`).
    pub dispatcher_url: Url,
    /// This instance's `/dispatch` URL as the dispatcher should call it
    /// (`CALLBACK_URL`); derived from the internal address and port when
    /// unset.
    pub callback_url: Option<Url>,
    /// How long a parked request waits for its response
    /// (`REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// The most requests parked at once (`MAX_PENDING`).
    pub max_pending: usize,
    /// The largest request body accepted (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How long the forward to the dispatcher may take
    /// (`DISPATCHER_TIMEOUT_MS`).
    pub dispatcher_timeout: Duration,
    /// Forwards in flight at once, and so connections to the dispatcher
    /// at most (`DISPATCHER_CONCURRENCY`).
    pub dispatcher_concurrency: usize,
    /// Signs forwards to the dispatcher and checks its callbacks
    /// (`CALLBACK_SECRET`, `SIGNATURE_TOLERANCE_MS`).
    pub auth: InternalAuth,
    /// `/dispatch` is served on this port only, apart from the public
    /// routes (`DISPATCH_PORT`); 0 picks a free one.
    pub dispatch_port: u16,
    /// The address the `/dispatch` port binds (`INTERNAL_BIND_ADDR`).
    pub internal_bind: IpAddr,
    /// Connection limits, shared by both ports (`HEADER_TIMEOUT_MS`,
    /// `IDLE_TIMEOUT_MS`, `MAX_CONNECTIONS`, `MAX_HEADER_BYTES`).
    pub limits: ServerLimits,
    /// The event stream and who may subscribe to it (`AMQP_URL`,
    /// `EVENT_STREAM*`, `SUBSCRIBE_*`, `SEND_QUEUE_FRAMES`).
    pub live: LiveConfig,
    /// The WebSocket endpoint's limits (`WS_*`).
    pub ws: WsConfig,
    /// How often a quiet SSE stream gets a comment (`SSE_KEEPALIVE_MS`).
    pub sse_keepalive: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::parse_or("PORT", crate::DEFAULT_PORT)?,
            dispatcher_url: config::http_url_or("DISPATCHER_URL", "http://127.0.0.1:3001")?,
            callback_url: config::http_url("CALLBACK_URL")?,
            request_timeout: config::millis_or("REQUEST_TIMEOUT_MS", 10_000)?,
            max_pending: config::parse_or("MAX_PENDING", 100_000)?,
            max_body_bytes: config::parse_or("MAX_BODY_BYTES", 64 * 1024)?,
            dispatcher_timeout: config::millis_or("DISPATCHER_TIMEOUT_MS", 5_000)?,
            dispatcher_concurrency: config::parse_or("DISPATCHER_CONCURRENCY", 512)?,
            auth: InternalAuth::from_env()?,
            dispatch_port: config::parse_or("DISPATCH_PORT", 0)?,
            internal_bind: config::internal_bind_addr()?,
            limits: ServerLimits::from_env()?,
            live: LiveConfig::from_env()?,
            ws: WsConfig::from_env()?,
            sse_keepalive: config::millis_or("SSE_KEEPALIVE_MS", 15_000)?,
        })
    }
}

/// A socket's limits.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// The largest frame or message accepted (`WS_MAX_FRAME_BYTES`).
    pub max_frame_bytes: usize,
    /// Requests in flight on one socket (`WS_MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
    /// Subscriptions on one socket (`WS_MAX_SUBSCRIPTIONS`).
    pub max_subscriptions: usize,
    /// How often the server pings (`WS_PING_INTERVAL_MS`).
    pub ping_interval: Duration,
    /// Closed after this long without a frame or pong from the client
    /// (`WS_IDLE_TIMEOUT_MS`).
    pub idle_timeout: Duration,
    /// Origins a browser may open a socket from (`WS_ALLOWED_ORIGINS`,
    /// comma-separated, `*` for any). Unset: requests without an `Origin`
    /// (not from a browser) and same-origin ones.
    pub allowed_origins: Option<Vec<String>>,
}

impl WsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self {
            max_frame_bytes: config::parse_or("WS_MAX_FRAME_BYTES", 64 * 1024)?,
            max_in_flight: config::parse_or("WS_MAX_IN_FLIGHT", 100)?,
            max_subscriptions: config::parse_or("WS_MAX_SUBSCRIPTIONS", 16)?,
            ping_interval: config::millis_or("WS_PING_INTERVAL_MS", 20_000)?,
            idle_timeout: config::millis_or("WS_IDLE_TIMEOUT_MS", 60_000)?,
            allowed_origins: config::var("WS_ALLOWED_ORIGINS").map(|origins| {
                origins
                    .split(',')
                    .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                    .filter(|origin| !origin.is_empty())
                    .collect()
            }),
        };
        if config.ping_interval.is_zero() || config.idle_timeout <= config.ping_interval {
            return Err(ConfigError::invalid(
                "WS_IDLE_TIMEOUT_MS",
                &config.idle_timeout.as_millis().to_string(),
                "must be longer than WS_PING_INTERVAL_MS, which must not be 0",
            ));
        }
        Ok(config)
    }

    pub(crate) fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return true;
        };
        match &self.allowed_origins {
            Some(allowed) => allowed.iter().any(|a| a == "*" || a == origin),
            None => {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
                let origin_host = origin.split_once("://").map(|(_, host)| host);
                host.is_some() && origin_host == host
            }
        }
    }
}
