//! The dispatcher's configuration, read from the environment once, at start.

use std::time::Duration;

use common::amqp::{BrokerUrl, ConsumerConfig};
use common::config::{self, ConfigError};
use common::wire::CallbackSecret;

use crate::routing::RoutingTable;

#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP port (`PORT`); 0 picks a free one.
    pub port: u16,
    /// Which queue each event type goes to (`ROUTES`).
    pub routes: RoutingTable,
    /// The broker (`AMQP_URL`).
    pub broker: BrokerUrl,
    /// The queue listeners reply to (`RESPONSE_QUEUE`).
    pub response_queue: String,
    /// Responses being called back at once (`PREFETCH`).
    pub prefetch: u16,
    /// How long a publish may wait for the broker's confirm
    /// (`PUBLISH_TIMEOUT_MS`).
    pub publish_timeout: Duration,
    /// A request left in its queue this long expires into the dead-letter
    /// queue (`MESSAGE_TTL_MS`): nobody waits for its answer any more.
    pub message_ttl: Duration,
    pub callbacks: CallbackConfig,
    /// The largest request body accepted (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
}

/// How responses are called back to public-web.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// How long one callback may take (`CALLBACK_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Extra attempts for a callback that failed in transit or with a 5xx
    /// (`CALLBACK_RETRIES`).
    pub retries: usize,
    /// Signs every callback's body when set (`CALLBACK_SECRET`).
    pub secret: Option<CallbackSecret>,
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
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::parse_or("PORT", crate::DEFAULT_PORT)?,
            routes: config::parse_or("ROUTES", RoutingTable::default())?,
            broker: BrokerUrl::from_env()?,
            response_queue: config::string_or("RESPONSE_QUEUE", "dispatcher-responses"),
            prefetch: config::parse_or("PREFETCH", 64)?,
            publish_timeout: config::millis_or("PUBLISH_TIMEOUT_MS", 5_000)?,
            message_ttl: config::millis_or("MESSAGE_TTL_MS", 10_000)?,
            callbacks: CallbackConfig {
                timeout: config::millis_or("CALLBACK_TIMEOUT_MS", 5_000)?,
                retries: config::parse_or("CALLBACK_RETRIES", 3)?,
                secret: CallbackSecret::from_env(),
            },
            max_body_bytes: config::parse_or("MAX_BODY_BYTES", 64 * 1024)?,
        })
    }
}
