//! The broker connection: where the broker is ([`Broker`]: one node or
//! the nodes of a cluster, and the queue type declared on it), how a
//! connection is opened, and the supervisor that keeps a session running.
//!
//! The supervisor rebuilds the whole AMQP session (connection, channels,
//! topology, consumers) after any failure instead of patching half-dead
//! channels: one code path covers "broker not up yet", "broker restarted",
//! "a cluster node went away" and "network blip", and it is the same path
//! as a normal start. With several nodes it moves to the next one after
//! each failure, starting from a node of its own so that replicas spread
//! across the cluster.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::types::LongString;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use super::topology::QueueType;
use crate::config::{self, ConfigError};

/// The default broker: the local RabbitMQ with its guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker: the AMQP URLs of its nodes, parsed once, and the type of
/// the work queues declared on it. It prints (`Display` and `Debug`) as
/// the URLs in effect, defaults filled in, passwords hidden.
#[derive(Clone)]
pub struct Broker {
    nodes: Vec<AMQPUri>,
    queue_type: QueueType,
}

impl Broker {
    /// `AMQP_URLS`, else `AMQP_URL` (either may list several nodes,
    /// comma-separated), else the local broker; and `QUEUE_TYPE`. A
    /// malformed URL is refused without repeating it, nor the parser's
    /// message, which may quote it: it may hold a password.
    pub fn from_env() -> Result<Self, ConfigError> {
        let (name, urls) = match config::var("AMQP_URLS") {
            Some(urls) => ("AMQP_URLS", urls),
            None => ("AMQP_URL", config::string_or("AMQP_URL", DEFAULT_AMQP_URL)),
        };
        let broker: Self = urls.parse().map_err(|position: usize| {
            ConfigError::at(
                name,
                "",
                format!("URL {position} is not an AMQP URL (amqp://user:password@host:port/vhost)"),
            )
        })?;
        Ok(broker.with_queue_type(QueueType::from_env()?))
    }

    /// The same nodes, declaring work queues of `queue_type`.
    pub fn with_queue_type(self, queue_type: QueueType) -> Self {
        Self { queue_type, ..self }
    }

    /// The type of the work queues (`QUEUE_TYPE`).
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }
}

impl std::str::FromStr for Broker {
    /// The 1-based position of the first URL that does not parse.
    type Err = usize;

    /// One or more AMQP URLs, comma-separated; work queues classic.
    fn from_str(urls: &str) -> Result<Self, usize> {
        let nodes = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .enumerate()
            .map(|(index, url)| url.parse().map_err(|_| index + 1))
            .collect::<Result<Vec<AMQPUri>, usize>>()?;
        if nodes.is_empty() {
            return Err(1);
        }
        Ok(Self {
            nodes,
            queue_type: QueueType::default(),
        })
    }
}

/// One node's URL with the password hidden.
struct Redacted<'a>(&'a AMQPUri);

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let AMQPUri {
            scheme,
            authority,
            vhost,
            ..
        } = self.0;
        write!(
            f,
            "{scheme}://{}:***@{}:{}/{}",
            authority.userinfo.username,
            authority.host,
            authority.port,
            vhost.replace('%', "%25").replace('/', "%2f")
        )
    }
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, node) in self.nodes.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", Redacted(node))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker({self}, {:?})", self.queue_type)
    }
}

/// Whether the AMQP session is fully up (connected, topology declared,
/// consumers registered). `/readyz` reports it, and the `amqp_connected`
/// gauge follows it.
#[derive(Debug, Clone)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    /// Whether `amqp_connected` follows this one.
    gauged: bool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            ready: Arc::default(),
            gauged: true,
        }
    }
}

