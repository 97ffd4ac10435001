//! The harness the end-to-end tests share: start each service in-process on
//! a free port against the real RabbitMQ, with queue names unique to the
//! test, and delete those queues when the test ends (even when it fails).
//!
//! Also a small TCP proxy, so a test can make "the broker" appear and
//! disappear on a port of its own without touching the shared broker.

pub mod balancer;
pub mod cluster;
pub mod live;
pub mod netns;
pub mod otlp;
pub mod ports;
pub mod processes;
pub mod webhooks;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::Event;
use common::amqp::ConsumerConfig;
use common::egress::EgressPolicy;
use common::http::{InternalAuth, ServerLimits};
use common::listener::{Handler, Listener, ListenerConfig};
use common::wire::InternalSecret;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Taken by the tests of a binary that drive the machine to its limit
/// (thousands of requests at once, a three-node cluster) or judge how much
/// it serves under overload: two of them at once starve each other on two
/// cores, and the second measures the first.
pub static MACHINE_SATURATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The broker the tests use (`AMQP_URL`, default the local RabbitMQ).
pub fn amqp_url() -> String {
    common::config::string_or("AMQP_URL", common::amqp::connection::DEFAULT_AMQP_URL)
}

/// Queue names unique to one test; the queues are deleted on drop.
pub struct Topology {
    pub request_queue: String,
    pub response_queue: String,
    /// A queue for tests to route to and never consume: its requests wait.
    pub unattended_queue: String,
    /// The event stream of the dispatchers and public-webs built on it.
    pub stream: String,
}

impl Topology {
    pub fn new() -> Self {
        let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
        Self::named(&prefix, "ping", "")
    }

    /// Queues `<prefix>-<request>`, `<prefix>-<middle>responses` and
    /// `<prefix>-<middle>unattended`, and their stream.
    pub fn named(prefix: &str, request: &str, middle: &str) -> Self {
        let response_queue = format!("{prefix}-{middle}responses");
        Self {
            request_queue: format!("{prefix}-{request}"),
            stream: event_stream(&response_queue),
            response_queue,
            unattended_queue: format!("{prefix}-{middle}unattended"),
        }
    }

    fn queues(&self) -> Vec<String> {
        let mut queues = Vec::new();
        for queue in [
            &self.request_queue,
            &self.response_queue,
            &self.unattended_queue,
        ] {
            queues.push(common::wire::dead_letter_queue(queue));
            queues.push(queue.clone());
        }
        queues.push(self.stream.clone());
        queues
    }

    /// Waits (up to 5 s) until `queue` holds `expected` messages, then
    /// returns how many it holds.
    pub async fn wait_for_depth(queue: &str, expected: u32) -> u32 {
        for _ in 0..100 {
            let depth = Self::depth(queue).await;
            if depth == expected {
                return depth;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self::depth(queue).await
    }

    /// Messages waiting in `queue` (0 when it does not exist).
    pub async fn depth(queue: &str) -> u32 {
        let connection = connect().await;
        let channel = connection.create_channel().await.expect("channel");
        let depth = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        common::amqp::connection::close(&connection).await;
        depth
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let queues = self.queues();
        // Drop cannot await, and the test's runtime may be shutting down:
        // delete on a runtime of our own, on a thread of our own.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                let connection = connect().await;
                let channel = connection.create_channel().await.expect("channel");
                for queue in queues {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                common::amqp::connection::close(&connection).await;
            });
        })
        .join();
        if deleted.is_err() {
            eprintln!("could not delete the test's queues");
        }
    }
}

/// A fresh connection to the test broker.
pub async fn connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("the test broker answers on AMQP_URL")
}

/// A service running in the test's runtime.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Spawns `run` (a service's `run`, given its shutdown token) serving on
    /// `addr`.
    pub fn start<F>(addr: SocketAddr, run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signals shutdown and waits for the service to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the service stops within 15 s")
            .expect("the service task does not panic")
            .expect("the service stops cleanly");
    }
}

/// The secret the tests' services share.
pub const TEST_SECRET: &str = "integration-tests-internal-secret";

