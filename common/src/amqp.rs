//! RabbitMQ handling every service shares: a supervised connection that
//! survives broker restarts and any start order, idempotent topology, and
//! publishing with publisher confirms.
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
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::redact_url;
use crate::propagation;
use crate::telemetry::{self, HopSpan};

/// AMQP header carrying the `/dispatch` URL of the public-web instance that
/// is waiting for the response.
pub const CALLBACK_URL_HEADER: &str = "x-callback-url";

/// Dead-letter queues keep at most this many messages (oldest dropped), so a
/// stream of poison messages cannot fill the broker.
pub const DEAD_LETTER_MAX_LENGTH: i64 = 10_000;

/// The dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// Declares the durable work queue `queue` and its dead-letter queue.
///
/// Rejected (poison) and expired messages go to `<queue>.dead` through the
/// default exchange. Every service that touches a queue declares it through
/// this one function, so the arguments always agree: RabbitMQ refuses a
/// redeclaration whose arguments differ.
pub async fn declare_queue(channel: &Channel, queue: &str) -> lapin::Result<()> {
    let dead = dead_letter_queue(queue);
    let mut dead_args = FieldTable::default();
    dead_args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(DEAD_LETTER_MAX_LENGTH),
    );
    channel
        .queue_declare(dead.as_str().into(), durable(), dead_args)
        .await?;
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert("x-dead-letter-routing-key".into(), long_string(&dead));
    channel.queue_declare(queue.into(), durable(), args).await?;
    Ok(())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Sets a string header.
pub fn set_header(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(ShortString::from(name), long_string(value));
}

/// A string header of a message, if present and textual.
pub fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    text_header(properties.headers().as_ref()?, name)
}

/// A string entry of a header table, if present and textual.
pub fn text_header<'a>(headers: &'a FieldTable, name: &str) -> Option<&'a str> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}

/// Properties of a JSON event message.
pub fn event_properties(id: &str, kind: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(id.into())
        .with_type(kind.into())
}

/// Why a publish did not reach a queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound to routing key {0:?}")]
    Unroutable(String),
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
}

/// Publishes `payload` and waits for the broker's confirm, inside a
/// PRODUCER span whose context travels in the message headers.
///
/// The message is `mandatory`, so one that no queue takes comes back as
/// [`PublishError::Unroutable`] instead of vanishing. Each caller awaits only
/// its own confirm: concurrent publishes on one channel are pipelined.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let span = HopSpan::start(
        || format!("{routing_key} publish").into(),
        SpanKind::Producer,
        telemetry::hop::current_context,
        || messaging_attributes(("send", "publish"), routing_key, &properties, payload.len()),
    );
    let mut headers = properties.headers().clone().unwrap_or_default();
    if let Some(context) = span.context() {
        propagation::inject_amqp(context, &mut headers);
    }
    let properties = properties.with_headers(headers);

    let publish = async {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(PublishError::Nacked);
        }
        if confirm.take_message().is_some() {
            return Err(PublishError::Unroutable(routing_key.to_owned()));
        }
        Ok(())
    };
    let result = span
        .scope(tokio::time::timeout(timeout, publish))
        .await
        .map_err(|_| PublishError::Timeout(timeout))
        .and_then(|published| published);
    match &result {
        Ok(()) => crate::metrics::amqp_published(routing_key),
        Err(error) => {
            span.record_error(error);
            span.in_scope(|| tracing::warn!(error = %error, "publish failed"));
        }
    }
    result
}

/// Opens a channel to consume on, holding at most `prefetch` unacked
/// deliveries (and so that many handlers running at once).
pub async fn consumer_channel(connection: &Connection, prefetch: u16) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    Ok(channel)
}

