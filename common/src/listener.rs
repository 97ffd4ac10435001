//! The runtime every listener shares, so that a listener is its
//! configuration plus one [`Handler`].
//!
//! It connects with retries, declares the listener's queue and dead-letter
//! queue, consumes with manual acks and a bounded prefetch, runs the handler
//! for each request, publishes the reply (confirmed) to the request's
//! `reply_to` with its correlation and callback data, then acks. Poison
//! messages are rejected without requeue into the dead-letter queue. It also
//! serves `/healthz` and `/readyz` and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures_util::FutureExt;
use lapin::message::Delivery;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, CALLBACK_URL_HEADER, Readiness};
use crate::config::{self, ConfigError};
use crate::event::{Event, HandlerError};
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
    /// Names the AMQP connection and the consumer tags.
    pub service_name: String,
    /// The health port (`PORT`); 0 picks a free one.
    pub port: u16,
    pub amqp_url: String,
    /// The queue this listener consumes (`QUEUE`).
    pub queue: String,
    /// Deliveries held unacked at once, and so handlers running at once
    /// (`PREFETCH`).
    pub prefetch: u16,
    /// How long a reply may wait for the broker's confirm
    /// (`PUBLISH_TIMEOUT_MS`).
    pub publish_timeout: Duration,
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
            service_name: service_name.to_owned(),
            port: config::parse_or("PORT", default_port)?,
            amqp_url: config::amqp_url(),
            queue: config::string_or("QUEUE", default_queue),
            prefetch: config::parse_or("PREFETCH", 64)?,
            publish_timeout: config::millis_or("PUBLISH_TIMEOUT_MS", 5_000)?,
        })
    }
}

/// A listener bound to its health port, ready to [`run`](Self::run).
pub struct Listener<H> {
    config: ListenerConfig,
    handler: Arc<H>,
    http: TcpListener,
    readiness: Readiness,
}

impl<H: Handler> Listener<H> {
    /// Binds the health port. Nothing touches the broker until `run`.
    pub async fn bind(config: ListenerConfig, handler: H) -> std::io::Result<Self> {
        // Before any metric handle is taken: handles taken earlier stay no-ops.
        crate::metrics::handle();
        let http = TcpListener::bind(("0.0.0.0", config.port)).await?;
        Ok(Self {
            config,
            handler: Arc::new(handler),
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
        let probes: Router = http::operational_routes(http::readiness(move || {
            let ready = readiness.is_ready();
            async move {
                ready
                    .then_some(())
                    .ok_or_else(|| "not consuming from RabbitMQ".to_owned())
            }
        }));
        let app = http::with_standard_layers(probes, 1024, Duration::from_secs(10));
        let server = tokio::spawn(http::serve(self.http, app, shutdown.clone()));

        let config = &self.config;
        amqp::supervise(
            &config.amqp_url,
            &config.service_name,
            &self.readiness,
            &shutdown,
            |connection| {
                consume(
                    connection,
                    config,
                    &self.handler,
                    &self.readiness,
                    &shutdown,
                )
            },
        )
        .await;
        server.await.map_err(std::io::Error::other)?
    }
}

/// One AMQP session: declare, then consume until shutdown or failure.
async fn consume<H: Handler>(
    connection: Connection,
    config: &ListenerConfig,
    handler: &Arc<H>,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> lapin::Result<()> {
    let consumer_channel = amqp::consumer_channel(&connection, config.prefetch).await?;
    amqp::declare_queue(&consumer_channel, &config.queue).await?;
    let publisher = amqp::confirm_channel(&connection).await?;
    let timeout = config.publish_timeout;
    amqp::consume(
        &connection,
        &consumer_channel,
        &config.queue,
        readiness,
        shutdown,
        |delivery| {
            let handler = handler.clone();
            let publisher = publisher.clone();
            async move { answer(delivery, handler.as_ref(), &publisher, timeout).await }
        },
    )
    .await?;
    amqp::close(&connection).await;
    tracing::info!("listener stopped");
    Ok(())
}

/// Handles one request delivery from parsing to ack, inside its CONSUMER
/// span.
async fn answer<H: Handler>(
    delivery: Delivery,
    handler: &H,
    publisher: &Channel,
    publish_timeout: Duration,
) {
    let properties = &delivery.properties;
    let request = match Event::from_slice(&delivery.data) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%error, "poison message; dead-lettering it");
            return amqp::dead_letter(&delivery, "malformed").await;
        }
    };
    let Some(reply_to) = properties.reply_to().as_ref().map(|q| q.as_str()) else {
        tracing::warn!(event_id = %request.id, "request without reply_to; dead-lettering it");
        return amqp::dead_letter(&delivery, "no_reply_to").await;
    };

    let request_id = request.id.clone();
    // A panic is a bug, not an answer: retry once (another instance may
    // fare better), then dead-letter, so it can never loop.
    let handled = AssertUnwindSafe(handler.handle(request))
        .catch_unwind()
        .await;
    let response = match handled {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            telemetry::hop::record_error_in_current_hop(&error);
            tracing::warn!(event_id = %request_id, error = %error, "handler answered with an error");
            error.into_event(request_id.clone())
        }
        Err(_) if delivery.redelivered => {
            tracing::error!(event_id = %request_id, "handler panicked again; dead-lettering the request");
            return amqp::dead_letter(&delivery, "handler_panicked").await;
        }
        Err(_) => {
            tracing::error!(event_id = %request_id, "handler panicked; requeueing the request once");
            telemetry::hop::record_error_in_current_hop("handler panicked");
            return amqp::requeue(&delivery).await;
        }
    };

    let mut headers = FieldTable::default();
    if let Some(callback) = amqp::header(properties, CALLBACK_URL_HEADER) {
        amqp::set_header(&mut headers, CALLBACK_URL_HEADER, callback);
    }
    let reply_properties = amqp::event_properties(&response.id, &response.kind)
        .with_correlation_id(request_id.as_str().into())
        .with_headers(headers);
    let published = amqp::publish_confirmed(
        publisher,
        "",
        reply_to,
        &response.to_vec(),
        reply_properties,
        publish_timeout,
    )
    .await;
    match published {
        Ok(()) => amqp::ack(&delivery).await,
        // A second failure for the same message is not a blip: stop retrying.
        Err(error) if delivery.redelivered => {
            tracing::warn!(event_id = %request_id, %error, "reply failed again; dead-lettering the request");
            amqp::dead_letter(&delivery, "reply_failed").await;
        }
        Err(error) => {
            tracing::warn!(event_id = %request_id, %error, "reply failed; requeueing the request");
            amqp::requeue(&delivery).await;
        }
    }
}
