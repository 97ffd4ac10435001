//! Calling responses back: each listener response is POSTed, signed, to
//! the `/dispatch` URL it carries, with its correlation id; retried a
//! bounded number of times when it fails in transit or with a 5xx.
//!
//! A 404 means public-web no longer waits for that correlation id (timed
//! out, restarted, or a duplicate delivery): final, acked and logged,
//! never retried. What still fails after the retries is dead-lettered.
//! Callbacks go only where the allow-list (`CALLBACK_ALLOW`) lets them,
//! and each target gets its share ([`crate::targets`]).
//!
//! The dispatcher reads each request's callback URL twice: when it accepts
//! the request (a bad one is refused there, not dead-lettered later) and
//! when it calls the response back. Parsing with the `url` crate (IDNA
//! host processing included) is a noticeable share of the dispatcher's
//! work per request (BENCHMARKS.md), while a deployment has only as many
//! distinct URLs as it has public-web instances; so [`CallbackUrls`] keeps
//! checked URLs, up to a bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use common::Event;
use common::amqp::message;
use common::amqp::{Consumer, DeadLetterReason, Settle};
use common::egress::{EgressError, EgressPolicy};
use common::http::{self, InternalAuth};
use common::telemetry::HOP_TARGET;
use common::wire::{CALLBACK_URL_HEADER, Hop};
use lapin::message::Delivery;
use lapin::{Channel, Connection};
use reqwest::{StatusCode, Url};

use tokio::task::JoinHandle;

use crate::config::CallbackConfig;
use crate::listeners::ListenerWatch;
use crate::metrics::CallbackFailure;
use crate::publisher::Publisher;
use crate::stream::{Direction, EventStream};
use crate::targets::{Target, Targets, Unavailable};

/// Callback URLs the allow-list passed, shared by the HTTP handlers and
/// the response consumer.
pub struct CallbackUrls {
    policy: Arc<EgressPolicy>,
    checked: RwLock<HashMap<Box<str>, Url>>,
    /// How many are kept; beyond it a URL is checked each time, so a
    /// caller inventing URLs cannot grow the map.
    capacity: usize,
}

impl CallbackUrls {
    /// Far more than a deployment has public-web instances.
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn new(policy: Arc<EgressPolicy>, capacity: usize) -> Self {
        Self {
            policy,
            checked: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// `text` as a URL callbacks may go to.
    pub fn check(&self, text: &str) -> Result<Url, EgressError> {
        if let Some(url) = self.checked.read().expect("callback URL lock").get(text) {
            return Ok(url.clone());
        }
        let url = self.policy.check(text)?;
        let mut checked = self.checked.write().expect("callback URL lock");
        if checked.len() < self.capacity {
            checked.insert(text.into(), url.clone());
        }
        Ok(url)
    }
}

/// Why a response is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDeadLetter {
    /// The body is not an event.
    Malformed,
    /// A callback URL outside the allow-list: there is nowhere to deliver it.
    NoCallbackUrl,
    /// No usable correlation id: no request can be told it is its answer.
    NoCorrelation,
    /// Every attempt failed, or the target is down.
    CallbackFailed,
}

impl DeadLetterReason for ResponseDeadLetter {
    const ALL: &'static [Self] = &[
        Self::Malformed,
        Self::NoCallbackUrl,
        Self::NoCorrelation,
        Self::CallbackFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NoCallbackUrl => "no_callback_url",
            Self::NoCorrelation => "no_correlation",
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
    #[error("the target is down or busy")]
    Unavailable(Unavailable),
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
            CallbackError::Unavailable(Unavailable::Down) => CallbackFailure::TargetDown,
            CallbackError::Unavailable(Unavailable::Busy) => CallbackFailure::TargetBusy,
        }
    }

    /// Worth another try: the request may not have arrived, or public-web
    /// was briefly unable to take it.
    fn is_transient(&self) -> bool {
        match self {
            CallbackError::Transport(_) => true,
            CallbackError::Status(status) => status.is_server_error(),
            CallbackError::Unavailable(_) => false,
        }
    }

    /// Says the target itself is in trouble, not this one call.
    fn downs_the_target(&self) -> bool {
        matches!(self, CallbackError::Transport(error) if error.is_timeout() || error.is_connect())
    }
}

