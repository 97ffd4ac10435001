//! Publishing requests: each event to the queue its type is routed to, with
//! the properties the wire contract gives a request, confirmed by the
//! broker. The channel is the current AMQP session's, when one is up.

use std::sync::RwLock;
use std::time::Duration;

use common::Event;
use common::amqp::message::{self, event_properties};
use common::amqp::{self, PublishError};
use common::wire::CALLBACK_URL_HEADER;
use lapin::Channel;
use lapin::types::{FieldTable, ShortString};

use crate::config::Config;

pub struct Publisher {
    /// The session's confirm channel, while a session is up.
    channel: RwLock<Option<Channel>>,
    /// Where listeners reply (`reply_to`).
    reply_to: ShortString,
    /// `MESSAGE_TTL_MS` as the `expiration` property wants it.
    expiration: ShortString,
    timeout: Duration,
}

impl Publisher {
    pub fn new(config: &Config) -> Self {
        Self {
            channel: RwLock::new(None),
            reply_to: config.response_queue.as_str().into(),
            expiration: config.message_ttl.as_millis().to_string().into(),
            timeout: config.publish_timeout,
        }
    }

    /// Publishes through `channel` from now on; `None` while no session
    /// is up.
    pub fn set_channel(&self, channel: Option<Channel>) {
        *self.channel.write().expect("publisher lock") = channel;
    }

    /// Publishes `event` (whose JSON is `body`) to `queue` under
    /// `correlation`, naming `callback_url` as where its answer goes, and
    /// waits for the broker's confirm.
    pub async fn publish(
        &self,
        event: &Event,
        body: &[u8],
        queue: &str,
        correlation: &str,
        callback_url: &str,
    ) -> Result<(), PublishError> {
        let channel = self
            .channel
            .read()
            .expect("publisher lock")
            .clone()
            .ok_or(PublishError::NotConnected)?;
        let mut headers = FieldTable::default();
        message::set_header(&mut headers, CALLBACK_URL_HEADER, callback_url);
        let properties = event_properties(&event.id, &event.kind)
            .with_correlation_id(correlation.into())
            .with_reply_to(self.reply_to.clone())
            .with_expiration(self.expiration.clone())
            .with_headers(headers);
        amqp::publish_confirmed(&channel, queue, body, properties, self.timeout).await
    }
}
