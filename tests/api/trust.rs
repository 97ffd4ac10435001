//! Trust boundaries: whoever can reach a port cannot answer, read or stall
//! someone else's request. Each test replays an attack on the internal
//! hops and checks it now fails: a forged or replayed callback, an
//! unsigned request to the dispatcher, an id probe, a callback URL outside
//! the allow-list, a slow callback target.

use std::time::Duration;

use common::http::InternalAuth;
use common::wire::signature::Signed;
use common::wire::{CALLBACK_URL_HEADER, Hop, InternalSecret};
use integration_tests::*;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// POSTs `body` to `url` with `headers`; the status and the JSON body.
async fn post_raw(url: &str, headers: reqwest::header::HeaderMap, body: &[u8]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .headers(headers)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn auth_with(secret: &str) -> InternalAuth {
    InternalAuth::new(
        Some(InternalSecret::new(secret)),
        InternalAuth::DEFAULT_TOLERANCE,
    )
}

#[tokio::test]
async fn forged_or_replayed_callbacks_complete_nothing() {
    let (public_web, internal, pending) =
        spawn_public_web_with_internal(public_web_config("http://127.0.0.1:9")).await;
    let dispatch_url = format!("{internal}/dispatch");
    let parked = pending.park("order-777").unwrap();
    let correlation = parked.correlation().to_owned();
    let body = br#"{"id":"order-777","type":"OrderResponse","data":{"status":"paid"}}"#;

    // The public port does not serve /dispatch at all.
    let (status, _) = post_raw(
        &format!("{}/dispatch", public_web.url()),
        test_auth().headers(Hop::Callback, &correlation, None, body),
        body,
    )
    .await;
    assert_eq!(status, 404);

    let stale = {
        let mut headers = test_auth().headers(Hop::Callback, &correlation, None, body);
        let old = common::wire::signature::unix_millis() - 120_000;
        let old = old.to_string();
        let signed = Signed {
            timestamp: &old,
            nonce: "n0",
            correlation: &correlation,
            callback_url: "",
        };
        let signature = InternalSecret::new(TEST_SECRET).sign(Hop::Callback, &signed, body);
        headers.insert("x-signature-timestamp", old.parse().unwrap());
        headers.insert("x-signature-nonce", "n0".parse().unwrap());
        headers.insert("x-signature", signature.parse().unwrap());
        headers
    };
    let mut unsigned = reqwest::header::HeaderMap::new();
    unsigned.insert("x-correlation-id", correlation.parse().unwrap());
    for (case, headers) in [
        ("unsigned", unsigned),
        (
            "another secret",
            auth_with("not-the-shared-secret").headers(Hop::Callback, &correlation, None, body),
        ),
        (
            "a submit's signature",
            test_auth().headers(Hop::Submit, &correlation, None, body),
        ),
        ("signed two minutes ago", stale),
    ] {
        let (status, error) = post_raw(&dispatch_url, headers, body).await;
        assert_eq!(status, 401, "{case}: {error}");
        assert_eq!(error["error"]["code"], "unauthenticated", "{case}");
        assert_eq!(pending.len(), 1, "{case} completes nothing");
    }

    // A valid signature for another request's body, or the right request
    // with another event id, completes nothing either.
    let other = br#"{"id":"order-778","type":"OrderResponse","data":{}}"#;
    let (status, error) = post_raw(
        &dispatch_url,
        test_auth().headers(Hop::Callback, &correlation, None, other),
        other,
    )
    .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "id_mismatch");
    assert_eq!(pending.len(), 1);

    let signed = test_auth().headers(Hop::Callback, &correlation, None, body);
    let (status, _) = post_raw(&dispatch_url, signed.clone(), body).await;
    assert_eq!(status, 204);
    assert!(pending.is_empty());
    drop(parked);
    // The same signed callback again is refused as a replay; signed anew
    // for the same correlation id, it finds nobody waiting; and another
    // request parked under the same client id has its own correlation id.
    let (status, error) = post_raw(&dispatch_url, signed, body).await;
    assert_eq!(status, 401, "{error}");
    // Signed anew: a later timestamp, another signature.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = test_auth().headers(Hop::Callback, &correlation, None, body);
    let (status, error) = post_raw(&dispatch_url, again, body).await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["code"], "unknown_id");
    let second = pending.park("order-777").unwrap();
    assert_ne!(second.correlation(), correlation);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let stale_id = test_auth().headers(Hop::Callback, &correlation, None, body);
    let (status, _) = post_raw(&dispatch_url, stale_id, body).await;
    assert_eq!(status, 404);
    assert_eq!(pending.len(), 1, "the second request still waits");
}

