//! The core round trip through all three services and the real broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use integration_tests::*;
use serde_json::json;

#[tokio::test]
async fn a_ping_makes_the_round_trip() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let client = reqwest::Client::new();

    let sent_at = ping_listener::now_millis();
    let (status, body) = post_json(
        &client,
        &stack.public_web.url(),
        &json!({"type": "PingRequest", "data": {"sentAt": sent_at}}),
    )
    .await;

    assert_eq!(status, 200, "{body}");
    let response = as_event(body);
    assert_eq!(response.kind, "PingResponse");
    assert!(uuid::Uuid::parse_str(&response.id).is_ok());
    assert_eq!(response.data["sentAt"], json!(sent_at));
    let received_at = response.data["receivedAt"].as_u64().expect("receivedAt");
    assert!(received_at >= sent_at);
    assert!(stack.pending.is_empty());
}

#[tokio::test]
async fn two_public_web_instances_each_get_their_own_answers() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let (second, second_pending) =
        spawn_public_web(public_web_config(&stack.dispatcher.url())).await;
    let client = reqwest::Client::new();

    let mut requests = Vec::new();
    for i in 0..40 {
        let target = if i % 2 == 0 {
            stack.public_web.url()
        } else {
            second.url()
        };
        let client = client.clone();
        requests.push(tokio::spawn(async move {
            let id = format!("req-{i}-{}", uuid::Uuid::new_v4());
            let (status, body) = post_json(
                &client,
                &target,
                &json!({"id": id, "type": "PingRequest", "data": {"sentAt": i}}),
            )
            .await;
            (id, i, status, body)
        }));
    }
    for request in requests {
        let (id, i, status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let response = as_event(body);
        assert_eq!(response.id, id);
        assert_eq!(response.data["sentAt"], json!(i));
    }
    assert!(stack.pending.is_empty());
    assert!(second_pending.is_empty());
}

#[tokio::test]
async fn two_listeners_share_the_queue() {
    let topology = Topology::new();
    let url = amqp_url();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &url)).await;
    let counts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut listeners = Vec::new();
    for count in &counts {
        let mut config = listener_config(&topology, &url);
        config.consumer.prefetch = 1;
        let listener = spawn_listener(config, counting_ping_handler(count.clone())).await;
        wait_ready(&listener.url()).await;
        listeners.push(listener);
    }
    let (public_web, _pending) = spawn_public_web(public_web_config(&dispatcher.url())).await;
    wait_ready(&dispatcher.url()).await;
    let client = reqwest::Client::new();

    let requests: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            let url = public_web.url();
            tokio::spawn(async move { post_json(&client, &url, &ping_body()).await.0 })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }

    let (first, second) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    );
    assert_eq!(first + second, 40);
    assert!(
        first > 0 && second > 0,
        "both listeners answer: {first} / {second}"
    );
}

#[tokio::test]
async fn a_request_nobody_answers_times_out_with_504_and_leaves_no_entry() {
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &amqp_url())).await;
    let mut config = public_web_config(&dispatcher.url());
    config.request_timeout = Duration::from_millis(500);
    let (public_web, pending) = spawn_public_web(config).await;
    wait_ready(&dispatcher.url()).await;

    let started = std::time::Instant::now();
    let (status, body) = post_json(&reqwest::Client::new(), &public_web.url(), &ping_body()).await;
    let waited = started.elapsed();

    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert!(pending.is_empty());
}

#[tokio::test]
async fn a_client_that_hangs_up_leaves_no_entry() {
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &amqp_url())).await;
    let (public_web, pending) = spawn_public_web(public_web_config(&dispatcher.url())).await;
    wait_ready(&dispatcher.url()).await;

    let url = public_web.url();
    let request =
        tokio::spawn(async move { post_json(&reqwest::Client::new(), &url, &ping_body()).await });
    wait_until(|| pending.len() == 1).await;
    request.abort();
    wait_until(|| pending.is_empty()).await;
}

