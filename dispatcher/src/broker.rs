//! The dispatcher's side of RabbitMQ: the publishing channel that requests
//! go out on, and the consumer that takes listeners' responses and calls
//! them back to the public-web instance that asked.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use common::Event;
use common::amqp::{self, CALLBACK_URL_HEADER, Readiness};
use common::callback_auth::{CallbackSecret, SIGNATURE_HEADER};
use common::http;
use lapin::message::Delivery;
use lapin::{Channel, Connection};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::callback_urls::CallbackUrls;
use crate::configuration::Config;

/// The channel requests are published on, while a session is up.
#[derive(Clone, Default)]
pub struct PublisherSlot(Arc<RwLock<Option<Channel>>>);

impl PublisherSlot {
    pub fn get(&self) -> Option<Channel> {
        self.0.read().expect("publisher slot lock").clone()
    }

    fn set(&self, channel: Option<Channel>) {
        *self.0.write().expect("publisher slot lock") = channel;
    }
}

/// Runs AMQP sessions until shutdown: declare every routed queue and the
/// response queue, open the publishing channel, and consume responses.
pub async fn run(
    config: Arc<Config>,
    publisher: PublisherSlot,
    readiness: Readiness,
    http: reqwest::Client,
    callback_urls: Arc<CallbackUrls>,
    shutdown: CancellationToken,
) {
    amqp::supervise(
        &config.amqp_url,
        crate::SERVICE_NAME,
        &readiness,
        &shutdown,
        |connection| {
            session(
                connection,
                &config,
                &publisher,
                &readiness,
                &http,
                &callback_urls,
                &shutdown,
            )
        },
    )
    .await;
}

async fn session(
    connection: Connection,
    config: &Config,
    publisher: &PublisherSlot,
    readiness: &Readiness,
    http: &reqwest::Client,
    callback_urls: &Arc<CallbackUrls>,
    shutdown: &CancellationToken,
) -> lapin::Result<()> {
    let consumer_channel = amqp::consumer_channel(&connection, config.prefetch).await?;
    for queue in config.routes.queues() {
        amqp::declare_queue(&consumer_channel, queue).await?;
    }
    amqp::declare_queue(&consumer_channel, &config.response_queue).await?;
    publisher.set(Some(amqp::confirm_channel(&connection).await?));

    let consumed = amqp::consume(
        &connection,
        &consumer_channel,
        &config.response_queue,
        readiness,
        shutdown,
        |delivery| {
            let http = http.clone();
            let callback_urls = callback_urls.clone();
            let retries = config.callback_retries;
            let secret = config.callback_secret.clone();
            async move {
                call_back(delivery, &http, &callback_urls, retries, secret.as_ref()).await
            }
        },
    )
    .await;
    publisher.set(None);
    consumed?;
    amqp::close(&connection).await;
    Ok(())
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
    /// The `reason` label of `dispatcher_callback_failures_total`.
    fn reason(&self) -> &'static str {
        match self {
            CallbackError::Transport(error) if error.is_timeout() => "timeout",
            CallbackError::Transport(_) => "unreachable",
            CallbackError::Status(status) if status.is_server_error() => "server_error",
            CallbackError::Status(_) => "refused",
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

/// POSTs one response to the `/dispatch` URL it carries, then settles it.
///
/// A 404 means public-web no longer waits for that id (timed out,
/// restarted, or a duplicate delivery): acked and logged, never retried.
/// Transport errors and 5xx are retried a bounded number of times; what
/// still fails is dead-lettered.
async fn call_back(
    mut delivery: Delivery,
    http: &reqwest::Client,
    callback_urls: &CallbackUrls,
    retries: usize,
    secret: Option<&CallbackSecret>,
) {
    if let Err(error) = Event::from_slice(&delivery.data) {
        tracing::warn!(%error, "poison response; dead-lettering it");
        return amqp::dead_letter(&delivery, "malformed").await;
    }
    let Some(callback_url) = amqp::header(&delivery.properties, CALLBACK_URL_HEADER)
        .and_then(|url| callback_urls.parse(url))
    else {
        tracing::warn!("response without a valid callback URL; dead-lettering it");
        return amqp::dead_letter(&delivery, "no_callback_url").await;
    };
    // Sent as received: the listener's JSON is not parsed into a new body.
    let body = Bytes::from(std::mem::take(&mut delivery.data));
    let signature = secret.map(|secret| secret.sign(&body));

    let attempt = || async {
        let span = http::client_span("POST", &callback_url);
        let mut request = http
            .post(callback_url.clone())
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
    let outcome = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_times(retries),
        )
        .when(CallbackError::is_transient)
        .await;

    match outcome {
        Ok(StatusCode::NOT_FOUND) => {
            common::metrics::callback_failed("unknown_id");
            tracing::warn!(
                "public-web is not waiting for this response (timed out, restarted or duplicate)"
            );
        }
        Ok(_) => {}
        Err(error) => {
            common::metrics::callback_failed(error.reason());
            tracing::warn!(%error, "callback failed; dead-lettering the response");
            return amqp::dead_letter(&delivery, "callback_failed").await;
        }
    }
    amqp::ack(&delivery).await;
}
