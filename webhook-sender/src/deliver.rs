//! Making deliveries: claim what is due, POST each one signed, record what
//! came of it.
//!
//! Every sender delivers (only one reads the stream). A delivery is a
//! `POST` of the event's JSON with the Standard Webhooks headers, through
//! the egress policy's client (names resolved and checked where the
//! connection is made, no redirects followed, no proxies), within
//! `WEBHOOK_TIMEOUT_MS`, reading at most `WEBHOOK_MAX_RESPONSE_BYTES` of
//! the answer. 2xx delivers; 410 disables the endpoint; anything else is
//! attempted again on the schedule (429/502/503/504 after their
//! `Retry-After` when they give one) until the schedule runs out.
//!
//! Fairness: each sender has at most `WEBHOOK_ENDPOINT_CONCURRENCY`
//! attempts in flight to one endpoint and `WEBHOOK_CONCURRENCY` in all,
//! and claims at most an endpoint's share at a time, so a slow or dead
//! endpoint holds its own slots and never the others'.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::http::{client_headers, client_span_in, error_chain, record_client_outcome};
use common::telemetry::propagation;
use common::webhook::{self, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::DeliveryConfig;
use crate::notices::Notices;
use crate::schedule::{honours_retry_after, parse_retry_after};
use crate::store::{AttemptRecord, Claimed, Settled, Store};

/// How long an exhausted delivery's notice may take to publish.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a delivery says it is.
const AGENT: &str = concat!("dispatcher-webhook-sender/", env!("CARGO_PKG_VERSION"));

pub struct Deliverer {
    store: Store,
    notices: Notices,
    config: DeliveryConfig,
    client: reqwest::Client,
    /// Attempts in flight, in all and per endpoint.
    slots: Arc<Semaphore>,
    in_flight: Mutex<HashMap<String, usize>>,
    /// Woken when an attempt ends: a slot is free.
    freed: Notify,
    /// Woken when this sender's reader recorded new deliveries; other
    /// senders' are found by polling.
    owed: Arc<Notify>,
}

/// How an attempt went, before it is settled.
struct Outcome {
    status: Option<StatusCode>,
    error: Option<String>,
    retry_after: Option<Duration>,
}

impl Deliverer {
    pub fn new(
        store: Store,
        notices: Notices,
        owed: Arc<Notify>,
        config: DeliveryConfig,
    ) -> reqwest::Result<Self> {
        let client = config.egress.client(config.timeout)?;
        Ok(Self {
            store,
            notices,
            slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
            client,
            in_flight: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            owed,
        })
    }

    /// Claims and attempts due deliveries until shutdown; attempts in
    /// flight then finish (their lease covers them if they do not).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut attempts = tokio::task::JoinSet::new();
        while !shutdown.is_cancelled() {
            let claimed = match self.claim().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "could not claim deliveries");
                    Vec::new()
                }
            };
            for delivery in claimed {
                let permit = self
                    .slots
                    .clone()
                    .try_acquire_owned()
                    .expect("claimed no more than the free slots");
                let this = self.clone();
                attempts.spawn(async move {
                    this.attempt(&delivery).await;
                    this.release(&delivery.endpoint_id);
                    drop(permit);
                    this.freed.notify_one();
                });
            }
            while attempts.try_join_next().is_some() {}
            // Claim again when an attempt ends (its endpoint has room
            // again), when this sender's reader recorded deliveries, and at
            // least every poll interval (retries come due, other senders'
            // readers record); with every slot taken, only when one is freed.
            let full = self.slots.available_permits() == 0;
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval), if !full => {}
                _ = self.owed.notified(), if !full => {}
                _ = self.freed.notified() => {}
                _ = shutdown.cancelled() => {}
            }
        }
        while attempts.join_next().await.is_some() {}
    }

    /// Claims as many due deliveries as there are free slots, each
    /// endpoint's up to its limit here.
    async fn claim(&self) -> Result<Vec<Claimed>, crate::error::StoreError> {
        let room = self.slots.available_permits();
        if room == 0 {
            return Ok(Vec::new());
        }
        let in_flight: Vec<(String, i64)> = self
            .in_flight
            .lock()
            .expect("in-flight lock")
            .iter()
            .map(|(endpoint, count)| (endpoint.clone(), i64::try_from(*count).unwrap_or(i64::MAX)))
            .collect();
        let claimed = self
            .store
            .claim(
                i64::try_from(room).unwrap_or(i64::MAX),
                i64::try_from(self.config.per_endpoint).unwrap_or(i64::MAX),
                &in_flight,
                self.config.claim_lease(),
            )
            .await?;
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        for delivery in &claimed {
            *in_flight.entry(delivery.endpoint_id.clone()).or_default() += 1;
        }
        Ok(claimed)
    }

    fn release(&self, endpoint_id: &str) {
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        if let Some(count) = in_flight.get_mut(endpoint_id) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(endpoint_id);
            }
        }
    }

    /// One attempt at `delivery`, recorded.
    async fn attempt(&self, delivery: &Claimed) {
        let attempt = delivery.attempts + 1;
        let started = Instant::now();
        let outcome = self.send(delivery).await;
        let duration = started.elapsed();
        let settled = self.next_step(attempt, &outcome);
        let label = match (&settled, outcome.status) {
            (Settled::Delivered, _) => "delivered",
            (Settled::Gone, _) => "gone",
            (_, Some(_)) => "failed_status",
            (_, None) => "failed_transport",
        };
        crate::metrics::attempt(label, duration);
        let status = outcome.status.map(|status| status.as_u16());
        tracing::info!(
            webhook_id = %delivery.id,
            endpoint = %delivery.endpoint_id,
            event_id = %delivery.event_id,
            attempt,
            status,
            error = outcome.error.as_deref().unwrap_or(""),
            outcome = ?settled,
            duration_ms = duration.as_millis() as u64,
            "webhook attempt"
        );
        let record = AttemptRecord {
            status,
            error: outcome.error,
            duration,
            settled: settled.clone(),
        };
        match self
            .store
            .settle(delivery, &record, self.config.disable_after)
            .await
        {
            Ok(disabled) => {
                if let Some(reason) = disabled {
                    tracing::warn!(endpoint = %delivery.endpoint_id, %reason, "webhook endpoint disabled");
                }
                if settled == Settled::Exhausted {
                    let notice = self
                        .notices
                        .exhausted(delivery, status, record.error.as_deref());
                    if tokio::time::timeout(NOTICE_TIMEOUT, notice).await.is_err() {
                        tracing::warn!(webhook_id = %delivery.id, "the exhausted delivery's notice timed out");
                    }
                }
            }
            // The lease runs out and the delivery is attempted again: a
            // duplicate, with the same webhook-id, rather than a loss.
            Err(error) => {
                tracing::error!(webhook_id = %delivery.id, %error, "could not record a webhook attempt")
            }
        }
        match settled {
            Settled::Delivered => crate::metrics::delivered(delivery.age + duration),
            Settled::Exhausted => crate::metrics::exhausted(),
            Settled::RetryAfter(_) | Settled::Gone => {}
        }
    }

    /// What follows from attempt number `attempt` ending as `outcome`.
    fn next_step(&self, attempt: u32, outcome: &Outcome) -> Settled {
        match outcome.status {
            Some(status) if status.is_success() => return Settled::Delivered,
            Some(StatusCode::GONE) => return Settled::Gone,
            _ => {}
        }
        let Some(scheduled) = self.config.schedule.delay_before(attempt + 1) else {
            return Settled::Exhausted;
        };
        let asked = outcome
            .status
            .filter(|status| honours_retry_after(*status))
            .and(outcome.retry_after);
        Settled::RetryAfter(asked.unwrap_or(scheduled))
    }

    /// POSTs the delivery, signed, in a CLIENT span.
    async fn send(&self, delivery: &Claimed) -> Outcome {
        // Checked again at each attempt: the policy may have narrowed since
        // the registration (an address literal never meets the resolver).
        let url = match self.config.egress.check(&delivery.url) {
            Ok(url) => url,
            Err(error) => {
                return Outcome {
                    status: None,
                    error: Some(format!("egress refused: {error}")),
                    retry_after: None,
                };
            }
        };
        // A child of the trace the answer was recorded in.
        let span = client_span_in("POST", &url, || match &delivery.traceparent {
            Some(traceparent) => propagation::extract(&HashMap::from([(
                "traceparent".to_owned(),
                traceparent.clone(),
            )])),
            None => opentelemetry::Context::new(),
        });
        span.set_attribute(|| opentelemetry::KeyValue::new("webhook.id", delivery.id.clone()));
        span.set_attribute(|| {
            opentelemetry::KeyValue::new("webhook.endpoint", delivery.endpoint_id.clone())
        });
        span.set_attribute(|| {
            opentelemetry::KeyValue::new("webhook.attempt", i64::from(delivery.attempts + 1))
        });
        let timestamp = webhook::now_seconds();
        let secrets: Vec<&webhook::Secret> = delivery.secrets.iter().collect();
        let signature =
            webhook::signature_header(&secrets, &delivery.id, timestamp, &delivery.body);
        let request = self
            .client
            .post(url)
            .headers(client_headers(&span))
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, AGENT)
            .header(ID_HEADER, delivery.id.as_str())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(delivery.body.clone());
        let response = span.scope(request.send()).await;
        record_client_outcome(&span, response.as_ref().map(reqwest::Response::status));
        match response {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let body = read_capped(response, self.config.max_response_bytes).await;
                let error = (!status.is_success())
                    .then(|| describe_status(status, location.as_deref(), &body));
                Outcome {
                    status: Some(status),
                    error,
                    retry_after,
                }
            }
            Err(error) => Outcome {
                status: None,
                error: Some(describe_transport(&error, self.config.timeout)),
                retry_after: None,
            },
        }
    }
}

