//! dispatcher: a stateless router between HTTP and RabbitMQ.
//!
//! Events come in over HTTP (`routes`) and go out to the queue their type
//! is routed to (`routing`: configuration, not code) through the
//! `publisher`. Listeners' responses come back on one response queue and go
//! out as HTTP callbacks to the `/dispatch` URL each message carries
//! (`callback`), so any number of dispatchers can run side by side.
//! Every routed event, request and response, is also appended to the
//! event stream (`stream`), off the request path.
//! `startup` builds it all from `config`.

pub mod callback;
pub mod config;
pub mod error;
pub mod listeners;
pub mod metrics;
pub mod publisher;
pub mod routes;
pub mod routing;
pub mod startup;
pub mod state;
pub mod stream;
pub mod targets;

pub const SERVICE_NAME: &str = "dispatcher";
/// The HTTP port unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 3001;
