//! `req`: the platform's command-line client, as a library so its parts can
//! be tested without spawning the binary.
//!
//! - [`payload`]: the event bodies `req` sends (a ping stamped per request,
//!   or any fixed event).
//! - [`single`]: one request (HTTP or WebSocket), answered with what the
//!   CLI prints.
//! - [`load`]: the closed-loop load run and its [`load::LoadReport`].
//! - [`ws`]: public-web's `/ws` socket, for `--ws` and `--watch`.
//! - [`watch`]: a live subscription printed as it comes (`--watch`).
//! - [`token`]: development subscriber tokens (`--mint-token`).
//! - [`listen`]: a webhook receiver that verifies signatures
//!   (`--webhook-listen`).
//! - [`grafana`]: the Explore link that opens a trace in Tempo.

pub mod grafana;
pub mod listen;
pub mod load;
pub mod payload;
pub mod single;
pub mod token;
pub mod watch;
pub mod ws;

pub use load::{Limit, LoadConfig, LoadReport, Transport, run_load};
pub use payload::Payload;

/// Builds the URL `req` posts to from a base (`PUBLIC_WEB_URL`) and a path,
/// keeping any path prefix the base has (a proxy mount, say).
pub fn target_url(base: &str, path: &str) -> Result<reqwest::Url, BadUrl> {
    let joined = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    reqwest::Url::parse(&joined).map_err(|error| BadUrl {
        url: joined,
        reason: error.to_string(),
    })
}

/// A base URL and path that do not make a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUrl {
    pub url: String,
    pub reason: String,
}

impl std::fmt::Display for BadUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not a URL: {}", self.url, self.reason)
    }
}

impl std::error::Error for BadUrl {}

#[cfg(test)]
mod tests {
    use super::target_url;

    #[test]
    fn target_url_joins_base_and_path() {
        let url = target_url("http://127.0.0.1:3000", "/").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:3000/");
        let url = target_url("http://127.0.0.1:3000/", "/ping").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:3000/ping");
        let url = target_url("http://proxy/api/", "ping").unwrap();
        assert_eq!(url.as_str(), "http://proxy/api/ping");
    }

    #[test]
    fn target_url_rejects_garbage() {
        assert!(target_url("not a url", "/").is_err());
    }
}
