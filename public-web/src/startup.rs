//! Building public-web: state, router, and the bound listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use axum::routing::post;
use common::http;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::configuration::Config;
use crate::pending::PendingRequests;
use crate::routes;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pending: PendingRequests,
    /// One client for every call to the dispatcher: its pool keeps the
    /// connections alive between requests.
    pub http: reqwest::Client,
    /// The dispatcher's `POST /` endpoint.
    pub dispatcher_url: reqwest::Url,
    /// This instance's `/dispatch` URL, ready to send as a header.
    pub callback_url: HeaderValue,
}

/// public-web bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> std::io::Result<Self> {
        // Before any metric handle is taken: handles taken earlier stay no-ops.
        common::metrics::handle();
        common::metrics::init_public_web();
        let listener = TcpListener::bind(("0.0.0.0", config.port)).await?;
        let port = listener.local_addr()?.port();
        let callback_url = config
            .callback_url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}/dispatch"));
        let http = reqwest::Client::builder()
            .timeout(config.dispatcher_timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(std::io::Error::other)?;
        let dispatcher_url = reqwest::Url::parse(&config.dispatcher_url)
            .map_err(|e| invalid_config("DISPATCHER_URL", e))?;
        let callback_url =
            HeaderValue::try_from(callback_url).map_err(|e| invalid_config("CALLBACK_URL", e))?;
        let state = AppState {
            pending: PendingRequests::new(config.max_pending),
            http,
            dispatcher_url,
            callback_url,
            config: Arc::new(config),
        };
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The parked requests, for tests and metrics.
    pub fn pending(&self) -> PendingRequests {
        self.state.pending.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), callback_url = ?self.state.callback_url, "public-web listening");
        http::serve(self.listener, router(self.state), shutdown).await
    }
}

pub fn router(state: AppState) -> Router {
    let readiness = http::readiness({
        let state = state.clone();
        move || dispatcher_ready(state.clone())
    });
    // The whole-request limit sits above the parked-request timeout so the
    // 504 with its JSON body always wins the race.
    let request_limit = state.config.request_timeout + Duration::from_secs(5);
    let max_body = state.config.max_body_bytes;
    let app = Router::new()
        .route("/", post(routes::submit))
        .route("/dispatch", post(routes::dispatch))
        .route("/ping", post(routes::ping))
        .merge(http::operational_routes(readiness))
        .with_state(state);
    http::with_standard_layers(app, max_body, request_limit)
}

/// Ready when the dispatcher says it is ready.
async fn dispatcher_ready(state: AppState) -> Result<(), String> {
    let url = state
        .dispatcher_url
        .join("readyz")
        .map_err(|e| e.to_string())?;
    match state
        .http
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("dispatcher not ready ({})", response.status())),
        Err(error) => Err(format!("dispatcher unreachable: {error}")),
    }
}

fn invalid_config(name: &str, error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{name} is invalid: {error}"),
    )
}
