//! Building the dispatcher: the bound listener, the state, the router, and
//! the AMQP session that runs beside the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use common::amqp::{self, ConsumerConfig, Readiness};
use common::http::{self, ServerLimits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::callback::{CallbackUrls, Callbacks, Shared};
use crate::config::Config;
use crate::listeners::ListenerWatch;
use crate::publisher::Publisher;
use crate::routes;
use crate::state::AppState;
use crate::stream::{self, Writer};
use crate::targets::Targets;

/// The dispatcher bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    responses: ConsumerConfig,
    callbacks: Arc<Callbacks>,
    readiness: Readiness,
    /// Appends recorded events to the event stream.
    writer: Writer,
    max_body_bytes: usize,
    request_limit: Duration,
    limits: ServerLimits,
}

impl Application {
    pub async fn build(config: Config) -> std::io::Result<Self> {
        // Before any metric handle is taken: handles taken earlier stay no-ops.
        common::metrics::handle();
        crate::metrics::init();
        let listener = TcpListener::bind((config.bind, config.port)).await?;
        let publisher = Arc::new(Publisher::new(&config));
        let responses = config.responses();
        let callback_urls = Arc::new(CallbackUrls::new(
            config.callbacks.allow.clone(),
            CallbackUrls::DEFAULT_CAPACITY,
        ));
        let listeners = Arc::new(ListenerWatch::new(
            config.routes.queues(),
            config.no_listener_grace,
        ));
        let (events, writer) =
            stream::new(config.broker.clone(), config.stream, config.stream_buffer);
        let events = Arc::new(events);
        let targets = Arc::new(Targets::new(
            config.callbacks.per_target,
            config.callbacks.backlog,
            config.callbacks.cooldown,
        ));
        let callbacks = Callbacks::new(
            &config.callbacks,
            Shared {
                urls: callback_urls.clone(),
                targets: targets.clone(),
                publisher: publisher.clone(),
                auth: config.auth.clone(),
                listeners: listeners.clone(),
                events: events.clone(),
            },
        )
        .map_err(std::io::Error::other)?;
        Ok(Self {
            listener,
            state: AppState {
                routes: Arc::new(config.routes),
                publisher,
                callback_urls,
                targets,
                listeners,
                events,
                auth: config.auth,
            },
            responses,
            callbacks: Arc::new(callbacks),
            readiness: Readiness::default(),
            writer,
            max_body_bytes: config.max_body_bytes,
            request_limit: config.publish_timeout + Duration::from_secs(5),
            limits: config.limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves HTTP and runs the AMQP session until `shutdown`; then drains
    /// both and closes the broker connection.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let amqp = tokio::spawn({
            let (responses, callbacks) = (self.responses, self.callbacks);
            let (readiness, shutdown) = (self.readiness.clone(), shutdown.clone());
            async move { amqp::consume::run(&responses, callbacks, &readiness, &shutdown).await }
        });
        let writer = tokio::spawn(self.writer.run(shutdown.clone()));
        tracing::info!(addr = %self.listener.local_addr()?, "dispatcher listening");
        if !self.state.auth.is_enforced() {
            tracing::warn!(
                "INSECURE_DEV_MODE: POST / accepts unsigned requests and callbacks go unsigned; never run this way in a deployment"
            );
        }
        let readiness = self.readiness;
        let ready = http::readiness(move || {
            let ready = readiness.check("connected to RabbitMQ");
            async move { ready }
        });
        let app = Router::new()
            .route("/", post(routes::accept))
            .merge(http::operational_routes(ready))
            .with_state(self.state);
        let app = http::with_standard_layers(app, self.max_body_bytes, self.request_limit);
        let served = http::serve(self.listener, app, self.limits, shutdown).await;
        amqp.await.map_err(std::io::Error::other)?;
        writer.await.map_err(std::io::Error::other)?;
        served
    }
}
