//! The consumer runtime: one queue consumed with manual acks, each
//! delivery handled in its own task inside its CONSUMER span, then
//! settled (acked, requeued or dead-lettered) the way its [`Consumer`]
//! says. The listeners and the dispatcher's response consumer run on it.
//!
//! A session is one connection: a consumer channel with the prefetch,
//! the queues declared, a confirm channel to publish on, and the consumer
//! itself, until shutdown or a failure; [`run`] starts sessions under the
//! supervisor until shutdown.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{self, Broker, Readiness};
use super::settle::{Outcome, Settler};
use super::{message, publish, topology};
use crate::telemetry::{self, HopSpan};

/// Why a consumer dead-letters a delivery: the `reason` label of
/// `amqp_messages_dead_lettered_total`. Each consumer names its own.
pub trait DeadLetterReason: Copy + Send + Sync + 'static {
    /// Every reason, so each one's counter exists from the start.
    const ALL: &'static [Self];

    fn label(self) -> &'static str;
}

/// What becomes of a delivery once it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle<R> {
    /// Done with: the broker forgets it.
    Ack,
    /// Back to the queue for another try.
    Requeue,
    /// Rejected without requeue: the queue's dead-letter exchange takes it.
    DeadLetter(R),
}

/// What a service does with the deliveries of its queue.
pub trait Consumer: Send + Sync + 'static {
    type Reason: DeadLetterReason;

    /// Handles one delivery, with its CONSUMER span current; `publisher`
    /// is the session's confirm channel.
    fn handle(
        &self,
        delivery: &mut Delivery,
        publisher: &Channel,
    ) -> impl Future<Output = Settle<Self::Reason>> + Send;

    /// A session is up (queues declared, the confirm channel open), before
    /// its first delivery; `connection` can open channels of the
    /// consumer's own. An error ends the session.
    fn session_started(
        &self,
        _connection: &Connection,
        _publisher: &Channel,
    ) -> impl Future<Output = lapin::Result<()>> + Send {
        async { Ok(()) }
    }

    /// The session has ended; its channels are closed.
    fn session_ended(&self) {}

    /// Resolves, with the reason, when the consumer wants its session
    /// replaced by a new one (a new connection, to the broker's next node):
    /// when the broker keeps refusing what this session publishes, say.
    /// Never, by default.
    fn session_unusable(&self) -> impl Future<Output = String> + Send {
        std::future::pending()
    }
}

/// Where and what a consumer consumes.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub broker: Broker,
    /// Names the connection (seen in RabbitMQ's management) and the
    /// consumer tags.
    pub connection_name: String,
    /// The queue consumed.
    pub queue: String,
    /// Other queues this service publishes to, declared at each session
    /// start so that a publish never finds them missing.
    pub also_declare: Vec<String>,
    /// Deliveries held unacked at once, and so handlers running at once.
    pub prefetch: u16,
    /// Larger messages are dead-lettered unread (`MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
}

impl ConsumerConfig {
    /// `MAX_MESSAGE_BYTES` unless set otherwise.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
}

/// The dead-letter reason of a message over `max_message_bytes`, the same
/// for every consumer.
const OVERSIZED: &str = "oversized";

/// The dead-letter reason of a delivery whose consumer panicked: a bug,
/// which would only panic again on a redelivery. Settling it keeps the
/// channel's acks batching (see [`settle`](super::settle)).
const CONSUMER_PANICKED: &str = "consumer_panicked";

/// Runs sessions of `consumer` until `shutdown`; `readiness` is set while
/// it consumes. On shutdown it stops taking deliveries, settles those in
/// hand and closes the connection.
pub async fn run<C: Consumer>(
    config: &ConsumerConfig,
    consumer: Arc<C>,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) {
    let run = Run {
        config,
        consumer,
        readiness,
        shutdown,
    };
    connection::supervise(
        &config.broker,
        &config.connection_name,
        readiness,
        shutdown,
        |connection| run.session(connection),
    )
    .await;
}

/// What every session of one [`run`] shares.
struct Run<'a, C> {
    config: &'a ConsumerConfig,
    consumer: Arc<C>,
    readiness: &'a Readiness,
    shutdown: &'a CancellationToken,
}