/// At most `limit` bytes of the answer; the rest is not read.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Bytes {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Bytes::from(body)
}

/// Why a non-2xx answer failed, for the endpoint's state.
fn describe_status(status: StatusCode, location: Option<&str>, body: &[u8]) -> String {
    if status.is_redirection() {
        return format!(
            "HTTP {}: redirects are not followed (to {})",
            status.as_u16(),
            location.unwrap_or("nowhere given")
        );
    }
    let excerpt: String = String::from_utf8_lossy(body)
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("HTTP {}: {}", status.as_u16(), excerpt.trim())
}

/// Why an attempt got no answer, for the endpoint's state.
fn describe_transport(error: &reqwest::Error, timeout: Duration) -> String {
    let chain = error_chain(error);
    if chain.contains("is not in the allow-list") {
        format!(
            "egress refused: the endpoint resolves to an address the policy does not allow ({chain})"
        )
    } else if error.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if error.is_connect() {
        format!("could not connect: {chain}")
    } else {
        chain
    }
}

#[cfg(test)]
mod tests {
    use common::egress::EgressPolicy;

    use super::*;

    /// Most endpoints are https: the client speaks TLS (a refused
    /// connection, not an unsupported scheme).
    #[tokio::test]
    async fn the_client_speaks_https() {
        let policy = Arc::new(EgressPolicy::public_internet(EgressPolicy::loopback()));
        let client = policy.client(Duration::from_secs(2)).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let error = client
            .post(format!("https://127.0.0.1:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{}", error_chain(&error));
    }

    #[test]
    fn a_redirect_says_it_is_not_followed() {
        let text = describe_status(StatusCode::MOVED_PERMANENTLY, Some("http://10.0.0.1/"), b"");
        assert_eq!(
            text,
            "HTTP 301: redirects are not followed (to http://10.0.0.1/)"
        );
        let text = describe_status(StatusCode::INTERNAL_SERVER_ERROR, None, b"oops\nline");
        assert_eq!(text, "HTTP 500: oops line");
    }
}
