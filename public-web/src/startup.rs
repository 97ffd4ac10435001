//! Building public-web: the bound listeners, the state, the routers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post, post_service};
use common::http;
use reqwest::Url;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::service_fn;

use crate::config::Config;
use crate::dispatcher_client::DispatcherClient;
use crate::live::Live;
use crate::pending::PendingRequests;
use crate::state::AppState;
use crate::{console, routes, sse, ws};

/// public-web bound to its ports, ready to run.
pub struct Application {
    listener: TcpListener,
    /// The internal listener, for `/dispatch` only.
    internal: TcpListener,
    state: Arc<AppState>,
}

impl Application {
    pub async fn build(config: Config) -> std::io::Result<Self> {
        // Before any metric handle is taken: handles taken earlier stay no-ops.
        common::metrics::handle();
        crate::metrics::init();
        let listener = TcpListener::bind(("0.0.0.0", config.port)).await?;
        let internal = TcpListener::bind((config.internal_bind, config.dispatch_port)).await?;
        let callback_url = match &config.callback_url {
            Some(url) => url.clone(),
            None => derived_callback_url(internal.local_addr()?),
        };
        let dispatcher = DispatcherClient::new(
            &config.dispatcher_url,
            &callback_url,
            config.dispatcher_timeout,
            config.auth.clone(),
            config.dispatcher_concurrency,
        )
        .map_err(std::io::Error::other)?;
        let shutdown = CancellationToken::new();
        let state = Arc::new(AppState {
            pending: PendingRequests::new(config.max_pending),
            dispatcher,
            live: Live::new(config.live.clone(), shutdown.clone()),
            shutdown,
            config,
        });
        Ok(Self {
            listener,
            internal,
            state,
        })
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

    /// Where `/dispatch` is served.
    pub fn dispatch_addr(&self) -> SocketAddr {
        self.internal
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(
            addr = %self.local_addr(),
            dispatch_addr = %self.dispatch_addr(),
            callback_url = ?self.state.dispatcher.callback_url(),
            "public-web listening"
        );
        let state = self.state;
        let ending = state.shutdown.clone();
        let shutdown_watch = shutdown.clone();
        tokio::spawn(async move {
            shutdown_watch.cancelled().await;
            ending.cancel();
        });
        if !state.config.auth.is_enforced() {
            tracing::warn!(
                "INSECURE_DEV_MODE: /dispatch accepts unsigned callbacks; never run this way in a deployment"
            );
        }
        let config = &state.config;
        let internal_app = with_layers(internal_routes(state.clone()), config);
        let public_app = with_layers(public_routes(state.clone()), config);
        // The internal port stops last: while the public one drains, its
        // parked requests still receive their answers.
        let internal_shutdown = CancellationToken::new();
        let internal = tokio::spawn(http::serve(
            self.internal,
            internal_app,
            config.limits.apart(INTERNAL_MAX_CONNECTIONS),
            internal_shutdown.clone(),
        ));
        let public = http::serve(self.listener, public_app, config.limits.clone(), shutdown).await;
        internal_shutdown.cancel();
        let internal = internal.await.map_err(std::io::Error::other)?;
        public.and(internal)
    }
}

/// The callback URL when none is configured: the internal listener's
/// address, or loopback when it listens on every address.
fn derived_callback_url(internal: SocketAddr) -> Url {
    let host = match internal.ip() {
        ip if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], internal.port())),
        _ => internal,
    };
    Url::parse(&format!("http://{host}/dispatch")).expect("a socket address makes a URL")
}

/// The standard limits, with a whole-request limit above the parked-request
/// timeout so the 504 with its JSON body always wins the race.
fn with_layers(app: Router, config: &Config) -> Router {
    http::with_standard_layers(
        app,
        config.max_body_bytes,
        config.request_timeout + Duration::from_secs(5),
    )
}

/// Connections the internal port takes at most: dispatchers and probes,
/// counted apart from the public port's and within its descriptor reserve.
const INTERNAL_MAX_CONNECTIONS: usize = 256;

/// `POST /dispatch`, whose handler checks each callback's signature, and
/// the probes: reachable even when the public port is full.
fn internal_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/dispatch", post(routes::dispatch))
        .merge(http::operational_routes(readiness(&state)))
        .with_state(state)
}

/// Ready when the dispatcher says it is ready.
fn readiness(state: &Arc<AppState>) -> http::ReadinessCheck {
    let state = state.clone();
    http::readiness(move || {
        let state = state.clone();
        async move { state.dispatcher.ready().await }
    })
}

/// Everything but `/dispatch`.
fn public_routes(state: Arc<AppState>) -> Router {
    let readiness = readiness(&state);
    Router::new()
        .route(
            "/",
            post_service(service_fn({
                let state = state.clone();
                move |request| routes::submit(state.clone(), request)
            }))
            .get(console::page),
        )
        .route("/ping", post(routes::ping))
        .route("/console.js", get(console::script))
        .route("/ws", get(ws::upgrade))
        .route("/events", get(sse::events))
        .merge(http::operational_routes(readiness))
        .with_state(state)
}
