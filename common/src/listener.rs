//! The runtime every listener shares, so that a listener is its
//! configuration plus one [`Handler`].
//!
//! On the consumer runtime ([`crate::amqp::consume`]) it parses each
//! request, runs the handler, publishes the reply (confirmed) to the
//! request's `reply_to` with its correlation and callback data, then acks
//! — the listener's side of the contract in [`crate::wire`]. Poison
//! messages are dead-lettered. It also serves `/healthz`, `/readyz` and
//! `/metrics` and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use lapin::message::Delivery;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::amqp::message::{self, event_properties};
use crate::amqp::publish::Refusals;
use crate::amqp::{self, Broker, ConsumerConfig, DeadLetterReason, Readiness, Settle};
use crate::config::{self, ConfigError};
use crate::telemetry::HOP_TARGET;
use crate::wire::{CALLBACK_URL_HEADER, Event, HandlerError};
use crate::{http, telemetry};

/// Turns a request event into its response event.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Event) -> impl Future<Output = Result<Event, HandlerError>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Event, HandlerError>> + Send,
{
    fn handle(&self, request: Event) -> impl Future<Output = Result<Event, HandlerError>> + Send {
        self(request)
    }
}

/// What a listener needs to run; see the README's configuration table.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The health port (`PORT`); 0 picks a free one.
    pub port: u16,
    /// The broker (`AMQP_URL`), the queue (`QUEUE`) and how many requests
    /// are handled at once (`PREFETCH`).
    pub consumer: ConsumerConfig,
    /// How long a reply may wait for the broker's confirm
    /// (`PUBLISH_TIMEOUT_MS`).
    pub publish_timeout: Duration,
    /// The health port's connection limits.
    pub limits: http::ServerLimits,
}

impl ListenerConfig {
    /// Reads the configuration from the environment, with the listener's
    /// own defaults for its queue and port.
    pub fn from_env(
        service_name: &str,
        default_queue: &str,
        default_port: u16,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            port: config::parse_or("PORT", default_port)?,
            consumer: ConsumerConfig {
                broker: Broker::from_env()?,
                connection_name: service_name.to_owned(),
                queue: config::string_or("QUEUE", default_queue),
                also_declare: Vec::new(),
                prefetch: config::parse_or("PREFETCH", 64)?,
                max_message_bytes: config::parse_or(
                    "MAX_MESSAGE_BYTES",
                    ConsumerConfig::DEFAULT_MAX_MESSAGE_BYTES,
                )?,
            },
            publish_timeout: config::millis_or("PUBLISH_TIMEOUT_MS", 5_000)?,
            limits: http::ServerLimits::from_env()?,
        })
    }
}

/// Why a listener dead-letters a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDeadLetter {
    /// The body is not an event.
    Malformed,
    /// No `reply_to`: there is nowhere to answer.
    NoReplyTo,
    /// The reply could not be published, twice.
    ReplyFailed,
    /// The handler panicked, twice.
    HandlerPanicked,
}

impl DeadLetterReason for RequestDeadLetter {
    const ALL: &'static [Self] = &[
        Self::Malformed,
        Self::NoReplyTo,
        Self::ReplyFailed,
        Self::HandlerPanicked,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NoReplyTo => "no_reply_to",
            Self::ReplyFailed => "reply_failed",
            Self::HandlerPanicked => "handler_panicked",
        }
    }
}

/// A listener bound to its health port, ready to [`run`](Self::run).
pub struct Listener<H> {
    config: ListenerConfig,
    answerer: Arc<Answerer<H>>,
    http: TcpListener,
    readiness: Readiness,
}