#[tokio::test]
async fn the_dispatcher_takes_only_signed_requests_once() {
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &amqp_url())).await;
    wait_ready(&dispatcher.url()).await;
    let body = br#"{"id":"order-777","type":"PingRequest","data":{"status":"paid"}}"#;
    let ours = "http://127.0.0.1:3000/dispatch";
    let mut unsigned = reqwest::header::HeaderMap::new();
    unsigned.insert(CALLBACK_URL_HEADER, ours.parse().unwrap());
    let swapped = {
        let mut headers = test_auth().headers(Hop::Submit, "c0ffee", Some(ours), body);
        headers.insert(
            CALLBACK_URL_HEADER,
            "http://127.0.0.1:4000/dispatch".parse().unwrap(),
        );
        headers
    };
    for (case, headers) in [
        ("unsigned", unsigned),
        (
            "another secret",
            auth_with("not-the-shared-secret").headers(Hop::Submit, "c0ffee", Some(ours), body),
        ),
        (
            "a callback's signature",
            test_auth().headers(Hop::Callback, "c0ffee", Some(ours), body),
        ),
        ("another callback URL than signed", swapped),
    ] {
        let (status, error) = post_raw(&dispatcher.url(), headers, body).await;
        assert_eq!(status, 401, "{case}: {error}");
        assert_eq!(error["error"]["code"], "unauthenticated");
    }
    assert_eq!(
        Topology::depth(&topology.request_queue).await,
        0,
        "nothing refused was published"
    );

    let signed = test_auth().headers(Hop::Submit, "c0ffee", Some(ours), body);
    let (status, answer) = post_raw(&dispatcher.url(), signed.clone(), body).await;
    assert_eq!(status, 201, "{answer}");
    // The same signed request again, well within the tolerance: refused.
    let (status, error) = post_raw(&dispatcher.url(), signed, body).await;
    assert_eq!(status, 401, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("received before"),
        "{error}"
    );
    assert_eq!(
        Topology::wait_for_depth(&topology.request_queue, 1).await,
        1
    );
}

#[tokio::test]
async fn callbacks_go_only_where_the_allow_list_says() {
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &amqp_url())).await;
    wait_ready(&dispatcher.url()).await;
    let body = br#"{"id":"a","type":"PingRequest","data":{}}"#;
    for (callback, refusal) in [
        ("http://10.0.0.1:3000/dispatch", "is not in the allow-list"),
        ("http://169.254.169.254/latest", "is not in the allow-list"),
        ("http://user:pw@127.0.0.1:3000/dispatch", "credentials"),
        ("ftp://127.0.0.1/dispatch", "only http and https"),
    ] {
        let headers = test_auth().headers(Hop::Submit, "c0ffee", Some(callback), body);
        let (status, error) = post_raw(&dispatcher.url(), headers, body).await;
        assert_eq!(status, 400, "{callback}: {error}");
        assert_eq!(error["error"]["code"], "invalid_callback");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(refusal), "{callback}: {message}");
        assert!(!message.contains("pw"), "{message}");
    }
    assert_eq!(Topology::depth(&topology.request_queue).await, 0);
}

