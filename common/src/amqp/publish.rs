//! Publishing with publisher confirms: a message is published only when
//! the broker says it has it, in a queue; and what a session does when the
//! broker keeps refusing its publishes or stops confirming them
//! ([`Refusals`]).

use std::future::Future;
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

/// The broker refusing a session's publishes: nacking them, or neither
/// confirming nor refusing one for half of its time budget (the stall
/// limit). Nothing nacked was enqueued, so a nacked publish is tried again
/// after a pause; when the nacks go on, or a confirm is that late, the
/// session is asked to make way for a new one (the consumer's
/// `session_unusable`), whose end fails the publishes still waiting on it.
///
/// A quorum queue that lost its leader confirms again once the majority has
/// noticed and elected a new one; the publish timeouts are set to cover
/// that twice over (docs/scaling.md, the timeout rule), so a stall past half of one is not an
/// election but a session stuck on its own: seen on RabbitMQ 3.10 after a
/// cluster node is lost, a channel going on refusing publishes, or not
/// confirming them until the lost node is back, long after the queue has a
/// new leader, while a new connection is served at once. A session is
/// replaced for a stall at most once per stall limit, so the publishes
/// that were waiting together do not each replace the next session.
#[derive(Debug)]
pub struct Refusals {
    renew: Notify,
    /// Half of the publish timeout.
    stall_limit: Duration,
    /// When a stall last asked for a new session.
    last_stall_renewal: std::sync::Mutex<Option<Instant>>,
}

impl Refusals {
    /// For publishes whose time budget is `publish_timeout`.
    pub fn new(publish_timeout: Duration) -> Self {
        Self {
            renew: Notify::new(),
            stall_limit: publish_timeout / 2,
            last_stall_renewal: std::sync::Mutex::new(None),
        }
    }

    /// Resolves when this session should make way for a new one.
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
            let published = self
                .unless_stalled(
                    routing_key,
                    publish_confirmed(channel, routing_key, payload, properties.clone(), remaining),
                )
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

    /// `publish`'s outcome; a new session is asked for when it takes
    /// longer than the stall limit (and none was, for a stall, within
    /// the limit).
    async fn unless_stalled<F: Future>(&self, routing_key: &str, publish: F) -> F::Output {
        tokio::pin!(publish);
        tokio::select! {
            outcome = &mut publish => return outcome,
            _ = tokio::time::sleep(self.stall_limit) => {}
        }
        let renew = {
            let mut last = self.last_stall_renewal.lock().expect("stall lock");
            let due = last.is_none_or(|at| at.elapsed() >= self.stall_limit);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if renew {
            tracing::warn!(
                routing_key,
                stall_limit = ?self.stall_limit,
                "no confirm within the stall limit; asking for a new session"
            );
            self.renew.notify_waiters();
        }
        publish.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publish whose confirm takes `delay`.
    async fn confirmed_after(delay: Duration) -> &'static str {
        tokio::time::sleep(delay).await;
        "confirmed"
    }

    #[tokio::test]
    async fn a_stall_asks_for_a_new_session_once_per_limit_and_still_awaits_its_confirm() {
        // A 400 ms budget: the stall limit is 200 ms.
        let refusals = std::sync::Arc::new(Refusals::new(Duration::from_millis(400)));
        let renewals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = tokio::spawn({
            let (refusals, renewals) = (refusals.clone(), renewals.clone());
            async move {
                loop {
                    refusals.renewal_requested().await;
                    renewals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        tokio::task::yield_now().await;
        let count = || renewals.load(std::sync::atomic::Ordering::SeqCst);

        let quick = refusals.unless_stalled("q", confirmed_after(Duration::from_millis(20)));
        assert_eq!(quick.await, "confirmed");
        assert_eq!(count(), 0, "a prompt confirm asks for nothing");

        // Two publishes stalled together: one renewal, and both are still
        // awaited to their confirm.
        let (first, second) = tokio::join!(
            refusals.unless_stalled("q", confirmed_after(Duration::from_millis(300))),
            refusals.unless_stalled("q", confirmed_after(Duration::from_millis(320))),
        );
        assert_eq!((first, second), ("confirmed", "confirmed"));
        assert_eq!(count(), 1, "at most one renewal per stall limit");
        counting.abort();
    }
}
