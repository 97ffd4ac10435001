//! The queues: every service that touches a queue declares it through
//! [`declare_queue`], so the arguments always agree (RabbitMQ refuses a
//! redeclaration whose arguments differ) and any start order works.

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

use super::message::long_string;
use crate::wire::{DEAD_LETTER_MAX_LENGTH, dead_letter_queue};

/// Declares the durable work queue `queue` and its dead-letter queue.
///
/// Rejected (poison) and expired messages go to `<queue>.dead` through the
/// default exchange; that queue keeps the newest
/// [`DEAD_LETTER_MAX_LENGTH`] messages.
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
