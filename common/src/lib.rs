//! What every service of the dispatcher platform shares.
//!
//! The three services (public-web, dispatcher, ping-listener) speak the same
//! event envelope, read configuration the same way, answer errors with the
//! same JSON shape and talk to RabbitMQ through the same supervised
//! connection. Keeping those pieces here means each service crate is only its
//! own routes and handlers.

mod allocator;
pub mod amqp;
pub mod callback_auth;
pub mod config;
pub mod event;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod ping;
pub mod propagation;
pub mod shutdown;
pub mod telemetry;

pub use event::{Event, EventInput, HandlerError};
