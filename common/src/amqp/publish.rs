//! Publishing with publisher confirms: a message is published only when
//! the broker says it has it, in a queue.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use opentelemetry::trace::SpanKind;

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
