//! Building public-web: the bound listeners, the state, the routers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{post, post_service};
use common::http;
use reqwest::Url;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::service_fn;

use crate::config::Config;
use crate::dispatcher_client::DispatcherClient;
use crate::pending::PendingRequests;
use crate::routes;
use crate::state::AppState;

/// public-web bound to its port(s), ready to run.
pub struct Application {
    listener: TcpListener,
    /// The internal listener for `/dispatch`, when `DISPATCH_PORT` is set.
    internal: Option<TcpListener>,
    state: Arc<AppState>,
}

impl Application {
    pub async fn build(config: Config) -> std::io::Result<Self> {
        // Before any metric handle is taken: handles taken earlier stay no-ops.
        common::metrics::handle();
        crate::metrics::init();
        let listener = TcpListener::bind(("0.0.0.0", config.port)).await?;
        let internal = match config.dispatch_port {
            Some(port) => Some(TcpListener::bind(("0.0.0.0", port)).await?),
            None => None,
        };
        let port = internal.as_ref().unwrap_or(&listener).local_addr()?.port();
        let callback_url = config.callback_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("http://127.0.0.1:{port}/dispatch")).expect("a loopback URL parses")
        });
        let dispatcher = DispatcherClient::new(
            &config.dispatcher_url,
            &callback_url,
            config.dispatcher_timeout,
        )
        .map_err(std::io::Error::other)?;
        let state = Arc::new(AppState {
            pending: PendingRequests::new(config.max_pending),
            dispatcher,
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

    /// Where `/dispatch` is served: the internal listener if any.
    pub fn dispatch_addr(&self) -> SocketAddr {
        self.internal
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
            .unwrap_or_else(|| self.local_addr())
    }

    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(
            addr = %self.local_addr(),
            dispatch_addr = %self.dispatch_addr(),
            callback_url = ?self.state.dispatcher.callback_url(),
            signed_callbacks = self.state.config.callback_secret.is_some(),
            "public-web listening"
        );
        let state = self.state;
        let config = &state.config;
        let Some(internal) = self.internal else {
            let app = public_routes(state.clone()).merge(dispatch_routes(state.clone()));
            return http::serve(self.listener, with_layers(app, config), shutdown).await;
        };
        let internal_app = with_layers(dispatch_routes(state.clone()), config);
        let public_app = with_layers(public_routes(state.clone()), config);
        let (public, internal) = tokio::join!(
            http::serve(self.listener, public_app, shutdown.clone()),
            http::serve(internal, internal_app, shutdown),
        );
        public.and(internal)
    }
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

/// `POST /dispatch`, behind the signature check when a secret is set.
fn dispatch_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/dispatch", post(routes::dispatch))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::require_signature,
        ))
        .with_state(state)
}

/// Everything but `/dispatch`.
fn public_routes(state: Arc<AppState>) -> Router {
    let readiness = http::readiness({
        let state = state.clone();
        move || {
            let state = state.clone();
            async move { state.dispatcher.ready().await }
        }
    });
    Router::new()
        .route(
            "/",
            post_service(service_fn({
                let state = state.clone();
                move |request| routes::submit(state.clone(), request)
            })),
        )
        .route("/ping", post(routes::ping))
        .merge(http::operational_routes(readiness))
        .with_state(state)
}
