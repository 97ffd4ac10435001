//! Faults: the broker restarting under load, a listener killed while it
//! holds unacked requests, the dispatcher down or hung, public-web
//! restarted while responses are on their way, a response delivered twice,
//! and a broker that accepts connections but never speaks AMQP. Each test
//! checks that no client waits past its timeout and that the platform
//! serves normally afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::amqp;
use common::wire::{CALLBACK_URL_HEADER, dead_letter_queue};
use integration_tests::private_broker::PrivateBroker;
use integration_tests::processes::{
    ServiceProcess, env, free_port, metric_value, spawn_front_processes, spawn_public_web_process,
};
use integration_tests::*;
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one client request of a load run got.
#[derive(Debug)]
struct Outcome {
    started: Instant,
    elapsed: Duration,
    /// 0 when the request failed in transport or outlived the client's own
    /// (generous) timeout: a hang.
    status: u16,
    code: String,
}

/// `clients` loops, each sending pings to `url` one after the other until
/// `stop` fires; every request's outcome.
fn run_load(
    url: String,
    clients: usize,
    client_timeout: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<Outcome>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(client_timeout)
            .build()
            .unwrap();
        let loops: Vec<_> = (0..clients)
            .map(|_| {
                let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    while !stop.is_cancelled() {
                        let started = Instant::now();
                        let sent = client.post(&url).json(&ping_body()).send().await;
                        let (status, code) = match sent {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let body: Value = response.json().await.unwrap_or(Value::Null);
                                let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
                                (status, code)
                            }
                            Err(error) => (0, error.to_string()),
                        };
                        outcomes.push(Outcome {
                            started,
                            elapsed: started.elapsed(),
                            status,
                            code,
                        });
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    outcomes
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for client_loop in loops {
            outcomes.extend(client_loop.await.unwrap());
        }
        outcomes
    })
}