/// Internal-hop authentication with [`TEST_SECRET`].
pub fn test_auth() -> InternalAuth {
    InternalAuth::new(
        Some(InternalSecret::new(TEST_SECRET)),
        InternalAuth::DEFAULT_TOLERANCE,
    )
}

/// Connection limits as the services' defaults, with a cap the test
/// process's descriptors allow.
pub fn test_limits() -> ServerLimits {
    ServerLimits::new(
        Duration::from_secs(10),
        Duration::from_secs(60),
        16 * 1024,
        4096,
    )
}

/// A dispatcher routing `PingRequest` to `topology`'s request queue, where
/// a ping listener answers, and `OrderRequest` to its unattended queue,
/// where nothing does (its requests stay parked). Ready.
pub async fn spawn_pings_and_unanswered_orders(topology: &Topology) -> (Running, Running) {
    let url = amqp_url();
    let routes = format!(
        "PingRequest={},OrderRequest={}",
        topology.request_queue, topology.unattended_queue
    );
    let dispatcher = spawn_dispatcher(dispatcher_config_routing(
        &routes,
        &topology.response_queue,
        &url,
    ))
    .await;
    let listener = spawn_listener(listener_config(topology, &url), ping_listener::handle).await;
    wait_ready(&dispatcher.url()).await;
    (dispatcher, listener)
}

/// The dispatcher's configuration for `topology`, on a free port.
pub fn dispatcher_config(topology: &Topology, amqp_url: &str) -> dispatcher::config::Config {
    dispatcher_config_routing(
        &format!("PingRequest={}", topology.request_queue),
        &topology.response_queue,
        amqp_url,
    )
}

/// The event stream of a test whose response queue is `response_queue`
/// (unique to the test, so the stream is too).
pub fn event_stream(response_queue: &str) -> String {
    format!("{response_queue}-events")
}

/// The stream configuration of the tests: `name`, small segments.
pub fn stream_config(name: &str) -> common::amqp::stream::StreamConfig {
    common::amqp::stream::StreamConfig {
        name: name.to_owned(),
        max_age: "1h".parse().expect("an age"),
        max_bytes: 64 << 20,
        segment_bytes: 4 << 20,
    }
}

