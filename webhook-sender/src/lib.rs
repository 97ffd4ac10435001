//! webhook-sender: delivers the event stream's answers to the endpoints
//! registered for them — the only part of the platform that calls out to
//! the internet.
//!
//! Endpoints are registered through the management API (`api`) and kept
//! with everything owed to them in PostgreSQL (`db`, `store`). One sender
//! at a time reads the stream and records which endpoints each answer is
//! owed to (`reader`); every sender claims what is due and delivers it,
//! signed as Standard Webhooks specifies, through the egress policy, on
//! the retry `schedule` (`deliver`); a delivery given up is announced on
//! the stream (`notices`). `startup` builds it all from `config`.

pub mod api;
pub mod config;
pub mod db;
pub mod deliver;
pub mod error;
pub mod metrics;
pub mod notices;
pub mod reader;
pub mod schedule;
pub mod startup;
pub mod state;
pub mod store;

pub const SERVICE_NAME: &str = "webhook-sender";
/// The management port unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 3006;
