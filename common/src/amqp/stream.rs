//! The event stream: one RabbitMQ stream queue holding every event the
//! dispatcher routes, requests and responses, in publish order.
//!
//! A stream is an append-only log: reading it removes nothing, and each
//! reader chooses where it starts (`x-stream-offset`), so a subscriber that
//! reconnects resumes at the offset it last saw. The writers (the
//! dispatcher, and the webhook-sender for its notices) and the readers
//! (public-web, the webhook-sender) declare it through
//! [`StreamConfig::declare`] with the same arguments, read from the same
//! variables, so any start order works.
//!
//! A record is the event's JSON as it travelled, with the properties and
//! headers [`crate::wire`] lists under "The event stream".

use std::fmt;

use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use opentelemetry::Context;

use super::message;
use crate::config::{self, ConfigError};
use crate::wire::{STREAM_DIRECTION_HEADER, STREAM_FILTER_HEADER, STREAM_SOURCE_HEADER};

/// Where the stream is and how much of it the broker keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The stream's name (`EVENT_STREAM`).
    pub name: String,
    /// Records older than this are deleted, a segment at a time
    /// (`EVENT_STREAM_MAX_AGE`, RabbitMQ's form: `24h`, `7D`, `30m`).
    pub max_age: MaxAge,
    /// The most bytes kept (`EVENT_STREAM_MAX_BYTES`).
    pub max_bytes: i64,
    /// The size of one segment file (`EVENT_STREAM_SEGMENT_BYTES`):
    /// retention removes whole segments, so it is the granularity of both
    /// limits above.
    pub segment_bytes: i64,
}

impl StreamConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self {
            name: config::string_or("EVENT_STREAM", "events"),
            max_age: config::parse_or("EVENT_STREAM_MAX_AGE", MaxAge("24h".into()))?,
            max_bytes: config::parse_or("EVENT_STREAM_MAX_BYTES", 1 << 30)?,
            segment_bytes: config::parse_or("EVENT_STREAM_SEGMENT_BYTES", 64 << 20)?,
        };
        if config.max_bytes <= 0 {
            return Err(ConfigError::invalid(
                "EVENT_STREAM_MAX_BYTES",
                &config.max_bytes.to_string(),
                "must be positive",
            ));
        }
        if config.segment_bytes <= 0 || config.segment_bytes > config.max_bytes {
            return Err(ConfigError::invalid(
                "EVENT_STREAM_SEGMENT_BYTES",
                &config.segment_bytes.to_string(),
                "must be positive and at most EVENT_STREAM_MAX_BYTES",
            ));
        }
        Ok(config)
    }

    /// Declares the stream (durable, `x-queue-type: stream`, the retention
    /// above). On a cluster the broker replicates a stream on every node,
    /// as it does a quorum queue, whatever `QUEUE_TYPE` says. A stream that exists with other arguments is refused by
    /// the broker, which closes `channel`; the error log says what to do.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), message::long_string("stream"));
        args.insert("x-max-age".into(), message::long_string(&self.max_age.0));
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(self.max_bytes),
        );
        args.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(self.segment_bytes),
        );
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(self.name.as_str().into(), options, args)
            .await;
        if let Err(error) = &declared
            && error.to_string().contains("PRECONDITION_FAILED")
        {
            tracing::error!(
                stream = %self.name,
                %error,
                "the event stream exists with other arguments: give every service the same \
                 EVENT_STREAM_* settings, or delete the stream (rabbitmqctl delete_queue {}) \
                 to declare it anew",
                self.name
            );
        }
        declared.map(|_| ())
    }
}

/// A retention age in RabbitMQ's form: a positive number and one unit of
/// `Y`, `M`, `D`, `h`, `m` or `s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxAge(String);

impl std::str::FromStr for MaxAge {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let valid = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
            && number.parse::<u64>().is_ok_and(|n| n > 0)
            && matches!(unit, "Y" | "M" | "D" | "h" | "m" | "s");
        valid
            .then(|| Self(text.to_owned()))
            .ok_or_else(|| "expected a positive number and a unit: Y, M, D, h, m or s".to_owned())
    }
}

