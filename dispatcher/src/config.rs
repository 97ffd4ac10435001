//! The dispatcher's configuration, read from the environment once, at start.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::amqp::stream::StreamConfig;
use common::amqp::{Broker, ConsumerConfig};
use common::config::{self, ConfigError};
use common::egress::EgressPolicy;
use common::http::{InternalAuth, ServerLimits};

use crate::routing::RoutingTable;

#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP port (`PORT`); 0 picks a free one.
    pub port: u16,
    /// The address it binds (`INTERNAL_BIND_ADDR`): every caller of the
    /// dispatcher is another service.
    pub bind: IpAddr,
    /// Checks public-web's signed requests and signs callbacks
    /// (`CALLBACK_SECRET`, `SIGNATURE_TOLERANCE_MS`).
    pub auth: InternalAuth,
    /// Which queue each event type goes to (`ROUTES`).
    pub routes: RoutingTable,
    /// The broker (`AMQP_URL`).
    pub broker: Broker,
    /// The queue listeners reply to (`RESPONSE_QUEUE`).
    pub response_queue: String,
    /// Responses being called back at once (`PREFETCH`).
    pub prefetch: u16,
    /// Larger responses are dead-lettered unread (`MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// How long a publish may take, waiting for a reconnecting broker and
    /// for its confirm (`PUBLISH_TIMEOUT_MS`).
    pub publish_timeout: Duration,
    /// A request left in its queue this long expires into the dead-letter
    /// queue (`MESSAGE_TTL_MS`): nobody waits for its answer any more.
    pub message_ttl: Duration,
    pub callbacks: CallbackConfig,
    /// The event stream every routed event is appended to (`EVENT_STREAM`,
    /// `EVENT_STREAM_MAX_AGE`, `EVENT_STREAM_MAX_BYTES`,
    /// `EVENT_STREAM_SEGMENT_BYTES`).
    pub stream: StreamConfig,
    /// Events waiting to be appended, at most (`EVENT_STREAM_BUFFER`);
    /// beyond, they are counted lost rather than slow a request.
    pub stream_buffer: usize,
    /// The largest request body accepted (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How long a routed queue may have no consumer before its requests
    /// are refused at once (`NO_LISTENER_GRACE_MS`).
    pub no_listener_grace: Duration,
    /// Connection limits (`HEADER_TIMEOUT_MS`, `IDLE_TIMEOUT_MS`,
    /// `MAX_CONNECTIONS`, `MAX_HEADER_BYTES`).
    pub limits: ServerLimits,
}

/// How responses are called back to public-web.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// How long one callback may take (`CALLBACK_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Extra attempts for a callback that failed in transit or with a 5xx
    /// (`CALLBACK_RETRIES`).
    pub retries: usize,
    /// Where callbacks may go (`CALLBACK_ALLOW`): the public-web
    /// instances' origins or networks.
    pub allow: Arc<EgressPolicy>,
    /// Callbacks in flight to one target at most
    /// (`CALLBACK_TARGET_CONCURRENCY`).
    pub per_target: usize,
    /// Callbacks waiting for a turn at one target at most: with those in
    /// flight, half the prefetch, so one target never holds every delivery.
    pub backlog: usize,
    /// How long a target that timed out or refused connections is not
    /// called (`CALLBACK_TARGET_COOLDOWN_MS`).
    pub cooldown: Duration,
}

/// `CALLBACK_ALLOW`, required outside the development mode (loopback
/// there).
fn callback_allow() -> Result<EgressPolicy, ConfigError> {
    match config::parse::<EgressPolicy>("CALLBACK_ALLOW")? {
        Some(policy) if !policy.is_empty() => Ok(policy),
        _ if config::insecure_dev_mode()? => Ok(EgressPolicy::loopback()),
        _ => Err(ConfigError::at(
            "CALLBACK_ALLOW",
            "",
            "unset: name the public-web instances callbacks may go to \
             (origins like http://public-web:3010, or networks like 10.0.0.0/8)",
        )),
    }
}

impl Config {
    /// How the response queue is consumed: each session also declares
    /// every routed queue, so a publish never finds its queue missing.
    pub fn responses(&self) -> ConsumerConfig {
        ConsumerConfig {
            broker: self.broker.clone(),
            connection_name: crate::SERVICE_NAME.to_owned(),
            queue: self.response_queue.clone(),
            also_declare: self.routes.queues().map(str::to_owned).collect(),
            prefetch: self.prefetch,
            max_message_bytes: self.max_message_bytes,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let prefetch: u16 = config::parse_or("PREFETCH", 512)?;
        let per_target: usize = config::parse_or("CALLBACK_TARGET_CONCURRENCY", 128)?;
        if per_target == 0 || per_target > usize::from(prefetch / 2) {
            return Err(ConfigError::invalid(
                "CALLBACK_TARGET_CONCURRENCY",
                &per_target.to_string(),
                format!("must be between 1 and half the PREFETCH ({prefetch})"),
            ));
        }
        Ok(Self {
            port: config::parse_or("PORT", crate::DEFAULT_PORT)?,
            bind: config::internal_bind_addr()?,
            auth: InternalAuth::from_env()?,
            routes: config::parse_or("ROUTES", RoutingTable::default())?,
            broker: Broker::from_env()?,
            response_queue: config::string_or("RESPONSE_QUEUE", "dispatcher-responses"),
            prefetch,
            max_message_bytes: config::parse_or(
                "MAX_MESSAGE_BYTES",
                ConsumerConfig::DEFAULT_MAX_MESSAGE_BYTES,
            )?,
            publish_timeout: config::millis_or("PUBLISH_TIMEOUT_MS", 5_000)?,
            message_ttl: config::millis_or("MESSAGE_TTL_MS", 10_000)?,
            callbacks: CallbackConfig {
                timeout: config::millis_or("CALLBACK_TIMEOUT_MS", 5_000)?,
                retries: config::parse_or("CALLBACK_RETRIES", 3)?,
                allow: Arc::new(callback_allow()?),
                per_target,
                backlog: usize::from(prefetch / 2) - per_target,
                cooldown: config::millis_or("CALLBACK_TARGET_COOLDOWN_MS", 5_000)?,
            },
            stream: StreamConfig::from_env()?,
            stream_buffer: config::parse_or("EVENT_STREAM_BUFFER", 10_000)?,
            max_body_bytes: config::parse_or("MAX_BODY_BYTES", 64 * 1024)?,
            no_listener_grace: config::millis_or("NO_LISTENER_GRACE_MS", 5_000)?,
            limits: ServerLimits::from_env()?,
        })
    }
}