/// [`stream_config`] as a service process's environment.
pub fn stream_env(name: &str) -> Vec<(String, String)> {
    let config = stream_config(name);
    [
        ("EVENT_STREAM", config.name),
        ("EVENT_STREAM_MAX_AGE", config.max_age.to_string()),
        ("EVENT_STREAM_MAX_BYTES", config.max_bytes.to_string()),
        (
            "EVENT_STREAM_SEGMENT_BYTES",
            config.segment_bytes.to_string(),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// The dispatcher's configuration with the routing table `routes`; its
/// event stream is named after `response_queue`.
pub fn dispatcher_config_routing(
    routes: &str,
    response_queue: &str,
    amqp_url: &str,
) -> dispatcher::config::Config {
    dispatcher::config::Config {
        port: 0,
        bind: Ipv4Addr::LOCALHOST.into(),
        auth: test_auth(),
        routes: routes.parse().expect("routes"),
        broker: amqp_url.parse().expect("an AMQP URL"),
        response_queue: response_queue.to_owned(),
        prefetch: 512,
        max_message_bytes: ConsumerConfig::DEFAULT_MAX_MESSAGE_BYTES,
        publish_timeout: Duration::from_secs(5),
        message_ttl: Duration::from_secs(10),
        callbacks: dispatcher::config::CallbackConfig {
            timeout: Duration::from_secs(5),
            retries: 3,
            allow: Arc::new(EgressPolicy::loopback()),
            per_target: 128,
            backlog: 128,
            cooldown: Duration::from_secs(5),
        },
        stream: stream_config(&event_stream(response_queue)),
        stream_buffer: 10_000,
        max_body_bytes: 64 * 1024,
        // Tests start listeners late and on purpose; the one that tests
        // the grace sets its own.
        no_listener_grace: Duration::from_secs(600),
        limits: test_limits(),
    }
}

pub async fn spawn_dispatcher(config: dispatcher::config::Config) -> Running {
    let app = dispatcher::startup::Application::build(config)
        .await
        .expect("dispatcher binds");
    Running::start(app.local_addr(), |shutdown| app.run(shutdown))
}

/// A ping listener's configuration for `topology`, on a free port.
pub fn listener_config(topology: &Topology, amqp_url: &str) -> ListenerConfig {
    listener_config_for(&topology.request_queue, amqp_url)
}

/// A listener's configuration for `queue`, on a free port.
pub fn listener_config_for(queue: &str, amqp_url: &str) -> ListenerConfig {
    ListenerConfig {
        port: 0,
        consumer: ConsumerConfig {
            broker: amqp_url.parse().expect("an AMQP URL"),
            connection_name: TEST_LISTENER.to_owned(),
            queue: queue.to_owned(),
            also_declare: Vec::new(),
            prefetch: 16,
            max_message_bytes: ConsumerConfig::DEFAULT_MAX_MESSAGE_BYTES,
        },
        publish_timeout: Duration::from_secs(5),
        limits: test_limits(),
    }
}

pub async fn spawn_listener<H: Handler>(config: ListenerConfig, handler: H) -> Running {
    let listener = Listener::bind(config, handler)
        .await
        .expect("listener binds");
    Running::start(listener.local_addr(), |shutdown| listener.run(shutdown))
}

/// public-web's configuration in front of `dispatcher_url`. Its event
/// stream is named for no test: a test that subscribes sets
/// `live.stream` to its topology's (see [`public_web_config_on`]).
pub fn public_web_config(dispatcher_url: &str) -> public_web::config::Config {
    public_web::config::Config {
        port: 0,
        dispatcher_url: dispatcher_url.parse().expect("an http URL"),
        callback_url: None,
        request_timeout: Duration::from_secs(10),
        max_pending: 100_000,
        max_body_bytes: 64 * 1024,
        dispatcher_timeout: Duration::from_secs(5),
        dispatcher_concurrency: 512,
        auth: test_auth(),
        dispatch_port: 0,
        internal_bind: Ipv4Addr::LOCALHOST.into(),
        limits: test_limits(),
        live: public_web::live::LiveConfig {
            broker: amqp_url().parse().expect("an AMQP URL"),
            stream: stream_config("it-unused-events"),
            verifier: test_verifier(true),
            send_queue: 1024,
        },
        ws: public_web::config::WsConfig {
            max_frame_bytes: 64 * 1024,
            max_in_flight: 100,
            max_subscriptions: 16,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            allowed_origins: None,
        },
        sse_keepalive: Duration::from_secs(15),
    }
}

/// public-web's configuration in front of `dispatcher_url`, reading
/// `topology`'s event stream.
pub fn public_web_config_on(
    topology: &Topology,
    dispatcher_url: &str,
) -> public_web::config::Config {
    let mut config = public_web_config(dispatcher_url);
    config.live.stream = stream_config(&topology.stream);
    config
}

/// The service name of the tests' in-process listeners: their responses'
/// `source` in the event stream.
pub const TEST_LISTENER: &str = "listener-test";

/// The HS256 key of the tests' subscriber tokens.
pub const TEST_TOKEN_KEY: &str = "test-subscribe-key-of-at-least-32-bytes!";

/// A token verifier with [`TEST_TOKEN_KEY`]; anonymous subscriptions as
/// `anonymous` says.
pub fn test_verifier(anonymous: bool) -> public_web::live::auth::Verifier {
    public_web::live::auth::Verifier::new(
        vec![public_web::live::auth::Key::hs256(
            TEST_TOKEN_KEY.as_bytes(),
        )],
        anonymous,
    )
}

/// public-web and a handle on its parked requests.
pub async fn spawn_public_web(
    config: public_web::config::Config,
) -> (Running, public_web::pending::PendingRequests) {
    let app = public_web::startup::Application::build(config)
        .await
        .expect("public-web binds");
    let pending = app.pending();
    (
        Running::start(app.local_addr(), |shutdown| app.run(shutdown)),
        pending,
    )
}

/// public-web, the base URL of its internal port (`/dispatch` and the
/// probes) and its parked requests.
pub async fn spawn_public_web_with_internal(
    config: public_web::config::Config,
) -> (Running, String, public_web::pending::PendingRequests) {
    let app = public_web::startup::Application::build(config)
        .await
        .expect("public-web binds");
    let internal = format!("http://{}", app.dispatch_addr());
    let pending = app.pending();
    (
        Running::start(app.local_addr(), |shutdown| app.run(shutdown)),
        internal,
        pending,
    )
}

/// The three services wired together on `topology`.
pub struct Stack {
    pub public_web: Running,
    pub pending: public_web::pending::PendingRequests,
    pub dispatcher: Running,
    pub listener: Running,
}

impl Stack {
    pub async fn start(topology: &Topology) -> Self {
        let url = amqp_url();
        let dispatcher = spawn_dispatcher(dispatcher_config(topology, &url)).await;
        let listener = spawn_listener(listener_config(topology, &url), ping_listener::handle).await;
        let (public_web, pending) =
            spawn_public_web(public_web_config_on(topology, &dispatcher.url())).await;
        let stack = Self {
            public_web,
            pending,
            dispatcher,
            listener,
        };
        wait_ready(&stack.dispatcher.url()).await;
        wait_ready(&stack.listener.url()).await;
        stack
    }
}

/// Polls `GET {base}/readyz` until it answers 200 (panics after 20 s).
pub async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base} not ready within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `condition` every 25 ms until it holds; panics naming `what`
/// after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A ping request body, stamped now.
pub fn ping_body() -> Value {
    json!({"type": "PingRequest", "data": {"sentAt": ping_listener::now_millis()}})
}

/// POSTs `body` as JSON to public-web at `url`, expecting 200; returns the
/// answer's event and the trace id of its `x-trace-id` header.
pub async fn post_traced(client: &reqwest::Client, url: &str, body: &Value) -> (Event, String) {
    let response = client.post(url).json(body).send().await.expect("POST");
    assert_eq!(response.status(), 200);
    let trace_id = response.headers()["x-trace-id"]
        .to_str()
        .expect("a trace id is ASCII")
        .to_owned();
    (
        as_event(response.json().await.expect("a JSON answer")),
        trace_id,
    )
}

/// POSTs `body` as JSON to `url`; returns the status and the JSON body.
pub async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.expect("POST");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Checks that `response` is a `503` with `Retry-After: 1` and the JSON
/// error `code`.
pub async fn assert_retry_later(response: reqwest::Response, code: &str) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], code, "{body}");
}

