//! public-web: the platform's only public surface.
//!
//! A client POSTs an event; public-web parks the request (a oneshot in a
//! map keyed by event id), forwards the event to the dispatcher with its own
//! callback URL, and answers the client when the dispatcher POSTs the
//! response to `/dispatch` — or 504 when none comes in time.
//!
//! `startup` builds the app from `config`; the handlers (`routes`) share
//! `state`: the parked requests (`pending`) and the `dispatcher_client`.

pub mod config;
pub mod dispatcher_client;
pub mod error;
pub mod metrics;
pub mod pending;
pub mod routes;
pub mod startup;
pub mod state;

pub const SERVICE_NAME: &str = "public-web";
/// The HTTP port unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 3000;
