//! scenario-listener: a listener that acts out configured behaviour (after
//! Thespian's actors), to simulate any microservice shape on the platform.
//!
//! `SCENARIO_CONFIG` lists, for each event type it answers, steps that
//! sleep (fixed or random time, with a chance of failing), call other
//! events through the platform, and run in parallel or in sequence; see
//! [`config`] for the format and `examples/` for two scenarios. Everything
//! but the handler is the shared listener runtime in [`common::listener`].

pub mod config;
pub mod scenario;

pub use config::ScenarioConfig;
pub use scenario::Scenario;

pub const SERVICE_NAME: &str = "scenario-listener";
/// One queue for every event type of the scenario: the dispatcher routes
/// each of them here.
pub const DEFAULT_QUEUE: &str = "scenario-request";
pub const DEFAULT_PORT: u16 = 3004;
pub const DEFAULT_PUBLIC_WEB_URL: &str = "http://127.0.0.1:3000";

/// Where calls are sent (`PUBLIC_WEB_URL`): public-web answers them
/// synchronously, through the dispatcher like any request.
pub fn public_web_url() -> Result<reqwest::Url, common::config::ConfigError> {
    common::config::http_url_or("PUBLIC_WEB_URL", DEFAULT_PUBLIC_WEB_URL)
}
