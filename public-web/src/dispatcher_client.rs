//! public-web's calls to the dispatcher: forwarding an event with this
//! instance's callback URL, and asking whether it is ready.
//!
//! Forwards in flight at once are bounded (`DISPATCHER_CONCURRENCY`): each
//! HTTP/1.1 forward holds a connection, so a burst of ten thousand
//! requests (a thousand WebSockets with ten each) would otherwise open ten
//! thousand connections at once, overflowing the dispatcher's accept
//! backlog until connects time out. Beyond the bound a forward waits its
//! turn, within its request's deadline, on connections kept alive.

use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::header::RETRY_AFTER;
use common::Event;
use common::http::{self, ApiError, InternalAuth};
use common::wire::{Hop, TIME_BUDGET_HEADER};
use reqwest::Url;
use tokio::time::Instant;

use crate::error::PublicWebError;

/// The dispatcher, as this instance calls it.
pub struct DispatcherClient {
    /// One client for every call: its pool keeps connections alive.
    http: reqwest::Client,
    /// The dispatcher's `POST /`.
    submit_url: Url,
    /// The dispatcher's `GET /readyz`.
    ready_url: Url,
    /// This instance's `/dispatch` URL.
    callback_url: String,
    /// Signs each forward.
    auth: InternalAuth,
    /// Turns to forward, one per connection the dispatcher may see.
    turns: tokio::sync::Semaphore,
    /// How long a call may take (`DISPATCHER_TIMEOUT_MS`).
    timeout: Duration,
}

/// Where the answer to a forwarded event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Back to this instance's `/dispatch`, for the parked request.
    Callback,
    /// To the event stream only: an asynchronous request.
    ToStream,
}

impl DispatcherClient {
    /// Calls to `dispatcher_url` bounded by `timeout`, naming
    /// `callback_url` as where answers go, signed with `auth`.
    pub fn new(
        dispatcher_url: &Url,
        callback_url: &Url,
        timeout: Duration,
        auth: InternalAuth,
        concurrency: usize,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            http: http::service_client(timeout)?,
            submit_url: dispatcher_url.clone(),
            ready_url: dispatcher_url
                .join("readyz")
                .expect("an http(s) URL joins a relative path"),
            callback_url: callback_url.as_str().to_owned(),
            auth,
            turns: tokio::sync::Semaphore::new(concurrency.max(1)),
            timeout,
        })
    }

    /// The callback URL this instance sends.
    pub fn callback_url(&self) -> &str {
        &self.callback_url
    }

    /// Hands `event` to the dispatcher under `correlation`, signed,
    /// inside a CLIENT span, naming this instance's `/dispatch` as where
    /// the answer goes, or with `Reply::ToStream` no callback at all (the
    /// answer goes to the event stream only). A refusal keeps the
    /// dispatcher's status and JSON error (and `Retry-After`: a client told
    /// to retry must be told when). The dispatcher learns how long the
    /// client still waits (`deadline`), so it may wait out a broker
    /// reconnect within it (and within this call's own timeout).
    pub async fn forward(
        &self,
        event: &Event,
        correlation: &str,
        reply: Reply,
        deadline: Instant,
    ) -> Result<(), PublicWebError> {
        let _turn = self
            .turns
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let span = http::client_span("POST", &self.submit_url);
        let body = event.to_vec();
        let request = self
            .http
            .post(self.submit_url.clone())
            .headers(http::client_headers(&span))
            .headers(self.auth.headers(
                Hop::Submit,
                correlation,
                match reply {
                    Reply::Callback => Some(&self.callback_url),
                    Reply::ToStream => None,
                },
                &body,
            ))
            .header(CONTENT_TYPE, "application/json")
            .header(
                TIME_BUDGET_HEADER,
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(self.timeout)
                    .as_millis()
                    .to_string(),
            )
            .body(body);
        let sent = span.scope(request.send()).await;
        http::record_client_outcome(&span, sent.as_ref().map(|r| r.status()));
        let response = sent.map_err(PublicWebError::DispatcherUnreachable)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::UNAUTHORIZED {
            // Not the client's fault, and not the client's business: the
            // two services do not share the same secret.
            tracing::error!(
                "the dispatcher refused this instance's signature; is CALLBACK_SECRET the same on both?"
            );
            return Err(PublicWebError::DispatcherRefused(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "dispatcher_error",
                "the dispatcher refused the forward",
            )));
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse().ok());
        let body = response.bytes().await.unwrap_or_default();
        let mut refusal = ApiError::from_body(status, &body).unwrap_or_else(|| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "dispatcher_error",
                format!("the dispatcher answered {status}"),
            )
        });
        if let Some(seconds) = retry_after {
            refusal = refusal.with_retry_after(seconds);
        }
        Err(PublicWebError::DispatcherRefused(refusal))
    }

    /// Ready when the dispatcher says it is ready.
    pub async fn ready(&self) -> Result<(), String> {
        let response = self
            .http
            .get(self.ready_url.clone())
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("dispatcher not ready ({})", response.status())),
            Err(error) => Err(format!("dispatcher unreachable: {error}")),
        }
    }
}
