//! Publishing requests: each event to the queue its type is routed to, with
//! the properties the wire contract gives a request, confirmed by the
//! broker, through the current AMQP session's channel.
//!
//! A broker that is reconnecting (a blip, a cluster node lost) is not an
//! error for the client: a publish waits for the next session and tries
//! again there, until its time budget runs out; a publish the broker
//! refused (nack) is tried again, and when the refusals go on, or a confirm
//! is long overdue, the session is replaced ([`Refusals`]) and the publish
//! is made again on the new one. Publishing twice is safe
//! where the first try's fate is unknown (the connection died before the
//! confirm): requests are delivered at least once, and a second answer to
//! the same request finds nobody waiting for it.

use std::time::Duration;

use common::Event;
use common::amqp::PublishError;
use common::amqp::message::{self, event_properties};
use common::amqp::publish::Refusals;
use common::wire::CALLBACK_URL_HEADER;
use lapin::Channel;
use lapin::types::{FieldTable, ShortString};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;

pub struct Publisher {
    /// The session's confirm channel, while a session is up.
    channel: watch::Sender<Option<Channel>>,
    /// Where listeners reply (`reply_to`).
    reply_to: ShortString,
    /// `MESSAGE_TTL_MS` as the `expiration` property wants it.
    expiration: ShortString,
    /// The longest a publish may take, waiting for a session included
    /// (`PUBLISH_TIMEOUT_MS`).
    timeout: Duration,
    /// Publishes the broker refused, shared with the session.
    pub refusals: Refusals,
}

impl Publisher {
    pub fn new(config: &Config) -> Self {
        Self {
            channel: watch::Sender::new(None),
            reply_to: config.response_queue.as_str().into(),
            expiration: config.message_ttl.as_millis().to_string().into(),
            timeout: config.publish_timeout,
            refusals: Refusals::new(config.publish_timeout),
        }
    }

    /// Publishes through `channel` from now on; `None` while no session
    /// is up.
    pub fn set_channel(&self, channel: Option<Channel>) {
        self.channel.send_replace(channel);
    }

    /// Publishes `event` (whose JSON is `body`) to `queue` under
    /// `correlation`, naming `callback_url` as where its answer goes (none:
    /// an asynchronous request, answered to the event stream only), and
    /// waits for the broker's confirm: within `budget` (the client's
    /// remaining patience, when known) and `PUBLISH_TIMEOUT_MS`, through
    /// as many sessions as come and go meanwhile.
    pub async fn publish(
        &self,
        event: &Event,
        body: &[u8],
        queue: &str,
        correlation: &str,
        callback_url: Option<&str>,
        budget: Option<Duration>,
    ) -> Result<(), PublishError> {
        let deadline = Instant::now() + budget.map_or(self.timeout, |b| b.min(self.timeout));
        let mut headers = FieldTable::default();
        if let Some(callback_url) = callback_url {
            message::set_header(&mut headers, CALLBACK_URL_HEADER, callback_url);
        }
        let properties = event_properties(&event.id, &event.kind)
            .with_correlation_id(correlation.into())
            .with_reply_to(self.reply_to.clone())
            .with_expiration(self.expiration.clone())
            .with_headers(headers);
        let mut sessions = self.channel.subscribe();
        loop {
            let channel = next_channel(&mut sessions, deadline).await?;
            let published = self
                .refusals
                .publish(&channel, queue, body, &properties, deadline);
            let outcome = tokio::select! {
                outcome = published => outcome,
                // A new session while the confirm is awaited (this one was
                // replaced: refused, stalled or lost): the old channel's
                // confirm may never come, so publish again on the new one.
                _ = sessions.changed() => {
                    tracing::debug!(queue, "the session changed during a publish; trying again");
                    continue;
                }
            };
            match outcome {
                // The session died under the publish: try the next one,
                // once the session has changed (the channel's state can
                // lag the error that ended it).
                Err(PublishError::Broker(error)) if session_died(&channel, &error) => {
                    tracing::debug!(queue, %error, "the session ended during a publish; trying again");
                    if tokio::time::timeout_at(deadline, sessions.changed())
                        .await
                        .is_err()
                    {
                        return Err(PublishError::NotConnected);
                    }
                }
                outcome => return outcome,
            }
        }
    }
}

/// Whether `error`, from a publish on `channel`, means the session is gone
/// (rather than the broker refusing this one message, which closes the
/// channel with a soft error: publishing it again would only close the
/// next session's).
fn session_died(channel: &Channel, error: &lapin::Error) -> bool {
    (!channel.status().connected() && !error.is_amqp_soft_error())
        || error.is_io_error()
        || error.is_amqp_hard_error()
        || matches!(
            error.kind(),
            lapin::ErrorKind::MissingHeartbeatError
                | lapin::ErrorKind::InvalidConnectionState(_)
                | lapin::ErrorKind::InvalidChannelState(..)
        )
}

/// The first connected channel `sessions` offers before `deadline`.
async fn next_channel(
    sessions: &mut watch::Receiver<Option<Channel>>,
    deadline: Instant,
) -> Result<Channel, PublishError> {
    let usable = |channel: &Option<Channel>| {
        channel
            .as_ref()
            .is_some_and(|channel| channel.status().connected())
    };
    match tokio::time::timeout_at(deadline, sessions.wait_for(usable)).await {
        Ok(Ok(channel)) => Ok(channel.clone().expect("a usable channel")),
        // The sender lives as long as the publisher; timing out is the
        // only way to get here.
        _ => Err(PublishError::NotConnected),
    }
}