/// Consumes the response queue and calls each response back. While a
/// session is up, its confirm channel is also the [`Publisher`]'s, and a
/// channel of its own keeps the [`ListenerWatch`] current.
pub struct Callbacks {
    http: reqwest::Client,
    urls: Arc<CallbackUrls>,
    targets: Arc<Targets>,
    retries: usize,
    timeout: Duration,
    auth: InternalAuth,
    publisher: Arc<Publisher>,
    listeners: Arc<ListenerWatch>,
    events: Arc<EventStream>,
    /// The session's watch task.
    watching: Mutex<Option<JoinHandle<()>>>,
}

/// What the response consumer works with besides its configuration.
pub struct Shared {
    pub urls: Arc<CallbackUrls>,
    /// Each callback URL's share and cooldown, also told by the HTTP
    /// handler when an instance forwards a request.
    pub targets: Arc<Targets>,
    pub publisher: Arc<Publisher>,
    pub auth: InternalAuth,
    pub listeners: Arc<ListenerWatch>,
    pub events: Arc<EventStream>,
}

impl Callbacks {
    /// The answer to an asynchronous request (no callback URL): the event
    /// stream is its only way on, so it is acknowledged only once the
    /// stream has it; until then it goes back to the queue.
    async fn to_stream_only(
        &self,
        delivery: &mut Delivery,
        event: &Event,
    ) -> Settle<ResponseDeadLetter> {
        let body = Bytes::from(std::mem::take(&mut delivery.data));
        let appended = self
            .events
            .append(Direction::Response, source(delivery), event, body)
            .await;
        match appended {
            Ok(()) => {
                tracing::info!(target: HOP_TARGET, event_id = %event.id, "asynchronous answer appended to the event stream");
                Settle::Ack
            }
            Err(why) => {
                tracing::warn!(event_id = %event.id, reason = why.label(), "the event stream did not take an asynchronous answer; requeued");
                // Not at once: a stream that is down stays down a while.
                tokio::time::sleep(ASYNC_RETRY_PAUSE).await;
                Settle::Requeue
            }
        }
    }

    pub fn new(config: &CallbackConfig, shared: Shared) -> reqwest::Result<Self> {
        let Shared {
            urls,
            targets,
            publisher,
            auth,
            listeners,
            events,
        } = shared;
        Ok(Self {
            http: config.allow.client(config.timeout)?,
            urls,
            targets,
            retries: config.retries,
            timeout: config.timeout,
            auth,
            publisher,
            listeners,
            events,
            watching: Mutex::new(None),
        })
    }

