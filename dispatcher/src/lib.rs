//! dispatcher: a stateless router between HTTP and RabbitMQ.
//!
//! Events come in over HTTP and go out to the queue their type is routed to
//! (configuration, not code). Listeners' responses come back on one
//! response queue and go out as HTTP callbacks to the `/dispatch` URL each
//! message carries, so any number of dispatchers can run side by side.

pub mod broker;
pub mod callback_urls;
pub mod configuration;
pub mod error;
pub mod routes;
pub mod startup;

pub const SERVICE_NAME: &str = "dispatcher";
