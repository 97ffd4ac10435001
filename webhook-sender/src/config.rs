//! The webhook-sender's configuration, read from the environment once, at
//! start.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::amqp::Broker;
use common::amqp::stream::StreamConfig;
use common::config::{self, ConfigError};
use common::egress::EgressPolicy;
use common::http::ServerLimits;

use crate::schedule::RetrySchedule;

#[derive(Debug, Clone)]
pub struct Config {
    /// The management API's port (`PORT`); 0 picks a free one.
    pub port: u16,
    /// The address it binds (`INTERNAL_BIND_ADDR`).
    pub bind: IpAddr,
    /// The store (`DATABASE_URL`).
    pub database: tokio_postgres::Config,
    /// Connections to it at most (`DATABASE_POOL_SIZE`).
    pub database_pool: usize,
    /// The bearer token of the management calls (`ADMIN_TOKEN`); without
    /// one they are refused.
    pub admin_token: Option<Arc<str>>,
    /// The broker (`AMQP_URL`) and the event stream read from it.
    pub broker: Broker,
    pub stream: StreamConfig,
    pub delivery: DeliveryConfig,
    /// The largest management request body (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Connection limits of the management API.
    pub limits: ServerLimits,
}

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Where endpoints may be (`WEBHOOK_ALLOW_CIDRS` beside the public
    /// internet, `WEBHOOK_HTTPS_ONLY`).
    pub egress: Arc<EgressPolicy>,
    /// When each attempt is made (`WEBHOOK_RETRY_SCHEDULE`).
    pub schedule: RetrySchedule,
    /// How long one attempt may take (`WEBHOOK_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How much of an endpoint's answer is read (`WEBHOOK_MAX_RESPONSE_BYTES`).
    pub max_response_bytes: usize,
    /// Attempts in flight to one endpoint at most, per sender
    /// (`WEBHOOK_ENDPOINT_CONCURRENCY`).
    pub per_endpoint: usize,
    /// Attempts in flight at most, per sender (`WEBHOOK_CONCURRENCY`).
    pub concurrency: usize,
    /// An endpoint failing without a success this long is disabled
    /// (`WEBHOOK_DISABLE_AFTER_MS`).
    pub disable_after: Duration,
    /// How long a rotated-out secret keeps signing (`WEBHOOK_ROTATION_OVERLAP_MS`).
    pub rotation_overlap: Duration,
    /// How often due deliveries are looked for (`WEBHOOK_POLL_MS`).
    pub poll_interval: Duration,
}

impl DeliveryConfig {
    /// How long a sender holds a claimed delivery: past it, another sender
    /// takes it over (the first crashed). An attempt takes at most its
    /// timeout; the margin covers recording it.
    pub fn claim_lease(&self) -> Duration {
        self.timeout + Duration::from_secs(10)
    }
}

/// The development database of bin/restart.sh.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/dispatcher";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = config::string_or("DATABASE_URL", DEFAULT_DATABASE_URL);
        let database = database_url
            .parse::<tokio_postgres::Config>()
            .map_err(|error| ConfigError::invalid("DATABASE_URL", &redact(&database_url), error))?;
        let allow: EgressPolicy = config::parse_or("WEBHOOK_ALLOW_CIDRS", EgressPolicy::default())?;
        let mut egress = EgressPolicy::public_internet(allow);
        if config::parse_or("WEBHOOK_HTTPS_ONLY", false)? {
            egress = egress.https_only();
        }
        Ok(Self {
            port: config::parse_or("PORT", crate::DEFAULT_PORT)?,
            bind: config::internal_bind_addr()?,
            database,
            database_pool: config::parse_or("DATABASE_POOL_SIZE", 16)?,
            admin_token: admin_token()?,
            broker: Broker::from_env()?,
            stream: StreamConfig::from_env()?,
            delivery: DeliveryConfig {
                egress: Arc::new(egress),
                schedule: config::parse_or("WEBHOOK_RETRY_SCHEDULE", RetrySchedule::default())?,
                timeout: config::millis_or("WEBHOOK_TIMEOUT_MS", 15_000)?,
                max_response_bytes: config::parse_or("WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024)?,
                per_endpoint: config::parse_or("WEBHOOK_ENDPOINT_CONCURRENCY", 4)?,
                concurrency: config::parse_or("WEBHOOK_CONCURRENCY", 256)?,
                disable_after: config::millis_or("WEBHOOK_DISABLE_AFTER_MS", 5 * 24 * 3600 * 1000)?,
                rotation_overlap: config::millis_or(
                    "WEBHOOK_ROTATION_OVERLAP_MS",
                    24 * 3600 * 1000,
                )?,
                poll_interval: config::millis_or("WEBHOOK_POLL_MS", 200)?,
            },
            max_body_bytes: config::parse_or("MAX_BODY_BYTES", 64 * 1024)?,
            limits: ServerLimits::from_env()?,
        })
    }
}

/// `ADMIN_TOKEN`, at least 16 characters when set: a short token is a
/// guessable one.
fn admin_token() -> Result<Option<Arc<str>>, ConfigError> {
    match config::var("ADMIN_TOKEN") {
        Some(token) if token.trim().len() < 16 => Err(ConfigError::invalid(
            "ADMIN_TOKEN",
            "<redacted>",
            "at least 16 characters",
        )),
        Some(token) => Ok(Some(token.trim().into())),
        None => Ok(None),
    }
}

/// A database URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:<redacted>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/hooks"),
            "postgres://app:<redacted>@db:5432/hooks"
        );
        assert_eq!(redact("postgres://db/hooks"), "postgres://db/hooks");
    }
}