    /// POSTs `body`, the answer for `correlation`, to `url` until it is
    /// taken, refused for good, the retries are spent or the target goes
    /// down. `attempts` counts the calls made.
    async fn deliver(
        &self,
        url: &Url,
        correlation: &str,
        body: Bytes,
        attempts: &AtomicU32,
    ) -> Result<StatusCode, CallbackError> {
        let target = self.targets.of(url);
        let _turn = target
            .turn(self.timeout, || self.targets.alone(&target))
            .await
            .map_err(CallbackError::Unavailable)?;
        let attempt = || async {
            if target.is_down() {
                return Err(CallbackError::Unavailable(Unavailable::Down));
            }
            attempts.fetch_add(1, Ordering::Relaxed);
            let span = http::client_span("POST", url);
            let request = self
                .http
                .post(url.clone())
                .headers(http::client_headers(&span))
                // Signed per attempt: public-web refuses a signature twice.
                .headers(self.auth.headers(Hop::Callback, correlation, None, &body))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
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
            .notify(|error, _| count_failure(&target, error))
            .await
            .inspect(|_| target.answered())
            .inspect_err(|error| count_failure(&target, error))
    }
}

/// How long an asynchronous answer the stream did not take waits before it
/// goes back to its queue.
const ASYNC_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The service that produced a response (the listener's `app_id`).
fn source(delivery: &Delivery) -> &str {
    delivery
        .properties
        .app_id()
        .as_ref()
        .map_or("unknown", |app| app.as_str())
}

fn count_failure(target: &Target, error: &CallbackError) {
    if error.downs_the_target() {
        target.failed();
    }
}

impl Consumer for Callbacks {
    type Reason = ResponseDeadLetter;

    async fn handle(&self, delivery: &mut Delivery, _: &Channel) -> Settle<ResponseDeadLetter> {
        let event = match Event::from_slice(&delivery.data) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "poison response; dead-lettering it");
                return Settle::DeadLetter(ResponseDeadLetter::Malformed);
            }
        };
        let Some(url) = message::header(&delivery.properties, CALLBACK_URL_HEADER) else {
            return self.to_stream_only(delivery, &event).await;
        };
        let Some(url) = self.urls.check(url).ok() else {
            tracing::warn!("response without an allowed callback URL; dead-lettering it");
            return Settle::DeadLetter(ResponseDeadLetter::NoCallbackUrl);
        };
        let Some(correlation) = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.to_string())
            .filter(|id| common::wire::signature::correlation(Some(id)).is_ok())
        else {
            tracing::warn!("response without a valid correlation id; dead-lettering it");
            return Settle::DeadLetter(ResponseDeadLetter::NoCorrelation);
        };
        // Sent as received: the listener's JSON is not parsed into a new body.
        let body = Bytes::from(std::mem::take(&mut delivery.data));
        self.events
            .record(Direction::Response, source(delivery), &event, body.clone());
        let attempts = AtomicU32::new(0);
        let delivered = self.deliver(&url, &correlation, body, &attempts).await;
        let attempts = attempts.into_inner();
        match delivered {
            Ok(StatusCode::NOT_FOUND) => {
                crate::metrics::callback_failed(CallbackFailure::UnknownId);
                tracing::warn!(
                    attempts,
                    "public-web is not waiting for this response (timed out, restarted or duplicate)"
                );
                Settle::Ack
            }
            Ok(status) => {
                tracing::info!(target: HOP_TARGET, status = status.as_u16(), attempts, "callback delivered");
                Settle::Ack
            }
            Err(error) => {
                crate::metrics::callback_failed(error.failure());
                tracing::warn!(%error, attempts, "callback failed; dead-lettering the response");
                Settle::DeadLetter(ResponseDeadLetter::CallbackFailed)
            }
        }
    }

    async fn session_started(
        &self,
        connection: &Connection,
        publisher: &Channel,
    ) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        let listeners = self.listeners.clone();
        let watching = tokio::spawn(async move { listeners.poll(channel).await });
        if let Some(previous) = self.watching.lock().expect("watch lock").replace(watching) {
            previous.abort();
        }
        self.publisher.set_channel(Some(publisher.clone()));
        Ok(())
    }

    async fn session_unusable(&self) -> String {
        self.publisher.refusals.renewal_requested().await;
        "the broker keeps refusing, or stopped confirming, this session's publishes".to_owned()
    }

    fn session_ended(&self) {
        self.publisher.set_channel(None);
        if let Some(watching) = self.watching.lock().expect("watch lock").take() {
            watching.abort();
        }
        self.listeners.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(policy: &str, capacity: usize) -> CallbackUrls {
        CallbackUrls::new(Arc::new(policy.parse().unwrap()), capacity)
    }

    #[test]
    fn a_url_seen_before_is_the_same_url() {
        let urls = urls("http://public-web:3000", 4);
        let first = urls.check("http://public-web:3000/dispatch").unwrap();
        let again = urls.check("http://public-web:3000/dispatch").unwrap();
        assert_eq!(first, again);
        assert_eq!(again.port(), Some(3000));
    }

    #[test]
    fn only_allowed_urls_are_callbacks() {
        let urls = urls("127.0.0.0/8", 4);
        assert!(urls.check("http://127.0.0.1:3000/dispatch").is_ok());
        for bad in [
            "not a url",
            "ftp://127.0.0.1/dispatch",
            "http://u:p@127.0.0.1/dispatch",
            "http://10.0.0.1/dispatch",
            "",
        ] {
            assert!(urls.check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_map_stops_growing_at_its_capacity() {
        let urls = urls("127.0.0.0/8", 2);
        for port in 1..=5 {
            let text = format!("http://127.0.0.1:{port}/dispatch");
            assert_eq!(urls.check(&text).unwrap().port(), Some(port));
        }
        assert_eq!(urls.checked.read().unwrap().len(), 2);
    }
}
