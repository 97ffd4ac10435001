//! Callback URLs, each parsed once.
//!
//! Every request names the `/dispatch` URL of the public-web instance that
//! sent it, and the dispatcher reads that URL twice: when it accepts the
//! request (a bad one is refused there, not dead-lettered later) and when
//! it calls the response back. Parsing with the `url` crate (IDNA host
//! processing included) is a noticeable share of the dispatcher's work
//! per request (BENCHMARKS.md), while a deployment has only as many
//! distinct URLs as it has public-web instances. So parsed URLs are kept,
//! up to a bound, and a URL seen before costs a lookup and a clone.

use std::collections::HashMap;
use std::sync::RwLock;

use reqwest::Url;

/// Parsed callback URLs, shared by the HTTP handlers and the response
/// consumer.
pub struct CallbackUrls {
    parsed: RwLock<HashMap<Box<str>, Url>>,
    /// How many are kept; beyond it a URL is parsed each time, so a caller
    /// inventing URLs cannot grow the map.
    capacity: usize,
}

impl CallbackUrls {
    /// Far more than a deployment has public-web instances.
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn new(capacity: usize) -> Self {
        Self {
            parsed: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// `text` as an HTTP(S) URL, or `None` if it is not one.
    pub fn parse(&self, text: &str) -> Option<Url> {
        if let Some(url) = self.parsed.read().expect("callback URL lock").get(text) {
            return Some(url.clone());
        }
        let url = Url::parse(text)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))?;
        let mut parsed = self.parsed.write().expect("callback URL lock");
        if parsed.len() < self.capacity {
            parsed.insert(text.into(), url.clone());
        }
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_seen_before_is_the_same_url() {
        let urls = CallbackUrls::new(4);
        let first = urls.parse("http://public-web:3000/dispatch").unwrap();
        let again = urls.parse("http://public-web:3000/dispatch").unwrap();
        assert_eq!(first, again);
        assert_eq!(again.port(), Some(3000));
    }

    #[test]
    fn only_http_urls_are_callbacks() {
        let urls = CallbackUrls::new(4);
        assert!(urls.parse("https://public-web/dispatch").is_some());
        for bad in [
            "not a url",
            "ftp://public-web/dispatch",
            "mailto:ops@example.com",
            "",
        ] {
            assert_eq!(urls.parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_map_stops_growing_at_its_capacity() {
        let urls = CallbackUrls::new(2);
        for port in 1..=5 {
            let text = format!("http://127.0.0.1:{port}/dispatch");
            assert_eq!(urls.parse(&text).unwrap().port(), Some(port));
        }
        assert_eq!(urls.parsed.read().unwrap().len(), 2);
    }
}
