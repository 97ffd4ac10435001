//! The broker connection: where it is ([`BrokerUrl`]), how it is opened,
//! and the supervisor that keeps a session running on it.
//!
//! The supervisor rebuilds the whole AMQP session (connection, channels,
//! topology, consumers) after any failure instead of patching half-dead
//! channels: one code path covers "broker not up yet", "broker restarted"
//! and "network blip", and it is the same path as a normal start.

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

use crate::config::{self, ConfigError};

/// The default broker: the local RabbitMQ with its guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A broker's AMQP URL, parsed once. It prints (`Display` and `Debug`)
/// as the URL in effect, defaults filled in, with the password hidden.
#[derive(Clone)]
pub struct BrokerUrl(AMQPUri);

impl BrokerUrl {
    /// `AMQP_URL`, or the local broker when it is unset. A malformed one
    /// is refused without repeating it, nor the parser's message, which
    /// may quote it: it may hold a password.
    pub fn from_env() -> Result<Self, ConfigError> {
        config::string_or("AMQP_URL", DEFAULT_AMQP_URL)
            .parse()
            .map_err(|_| {
                ConfigError::at(
                    "AMQP_URL",
                    "",
                    "not an AMQP URL (amqp://user:password@host:port/vhost)",
                )
            })
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        url.parse().map(Self)
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let AMQPUri {
            scheme,
            authority,
            vhost,
            ..
        } = &self.0;
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

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

/// Whether the AMQP session is fully up (connected, topology declared,
/// consumers registered). `/readyz` reports it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
        crate::metrics::amqp_connected(ready);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
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
/// and starts over.
///
/// `session` owns the connection; it returns `Ok(())` only when it has shut
/// down cleanly because `shutdown` fired, and an error when the connection or
/// a channel failed. `readiness` is cleared whenever a session ends; the
/// session sets it once its consumers are up.
pub async fn supervise<F, Fut>(
    broker: &BrokerUrl,
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
    while !shutdown.is_cancelled() {
        let outcome = tokio::select! {
            connected = connect(broker, connection_name) => match connected {
                Ok(connection) => {
                    tracing::info!(%broker, "connected to RabbitMQ");
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
                    tracing::warn!(%broker, %error, "RabbitMQ unavailable; retrying with backoff");
                } else {
                    tracing::debug!(%broker, %error, failures, "RabbitMQ still unavailable");
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
/// AMQP would otherwise hold the supervisor forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(broker: &BrokerUrl, connection_name: &str) -> lapin::Result<Connection> {
    let properties =
        ConnectionProperties::default().with_connection_name(LongString::from(connection_name));
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect_uri(broker.0.clone(), properties),
    )
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

/// Closes the connection with reply code 200 (normal shutdown).
pub async fn close(connection: &Connection) {
    if let Err(error) = connection.close(200, "shutting down".into()).await {
        tracing::debug!(%error, "closing the AMQP connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let broker: BrokerUrl = "amqp://app:secret@host:5673/%2f".parse().unwrap();
        assert_eq!(broker.to_string(), "amqp://app:***@host:5673/%2f");
        assert_eq!(
            format!("{broker:?}"),
            "BrokerUrl(amqp://app:***@host:5673/%2f)"
        );
        let defaults: BrokerUrl = "amqp://host".parse().unwrap();
        assert_eq!(defaults.to_string(), "amqp://guest:***@host:5672/%2f");
    }

    #[test]
    fn a_malformed_url_is_refused_without_repeating_it() {
        assert!("amqp://host:notaport".parse::<BrokerUrl>().is_err());
        // No other test of this crate reads AMQP_URL.
        for url in [
            "amqp://user:hunter2@host:notaport",
            "amqp:user:hunter2@host",
            // A raw `/` in the password ends the authority early.
            "amqp://user:hun/ter2@host:5672/%2f",
        ] {
            unsafe { std::env::set_var("AMQP_URL", url) };
            let error = BrokerUrl::from_env().unwrap_err().to_string();
            assert!(error.starts_with("AMQP_URL: "), "{error}");
            assert!(
                !error.contains("hunter2") && !error.contains("ter2"),
                "{error}"
            );
        }
    }
}