/// Whether `GET {base}/readyz` answers 200.
async fn is_ready(client: &reqwest::Client, base: &str) -> bool {
    client
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

#[tokio::test]
async fn every_service_recovers_by_itself_from_a_broker_restart_under_load() {
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
    let mut broker = PrivateBroker::launch().await;
    let url = broker.amqp_url();
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &url)).await;
    let listener = spawn_listener(listener_config(&topology, &url), ping_listener::handle).await;
    let mut config = public_web_config(&dispatcher.url());
    config.request_timeout = REQUEST_TIMEOUT;
    let (public_web, pending) = spawn_public_web(config).await;
    let services = [dispatcher.url(), listener.url(), public_web.url()];
    for service in &services {
        wait_ready(service).await;
    }
    let client = reqwest::Client::new();

    let stop_load = CancellationToken::new();
    let load = run_load(
        public_web.url(),
        4,
        REQUEST_TIMEOUT + Duration::from_secs(5),
        stop_load.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The node closes every connection and halts; when it comes back its
    // data is gone, so the queues exist again only if the services
    // re-declare them.
    broker.stop().await;
    broker.wipe_data();
    for service in &services {
        wait_for(
            &format!("{service} reports not-ready while the broker is down"),
            Duration::from_secs(5),
            || async { !is_ready(&client, service).await },
        )
        .await;
    }
    // The dispatcher waits for the broker as long as the client does, then
    // says it is unavailable (and when to retry) just before the deadline.
    let started = Instant::now();
    let response = client
        .post(public_web.url())
        .json(&ping_body())
        .send()
        .await
        .unwrap();
    assert_retry_later(response, "broker_unavailable").await;
    let waited = started.elapsed();
    assert!(
        waited >= REQUEST_TIMEOUT / 2 && waited < REQUEST_TIMEOUT,
        "a 503 within the request's deadline, after waiting for the broker: {waited:?}"
    );

    broker.start().await;
    let back = Instant::now();
    for service in &services {
        wait_for(
            &format!("{service} ready again"),
            Duration::from_secs(15),
            || async { is_ready(&client, service).await },
        )
        .await;
    }
    let recovery = back.elapsed();
    let all_ready = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_load.cancel();
    let outcomes = load.await.unwrap();

    assert!(
        recovery <= Duration::from_secs(5),
        "every service reconnected within 5 s of the broker's return, took {recovery:?}"
    );
    let limit = REQUEST_TIMEOUT + Duration::from_millis(500);
    for outcome in &outcomes {
        let acceptable = match outcome.status {
            200 => outcome.elapsed <= limit,
            503 => outcome.code == "broker_unavailable" && outcome.elapsed < REQUEST_TIMEOUT,
            504 => outcome.elapsed <= limit,
            _ => false,
        };
        assert!(
            acceptable,
            "an unacceptable answer during the restart: {outcome:?}"
        );
    }
    let after: Vec<_> = outcomes.iter().filter(|o| o.started > all_ready).collect();
    assert!(!after.is_empty(), "the load ran after the recovery");
    assert!(
        after.iter().all(|o| o.status == 200),
        "every request after the recovery succeeds: {after:?}"
    );
    let during = outcomes.iter().filter(|o| o.status != 200).count();
    assert!(during > 0, "the restart was felt by the load");
    for _ in 0..10 {
        let (status, body) = post_json(&client, &public_web.url(), &ping_body()).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(pending.is_empty());
    let slowest = |status: u16| {
        let matching = outcomes.iter().filter(|o| o.status == status);
        (matching.clone().count(), matching.map(|o| o.elapsed).max())
    };
    eprintln!(
        "broker restart: {} requests, recovery {recovery:?}; (count, slowest) 200 {:?}, 503 {:?}, 504 {:?}",
        outcomes.len(),
        slowest(200),
        slowest(503),
        slowest(504)
    );
}

#[tokio::test]
async fn a_listener_killed_while_holding_unacked_requests_has_them_redelivered() {
    const BURST: usize = 30;
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &amqp_url())).await;
    let (public_web, pending) = spawn_public_web(public_web_config(&dispatcher.url())).await;
    wait_ready(&dispatcher.url()).await;

    // The real ping-listener binary, with room for the whole burst,
    // frozen: the broker hands it every request and none gets an answer.
    let doomed = ServiceProcess::spawn(
        "ping-listener",
        free_port(),
        &env(&[
            ("AMQP_URL", &amqp_url()),
            ("QUEUE", &topology.request_queue),
            ("PREFETCH", "100"),
        ]),
    )
    .await;
    wait_ready(&doomed.url()).await;
    doomed.signal("STOP");

    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..BURST)
        .map(|_| {
            let (client, url) = (client.clone(), public_web.url());
            tokio::spawn(async move {
                let started = Instant::now();
                let (status, body) = post_json(&client, &url, &ping_body()).await;
                (status, body, started.elapsed())
            })
        })
        .collect();
    let published = || {
        metric_value(
            &common::metrics::render(),
            "amqp_messages_published_total",
            &[("queue", &topology.request_queue)],
        )
    };
    wait_for(
        "the burst is published",
        Duration::from_secs(10),
        || async { published() == Some(BURST as f64) },
    )
    .await;
    wait_for(
        "the frozen listener holds every request",
        Duration::from_secs(10),
        || async { Topology::depth(&topology.request_queue).await == 0 },
    )
    .await;

    let answered = Arc::new(AtomicUsize::new(0));
    let survivor = spawn_listener(
        listener_config(&topology, &amqp_url()),
        counting_ping_handler(answered.clone()),
    )
    .await;
    wait_ready(&survivor.url()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "nothing is left for the survivor while the frozen listener holds the requests"
    );

    doomed.kill().await;
    for request in requests {
        let (status, body, elapsed) = tokio::time::timeout(Duration::from_secs(15), request)
            .await
            .expect("no client hangs")
            .unwrap();
        assert_eq!(status, 200, "the redelivered request is answered: {body}");
        assert!(
            elapsed < Duration::from_secs(10),
            "within the request timeout"
        );
    }
    assert_eq!(answered.load(Ordering::SeqCst), BURST);
    assert_eq!(
        metric_value(
            &common::metrics::render(),
            "amqp_messages_redelivered_total",
            &[("queue", &topology.request_queue)],
        ),
        Some(BURST as f64),
        "the survivor got them as redeliveries"
    );
    assert!(pending.is_empty());
    assert_eq!(
        Topology::depth(&dead_letter_queue(&topology.request_queue)).await,
        0
    );
}

#[tokio::test]
async fn a_dispatcher_that_was_up_and_stopped_is_a_fast_502() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let public_web = stack.public_web.url();
    let client = reqwest::Client::new();
    let (status, body) = post_json(&client, &public_web, &ping_body()).await;
    assert_eq!(status, 200, "{body}");

    stack.dispatcher.stop().await;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = post_json(&client, &public_web, &ping_body()).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "dispatcher_unreachable");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "fast, not the 10 s request timeout: {:?}",
            started.elapsed()
        );
    }
    assert!(
        !is_ready(&client, &public_web).await,
        "public-web is not ready"
    );
    assert!(stack.pending.is_empty());
}

/// A server that accepts connections and never answers, like a frozen
/// dispatcher; its URL. It lives as long as the test's runtime.
async fn hung_server() -> String {
    let hung = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", hung.local_addr().unwrap());
    tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            connections.push(socket);
        }
    });
    url
}

