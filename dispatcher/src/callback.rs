//! Calling responses back: each listener response is POSTed to the
//! `/dispatch` URL it carries, signed when a secret is shared, retried a
//! bounded number of times when it fails in transit or with a 5xx.
//!
//! A 404 means public-web no longer waits for that id (timed out,
//! restarted, or a duplicate delivery): final, acked and logged, never
//! retried. What still fails after the retries is dead-lettered.
//!
//! The dispatcher reads each request's callback URL twice: when it accepts
//! the request (a bad one is refused there, not dead-lettered later) and
//! when it calls the response back. Parsing with the `url` crate (IDNA
//! host processing included) is a noticeable share of the dispatcher's
//! work per request (BENCHMARKS.md), while a deployment has only as many
//! distinct URLs as it has public-web instances; so [`CallbackUrls`] keeps
//! parsed URLs, up to a bound.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use common::Event;
use common::amqp::message;
use common::amqp::{Consumer, DeadLetterReason, Settle};
use common::http;
use common::wire::{CALLBACK_URL_HEADER, CallbackSecret, SIGNATURE_HEADER};
use lapin::Channel;
use lapin::message::Delivery;
use reqwest::{StatusCode, Url};

use crate::config::CallbackConfig;
use crate::metrics::CallbackFailure;
use crate::publisher::Publisher;

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

/// Why a response is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDeadLetter {
    /// The body is not an event.
    Malformed,
    /// No usable callback URL: there is nowhere to deliver it.
    NoCallbackUrl,
    /// Every attempt failed.
    CallbackFailed,
}

impl DeadLetterReason for ResponseDeadLetter {
    const ALL: &'static [Self] = &[Self::Malformed, Self::NoCallbackUrl, Self::CallbackFailed];

    fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NoCallbackUrl => "no_callback_url",
            Self::CallbackFailed => "callback_failed",
        }
    }
}

/// Why one callback attempt failed.
#[derive(Debug, thiserror::Error)]
enum CallbackError {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("public-web answered {0}")]
    Status(StatusCode),
}

impl CallbackError {
    fn failure(&self) -> CallbackFailure {
        match self {
            CallbackError::Transport(error) if error.is_timeout() => CallbackFailure::Timeout,
            CallbackError::Transport(_) => CallbackFailure::Unreachable,
            CallbackError::Status(status) if status.is_server_error() => {
                CallbackFailure::ServerError
            }
            CallbackError::Status(_) => CallbackFailure::Refused,
        }
    }

    /// Worth another try: the request may not have arrived, or public-web
    /// was briefly unable to take it.
    fn is_transient(&self) -> bool {
        match self {
            CallbackError::Transport(_) => true,
            CallbackError::Status(status) => status.is_server_error(),
        }
    }
}

/// Consumes the response queue and calls each response back. While a
/// session is up, its confirm channel is also the [`Publisher`]'s.
pub struct Callbacks {
    http: reqwest::Client,
    urls: Arc<CallbackUrls>,
    retries: usize,
    secret: Option<CallbackSecret>,
    publisher: Arc<Publisher>,
}

impl Callbacks {
    pub fn new(
        config: &CallbackConfig,
        urls: Arc<CallbackUrls>,
        publisher: Arc<Publisher>,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            http: http::service_client(config.timeout)?,
            urls,
            retries: config.retries,
            secret: config.secret.clone(),
            publisher,
        })
    }

    /// POSTs `body` to `url` until it is taken, refused for good, or the
    /// retries are spent.
    async fn deliver(&self, url: &Url, body: Bytes) -> Result<StatusCode, CallbackError> {
        let signature = self.secret.as_ref().map(|secret| secret.sign(&body));
        let attempt = || async {
            let span = http::client_span("POST", url);
            let mut request = self
                .http
                .post(url.clone())
                .headers(http::client_headers(&span))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(signature) = &signature {
                request = request.header(SIGNATURE_HEADER, signature);
            }
            let sent = span.scope(request.send()).await;
            http::record_client_outcome(&span, sent.as_ref().map(|r| r.status()));
            match sent?.status() {
                status if status.is_success() || status == StatusCode::NOT_FOUND => Ok(status),
                status => Err(CallbackError::Status(status)),
            }
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_times(self.retries),
            )
            .when(CallbackError::is_transient)
            .await
    }
}

impl Consumer for Callbacks {
    type Reason = ResponseDeadLetter;

    async fn handle(&self, delivery: &mut Delivery, _: &Channel) -> Settle<ResponseDeadLetter> {
        if let Err(error) = Event::from_slice(&delivery.data) {
            tracing::warn!(%error, "poison response; dead-lettering it");
            return Settle::DeadLetter(ResponseDeadLetter::Malformed);
        }
        let Some(url) = message::header(&delivery.properties, CALLBACK_URL_HEADER)
            .and_then(|url| self.urls.parse(url))
        else {
            tracing::warn!("response without a valid callback URL; dead-lettering it");
            return Settle::DeadLetter(ResponseDeadLetter::NoCallbackUrl);
        };
        // Sent as received: the listener's JSON is not parsed into a new body.
        let body = Bytes::from(std::mem::take(&mut delivery.data));
        match self.deliver(&url, body).await {
            Ok(StatusCode::NOT_FOUND) => {
                crate::metrics::callback_failed(CallbackFailure::UnknownId);
                tracing::warn!(
                    "public-web is not waiting for this response (timed out, restarted or duplicate)"
                );
                Settle::Ack
            }
            Ok(_) => Settle::Ack,
            Err(error) => {
                crate::metrics::callback_failed(error.failure());
                tracing::warn!(%error, "callback failed; dead-lettering the response");
                Settle::DeadLetter(ResponseDeadLetter::CallbackFailed)
            }
        }
    }

    fn session_started(&self, publisher: &Channel) {
        self.publisher.set_channel(Some(publisher.clone()));
    }

    fn session_ended(&self) {
        self.publisher.set_channel(None);
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
