//! What two or more of the platform's crates share.
//!
//! - [`wire`]: the contract every service speaks (envelope, errors,
//!   headers, queues, the internal hops' signature);
//! - [`config`]: reading environment variables into final types;
//! - [`egress`]: where calls chosen by others' input may go;
//! - [`filter`]: the rules that select events for subscribers (live
//!   subscriptions and webhooks);
//! - [`http`]: serving and calling HTTP the same way everywhere;
//! - [`amqp`]: RabbitMQ in layers, up to the consumer runtime;
//! - [`listener`]: a listener is its configuration plus one handler;
//! - [`webhook`]: Standard Webhooks signatures, made by the
//!   webhook-sender, checked by receivers;
//! - [`telemetry`], [`metrics`]: traces, logs and metrics;
//! - [`service`], [`allocator`]: what each binary's `main` uses.

pub mod allocator;
pub mod amqp;
pub mod config;
pub mod egress;
pub mod filter;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod service;
pub mod telemetry;
pub mod webhook;
pub mod wire;

pub use wire::{Event, HandlerError};
