//! public-web: the platform's only public surface.
//!
//! A client POSTs an event; public-web parks the request (a oneshot in a
//! map keyed by event id), forwards the event to the dispatcher with its own
//! callback URL, and answers the client when the dispatcher POSTs the
//! response to `/dispatch` — or 504 when none comes in time.
//!
//! Beyond the held request: a WebSocket (`ws`) carries many requests and
//! live subscriptions, `sse` streams subscriptions to plain HTTP clients,
//! both fed by this instance's reader of the event stream (`live`), and
//! `console` serves a page that uses them.
//!
//! `startup` builds the app from `config`; the handlers share `state`:
//! the parked requests (`pending`), the `dispatcher_client` and `live`.

pub mod config;
pub mod console;
pub mod dispatcher_client;
pub mod error;
pub mod live;
pub mod metrics;
pub mod pending;
pub mod routes;
pub mod sse;
pub mod startup;
pub mod state;
pub mod ws;

pub const SERVICE_NAME: &str = "public-web";
/// The HTTP port unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 3000;
