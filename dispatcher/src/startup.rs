//! Building the dispatcher: state, router, the bound listener and the AMQP
//! session that runs beside the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use common::amqp::Readiness;
use common::http;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, PublisherSlot};
use crate::callback_urls::CallbackUrls;
use crate::configuration::Config;
use crate::routes;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub publisher: PublisherSlot,
    /// `MESSAGE_TTL_MS` as the AMQP `expiration` property wants it.
    pub message_ttl_ms: Arc<str>,
    pub callback_urls: Arc<CallbackUrls>,
}

/// The dispatcher bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    readiness: Readiness,
}

impl Application {
    pub async fn build(config: Config) -> std::io::Result<Self> {
        // Before any metric handle is taken: handles taken earlier stay no-ops.
        common::metrics::handle();
        common::metrics::init_dispatcher();
        let listener = TcpListener::bind(("0.0.0.0", config.port)).await?;
        let state = AppState {
            message_ttl_ms: config.message_ttl.as_millis().to_string().into(),
            config: Arc::new(config),
            publisher: PublisherSlot::default(),
            callback_urls: Arc::new(CallbackUrls::new(CallbackUrls::DEFAULT_CAPACITY)),
        };
        Ok(Self {
            listener,
            state,
            readiness: Readiness::default(),
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
        let callbacks = http::service_client(self.state.config.callback_timeout)
            .map_err(std::io::Error::other)?;
        let amqp = tokio::spawn(broker::run(
            self.state.config.clone(),
            self.state.publisher.clone(),
            self.readiness.clone(),
            callbacks,
            self.state.callback_urls.clone(),
            shutdown.clone(),
        ));
        tracing::info!(addr = %self.local_addr(), "dispatcher listening");
        let app = router(self.state, self.readiness);
        let served = http::serve(self.listener, app, shutdown).await;
        amqp.await.map_err(std::io::Error::other)?;
        served
    }
}

pub fn router(state: AppState, readiness: Readiness) -> Router {
    let max_body = state.config.max_body_bytes;
    let request_limit = state.config.publish_timeout + Duration::from_secs(5);
    let ready = http::readiness(move || {
        let ready = readiness.is_ready();
        async move {
            ready
                .then_some(())
                .ok_or_else(|| "not connected to RabbitMQ".to_owned())
        }
    });
    let app = Router::new()
        .route("/", post(routes::accept))
        .merge(http::operational_routes(ready))
        .with_state(state);
    http::with_standard_layers(app, max_body, request_limit)
}
