//! What the webhook tests share: a PostgreSQL database of their own
//! (created on the machine's server, dropped when the test ends), the
//! webhook-sender in-process on it, and a receiver that records every
//! delivery and answers as the test scripts it.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::amqp::Readiness;
use common::egress::EgressPolicy;
use webhook_sender::config::{Config, DeliveryConfig};
use webhook_sender::schedule::RetrySchedule;

use crate::{Running, Topology, amqp_url, stream_config, test_limits};

/// The server the tests' databases are made on (`DATABASE_URL`'s server;
/// default the local one).
pub fn admin_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres:postgres@127.0.0.1:5432/dispatcher".to_owned());
    let (server, _) = url
        .rsplit_once('/')
        .expect("a database URL names a database");
    format!("{server}/postgres")
}

/// A database of the test's own, dropped (with its connections) when
/// this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("it_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_url();
        execute(&admin, &format!("CREATE DATABASE {name}")).await;
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        Self { name, url }
    }

    pub fn config(&self) -> tokio_postgres::Config {
        self.url.parse().expect("a database URL")
    }

    /// A statement's rows, on this database.
    pub async fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("the test database answers");
        tokio::spawn(connection);
        client.query(sql, &[]).await.expect("the query runs")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = admin_url();
        // Off the test's runtime, which may be shutting down.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(execute(&admin, &statement));
        })
        .join();
    }
}

async fn execute(url: &str, statement: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers on DATABASE_URL's server (bin/test starts one)");
    let driver = tokio::spawn(connection);
    client
        .batch_execute(statement)
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"));
    drop(client);
    let _ = driver.await;
}

/// The admin token of the tests' senders.
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token-of-enough-length";

/// A sender on `database`, reading `topology`'s stream, delivering to
/// loopback receivers on `schedule`.
pub fn sender_config(database: &TestDatabase, topology: &Topology, schedule: &str) -> Config {
    Config {
        port: 0,
        bind: Ipv4Addr::LOCALHOST.into(),
        database: database.config(),
        database_pool: 8,
        admin_token: Some(TEST_ADMIN_TOKEN.into()),
        broker: amqp_url().parse().expect("an AMQP URL"),
        stream: stream_config(&topology.stream),
        delivery: DeliveryConfig {
            egress: Arc::new(EgressPolicy::public_internet(EgressPolicy::loopback())),
            schedule: schedule.parse::<RetrySchedule>().expect("a schedule"),
            timeout: Duration::from_secs(2),
            max_response_bytes: 64 * 1024,
            per_endpoint: 4,
            concurrency: 64,
            disable_after: Duration::from_secs(3600),
            rotation_overlap: Duration::from_secs(3600),
            poll_interval: Duration::from_millis(50),
        },
        max_body_bytes: 64 * 1024,
        limits: test_limits(),
    }
}

/// The sender, running; `reading` is set once it reads the stream.
pub struct Sender {
    pub running: Running,
    pub reading: Readiness,
}

impl Sender {
    pub async fn start(config: Config) -> Self {
        let app = webhook_sender::startup::Application::build(config)
            .await
            .expect("the webhook-sender starts");
        let reading = app.reading();
        let running = Running::start(app.local_addr(), |shutdown| app.run(shutdown));
        Self { running, reading }
    }

    /// Waits until this sender reads the stream.
    pub async fn wait_reading(&self) {
        let reading = self.reading.clone();
        crate::wait_for(
            "the sender reads the stream",
            Duration::from_secs(15),
            || {
                let reading = reading.clone();
                async move { reading.is_ready() }
            },
        )
        .await;
    }

    pub fn url(&self) -> String {
        self.running.url()
    }
}

/// What the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Delivery {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// The headers as the Python verifier takes them.
    pub fn headers_json(&self) -> String {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((name.to_string(), value.to_str().ok()?.to_owned().into()))
            })
            .collect();
        serde_json::Value::Object(headers).to_string()
    }
}

/// An answer the receiver gives: status and extra headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// How long the receiver takes to answer.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

#[derive(Default)]
struct Recorded {
    deliveries: Mutex<Vec<Delivery>>,
    /// Answers to give, in order; 200 once they run out.
    script: Mutex<VecDeque<Reply>>,
}

/// A webhook endpoint on a loopback port.
pub struct Receiver {
    pub addr: SocketAddr,
    recorded: Arc<Recorded>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: Vec<Reply>) -> Self {
        Self::start_on(0, script).await
    }

    /// [`start`](Self::start) on `port` (0: any free one).
    pub async fn start_on(port: u16, script: Vec<Reply>) -> Self {
        let recorded = Arc::new(Recorded {
            deliveries: Mutex::default(),
            script: Mutex::new(script.into()),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        });
        Self {
            addr,
            recorded,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.recorded.deliveries.lock().unwrap().clone()
    }

    /// Waits until `count` deliveries arrived (panics after `limit`).
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let deliveries = self.deliveries();
            if deliveries.len() >= count {
                return deliveries;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} deliveries within {limit:?}",
                deliveries.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(recorded): State<Arc<Recorded>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    recorded.deliveries.lock().unwrap().push(Delivery {
        headers,
        body,
        at: Instant::now(),
    });
    let reply = recorded
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::status(200));
    tokio::time::sleep(reply.delay).await;
    let mut response = StatusCode::from_u16(reply.status)
        .expect("a status")
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a header value"));
    }
    response
}

/// An HTTP client of the management API with the admin token.
pub fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::RequestBuilder {
    client.request(method, url).bearer_auth(TEST_ADMIN_TOKEN)
}

/// The webhook-sender as a process on `database`, reading `topology`'s
/// stream (declared as [`crate::stream_config`] does), with `extra` in its
/// environment; ready (its store answers).
pub async fn spawn_sender_process(
    database: &TestDatabase,
    topology: &Topology,
    extra: &[(String, String)],
) -> crate::processes::ServiceProcess {
    let mut env = crate::stream_env(&topology.stream);
    env.extend(crate::processes::env(&[
        ("AMQP_URL", &amqp_url()),
        ("DATABASE_URL", &database.url),
        ("ADMIN_TOKEN", TEST_ADMIN_TOKEN),
        ("WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8"),
        ("WEBHOOK_POLL_MS", "50"),
    ]));
    env.extend_from_slice(extra);
    let sender = crate::processes::ServiceProcess::spawn(
        "webhook-sender",
        crate::processes::free_port(),
        &env,
    )
    .await;
    crate::wait_ready(&sender.url()).await;
    sender
}

/// Waits until the sender process at `url` reads the stream.
pub async fn wait_reading_process(url: &str) {
    let metrics = format!("{url}/metrics");
    crate::wait_for(
        "the sender reads the stream",
        Duration::from_secs(15),
        || {
            let metrics = metrics.clone();
            async move {
                let Ok(response) = reqwest::get(&metrics).await else {
                    return false;
                };
                let text = response.text().await.unwrap_or_default();
                crate::processes::metric_value(&text, "webhook_stream_reading", &[]) == Some(1.0)
            }
        },
    )
    .await;
}