#[tokio::test]
async fn an_id_in_flight_cannot_be_probed_or_answered_by_another_client() {
    let topology = Topology::new();
    let (dispatcher, _listener) = spawn_pings_and_unanswered_orders(&topology).await;
    let mut config = public_web_config(&dispatcher.url());
    config.request_timeout = Duration::from_secs(3);
    let (public_web, pending) = spawn_public_web(config).await;
    let client = reqwest::Client::new();

    // The victim's order waits: nobody consumes its queue.
    let victim = tokio::spawn({
        let (client, url) = (client.clone(), public_web.url());
        async move {
            let order =
                json!({"id": "order-42", "type": "OrderRequest", "data": {"orderId": "A-1"}});
            post_json(&client, &url, &order).await
        }
    });
    wait_for("the order is parked", Duration::from_secs(5), || async {
        pending.len() == 1
    })
    .await;

    // Probing with an unroutable type answers the same for a waiting id
    // and an unknown one.
    let probe = |id: &str| json!({"id": id, "type": "Nope", "data": {}});
    let waiting = post_json(&client, &public_web.url(), &probe("order-42")).await;
    let unknown = post_json(&client, &public_web.url(), &probe("order-43")).await;
    assert_eq!(waiting.0, 422);
    assert_eq!(waiting.0, unknown.0);
    assert_eq!(waiting.1["error"]["code"], unknown.1["error"]["code"]);

    // The same id with a routable type is the attacker's own request: it
    // gets its own answer and leaves the victim's waiting.
    let attack = json!({"id": "order-42", "type": "PingRequest", "data": {"sentAt": 1}});
    let (status, answer) = post_json(&client, &public_web.url(), &attack).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "PingResponse");
    assert_eq!(pending.len(), 1, "the victim still waits");
    let (status, body) = victim.await.unwrap();
    assert_eq!(
        status, 504,
        "the victim never got the attacker's data: {body}"
    );
}