/// public-web in front of a hung dispatcher: what one request gets, and
/// how long it took.
async fn send_to_hung_dispatcher(
    dispatcher_timeout: Duration,
    request_timeout: Duration,
) -> (u16, Value, Duration) {
    let mut config = public_web_config(&hung_server().await);
    config.dispatcher_timeout = dispatcher_timeout;
    config.request_timeout = request_timeout;
    let (public_web, pending) = spawn_public_web(config).await;
    let started = Instant::now();
    let (status, body) = post_json(&reqwest::Client::new(), &public_web.url(), &ping_body()).await;
    let waited = started.elapsed();
    assert!(pending.is_empty());
    (status, body, waited)
}

#[tokio::test]
async fn a_hung_dispatcher_is_a_502_after_the_dispatcher_timeout_not_the_request_timeout() {
    let (status, body, waited) =
        send_to_hung_dispatcher(Duration::from_millis(500), Duration::from_secs(10)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "dispatcher_unreachable");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "after DISPATCHER_TIMEOUT_MS, not REQUEST_TIMEOUT_MS: {waited:?}"
    );
}

#[tokio::test]
async fn no_request_outlives_the_request_timeout_even_while_forwarding() {
    let (status, body, waited) =
        send_to_hung_dispatcher(Duration::from_secs(5), Duration::from_millis(500)).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(1500),
        "REQUEST_TIMEOUT_MS bounds the whole request: {waited:?}"
    );
}

/// A listener whose handler holds every request until the test lets it go.
struct Gate {
    arrived: Arc<AtomicUsize>,
    open: Arc<tokio::sync::Semaphore>,
}

impl Gate {
    fn new() -> Self {
        Self {
            arrived: Arc::new(AtomicUsize::new(0)),
            open: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    fn handler(&self) -> impl common::listener::Handler {
        let (arrived, open) = (self.arrived.clone(), self.open.clone());
        move |request: common::Event| {
            let (arrived, open) = (arrived.clone(), open.clone());
            async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                let _pass = open.acquire().await.expect("the gate stays");
                ping_listener::handle(request).await
            }
        }
    }

    fn release_all(&self) {
        self.open
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }
}

#[tokio::test]
async fn responses_for_a_restarted_public_web_are_404_logged_counted_and_acked_once() {
    let topology = Topology::new();
    // The internal port is fixed, so the restarted public-web's callback
    // URL is the one the parked request's response carries.
    let dispatch_port = free_port().to_string();
    let internal = env(&[("DISPATCH_PORT", &dispatch_port)]);
    let (mut dispatcher, public_web) = spawn_front_processes(&topology, &internal).await;
    let gate = Gate::new();
    let listener = spawn_listener(listener_config(&topology, &amqp_url()), gate.handler()).await;
    wait_ready(&listener.url()).await;

    let port = public_web.port;
    let url = public_web.url();
    let client = reqwest::Client::new();
    let request = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .post(url)
                .json(&ping_body())
                .send()
                .await
                .map(|r| r.status())
        }
    });
    wait_for(
        "the listener has the request",
        Duration::from_secs(10),
        || async { gate.arrived.load(Ordering::SeqCst) == 1 },
    )
    .await;

    // public-web dies with the request parked, and comes back on the same
    // port knowing nothing of it.
    public_web.kill().await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the client does not hang")
        .unwrap();
    assert!(
        outcome.is_err(),
        "the connection died with public-web: {outcome:?}"
    );
    let public_web = spawn_public_web_process(port, &dispatcher.url(), &internal).await;
    wait_ready(&public_web.url()).await;
    gate.release_all();

    let unknown = |metrics: &str| {
        metric_value(
            metrics,
            "dispatcher_callback_failures_total",
            &[("reason", "unknown_id")],
        )
    };
    wait_for(
        "the callback is counted",
        Duration::from_secs(10),
        || async { unknown(&dispatcher.metrics().await) == Some(1.0) },
    )
    .await;
    // Settled once: not retried, not dead-lettered, nothing left queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(unknown(&dispatcher.metrics().await), Some(1.0));
    let refused = [
        ("http_route", "/dispatch"),
        ("http_response_status_code", "404"),
    ];
    assert_eq!(
        metric_value(
            &public_web.metrics().await,
            "http_server_request_duration_seconds_count",
            &refused
        ),
        Some(1.0),
        "one callback attempt, answered 404"
    );
    assert_eq!(Topology::depth(&topology.response_queue).await, 0);
    let dead = dead_letter_queue(&topology.response_queue);
    assert_eq!(Topology::depth(&dead).await, 0);
    let logs = dispatcher.drain_stdout();
    assert!(
        logs.iter()
            .any(|line| line.contains("public-web is not waiting for this response")),
        "the dispatcher logs it: {logs:?}"
    );

    let (status, body) = post_json(&client, &public_web.url(), &ping_body()).await;
    assert_eq!(status, 200, "the restarted public-web serves: {body}");
}