impl fmt::Display for MaxAge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a stream reader starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At this offset (the first one kept, if it is older).
    Offset(u64),
    /// At the last chunk written: a few recent records, then new ones.
    Last,
    /// With the next record written.
    Next,
}

impl StartAt {
    /// The consume arguments that start a reader here.
    pub fn consume_arguments(self) -> FieldTable {
        let offset = match self {
            Self::Offset(offset) => {
                AMQPValue::LongLongInt(i64::try_from(offset).unwrap_or(i64::MAX))
            }
            Self::Last => AMQPValue::LongString(LongString::from("last")),
            Self::Next => AMQPValue::LongString(LongString::from("next")),
        };
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-stream-offset"), offset);
        args
    }
}

/// A reader of `config`'s stream on a channel of its own: the stream
/// declared, `prefetch` records of credit (acks only return credit on a
/// stream), records from `start` on. The channel is returned with the
/// consumer: closing it ends the read.
pub async fn read(
    connection: &Connection,
    config: &StreamConfig,
    prefetch: u16,
    start: StartAt,
) -> lapin::Result<(Channel, lapin::Consumer)> {
    let channel = connection.create_channel().await?;
    config.declare(&channel).await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let records = channel
        .basic_consume(
            config.name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            start.consume_arguments(),
        )
        .await?;
    Ok((channel, records))
}

/// The properties of a record: the event's id and type, its direction
/// and source, the value broker-side filters match (its type), and the
/// trace `context` it was recorded in, so whoever acts on the record later
/// (a webhook delivery) can join that trace.
pub fn record_properties(
    id: &str,
    kind: &str,
    direction: &str,
    source: &str,
    context: &Context,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    message::set_header(&mut headers, STREAM_DIRECTION_HEADER, direction);
    message::set_header(&mut headers, STREAM_SOURCE_HEADER, source);
    message::set_header(&mut headers, STREAM_FILTER_HEADER, kind);
    message::inject_context(context, &mut headers);
    message::event_properties(id, kind).with_headers(headers)
}

/// One record read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position in the stream.
    pub offset: u64,
    /// `request` or `response`.
    pub direction: String,
    /// The service that produced the event.
    pub source: String,
    /// The event's JSON.
    pub body: Vec<u8>,
    /// The W3C `traceparent` of the trace it was recorded in, if any.
    pub traceparent: Option<String>,
}

impl Record {
    /// The record a stream delivery holds; `None` without an offset (not
    /// a stream delivery).
    pub fn from_delivery(delivery: Delivery) -> Option<Self> {
        let headers = delivery.properties.headers().as_ref()?;
        let offset = match headers.inner().get("x-stream-offset")? {
            AMQPValue::LongLongInt(offset) => u64::try_from(*offset).ok()?,
            AMQPValue::LongUInt(offset) => u64::from(*offset),
            AMQPValue::LongInt(offset) => u64::try_from(*offset).ok()?,
            _ => return None,
        };
        let text = |name| {
            message::header(&delivery.properties, name)
                .unwrap_or("unknown")
                .to_owned()
        };
        Some(Self {
            offset,
            direction: text(STREAM_DIRECTION_HEADER),
            source: text(STREAM_SOURCE_HEADER),
            traceparent: message::header(&delivery.properties, "traceparent").map(str::to_owned),
            body: delivery.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_rabbitmq_units_only() {
        for good in ["24h", "7D", "1Y", "30m", "45s", "2M"] {
            assert_eq!(good.parse::<MaxAge>().unwrap().to_string(), good);
        }
        for bad in ["", "h", "0h", "24", "24H", "1d", "-1h", "1.5h", "24 h"] {
            assert!(bad.parse::<MaxAge>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn offsets_become_consume_arguments() {
        let args = StartAt::Offset(42).consume_arguments();
        assert_eq!(
            args.inner().get("x-stream-offset"),
            Some(&AMQPValue::LongLongInt(42))
        );
        let args = StartAt::Next.consume_arguments();
        assert_eq!(
            args.inner().get("x-stream-offset"),
            Some(&AMQPValue::LongString("next".into()))
        );
    }
}
