//! Publishing with publisher confirms: a message is published only when
//! the broker says it has it, in a queue; and what a session does when the
//! broker keeps refusing its publishes ([`Refusals`]).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use opentelemetry::trace::SpanKind;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::message;
use crate::telemetry::{self, HopSpan};

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

/// Opens a channel in publisher-confirm mode.
pub async fn confirm_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes `payload` to `routing_key` through the default exchange and
/// waits for the broker's confirm, inside a PRODUCER span whose context
/// travels in the message headers.
///
/// The message is `mandatory`, so one that no queue takes comes back as
/// [`PublishError::Unroutable`] instead of vanishing. Each caller awaits only
/// its own confirm: concurrent publishes on one channel are pipelined.
pub async fn publish_confirmed(
    channel: &Channel,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let span = HopSpan::start(
        || format!("{routing_key} publish").into(),
        SpanKind::Producer,
        telemetry::hop::current_context,
        || message::span_attributes(("send", "publish"), routing_key, &properties, payload.len()),
    );
    let properties = match span.context() {
        Some(context) => {
            let mut headers = properties.headers().clone().unwrap_or_default();
            message::inject_context(context, &mut headers);
            properties.with_headers(headers)
        }
        None => properties,
    };

    let publish = async {
        let confirm = channel
            .basic_publish(
                "".into(),
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

/// The pause before publishing again what the broker refused.
const REFUSED_PAUSE: Duration = Duration::from_millis(200);

/// How long a publish may be refused in a row before its session is asked
/// to make way for a new one: longer than a quorum queue takes to accept
/// again after an election, so a healthy session is not torn down for one.
const RENEW_AFTER: Duration = Duration::from_secs(2);

/// The broker refusing (nacking) a session's publishes. Nothing refused was
/// enqueued, so a refused publish is tried again after a pause; when the
/// refusals go on, the session is asked to make way for a new one
/// (the consumer's `session_unusable`).
/// Seen on RabbitMQ 3.10 after a cluster node is lost: a channel can go on
/// refusing publishes to a quorum queue long after the queue has a new
/// leader, while a new connection is served at once.
#[derive(Debug, Default)]
pub struct Refusals {
    renew: Notify,
}

impl Refusals {
    /// Resolves when a publish has been refused for [`RENEW_AFTER`].
    pub async fn renewal_requested(&self) {
        self.renew.notified().await;
    }

    /// Publishes as [`publish_confirmed`] does, again and again while the
    /// broker refuses it and `deadline` leaves time for another try.
    pub async fn publish(
        &self,
        channel: &Channel,
        routing_key: &str,
        payload: &[u8],
        properties: &BasicProperties,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let mut refused_since = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let published =
                publish_confirmed(channel, routing_key, payload, properties.clone(), remaining)
                    .await;
            if !matches!(published, Err(PublishError::Nacked))
                || Instant::now() + REFUSED_PAUSE >= deadline
            {
                return published;
            }
            let since = *refused_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= RENEW_AFTER {
                tracing::warn!(
                    routing_key,
                    "the broker keeps refusing publishes; asking for a new session"
                );
                self.renew.notify_waiters();
                refused_since = None;
            }
            tokio::time::sleep(REFUSED_PAUSE).await;
        }
    }
}
