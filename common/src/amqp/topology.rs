//! The queues: every service that touches a queue declares it through
//! [`declare_queue`], so the arguments always agree (RabbitMQ refuses a
//! redeclaration whose arguments differ) and any start order works.
//!
//! Work queues are classic or quorum queues ([`QueueType`], one setting for
//! the whole deployment): a quorum queue is replicated over the cluster's
//! nodes and survives the loss of a minority of them.

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

use super::message::long_string;
use crate::config::{self, ConfigError};
use crate::wire::{
    DEAD_LETTER_MAX_BYTES, DEAD_LETTER_MAX_LENGTH, DELIVERY_LIMIT, dead_letter_queue,
};

/// The type of the work queues and their dead-letter queues
/// (`QUEUE_TYPE`).
///
/// Classic by default: one node gains nothing from replication, and queues
/// that exist cannot change type in place. A cluster uses `quorum`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

impl QueueType {
    /// `QUEUE_TYPE`, classic when unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        config::parse_or("QUEUE_TYPE", Self::default())
    }

    fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl std::str::FromStr for QueueType {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            _ => Err("expected classic or quorum"),
        }
    }
}

/// Declares the durable work queue `queue` and its dead-letter queue, both
/// of `queue_type`.
///
/// Rejected (poison) and expired messages go to `<queue>.dead` through the
/// default exchange; that queue keeps the newest
/// [`DEAD_LETTER_MAX_LENGTH`] messages, [`DEAD_LETTER_MAX_BYTES`] at most.
/// A quorum work queue also dead-letters a message delivered
/// [`DELIVERY_LIMIT`] times. A queue that exists with other arguments (of
/// another type, or declared by an older version) is refused by the
/// broker; the error log says what to do.
pub async fn declare_queue(
    channel: &Channel,
    queue: &str,
    queue_type: QueueType,
) -> lapin::Result<()> {
    let dead = dead_letter_queue(queue);
    let mut dead_args = typed(queue_type);
    dead_args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(DEAD_LETTER_MAX_LENGTH),
    );
    dead_args.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(DEAD_LETTER_MAX_BYTES),
    );
    declare(channel, &dead, queue_type, dead_args).await?;
    let mut args = typed(queue_type);
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert("x-dead-letter-routing-key".into(), long_string(&dead));
    if queue_type == QueueType::Quorum {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
    }
    declare(channel, queue, queue_type, args).await
}

/// The arguments every queue of `queue_type` starts with. A classic queue
/// names no type, as the versions before `QUEUE_TYPE` declared it.
fn typed(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long_string(queue_type.name()));
    }
    args
}

async fn declare(
    channel: &Channel,
    queue: &str,
    queue_type: QueueType,
    args: FieldTable,
) -> lapin::Result<()> {
    let declared = channel.queue_declare(queue.into(), durable(), args).await;
    if let Err(error) = &declared
        && error.to_string().contains("PRECONDITION_FAILED")
    {
        if error.to_string().contains("x-queue-type") {
            tracing::error!(
                queue,
                %error,
                "queue {queue} exists with another type than QUEUE_TYPE={wanted}: a queue cannot \
                 change type in place. Either set QUEUE_TYPE back to the queue's type, or stop \
                 publishing to it, let it drain, delete it (rabbitmqctl delete_queue {queue}, \
                 and its .dead queue) and restart the services with QUEUE_TYPE={wanted}",
                wanted = queue_type.name(),
            );
        } else {
            tracing::error!(
                queue,
                %error,
                "the queue exists with other arguments; if it was declared by an older version, \
                 delete it (rabbitmqctl delete_queue {queue}) once it is drained"
            );
        }
    }
    declared.map(|_| ())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_types_parse_by_name() {
        assert_eq!("quorum".parse(), Ok(QueueType::Quorum));
        assert_eq!("classic".parse(), Ok(QueueType::Classic));
        assert!("stream".parse::<QueueType>().is_err());
        assert_eq!(QueueType::default(), QueueType::Classic);
    }
}