impl Readiness {
    /// The readiness of a side connection of a service whose main session
    /// has the gauge: it leaves `amqp_connected` alone.
    pub fn ungauged() -> Self {
        Self {
            gauged: false,
            ..Self::default()
        }
    }

    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        if self.gauged {
            crate::metrics::amqp_connected(ready);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else why not: the check `/readyz` runs.
    pub fn check(&self, what: &str) -> Result<(), String> {
        self.is_ready()
            .then_some(())
            .ok_or_else(|| format!("not {what}"))
    }
}

/// Connects to `broker` and runs `session` on the connection, again and
/// again: after a failed connect or a session that ended in error it waits
/// with jittered exponential backoff (100 ms up to 4 s, jitter included)
/// and starts over on the broker's next node. The first node tried is
/// picked at random, so the replicas of a service spread over the nodes.
///
/// `session` owns the connection; it returns `Ok(())` only when it has shut
/// down cleanly because `shutdown` fired, and an error when the connection or
/// a channel failed. `readiness` is cleared whenever a session ends; the
/// session sets it once its consumers are up.
pub async fn supervise<F, Fut>(
    broker: &Broker,
    connection_name: &str,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    mut session: F,
) where
    F: FnMut(Connection) -> Fut,
    Fut: Future<Output = lapin::Result<()>>,
{
    let mut failures: u32 = 0;
    let mut backoff = reconnect_backoff();
    let mut next = uuid::Uuid::new_v4().as_u128() as usize;
    while !shutdown.is_cancelled() {
        let node = &broker.nodes[next % broker.nodes.len()];
        next = next.wrapping_add(1);
        let outcome = tokio::select! {
            connected = connect(node, connection_name) => match connected {
                Ok(connection) => {
                    tracing::info!(broker = %Redacted(node), "connected to RabbitMQ");
                    failures = 0;
                    backoff = reconnect_backoff();
                    session(connection).await
                }
                Err(error) => Err(error),
            },
            _ = shutdown.cancelled() => return,
        };
        readiness.set(false);
        match outcome {
            Ok(()) => return,
            Err(error) => {
                failures += 1;
                // The first failure of a streak is worth a warning; the rest
                // of the streak would only repeat it.
                if failures == 1 {
                    tracing::warn!(broker = %Redacted(node), %error, "RabbitMQ unavailable; retrying with backoff");
                } else {
                    tracing::debug!(broker = %Redacted(node), %error, failures, "RabbitMQ still unavailable");
                }
            }
        }
        let delay = backoff.next().unwrap_or(RECONNECT_MAX_DELAY);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The longest wait between two connection attempts, jitter included: a
/// service is back at most this long (plus a handshake) after the broker.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(4);

/// 100 ms doubling up to half of [`RECONNECT_MAX_DELAY`]; the jitter adds
/// up to as much again, so no delay exceeds it.
fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(RECONNECT_MAX_DELAY / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

/// How long opening a connection (TCP and the AMQP handshake) may take.
/// lapin has no limit of its own, so a peer that accepts but never speaks
/// AMQP would otherwise hold the supervisor forever. A reachable node
/// answers in milliseconds; one cut off holds the supervisor this long
/// before it moves on to the next node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest AMQP frame asked for when the URL names none
/// (`?frame_max=` does). lapin keeps a send and a receive buffer of 32
/// frames each per connection, zero-filled up front: at RabbitMQ's default
/// of 128 KiB that is 8 MiB of memory per connection, at 32 KiB 2 MiB. The
/// platform's messages are far smaller; a larger one is sent as several
/// frames.
const DEFAULT_FRAME_MAX: u32 = 32 * 1024;

async fn connect(node: &AMQPUri, connection_name: &str) -> lapin::Result<Connection> {
    let properties =
        ConnectionProperties::default().with_connection_name(LongString::from(connection_name));
    let mut node = node.clone();
    node.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(node, properties))
        .await
        .unwrap_or_else(|_| {
            Err(lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no AMQP handshake within {CONNECT_TIMEOUT:?}"),
            )))
        })
}

/// Resolves with the connection's first error, so a session can stop
/// when the connection dies even while it is idle.
pub async fn connection_failed(connection: &Connection) -> lapin::Error {
    let mut events = connection.events_listener();
    while let Some(event) = events.next().await {
        if let lapin::Event::Error(error) = event {
            return error;
        }
    }
    lapin::Error::from(std::io::Error::other("the connection's event stream ended"))
}

/// How long closing a connection may take. A broker that does not answer
/// (a node cut off, a connection it has stopped reading) would otherwise
/// hold the caller until the socket gives up: a session being replaced
/// and a service shutting down go on without the broker's close-ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Closes the connection with reply code 200 (normal shutdown), waiting
/// at most [`CLOSE_TIMEOUT`] for the broker to agree.
pub async fn close(connection: &Connection) {
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "shutting down".into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the AMQP connection"),
        Err(_) => tracing::debug!("the broker did not answer the close within {CLOSE_TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let broker: Broker = "amqp://app:secret@host:5673/%2f".parse().unwrap();
        assert_eq!(broker.to_string(), "amqp://app:***@host:5673/%2f");
        assert_eq!(
            format!("{broker:?}"),
            "Broker(amqp://app:***@host:5673/%2f, Classic)"
        );
        let defaults: Broker = "amqp://host".parse().unwrap();
        assert_eq!(defaults.to_string(), "amqp://guest:***@host:5672/%2f");
    }

    #[test]
    fn several_nodes_are_comma_separated() {
        let broker: Broker = " amqp://a:s1@n1:5672 , amqp://a:s2@n2:5673/v ,"
            .parse()
            .unwrap();
        assert_eq!(
            broker.to_string(),
            "amqp://a:***@n1:5672/%2f,amqp://a:***@n2:5673/v"
        );
        assert_eq!("amqp://n1,amqp://n2:x".parse::<Broker>().err(), Some(2));
        assert_eq!(" , ".parse::<Broker>().err(), Some(1));
    }

    #[test]
    fn a_malformed_url_is_refused_without_repeating_it() {
        assert!("amqp://host:notaport".parse::<Broker>().is_err());
        // No other test of this crate reads AMQP_URL or AMQP_URLS.
        for url in [
            "amqp://user:hunter2@host:notaport",
            "amqp:user:hunter2@host",
            // A raw `/` in the password ends the authority early.
            "amqp://user:hun/ter2@host:5672/%2f",
        ] {
            unsafe { std::env::set_var("AMQP_URL", url) };
            let error = Broker::from_env().unwrap_err().to_string();
            assert!(error.starts_with("AMQP_URL: URL 1 "), "{error}");
            assert!(
                !error.contains("hunter2") && !error.contains("ter2"),
                "{error}"
            );
        }
        unsafe { std::env::set_var("AMQP_URLS", "amqp://n1,amqp://u:hunter2@n2:x") };
        let error = Broker::from_env().unwrap_err().to_string();
        assert!(error.starts_with("AMQP_URLS: URL 2 "), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