#[tokio::test]
async fn a_hung_callback_target_stalls_no_one_else() {
    let topology = Topology::new();
    let url = amqp_url();
    let mut config = dispatcher_config(&topology, &url);
    config.callbacks.timeout = Duration::from_secs(2);
    let dispatcher = spawn_dispatcher(config).await;
    let _listener = spawn_listener(listener_config(&topology, &url), ping_listener::handle).await;
    let (public_web, _pending) = spawn_public_web(public_web_config(&dispatcher.url())).await;
    wait_ready(&dispatcher.url()).await;

    // A target inside the allow-list that accepts and never answers.
    let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}/dispatch", trap.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = trap.accept().await {
            connections.push(stream);
        }
    });
    let client = reqwest::Client::new();
    // More than the target's share and backlog. Alone when they arrive,
    // they wait for a turn rather than be shed (targets.rs tests the
    // shedding beside another target); the timeouts mark it down.
    for n in 0..600 {
        let body = format!(r#"{{"id":"trap-{n}","type":"PingRequest","data":{{"sentAt":1}}}}"#);
        let correlation = format!("trap{n}");
        let headers =
            test_auth().headers(Hop::Submit, &correlation, Some(&trap_url), body.as_bytes());
        let (status, error) = post_raw(&dispatcher.url(), headers, body.as_bytes()).await;
        assert_eq!(status, 201, "{error}");
    }

    // Meanwhile every client of public-web is answered, and fast.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(6) {
        let sent = Instant::now();
        let (status, body) = post_json(&client, &public_web.url(), &ping_body()).await;
        slowest = slowest.max(sent.elapsed());
        assert_eq!(status, 200, "{body}");
    }
    eprintln!("hung callback target: slowest ping {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a ping waited {slowest:?} behind the hung target"
    );
    let metrics = reqwest::get(format!("{}/metrics", dispatcher.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures = |reason| {
        processes::metric_value(
            &metrics,
            "dispatcher_callback_failures_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        failures("target_down") > 0.0,
        "the hung target was marked down"
    );
    held.abort();
}

#[tokio::test]
async fn a_service_without_the_secret_does_not_start() {
    for name in ["public-web", "dispatcher"] {
        let run = tokio::process::Command::new(processes::binary(name))
            .env_clear()
            .env("PORT", processes::free_port().to_string())
            .env("AMQP_URL", amqp_url())
            .output();
        let output = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("it exits at once")
            .unwrap();
        assert!(!output.status.success(), "{name} refused to start");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            said.contains("CALLBACK_SECRET") && said.contains("INSECURE_DEV_MODE"),
            "{name} says what is missing and how to go on: {said}"
        );
    }
}

#[tokio::test]
async fn services_with_different_secrets_answer_a_clear_502_and_publish_nothing() {
    let topology = Topology::new();
    let mut config = dispatcher_config(&topology, &amqp_url());
    config.auth = auth_with("not-the-same-secret!");
    let dispatcher = spawn_dispatcher(config).await;
    let (public_web, pending) = spawn_public_web(public_web_config(&dispatcher.url())).await;
    wait_ready(&dispatcher.url()).await;

    let (status, body) = post_json(&reqwest::Client::new(), &public_web.url(), &ping_body()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "dispatcher_error");
    assert!(pending.is_empty());
    assert_eq!(Topology::depth(&topology.request_queue).await, 0);
}

#[tokio::test]
async fn oversized_responses_are_dead_lettered_with_memory_bounded() {
    const SIZE: usize = 40 * 1024 * 1024;
    const COUNT: usize = 8;
    let topology = Topology::new();
    let (dispatcher, public_web) = processes::spawn_front_processes(&topology, &[]).await;
    let baseline = dispatcher.rss_kib();

    // A rogue listener answers with responses far over MAX_MESSAGE_BYTES.
    let connection = connect().await;
    let channel = common::amqp::publish::confirm_channel(&connection)
        .await
        .unwrap();
    let body = vec![b' '; SIZE];
    for n in 0..COUNT {
        let properties = common::amqp::message::event_properties(&format!("big-{n}"), "X")
            .with_correlation_id("c0ffee".into());
        channel
            .basic_publish(
                "".into(),
                topology.response_queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    common::amqp::connection::close(&connection).await;
    let oversized = |metrics: &str| {
        processes::metric_value(
            metrics,
            "amqp_messages_dead_lettered_total",
            &[("queue", &topology.response_queue), ("reason", "oversized")],
        )
    };
    wait_for(
        "every one is dead-lettered",
        Duration::from_secs(30),
        || async { oversized(&dispatcher.metrics().await) == Some(COUNT as f64) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = dispatcher.rss_kib();
    eprintln!("dispatcher RSS: {baseline} KiB before, {after} KiB after {COUNT} x {SIZE} B");
    // lapin buffers a message whole before a consumer sees it, a few at
    // a time; what is left is the allocator keeping freed blocks for
    // reuse, not a growth with each message (RELIABILITY.md).
    assert!(
        after < baseline + 3 * (SIZE as u64) / 1024,
        "the dispatcher holds a few messages' worth more, not {COUNT}: {baseline} -> {after} KiB"
    );
    // The dead-letter queue holds at most DEAD_LETTER_MAX_BYTES of them.
    let dead = common::wire::dead_letter_queue(&topology.response_queue);
    assert!(Topology::depth(&dead).await <= 1, "capped by bytes");
    drop(public_web);
}

#[tokio::test]
async fn a_forged_log_line_stays_inside_its_field() {
    let topology = Topology::new();
    // Nobody answers: public-web logs the request's id when it times out.
    let (_dispatcher, mut public_web) = processes::spawn_front_processes(
        &topology,
        &processes::env(&[("REQUEST_TIMEOUT_MS", "300")]),
    )
    .await;
    let forged = "x\n2026-12-02T00:00:00Z  INFO public_web: FAKE admin login ok\u{1b}[2J";
    let event = json!({"id": forged, "type": "PingRequest", "data": {}});
    let (status, _) = post_json(&reqwest::Client::new(), &public_web.url(), &event).await;
    assert_eq!(status, 504);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = public_web.drain_stdout();
    let logged = lines
        .iter()
        .find(|line| line.contains("no response in time"))
        .unwrap_or_else(|| panic!("the timeout is logged: {lines:?}"));
    assert!(logged.contains(r"x\n2026-12-02T00:00:00Z"), "{logged}");
    assert!(
        !lines
            .iter()
            .any(|line| line.starts_with("2026-12-02T00:00:00Z")),
        "no forged line: {lines:?}"
    );
    assert!(
        !lines.iter().any(|line| line.contains('\u{1b}')),
        "{lines:?}"
    );
}