#[tokio::test]
async fn parked_requests_are_capped_with_503_and_retry_after() {
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &amqp_url())).await;
    let mut config = public_web_config(&dispatcher.url());
    config.max_pending = 1;
    config.request_timeout = Duration::from_secs(3);
    let (public_web, pending) = spawn_public_web(config).await;
    wait_ready(&dispatcher.url()).await;

    let url = public_web.url();
    let first =
        tokio::spawn(async move { post_json(&reqwest::Client::new(), &url, &ping_body()).await });
    wait_until(|| pending.len() == 1).await;

    let response = reqwest::Client::new()
        .post(public_web.url())
        .json(&ping_body())
        .send()
        .await
        .unwrap();
    assert_retry_later(response, "overloaded").await;
    assert_eq!(first.await.unwrap().0, 504);
}

#[tokio::test]
async fn an_unreachable_dispatcher_is_a_fast_502() {
    // Port 9 (discard) has no listener here: connections are refused.
    let (public_web, pending) = spawn_public_web(public_web_config("http://127.0.0.1:9")).await;
    let started = std::time::Instant::now();
    let (status, body) = post_json(&reqwest::Client::new(), &public_web.url(), &ping_body()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "dispatcher_unreachable");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(pending.is_empty());
}

#[tokio::test]
async fn public_web_answers_ping_locally() {
    let (public_web, _pending) = spawn_public_web(public_web_config("http://127.0.0.1:9")).await;
    let (status, body) = post_json(
        &reqwest::Client::new(),
        &format!("{}/ping", public_web.url()),
        &json!({"type": "PingRequest", "data": {"sentAt": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "PingResponse");
    assert_eq!(body["data"]["sentAt"], 1);
    assert!(body["data"]["receivedAt"].as_u64().unwrap() > 1);
}

#[tokio::test]
async fn an_unrouted_event_type_is_422_naming_the_type() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let (status, body) = post_json(
        &reqwest::Client::new(),
        &stack.public_web.url(),
        &json!({"type": "NoSuchRequest", "data": {}}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "unknown_event_type");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NoSuchRequest")
    );
    assert!(stack.pending.is_empty());
}

#[tokio::test]
async fn services_shut_down_cleanly() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let (status, _) = post_json(
        &reqwest::Client::new(),
        &stack.public_web.url(),
        &ping_body(),
    )
    .await;
    assert_eq!(status, 200);
    stack.public_web.stop().await;
    stack.listener.stop().await;
    stack.dispatcher.stop().await;
}

/// Polls `condition` every 10 ms for up to 5 s.
async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn public_web_speaks_h2c_so_many_requests_can_share_a_connection() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let requests: Vec<_> = (0..20)
        .map(|_| {
            client
                .post(stack.public_web.url())
                .json(&ping_body())
                .send()
        })
        .collect();
    for response in futures_util::future::join_all(requests).await {
        let response = response.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
    }
    assert!(stack.pending.is_empty());
}

#[tokio::test]
async fn a_route_nobody_consumes_is_a_fast_503_after_the_grace() {
    let topology = Topology::new();
    // PingRequest's queue has no listener at all.
    let mut config = dispatcher_config(&topology, &amqp_url());
    config.no_listener_grace = Duration::from_secs(1);
    let dispatcher = spawn_dispatcher(config).await;
    let mut config = public_web_config(&dispatcher.url());
    config.request_timeout = Duration::from_secs(10);
    let (public_web, pending) = spawn_public_web(config).await;
    wait_ready(&dispatcher.url()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .post(public_web.url())
        .json(&ping_body())
        .send()
        .await
        .unwrap();
    assert_retry_later(response, "no_listener").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not after the timeout: {:?}",
        started.elapsed()
    );
    assert!(pending.is_empty());

    // A listener that starts is found within a poll: requests flow again.
    let _listener = spawn_listener(
        listener_config(&topology, &amqp_url()),
        ping_listener::handle,
    )
    .await;
    wait_for("the listener is seen", Duration::from_secs(5), || async {
        post_json(&reqwest::Client::new(), &public_web.url(), &ping_body())
            .await
            .0
            == 200
    })
    .await;
}
