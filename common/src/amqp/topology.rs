//! The queues: every service that touches a queue declares it through
//! [`declare_queue`], so the arguments always agree (RabbitMQ refuses a
//! redeclaration whose arguments differ) and any start order works.

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

use super::message::long_string;
use crate::wire::{DEAD_LETTER_MAX_BYTES, DEAD_LETTER_MAX_LENGTH, dead_letter_queue};

/// Declares the durable work queue `queue` and its dead-letter queue.
///
/// Rejected (poison) and expired messages go to `<queue>.dead` through the
/// default exchange; that queue keeps the newest
/// [`DEAD_LETTER_MAX_LENGTH`] messages, [`DEAD_LETTER_MAX_BYTES`] at most.
/// A queue that exists with other arguments (declared by an older
/// version) is refused by the broker; the error log says what to do.
pub async fn declare_queue(channel: &Channel, queue: &str) -> lapin::Result<()> {
    let dead = dead_letter_queue(queue);
    let mut dead_args = FieldTable::default();
    dead_args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(DEAD_LETTER_MAX_LENGTH),
    );
    dead_args.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(DEAD_LETTER_MAX_BYTES),
    );
    declare(channel, &dead, dead_args).await?;
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert("x-dead-letter-routing-key".into(), long_string(&dead));
    declare(channel, queue, args).await
}

async fn declare(channel: &Channel, queue: &str, args: FieldTable) -> lapin::Result<()> {
    let declared = channel.queue_declare(queue.into(), durable(), args).await;
    if let Err(error) = &declared
        && error.to_string().contains("PRECONDITION_FAILED")
    {
        tracing::error!(
            queue,
            %error,
            "the queue exists with other arguments; if it was declared by an older version, \
             delete it (rabbitmqctl delete_queue {queue}) once it is drained"
        );
    }
    declared.map(|_| ())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}
