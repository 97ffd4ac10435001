//! public-web's configuration, read from the environment once, at start.

use std::time::Duration;

use common::config::{self, ConfigError};
use common::wire::CallbackSecret;
use reqwest::Url;

#[derive(Debug, Clone)]
pub struct Config {
    /// The public port (`PORT`); 0 picks a free one.
    pub port: u16,
    /// Where events are forwarded (`DISPATCHER_URL`).
    pub dispatcher_url: Url,
    /// This instance's `/dispatch` URL as the dispatcher should call it
    /// (`CALLBACK_URL`); derived from the bound port when unset.
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
    /// When set, `/dispatch` accepts only callbacks signed with it
    /// (`CALLBACK_SECRET`).
    pub callback_secret: Option<CallbackSecret>,
    /// When set, `/dispatch` is served on this port only, apart from the
    /// public routes (`DISPATCH_PORT`); 0 picks a free one.
    pub dispatch_port: Option<u16>,
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
            callback_secret: CallbackSecret::from_env(),
            dispatch_port: config::parse("DISPATCH_PORT")?,
        })
    }
}
