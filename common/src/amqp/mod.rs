//! RabbitMQ, in layers, each a module with one job:
//!
//! - [`connection`]: the broker's URL, opening a connection, and the
//!   supervisor that reconnects with backoff after any failure;
//! - [`topology`]: declaring a queue and its dead-letter queue, with the
//!   arguments every service agrees on;
//! - [`message`]: properties, headers and the trace context in them;
//! - [`publish`]: publishing with publisher confirms, in a PRODUCER span;
//! - [`stream`]: the event stream's declaration, its readers' start
//!   offsets and its records;
//! - [`settle`]: acking, requeuing and dead-lettering one channel's
//!   deliveries, acks batched with `multiple` where delivery order allows;
//! - [`consume`]: the consumer runtime the listeners and the dispatcher's
//!   response consumer share: sessions, a task and a CONSUMER span per
//!   delivery, settled through [`settle`].
//!
//! Each builds only on the ones above it.

pub mod connection;
pub mod consume;
pub mod message;
pub mod publish;
pub mod settle;
pub mod stream;
pub mod topology;

pub use connection::{Broker, Readiness};
pub use consume::{Consumer, ConsumerConfig, DeadLetterReason, Settle};
pub use publish::{PublishError, publish_confirmed};