/// Parses a successful response as an event.
pub fn as_event(body: Value) -> Event {
    serde_json::from_value(body).expect("the response is an event")
}

/// Forwards TCP connections from a port of its own to `target`, so a test
/// controls when "the broker" is reachable.
pub struct TcpProxy {
    pub port: u16,
    target: SocketAddr,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl TcpProxy {
    /// Reserves a free port without listening on it yet.
    pub async fn reserve(target: SocketAddr) -> Self {
        Self {
            port: ports::free_port(),
            target,
            running: None,
        }
    }

    /// An AMQP URL that goes through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts accepting and forwarding.
    pub async fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the reserved port is still free");
        let stop = CancellationToken::new();
        let target = self.target;
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let connections = tokio_util::task::TaskTracker::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let token = token.clone();
                        connections.spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = token.cancelled() => {}
                            }
                        });
                    }
                    _ = token.cancelled() => break,
                }
            }
            connections.close();
            connections.wait().await;
        });
        self.running = Some((stop, task));
    }

    /// Stops listening and cuts every forwarded connection.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// The shared broker's address, parsed from `AMQP_URL`.
pub fn broker_addr() -> SocketAddr {
    let url = amqp_url();
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(&url)
        .split('/')
        .next()
        .unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.replace("localhost", "127.0.0.1")
    } else {
        format!("{host_port}:5672")
    };
    host_port
        .parse()
        .expect("AMQP_URL names an IP address and port")
}

/// Counts how many requests a wrapped handler saw.
pub fn counting_ping_handler(counter: Arc<std::sync::atomic::AtomicUsize>) -> impl Handler {
    move |request: Event| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ping_listener::handle(request)
    }
}