/// Opens a channel in publisher-confirm mode.
pub async fn confirm_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Whether the AMQP session is fully up (connected, topology declared,
/// consumers registered). `/readyz` reports it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Connects to `url` and runs `session` on the connection, again and again:
/// after a failed connect or a session that ended in error it waits with
/// jittered exponential backoff (100 ms up to 4 s, jitter included) and
/// starts over.
///
/// `session` owns the connection; it returns `Ok(())` only when it has shut
/// down cleanly because `shutdown` fired, and an error when the connection or
/// a channel failed. `readiness` is cleared whenever a session ends; the
/// session sets it once its consumers are up.
pub async fn supervise<F, Fut>(
    url: &str,
    connection_name: &str,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    mut session: F,
) where
    F: FnMut(Connection) -> Fut,
    Fut: Future<Output = lapin::Result<()>>,
{
    let redacted = redact_url(url);
    let mut failures: u32 = 0;
    let mut backoff = reconnect_backoff();
    while !shutdown.is_cancelled() {
        let outcome = tokio::select! {
            connected = connect(url, connection_name) => match connected {
                Ok(connection) => {
                    tracing::info!(broker = %redacted, "connected to RabbitMQ");
                    failures = 0;
                    backoff = reconnect_backoff();
                    session(connection).await
                }
                Err(error) => Err(error),
            },
            _ = shutdown.cancelled() => return,
        };
        readiness.set(false);
        crate::metrics::amqp_connected(false);
        match outcome {
            Ok(()) => return,
            Err(error) => {
                failures += 1;
                // The first failure of a streak is worth a warning; the rest
                // of the streak would only repeat it.
                if failures == 1 {
                    tracing::warn!(broker = %redacted, %error, "RabbitMQ unavailable; retrying with backoff");
                } else {
                    tracing::debug!(broker = %redacted, %error, failures, "RabbitMQ still unavailable");
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

async fn connect(url: &str, connection_name: &str) -> lapin::Result<Connection> {
    let properties =
        ConnectionProperties::default().with_connection_name(LongString::from(connection_name));
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
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

/// Consumes `queue` on `channel`, running `handle` on each delivery in its
/// own task, until the connection fails (an error is returned) or `shutdown`
/// fires. On shutdown it cancels the consumer so no more deliveries come,
/// waits for the tasks in flight to settle theirs, and returns `Ok(())`.
///
/// How many tasks run at once is bounded by the channel's prefetch (set
/// with `basic_qos` before calling), since each holds an unacked delivery.
pub async fn consume<F, Fut>(
    connection: &Connection,
    channel: &Channel,
    queue: &str,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    mut handle: F,
) -> lapin::Result<()>
where
    F: FnMut(Delivery) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tag = format!("{queue}-{}", uuid::Uuid::new_v4());
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    crate::metrics::init_consumer(queue);
    readiness.set(true);
    crate::metrics::amqp_connected(true);
    tracing::info!(queue, "consuming");

    let in_flight = TaskTracker::new();
    let connection_failed = connection_failed(connection);
    tokio::pin!(connection_failed);
    loop {
        tokio::select! {
            delivery = deliveries.next() => match delivery {
                Some(Ok(delivery)) => {
                    crate::metrics::amqp_consumed(queue, delivery.redelivered);
                    let span = consumer_span(queue, &delivery);
                    in_flight.spawn(span.scope(handle(delivery)));
                }
                Some(Err(error)) => return Err(error),
                None => return Err(lapin::Error::from(std::io::Error::other(
                    "the broker cancelled the consumer",
                ))),
            },
            error = &mut connection_failed => return Err(error),
            _ = shutdown.cancelled() => break,
        }
    }

    readiness.set(false);
    if let Err(error) = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await
    {
        tracing::debug!(%error, "cancelling the consumer");
    }
    in_flight.close();
    in_flight.wait().await;
    Ok(())
}

/// The CONSUMER span a delivery is handled in: a child of the publisher's
/// span, whose context came in the message headers.
fn consumer_span(queue: &str, delivery: &Delivery) -> HopSpan {
    let properties = &delivery.properties;
    HopSpan::start(
        || format!("{queue} process").into(),
        SpanKind::Consumer,
        || propagation::extract_amqp(properties.headers().as_ref()),
        || {
            let mut attributes = messaging_attributes(
                ("process", "deliver"),
                queue,
                properties,
                delivery.data.len(),
            );
            attributes.push(KeyValue::new(
                "messaging.rabbitmq.message.delivery_tag",
                delivery.delivery_tag as i64,
            ));
            attributes
        },
    )
}

/// The semantic-convention attributes of a PRODUCER or CONSUMER span:
/// `operation` is (`messaging.operation.type`, `messaging.operation.name`).
fn messaging_attributes(
    (operation_type, operation_name): (&'static str, &'static str),
    destination: &str,
    properties: &BasicProperties,
    body_size: usize,
) -> Vec<KeyValue> {
    let message_id = properties
        .message_id()
        .as_ref()
        .map_or("", |id| id.as_str());
    vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.operation.type", operation_type),
        KeyValue::new("messaging.operation.name", operation_name),
        KeyValue::new("messaging.destination.name", destination.to_owned()),
        KeyValue::new("messaging.message.id", message_id.to_owned()),
        KeyValue::new("messaging.message.body.size", body_size as i64),
    ]
}

/// Acks a delivery handled to the end.
pub async fn ack(delivery: &Delivery) {
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(_) => crate::metrics::amqp_acked(delivery.routing_key.as_str()),
        Err(error) => {
            tracing::warn!(%error, "could not ack; the broker will redeliver the message")
        }
    }
}

/// Gives a delivery back to its queue for another try.
pub async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    match delivery.nack(options).await {
        Ok(_) => crate::metrics::amqp_nacked(delivery.routing_key.as_str()),
        Err(error) => {
            tracing::warn!(%error, "could not nack; the broker will redeliver the message")
        }
    }
}

/// Rejects without requeue: the queue's dead-letter exchange takes it. The
/// hop being polled (the delivery's CONSUMER span) is marked as failed
/// and `reason` labels the count.
pub async fn dead_letter(delivery: &Delivery, reason: &'static str) {
    telemetry::hop::record_error_in_current_hop(format_args!("dead-lettered: {reason}"));
    match delivery.reject(BasicRejectOptions { requeue: false }).await {
        Ok(_) => crate::metrics::amqp_dead_lettered(delivery.routing_key.as_str(), reason),
        Err(error) => tracing::warn!(%error, "could not reject the delivery"),
    }
}

/// Closes the connection with reply code 200 (normal shutdown).
pub async fn close(connection: &Connection) {
    if let Err(error) = connection.close(200, "shutting down".into()).await {
        tracing::debug!(%error, "closing the AMQP connection");
    }
}