impl<H: Handler> Listener<H> {
    /// Binds the health port. Nothing touches the broker until `run`.
    pub async fn bind(config: ListenerConfig, handler: H) -> std::io::Result<Self> {
        // Before any metric handle is taken: handles taken earlier stay no-ops.
        crate::metrics::handle();
        let http = TcpListener::bind(("0.0.0.0", config.port)).await?;
        let answerer = Arc::new(Answerer {
            handler,
            publish_timeout: config.publish_timeout,
            max_message_bytes: config.consumer.max_message_bytes,
            app_id: config.consumer.connection_name.as_str().into(),
            refusals: Refusals::new(config.publish_timeout),
        });
        Ok(Self {
            config,
            answerer,
            http,
            readiness: Readiness::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves health probes and consumes until `shutdown` fires, then stops
    /// consuming, finishes the deliveries in hand and closes the connection.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let readiness = self.readiness.clone();
        let probes = http::operational_routes(http::readiness(move || {
            let ready = readiness.check("consuming from RabbitMQ");
            async move { ready }
        }));
        let app = http::with_standard_layers(probes, 1024, Duration::from_secs(10));
        tracing::info!(addr = %self.local_addr(), "health endpoint listening");
        let server = tokio::spawn(http::serve(
            self.http,
            app,
            self.config.limits.clone(),
            shutdown.clone(),
        ));
        amqp::consume::run(
            &self.config.consumer,
            self.answerer,
            &self.readiness,
            &shutdown,
        )
        .await;
        tracing::info!("listener stopped");
        server.await.map_err(std::io::Error::other)?
    }
}

/// Answers request deliveries with a [`Handler`].
struct Answerer<H> {
    handler: H,
    publish_timeout: Duration,
    /// A larger response is replaced by an error event: the dispatcher
    /// would dead-letter it unread.
    max_message_bytes: usize,
    /// This listener's service name, on every reply (`app_id`).
    app_id: ShortString,
    /// Replies the broker refused.
    refusals: Refusals,
}

impl<H: Handler> amqp::Consumer for Answerer<H> {
    type Reason = RequestDeadLetter;

    async fn session_unusable(&self) -> String {
        self.refusals.renewal_requested().await;
        "the broker keeps refusing, or stopped confirming, this session's replies".to_owned()
    }

    async fn handle(
        &self,
        delivery: &mut Delivery,
        publisher: &Channel,
    ) -> Settle<RequestDeadLetter> {
        let request = match Event::from_slice(&delivery.data) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "poison message; dead-lettering it");
                return Settle::DeadLetter(RequestDeadLetter::Malformed);
            }
        };
        let properties = &delivery.properties;
        let Some(reply_to) = properties.reply_to().as_ref().map(|q| q.as_str()) else {
            tracing::warn!(event_id = %request.id, "request without reply_to; dead-lettering it");
            return Settle::DeadLetter(RequestDeadLetter::NoReplyTo);
        };

        let request_id = request.id.clone();
        let started = Instant::now();
        // A panic is a bug, not an answer: retry once (another instance may
        // fare better), then dead-letter, so it can never loop.
        let handled = AssertUnwindSafe(self.handler.handle(request))
            .catch_unwind()
            .await;
        let handler_ms = started.elapsed().as_secs_f64() * 1e3;
        let queue = delivery.routing_key.as_str();
        let (mut response, answered) = match handled {
            Ok(Ok(response)) => (response, true),
            Ok(Err(error)) => {
                telemetry::hop::record_error_in_current_hop(&error);
                tracing::warn!(event_id = %request_id, queue, outcome = "error", handler_ms, error = %error, "handler answered with an error");
                (error.into_event(request_id.clone()), false)
            }
            Err(_) if delivery.redelivered => {
                tracing::error!(event_id = %request_id, "handler panicked again; dead-lettering the request");
                return Settle::DeadLetter(RequestDeadLetter::HandlerPanicked);
            }
            Err(_) => {
                tracing::error!(event_id = %request_id, "handler panicked; requeueing the request once");
                telemetry::hop::record_error_in_current_hop("handler panicked");
                return Settle::Requeue;
            }
        };

        let mut body = response.to_vec();
        if body.len() > self.max_message_bytes {
            tracing::warn!(event_id = %request_id, queue, outcome = "oversized", handler_ms, size = body.len(), "response over MAX_MESSAGE_BYTES; answering an error instead");
            response = HandlerError::failed(format!(
                "the response is over {} bytes",
                self.max_message_bytes
            ))
            .into_event(request_id.clone());
            body = response.to_vec();
        } else if answered {
            tracing::info!(target: HOP_TARGET, event_id = %request_id, queue, outcome = "answered", handler_ms, "request handled");
        }
        let reply =
            reply_properties(&response, &request_id, properties).with_app_id(self.app_id.clone());
        let published = self
            .refusals
            .publish(
                publisher,
                reply_to,
                &body,
                &reply,
                tokio::time::Instant::now() + self.publish_timeout,
            )
            .await;
        match published {
            Ok(()) => Settle::Ack,
            // A second failure for the same message is not a blip: stop retrying.
            Err(error) if delivery.redelivered => {
                tracing::warn!(event_id = %request_id, %error, "reply failed again; dead-lettering the request");
                Settle::DeadLetter(RequestDeadLetter::ReplyFailed)
            }
            Err(error) => {
                tracing::warn!(event_id = %request_id, %error, "reply failed; requeueing the request");
                Settle::Requeue
            }
        }
    }
}

/// The reply's properties: the response's id and type, the request's
/// correlation id (its event id when it carries none), and its callback
/// URL carried on.
fn reply_properties(
    response: &Event,
    request_id: &str,
    request: &BasicProperties,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(callback) = message::header(request, CALLBACK_URL_HEADER) {
        message::set_header(&mut headers, CALLBACK_URL_HEADER, callback);
    }
    let correlation = request
        .correlation_id()
        .clone()
        .unwrap_or_else(|| request_id.into());
    event_properties(&response.id, &response.kind)
        .with_correlation_id(correlation)
        .with_headers(headers)
}