/// A listener's configuration on `queue` under `service_name`, on a free
/// port: for listeners other than the ping one.
pub fn listener_config_on(service_name: &str, queue: &str) -> ListenerConfig {
    let mut config = listener_config_for(queue, &amqp_url());
    config.consumer.connection_name = service_name.to_owned();
    config
}

/// A dispatcher routing by `routes` (`Type=queue,...`) with its responses
/// on `topology`'s response queue, and public-web in front of it; both
/// ready. Returns (dispatcher, public-web).
pub async fn spawn_front(topology: &Topology, routes: &str) -> (Running, Running) {
    let config = dispatcher_config_routing(routes, &topology.response_queue, &amqp_url());
    let dispatcher = spawn_dispatcher(config).await;
    let (public_web, _pending) =
        spawn_public_web(public_web_config_on(topology, &dispatcher.url())).await;
    wait_ready(&dispatcher.url()).await;
    wait_ready(&public_web.url()).await;
    (dispatcher, public_web)
}

/// A prime-listener on `queue` accepting n up to `max_n`; ready.
pub async fn spawn_prime_listener(queue: &str, max_n: u64) -> Running {
    let handler =
        prime_listener::PrimeHandler::new(&prime_listener::PrimeConfig { max_n, workers: 2 });
    let listener = spawn_listener(listener_config_on("prime-listener-test", queue), handler).await;
    wait_ready(&listener.url()).await;
    listener
}

/// The scenario handler for `config` (JSON), calling through public-web at
/// `public_web_url`.
pub fn scenario(config: &Value, public_web_url: &str) -> scenario_listener::Scenario {
    let config = scenario_listener::ScenarioConfig::from_json(&config.to_string())
        .unwrap_or_else(|error| panic!("the test scenario is valid: {error:?}"));
    let public_web_url = public_web_url.parse().expect("public-web's URL");
    scenario_listener::Scenario::new(config, &public_web_url).expect("an HTTP client")
}

/// A scenario-listener on `queue` acting out `config` (JSON); ready.
pub async fn spawn_scenario_listener(queue: &str, config: &Value, public_web_url: &str) -> Running {
    let handler = scenario(config, public_web_url);
    let listener =
        spawn_listener(listener_config_on("scenario-listener-test", queue), handler).await;
    wait_ready(&listener.url()).await;
    listener
}

/// The platform a scenario test runs on: the given scenario event types
/// routed to `scenarios`' request queue, `NthPrimeRequest` to `primes'`
/// with a prime-listener on it. The scenario-listener is the test's to
/// start, on `scenarios.request_queue`.
pub struct ScenarioPlatform {
    pub dispatcher: Running,
    pub public_web: Running,
    pub prime_listener: Running,
    // Last, so the queues go after the services that use them.
    pub scenarios: Topology,
    pub primes: Topology,
}

impl ScenarioPlatform {
    pub async fn start(scenario_types: &[&str]) -> Self {
        let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
        let scenarios = Topology::named(&prefix, "scenario", "");
        // Only its request queue is used; the others are never created.
        let primes = Topology::named(&prefix, "prime", "prime-");
        let mut routes: Vec<String> = scenario_types
            .iter()
            .map(|kind| format!("{kind}={}", scenarios.request_queue))
            .collect();
        routes.push(format!("NthPrimeRequest={}", primes.request_queue));
        let (dispatcher, public_web) = spawn_front(&scenarios, &routes.join(",")).await;
        let prime_listener = spawn_prime_listener(&primes.request_queue, 100_000).await;
        Self {
            dispatcher,
            public_web,
            prime_listener,
            scenarios,
            primes,
        }
    }

    /// A scenario-listener acting out `config` (JSON); ready.
    pub async fn scenario_listener(&self, config: &Value) -> Running {
        spawn_scenario_listener(
            &self.scenarios.request_queue,
            config,
            &self.public_web.url(),
        )
        .await
    }

    /// Sends an event of `kind` with `data` to public-web; the status and
    /// the JSON body.
    pub async fn send(&self, kind: &str, data: Value) -> (u16, Value) {
        let client = reqwest::Client::new();
        let event = json!({"type": kind, "data": data});
        post_json(&client, &self.public_web.url(), &event).await
    }
}

/// A RabbitMQ node of the test's own, for tests that restart the broker.
pub mod private_broker;