#[tokio::test]
async fn a_response_delivered_twice_answers_once_and_the_duplicate_is_a_harmless_404() {
    let topology = Topology::new();
    // No listener: the test plays it, answering the same request twice.
    let (dispatcher, public_web) = spawn_front_processes(&topology, &[]).await;
    let id = format!("twice-{}", uuid::Uuid::new_v4());
    let request = tokio::spawn({
        let (url, id) = (public_web.url(), id.clone());
        async move {
            let body = json!({"id": id, "type": "PingRequest", "data": {"sentAt": 1}});
            post_json(&reqwest::Client::new(), &url, &body).await
        }
    });
    wait_for("the request is queued", Duration::from_secs(10), || async {
        Topology::depth(&topology.request_queue).await == 1
    })
    .await;

    // The request as the dispatcher queued it: where and under which
    // correlation id its answer goes.
    let connection = connect().await;
    let channel = amqp::publish::confirm_channel(&connection).await.unwrap();
    let queued = channel
        .basic_get(
            topology.request_queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the request is queued");
    let correlation = queued.properties.correlation_id().clone().unwrap();
    let callback = amqp::message::header(&queued.properties, CALLBACK_URL_HEADER)
        .unwrap()
        .to_owned();
    // A field the envelope does not know: public-web hands the body on as
    // received, so it reaches the client.
    let response = json!({
        "id": id,
        "type": "PingResponse",
        "data": {"sentAt": 1, "receivedAt": 2},
        "handledBy": "this test"
    });
    for _ in 0..2 {
        let mut headers = FieldTable::default();
        amqp::message::set_header(&mut headers, CALLBACK_URL_HEADER, &callback);
        let properties = amqp::message::event_properties(&id, "PingResponse")
            .with_correlation_id(correlation.clone())
            .with_headers(headers);
        channel
            .basic_publish(
                "".into(),
                topology.response_queue.as_str().into(),
                BasicPublishOptions::default(),
                response.to_string().as_bytes(),
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let (status, body) = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the client is answered")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, response, "the client gets the response as sent, once");
    let unknown = [("reason", "unknown_id")];
    wait_for(
        "the duplicate is counted",
        Duration::from_secs(10),
        || async {
            metric_value(
                &dispatcher.metrics().await,
                "dispatcher_callback_failures_total",
                &unknown,
            ) == Some(1.0)
        },
    )
    .await;
    let metrics = public_web.metrics().await;
    for (status, count) in [("204", 1.0), ("404", 1.0)] {
        let labels = [
            ("http_route", "/dispatch"),
            ("http_response_status_code", status),
        ];
        assert_eq!(
            metric_value(
                &metrics,
                "http_server_request_duration_seconds_count",
                &labels
            ),
            Some(count),
            "/dispatch answered {status} once"
        );
    }
    assert_eq!(
        metric_value(&metrics, "public_web_pending_requests", &[]),
        Some(0.0)
    );
    assert_eq!(Topology::depth(&topology.response_queue).await, 0);
    let dead = dead_letter_queue(&topology.response_queue);
    assert_eq!(Topology::depth(&dead).await, 0, "acked, not dead-lettered");
    assert!(is_ready(&reqwest::Client::new(), &public_web.url()).await);
    amqp::connection::close(&connection).await;
}

#[tokio::test]
async fn a_broker_that_accepts_but_never_speaks_does_not_hang_the_supervisor() {
    let topology = Topology::new();
    // The first connection is accepted and never answered; later ones are
    // forwarded to the real broker.
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let silent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = tokio::spawn({
        let (accepted, silent) = (accepted.clone(), silent.clone());
        async move {
            while let Ok((mut inbound, _)) = front.accept().await {
                if accepted.fetch_add(1, Ordering::SeqCst) == 0 {
                    silent.lock().unwrap().push(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(broker_addr()).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        }
    });

    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let started = Instant::now();
    let listener = spawn_listener(listener_config(&topology, &url), ping_listener::handle).await;
    wait_ready(&listener.url()).await;
    let waited = started.elapsed();

    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "it gave up on the silent peer"
    );
    assert_eq!(
        silent.lock().unwrap().len(),
        1,
        "the silent peer never hung up"
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    listener.stop().await;
    server.abort();
}
