//! The dispatcher's configuration, read from the environment.

use std::collections::HashMap;
use std::time::Duration;

use common::callback_auth::CallbackSecret;
use common::config::{self, ConfigError};

#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP port (`PORT`, default 3001); 0 picks a free one.
    pub port: u16,
    pub amqp_url: String,
    /// Which queue each event type goes to (`ROUTES`).
    pub routes: RoutingTable,
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
    /// How long one callback to public-web may take
    /// (`CALLBACK_TIMEOUT_MS`).
    pub callback_timeout: Duration,
    /// Extra attempts for a callback that failed in transit
    /// (`CALLBACK_RETRIES`).
    pub callback_retries: usize,
    /// The largest request body accepted (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Signs every callback's body when set (`CALLBACK_SECRET`).
    pub callback_secret: Option<CallbackSecret>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::parse_or("PORT", 3001)?,
            amqp_url: config::amqp_url(),
            routes: config::parse_or("ROUTES", RoutingTable::default())?,
            response_queue: config::string_or("RESPONSE_QUEUE", "dispatcher-responses"),
            prefetch: config::parse_or("PREFETCH", 64)?,
            publish_timeout: config::millis_or("PUBLISH_TIMEOUT_MS", 5_000)?,
            message_ttl: config::millis_or("MESSAGE_TTL_MS", 10_000)?,
            callback_timeout: config::millis_or("CALLBACK_TIMEOUT_MS", 5_000)?,
            callback_retries: config::parse_or("CALLBACK_RETRIES", 3)?,
            max_body_bytes: config::parse_or("MAX_BODY_BYTES", 64 * 1024)?,
            callback_secret: CallbackSecret::from_env(),
        })
    }
}

/// Event type → queue. Written `Type=queue,Other=queue2`; the default
/// routes `PingRequest` to `ping-request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable(HashMap<String, String>);

impl RoutingTable {
    pub fn queue_for(&self, event_type: &str) -> Option<&str> {
        self.0.get(event_type).map(String::as_str)
    }

    /// Every queue some event type is routed to.
    pub fn queues(&self) -> impl Iterator<Item = &str> {
        let mut queues: Vec<&str> = self.0.values().map(String::as_str).collect();
        queues.sort_unstable();
        queues.dedup();
        queues.into_iter()
    }
}

impl Default for RoutingTable {
    fn default() -> Self {
        "PingRequest=ping-request"
            .parse()
            .expect("the default routing table parses")
    }
}

impl std::str::FromStr for RoutingTable {
    type Err = String;

    fn from_str(table: &str) -> Result<Self, Self::Err> {
        let mut routes = HashMap::new();
        for entry in table.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (event_type, queue) = entry
                .split_once('=')
                .map(|(t, q)| (t.trim(), q.trim()))
                .filter(|(t, q)| !t.is_empty() && !q.is_empty())
                .ok_or_else(|| format!("route {entry:?} is not Type=queue"))?;
            if routes
                .insert(event_type.to_owned(), queue.to_owned())
                .is_some()
            {
                return Err(format!("event type {event_type} is routed twice"));
            }
        }
        if routes.is_empty() {
            return Err("no routes".to_owned());
        }
        Ok(RoutingTable(routes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes() {
        let table: RoutingTable = "PingRequest=ping-request, NthPrimeRequest = prime-request"
            .parse()
            .unwrap();
        assert_eq!(table.queue_for("NthPrimeRequest"), Some("prime-request"));
        assert_eq!(table.queue_for("Nope"), None);
    }

    #[test]
    fn refuses_malformed_routes() {
        assert!("PingRequest".parse::<RoutingTable>().is_err());
        assert!("A=q,A=r".parse::<RoutingTable>().is_err());
        assert!("".parse::<RoutingTable>().is_err());
    }
}
