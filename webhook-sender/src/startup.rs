//! Building the webhook-sender: the store brought up to date, the bound
//! management API, and the reader and deliverer that run beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::amqp::Readiness;
use common::http::{self, ServerLimits};
use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::Config;
use crate::deliver::Deliverer;
use crate::error::StoreError;
use crate::notices::NoticeSession;
use crate::reader::Reader;
use crate::state::AppState;
use crate::store::Store;

/// How often the backlog gauges are read from the store.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Why the sender could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding the management port: {0}")]
    Bind(#[from] std::io::Error),
    #[error("bringing the database schema up to date ({0})")]
    Migrate(#[from] StoreError),
    #[error("building the delivery client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The webhook-sender bound to its port, its store migrated.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    pool: Pool,
    reader: Reader,
    deliverer: Arc<Deliverer>,
    notice_session: NoticeSession,
    max_body_bytes: usize,
    limits: ServerLimits,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        common::metrics::handle();
        crate::metrics::init();
        let pool = crate::db::pool(&config.database, config.database_pool);
        let applied = crate::db::migrate(&pool).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "database migrations applied");
        }
        let store = Store::new(pool.clone());
        let listener = TcpListener::bind((config.bind, config.port)).await?;
        let (notices, notice_session) =
            crate::notices::new(config.broker.clone(), config.stream.clone());
        let owed = Arc::new(tokio::sync::Notify::new());
        let deliverer = Arc::new(Deliverer::new(
            store.clone(),
            notices,
            owed.clone(),
            config.delivery.clone(),
        )?);
        Ok(Self {
            listener,
            state: Arc::new(AppState {
                store: store.clone(),
                egress: config.delivery.egress.clone(),
                admin_token: config.admin_token,
                rotation_overlap: config.delivery.rotation_overlap,
            }),
            reader: Reader {
                store,
                pool: pool.clone(),
                broker: config.broker,
                stream: config.stream,
                reading: Readiness::default(),
                owed,
                shutdown: CancellationToken::new(),
            },
            pool,
            deliverer,
            notice_session,
            max_body_bytes: config.max_body_bytes,
            limits: config.limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Whether this sender reads the stream now (one sender does).
    pub fn reading(&self) -> Readiness {
        self.reader.reading.clone()
    }

    /// Serves the API, reads and delivers until `shutdown`; then lets the
    /// attempts in flight finish.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let reader = Arc::new(Reader {
            shutdown: shutdown.clone(),
            ..self.reader
        });
        let reading = tokio::spawn(reader.run());
        let delivering = tokio::spawn(self.deliverer.run(shutdown.clone()));
        let noticing = tokio::spawn(self.notice_session.run(shutdown.clone()));
        let gauges = tokio::spawn(backlog_gauges(self.state.store.clone(), shutdown.clone()));
        tracing::info!(addr = %self.listener.local_addr()?, "webhook-sender listening");
        if self.state.admin_token.is_none() {
            tracing::warn!("ADMIN_TOKEN is not set: every management call is refused");
        }
        let pool = self.pool;
        let ready = http::readiness(move || {
            let pool = pool.clone();
            async move {
                match pool.get().await {
                    Ok(client) => client
                        .simple_query("SELECT 1")
                        .await
                        .map(drop)
                        .map_err(|error| format!("PostgreSQL: {error}")),
                    Err(error) => Err(format!("PostgreSQL: {error}")),
                }
            }
        });
        let app = Router::new()
            .route("/webhooks", post(api::create).get(api::list))
            .route("/webhooks/{id}", get(api::show).delete(api::delete))
            .route("/webhooks/{id}/rotate-secret", post(api::rotate_secret))
            .route("/webhooks/{id}/enable", post(api::enable))
            .with_state(self.state)
            .merge(http::operational_routes(ready));
        let app = http::with_standard_layers(app, self.max_body_bytes, Duration::from_secs(30));
        let served = http::serve(self.listener, app, self.limits, shutdown).await;
        reading.await.map_err(std::io::Error::other)?;
        delivering.await.map_err(std::io::Error::other)?;
        noticing.await.map_err(std::io::Error::other)?;
        gauges.await.map_err(std::io::Error::other)?;
        served
    }
}

async fn backlog_gauges(store: Store, shutdown: CancellationToken) {
    loop {
        match store.backlog().await {
            Ok((pending, oldest)) => crate::metrics::backlog(pending, oldest),
            Err(error) => tracing::debug!(%error, "could not read the delivery backlog"),
        }
        tokio::select! {
            _ = tokio::time::sleep(BACKLOG_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