impl<C: Consumer> Run<'_, C> {
    /// One session: declare, then consume until shutdown or failure.
    async fn session(&self, connection: Connection) -> lapin::Result<()> {
        let config = self.config;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        for queue in config.also_declare.iter().chain([&config.queue]) {
            topology::declare_queue(&channel, queue, config.broker.queue_type()).await?;
        }
        let publisher = publish::confirm_channel(&connection).await?;
        self.consumer
            .session_started(&connection, &publisher)
            .await?;
        let consumed = self.consume(&connection, &channel, &publisher).await;
        self.consumer.session_ended();
        consumed?;
        connection::close(&connection).await;
        tracing::info!(queue = %config.queue, "consumer stopped");
        Ok(())
    }

    /// Consumes until the connection fails (an error is returned) or
    /// `shutdown` fires: then it cancels the consumer so no more
    /// deliveries come, waits for the tasks in flight to settle theirs,
    /// and returns `Ok(())`. The channel's prefetch bounds the tasks
    /// running at once, since each holds an unacked delivery.
    async fn consume(
        &self,
        connection: &Connection,
        channel: &Channel,
        publisher: &Channel,
    ) -> lapin::Result<()> {
        let (config, consumer, readiness, shutdown) =
            (self.config, &self.consumer, self.readiness, self.shutdown);
        let queue = config.queue.as_str();
        let tag = format!("{queue}-{}", uuid::Uuid::new_v4());
        let mut deliveries = channel
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let reasons = C::Reason::ALL.iter().map(|reason| reason.label());
        crate::metrics::init_consumer(queue, reasons.chain([OVERSIZED, CONSUMER_PANICKED]));
        readiness.set(true);
        tracing::info!(queue, "consuming");

        let in_flight = TaskTracker::new();
        let (settler, settling) = Settler::start(channel.clone());
        let connection_failed = connection::connection_failed(connection);
        tokio::pin!(connection_failed);
        let unusable = consumer.session_unusable();
        tokio::pin!(unusable);
        loop {
            tokio::select! {
                delivery = deliveries.next() => match delivery {
                    Some(Ok(mut delivery)) => {
                        crate::metrics::amqp_consumed(queue, delivery.redelivered);
                        if delivery.data.len() > config.max_message_bytes {
                            in_flight.spawn(dead_letter_oversized(settler.clone(), delivery));
                            continue;
                        }
                        let span = consumer_span(queue, &delivery);
                        let (consumer, publisher, settler) =
                            (consumer.clone(), publisher.clone(), settler.clone());
                        in_flight.spawn(span.scope(async move {
                            let handled = AssertUnwindSafe(consumer.handle(&mut delivery, &publisher))
                                .catch_unwind()
                                .await;
                            match handled {
                                Ok(settle) => settle_delivery(&settler, &delivery, settle).await,
                                Err(_) => {
                                    tracing::error!(queue = delivery.routing_key.as_str(), "the consumer panicked handling a delivery; dead-lettering it");
                                    dead_letter_unhandled(&settler, &delivery, CONSUMER_PANICKED).await;
                                }
                            }
                        }));
                    }
                    Some(Err(error)) => return Err(error),
                    None => return Err(lapin::Error::from(std::io::Error::other(
                        "the broker cancelled the consumer",
                    ))),
                },
                error = &mut connection_failed => return Err(error),
                why = &mut unusable => {
                    connection::close(connection).await;
                    return Err(lapin::Error::from(std::io::Error::other(why)));
                }
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
        drop(settler);
        settling.await.ok();
        Ok(())
    }
}

/// Rejects a delivery over the size limit without handling it, and
/// frees its body at once rather than with the delivery.
async fn dead_letter_oversized(settler: Settler, mut delivery: Delivery) {
    let size = std::mem::take(&mut delivery.data).len();
    tracing::warn!(
        queue = delivery.routing_key.as_str(),
        size,
        "message over MAX_MESSAGE_BYTES; dead-lettering it unread"
    );
    dead_letter_unhandled(&settler, &delivery, OVERSIZED).await;
}

/// Dead-letters a delivery no handler settled, counting it under `reason`.
async fn dead_letter_unhandled(settler: &Settler, delivery: &Delivery, reason: &'static str) {
    if settler
        .settle(delivery.delivery_tag, Outcome::DeadLetter)
        .await
    {
        crate::metrics::amqp_dead_lettered(delivery.routing_key.as_str(), reason);
    }
}

/// The CONSUMER span a delivery is handled in: a child of the publisher's
/// span, whose context came in the message headers.
fn consumer_span(queue: &str, delivery: &Delivery) -> HopSpan {
    let properties = &delivery.properties;
    HopSpan::start(
        || format!("{queue} process").into(),
        SpanKind::Consumer,
        || message::extract_context(properties),
        || {
            let mut attributes = message::span_attributes(
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

/// Acks, requeues or rejects `delivery`, counting it once the broker has
/// the frame (a failure is logged by the settler: the broker redelivers).
/// A dead-lettered delivery marks its CONSUMER span (being polled) as
/// failed.
async fn settle_delivery<R: DeadLetterReason>(
    settler: &Settler,
    delivery: &Delivery,
    settle: Settle<R>,
) {
    let queue = delivery.routing_key.as_str();
    let outcome = match settle {
        Settle::Ack => Outcome::Ack,
        Settle::Requeue => Outcome::Requeue,
        Settle::DeadLetter(reason) => {
            telemetry::hop::record_error_in_current_hop(format_args!(
                "dead-lettered: {}",
                reason.label()
            ));
            Outcome::DeadLetter
        }
    };
    if !settler.settle(delivery.delivery_tag, outcome).await {
        return;
    }
    match settle {
        Settle::Ack => crate::metrics::amqp_acked(queue),
        Settle::Requeue => crate::metrics::amqp_nacked(queue),
        Settle::DeadLetter(reason) => crate::metrics::amqp_dead_lettered(queue, reason.label()),
    }
}
