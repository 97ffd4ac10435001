//! public-web: the platform's only public surface.
//!
//! A client POSTs an event; public-web parks the request (a oneshot in a
//! map keyed by event id), forwards the event to the dispatcher with its own
//! callback URL, and answers the client when the dispatcher POSTs the
//! response to `/dispatch` — or 504 when none comes in time.

pub mod configuration;
pub mod error;
pub mod pending;
pub mod routes;
pub mod startup;

pub const SERVICE_NAME: &str = "public-web";
