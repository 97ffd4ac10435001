//! The event stream and live subscriptions, end to end: the dispatcher's
//! records, WebSocket request/reply and subscriptions, SSE with resume,
//! token claims, slow readers and several public-web replicas.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use integration_tests::live::{
    SseClient, WsClient, hs256_token, read_stream, run_python_check, unix_in,
};
use integration_tests::otlp::{CLIENT, CONSUMER, Receiver, SERVER, only_span};
use integration_tests::processes::ProcessStack;
use integration_tests::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The stack on `topology` with public-web configured by `configure`.
async fn stack_with(
    topology: &Topology,
    configure: impl FnOnce(&mut public_web::config::Config),
) -> (Running, Running, Running) {
    let url = amqp_url();
    let dispatcher = spawn_dispatcher(dispatcher_config(topology, &url)).await;
    let listener = spawn_listener(listener_config(topology, &url), ping_listener::handle).await;
    let mut config = public_web_config_on(topology, &dispatcher.url());
    configure(&mut config);
    let (public_web, _) = spawn_public_web(config).await;
    wait_ready(&dispatcher.url()).await;
    wait_ready(&listener.url()).await;
    (dispatcher, listener, public_web)
}

/// The stack with subscriptions needing a token signed with
/// [`TEST_TOKEN_KEY`].
async fn stack_requiring_tokens(topology: &Topology) -> (Running, Running, Running) {
    stack_with(topology, |config| {
        config.live.verifier = test_verifier(false)
    })
    .await
}

fn ping(id: &str, data: Value) -> Value {
    json!({"id": id, "type": "PingRequest", "data": data})
}

#[tokio::test]
async fn the_stream_holds_each_request_and_response_in_order() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let client = reqwest::Client::new();
    let (status, _) = post_json(
        &client,
        &stack.public_web.url(),
        &ping("p-1", json!({"n": 1})),
    )
    .await;
    assert_eq!(status, 200);

    let records = read_stream(&topology.stream, 2).await;
    let (request, response) = (&records[0], &records[1]);
    assert!(request.offset < response.offset);
    assert_eq!(request.event["type"], "PingRequest");
    assert_eq!(request.event["id"], "p-1");
    assert_eq!(request.header("x-direction"), Some("request"));
    assert_eq!(request.header("x-source"), Some("public-web"));
    assert_eq!(response.event["type"], "PingResponse");
    assert_eq!(response.event["id"], "p-1");
    assert_eq!(response.header("x-direction"), Some("response"));
    assert_eq!(response.header("x-source"), Some(TEST_LISTENER));
    for record in &records {
        // What only the platform may know does not reach subscribers.
        assert_eq!(record.header("x-callback-url"), None, "{record:?}");
        assert_eq!(
            record.header("x-stream-filter-value"),
            record.event["type"].as_str()
        );
    }
}

#[tokio::test]
async fn websocket_requests_are_answered_like_post() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let mut socket = WsClient::connect(&stack.public_web.url(), None).await;

    socket.send_json(&ping("w-1", json!({"sentAt": 5}))).await;
    let answer = socket.next_json().await;
    assert_eq!(answer["type"], "PingResponse");
    assert_eq!(answer["id"], "w-1");
    assert_eq!(answer["data"]["sentAt"], 5);

    // Each class of bad frame gets its JSON error, and the socket goes on.
    socket.send_text("not json").await;
    let error = socket.next_json().await;
    assert_eq!(
        (error["status"].as_u64(), error["error"]["code"].as_str()),
        (Some(400), Some("malformed_json"))
    );
    socket.send_json(&json!({"id": "w-2", "data": {}})).await;
    let error = socket.next_json().await;
    assert_eq!(error["id"], "w-2");
    assert_eq!(
        (error["status"].as_u64(), error["error"]["code"].as_str()),
        (Some(422), Some("invalid_event"))
    );
    socket
        .send_json(&json!({"id": "w-3", "type": "NoSuchType"}))
        .await;
    let error = socket.next_json().await;
    assert_eq!(error["id"], "w-3");
    assert_eq!(error["status"], 422, "{error}");
    assert_eq!(error["error"]["code"], "unknown_event_type", "{error}");
    socket.send_message(Message::binary(vec![1, 2, 3])).await;
    let error = socket.next_json().await;
    assert_eq!(error["error"]["code"], "unsupported_frame");
    socket.send_json(&json!({"unsubscribe": "nope"})).await;
    let error = socket.next_json().await;
    assert_eq!(
        (error["subscription"].as_str(), error["status"].as_u64()),
        (Some("nope"), Some(404))
    );
    socket
        .send_json(&json!({"subscribe": {"id": "s", "filters": [{"exact": {"colour": "red"}}]}}))
        .await;
    let error = socket.next_json().await;
    assert_eq!(
        (error["subscription"].as_str(), error["status"].as_u64()),
        (Some("s"), Some(422))
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{error}"
    );
    socket
        .send_json(&json!({"subscribe": {"id": "s", "from": -1}}))
        .await;
    assert_eq!(socket.next_json().await["status"], 422);

    socket.send_json(&ping("w-4", json!({}))).await;
    assert_eq!(socket.next_json().await["id"], "w-4");

    // A frame over the limit closes the socket with 1009.
    socket.send_text(&"x".repeat(70 * 1024)).await;
    match socket.next_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    assert!(stack.pending.is_empty());
}

#[tokio::test]
async fn a_websocket_upgrade_needs_a_websocket_request_and_an_allowed_origin() {
    let topology = Topology::new();
    let (_dispatcher, _listener, public_web) = stack_with(&topology, |config| {
        config.ws.allowed_origins = Some(vec!["https://console.example".into()]);
    })
    .await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/ws", public_web.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "websocket_upgrade_required");

    let refused = client
        .get(format!("{}/ws", public_web.url()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_not_allowed");
    // A present but forged token is refused at the upgrade.
    let refused = WsClient::try_connect(&public_web.url(), Some("not.a.token"))
        .await
        .err();
    assert_eq!(refused.map(|(status, _)| status), Some(401));
}

/// As processes: ten thousand forwards in flight at once open as many
/// connections between public-web and the dispatcher, more than one
/// process's descriptors allow for both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_with_ten_requests_each_get_their_own_answers() {
    let _turn = MACHINE_SATURATING.lock().await;
    common::http::raise_fd_limit();
    let topology = Topology::new();
    // A debug build on two cores shared with the other tests takes longer
    // than the default timeouts to answer ten thousand requests queued at
    // once: every hop gets a minute.
    let env = processes::env(&[
        ("AMQP_URL", &amqp_url()),
        ("REQUEST_TIMEOUT_MS", "60000"),
        ("DISPATCHER_TIMEOUT_MS", "60000"),
        ("PUBLISH_TIMEOUT_MS", "60000"),
        ("MESSAGE_TTL_MS", "60000"),
        ("CALLBACK_TIMEOUT_MS", "60000"),
    ]);
    let stack = processes::ProcessStack::start(&topology, &env).await;
    let base = stack.public_web.url();
    let mut sockets = Vec::new();
    for s in 0..1000 {
        let base = base.clone();
        sockets.push(tokio::spawn(async move {
            let mut socket = WsClient::connect(&base, None).await;
            let ids: HashSet<String> = (0..10).map(|r| format!("s{s}-r{r}")).collect();
            for id in &ids {
                socket.send_json(&ping(id, json!({"socket": s}))).await;
            }
            let mut answered = HashSet::new();
            while answered.len() < ids.len() {
                let answer = socket.next_json_within(Duration::from_secs(60)).await;
                assert_eq!(answer["type"], "PingResponse", "{answer}");
                assert_eq!(
                    answer["data"]["socket"], s,
                    "another socket's answer: {answer}"
                );
                let id = answer["id"].as_str().unwrap().to_owned();
                assert!(ids.contains(&id) && answered.insert(id), "{answer}");
            }
        }));
    }
    let started = std::time::Instant::now();
    for socket in sockets {
        socket.await.expect("every socket gets its ten answers");
    }
    eprintln!(
        "10,000 WebSocket requests answered in {:?}",
        started.elapsed()
    );
    let metrics = stack.public_web.metrics().await;
    assert_eq!(
        processes::metric_value(&metrics, "public_web_pending_requests", &[]),
        Some(0.0)
    );
    assert!(stack.terminate().await, "the services exit cleanly");
}

/// Subscriptions, one per dialect, and which of three events each sees.
#[tokio::test]
async fn every_filter_dialect_selects_what_it_says() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let mut socket = WsClient::connect(&stack.public_web.url(), None).await;
    let subscriptions = [
        ("exact", json!([{"exact": {"type": "PingResponse"}}])),
        ("prefix", json!([{"prefix": {"id": "acme-"}}])),
        ("suffix", json!([{"suffix": {"data.region": "-eu"}}])),
        (
            "all",
            json!([{"all": [{"exact": {"direction": "response"}}, {"exact": {"data.tenant": "acme"}}]}]),
        ),
        (
            "any",
            json!([{"any": [{"exact": {"data.tenant": "beta"}}, {"exact": {"source": TEST_LISTENER}}]}]),
        ),
        (
            "not",
            json!([{"not": {"exact": {"direction": "response"}}}]),
        ),
        (
            "data-number",
            json!([{"exact": {"data.n": "2"}}, {"exact": {"direction": "request"}}]),
        ),
    ];
    for (name, filters) in &subscriptions {
        let ack = socket.subscribe(name, filters.clone(), None).await;
        assert_eq!(ack, json!({"subscribed": name}));
    }
    let events = [
        ping(
            "acme-1",
            json!({"tenant": "acme", "region": "west-eu", "n": 1}),
        ),
        ping("beta-1", json!({"tenant": "beta", "region": "us", "n": 2})),
    ];
    for event in &events {
        socket.send_json(event).await;
    }
    // Each event makes a request and a response record; expected
    // (subscription → ids with direction).
    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("exact", vec!["acme-1/response", "beta-1/response"]),
        ("prefix", vec!["acme-1/request", "acme-1/response"]),
        ("suffix", vec!["acme-1/request", "acme-1/response"]),
        ("all", vec!["acme-1/response"]),
        (
            "any",
            vec!["acme-1/response", "beta-1/request", "beta-1/response"],
        ),
        ("not", vec!["acme-1/request", "beta-1/request"]),
        ("data-number", vec!["beta-1/request"]),
    ]);
    let total: usize = expected.values().map(Vec::len).sum::<usize>() + events.len();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last_offset: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..total {
        let frame = socket.next_json().await;
        let Some(name) = frame["subscription"].as_str() else {
            assert_eq!(frame["type"], "PingResponse", "{frame}");
            continue;
        };
        let event = &frame["event"];
        let offset = frame["offset"].as_u64().unwrap();
        assert!(
            last_offset
                .insert(name.to_owned(), offset)
                .is_none_or(|before| before < offset)
        );
        let direction = if event["type"] == "PingRequest" {
            "request"
        } else {
            "response"
        };
        seen.entry(name.to_owned())
            .or_default()
            .push(format!("{}/{direction}", event["id"].as_str().unwrap()));
    }
    for (name, ids) in &expected {
        let mut got = seen.remove(*name).unwrap_or_default();
        got.sort();
        let mut want: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "subscription {name}");
    }
    // Nothing more arrives.
    socket.send_json(&json!({"unsubscribe": "exact"})).await;
    assert_eq!(socket.next_json().await, json!({"unsubscribed": "exact"}));
}

#[tokio::test]
async fn a_tokens_claims_bound_what_it_may_subscribe_to() {
    let topology = Topology::new();
    let (_dispatcher, _listener, public_web) = stack_requiring_tokens(&topology).await;
    let base = public_web.url();
    let claims = json!({
        "sub": "tenant-acme",
        "exp": unix_in(3600),
        "event_types": ["Ping*"],
        "event_data": {"tenant": "acme"},
    });
    let token = hs256_token(TEST_TOKEN_KEY, &claims);
    let inside = json!([{"prefix": {"type": "PingRe"}}, {"exact": {"data.tenant": "acme"}}]);

    let mut socket = WsClient::connect(&base, Some(&token)).await;
    assert_eq!(
        socket.subscribe("ok", inside.clone(), None).await,
        json!({"subscribed": "ok"})
    );
    let refused = socket
        .subscribe("types", json!([{"exact": {"data.tenant": "acme"}}]), None)
        .await;
    assert_eq!(refused["status"], 403);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event_types"),
        "{refused}"
    );
    let refused = socket
        .subscribe(
            "tenant",
            json!([{"exact": {"type": "PingResponse"}}, {"exact": {"data.tenant": "beta"}}]),
            None,
        )
        .await;
    assert_eq!(refused["status"], 403);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event_data"),
        "{refused}"
    );

    // No token, an expired one, a forged one.
    let mut anonymous = WsClient::connect(&base, None).await;
    let refused = anonymous.subscribe("s", inside.clone(), None).await;
    assert_eq!(
        (
            refused["status"].as_u64(),
            refused["error"]["code"].as_str()
        ),
        (Some(401), Some("unauthorized"))
    );
    let expired = hs256_token(TEST_TOKEN_KEY, &json!({"exp": unix_in(-3600)}));
    let refused = WsClient::try_connect(&base, Some(&expired))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.0, 401);
    assert!(refused.1.contains("token_expired"), "{}", refused.1);
    let forged = hs256_token("another-key-of-at-least-32-bytes-long!!", &claims);
    assert_eq!(
        WsClient::try_connect(&base, Some(&forged))
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    let without_exp = hs256_token(TEST_TOKEN_KEY, &json!({"sub": "x"}));
    assert_eq!(
        WsClient::try_connect(&base, Some(&without_exp))
            .await
            .err()
            .unwrap()
            .0,
        401
    );

    // The same rules over SSE.
    let filter = format!("filter={}", urlencode(&inside.to_string()));
    assert!(
        SseClient::connect(&base, &filter, None, Some(&token))
            .await
            .is_ok()
    );
    let (status, body) = SseClient::connect(&base, &filter, None, None)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = SseClient::connect(&base, "type=OrderCreated", None, Some(&token))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, _) = SseClient::connect(&base, &filter, None, Some(&forged))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    let query = format!("{filter}&access_token={token}");
    assert!(SseClient::connect(&base, &query, None, None).await.is_ok());
}

#[tokio::test]
async fn sse_refuses_bad_filters_and_offsets_with_json_errors() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let base = stack.public_web.url();
    for (query, last_event_id, status, code) in [
        ("filter=not-json", None, 400, "malformed_filter"),
        ("filter=%7B%7D", None, 422, "invalid_filter"),
        (
            "filter=%5B%7B%22like%22%3A%7B%22type%22%3A%22x%22%7D%7D%5D",
            None,
            422,
            "invalid_filter",
        ),
    ] {
        let (got, body) = SseClient::connect(&base, query, last_event_id, None)
            .await
            .err()
            .unwrap();
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
    }
    let response = reqwest::Client::new()
        .get(format!("{base}/events"))
        .header("last-event-id", "seven")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_last_event_id");
    // And the service goes on.
    let (status, _) = post_json(&reqwest::Client::new(), &base, &ping("after", json!({}))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_without_gap_or_duplicate() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let base = stack.public_web.url();
    let client = reqwest::Client::new();
    let query = "type=PingResponse";

    let mut stream = SseClient::connect(&base, query, None, None).await.unwrap();
    post_json(&client, &base, &ping("before-0", json!({}))).await;
    let first = stream.next_event().await.expect("the first event");
    assert_eq!(first.data["id"], "before-0");
    drop(stream);

    // Missed while disconnected.
    for i in 0..20 {
        let (status, _) = post_json(&client, &base, &ping(&format!("missed-{i}"), json!({}))).await;
        assert_eq!(status, 200);
    }
    let mut resumed = SseClient::connect(&base, query, Some(first.id), None)
        .await
        .unwrap();
    for i in 20..25 {
        post_json(&client, &base, &ping(&format!("missed-{i}"), json!({}))).await;
    }
    let mut last = first.id;
    for i in 0..25 {
        let event = resumed.next_event().await.expect("every missed event");
        assert_eq!(
            event.data["id"],
            format!("missed-{i}"),
            "in order, once each"
        );
        assert_eq!(event.data["type"], "PingResponse");
        assert!(event.id > last);
        last = event.id;
    }
}

#[tokio::test]
async fn a_websocket_subscription_resumes_from_an_offset() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let base = stack.public_web.url();
    let client = reqwest::Client::new();
    for i in 0..5 {
        post_json(&client, &base, &ping(&format!("old-{i}"), json!({}))).await;
    }
    let records = read_stream(&topology.stream, 10).await;
    let third_response = records
        .iter()
        .filter(|r| r.event["type"] == "PingResponse")
        .nth(2)
        .unwrap()
        .offset;

    let mut socket = WsClient::connect(&base, None).await;
    let ack = socket
        .subscribe(
            "r",
            json!([{"exact": {"type": "PingResponse"}}]),
            Some(third_response),
        )
        .await;
    assert_eq!(ack, json!({"subscribed": "r"}));
    post_json(&client, &base, &ping("new-0", json!({}))).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let frame = socket.next_json().await;
        ids.push(frame["event"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, ["old-2", "old-3", "old-4", "new-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_read_is_cut_off_while_others_flow() {
    let topology = Topology::new();
    let (_dispatcher, _listener, public_web) = stack_with(&topology, |config| {
        config.live.send_queue = 256;
    })
    .await;
    let base = public_web.url();
    let mut stalled = WsClient::connect(&base, None).await;
    assert_eq!(
        stalled.subscribe("all", json!([]), None).await["subscribed"],
        "all"
    );
    let mut reader = WsClient::connect(&base, None).await;
    assert_eq!(
        reader.subscribe("all", json!([]), None).await["subscribed"],
        "all"
    );

    // Large events fill the stalled socket's TCP buffers, then its queue.
    let padding = "p".repeat(32 * 1024);
    let client = reqwest::Client::new();
    let count = 600;
    let reading = tokio::spawn(async move {
        let mut received = 0;
        while received < 2 * count {
            let frame = reader.next_json().await;
            assert!(
                frame["subscription"] == "all",
                "{}",
                &frame.to_string()[..100]
            );
            received += 1;
        }
        received
    });
    let sending = tokio::spawn({
        let base = base.clone();
        async move {
            let mut sends = Vec::new();
            for i in 0..count {
                let (client, base, padding) = (client.clone(), base.clone(), padding.clone());
                sends.push(tokio::spawn(async move {
                    let big = ping(&format!("big-{i}"), json!({"padding": padding}));
                    post_json(&client, &base, &big).await.0
                }));
                if sends.len() == 16 {
                    for send in sends.drain(..) {
                        assert_eq!(send.await.unwrap(), 200);
                    }
                }
            }
            for send in sends {
                assert_eq!(send.await.unwrap(), 200);
            }
        }
    });
    // Once cut off, the stalled one reads: its frames end with 1008.
    wait_for(
        "the stalled socket to be cut off",
        Duration::from_secs(60),
        || {
            let metrics = format!("{base}/metrics");
            async move {
                let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
                processes::metric_value(&text, "public_web_websockets_cut_off_total", &[])
                    .is_some_and(|cut_off| cut_off >= 1.0)
            }
        },
    )
    .await;
    let close = loop {
        match stalled.next_message().await {
            Some(Message::Text(_)) => continue,
            other => break other,
        }
    };
    match close {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected a 1008 close, got {other:?}"),
    }
    sending.await.unwrap();
    assert_eq!(
        reading.await.unwrap(),
        2 * count,
        "the reading subscriber got every event"
    );
}

#[tokio::test]
async fn two_replicas_each_serve_their_own_sockets() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;
    let (second, _) =
        spawn_public_web(public_web_config_on(&topology, &stack.dispatcher.url())).await;
    let mut first_socket = WsClient::connect(&stack.public_web.url(), None).await;
    let mut second_socket = WsClient::connect(&second.url(), None).await;
    let filters = json!([{"exact": {"type": "PingResponse"}}]);
    assert_eq!(
        first_socket.subscribe("a", filters.clone(), None).await["subscribed"],
        "a"
    );
    assert_eq!(
        second_socket.subscribe("b", filters, None).await["subscribed"],
        "b"
    );

    first_socket.send_json(&ping("via-first", json!({}))).await;
    second_socket
        .send_json(&ping("via-second", json!({})))
        .await;
    for (socket, own, name) in [
        (&mut first_socket, "via-first", "a"),
        (&mut second_socket, "via-second", "b"),
    ] {
        let mut answers = Vec::new();
        let mut events = Vec::new();
        while answers.is_empty() || events.len() < 2 {
            let frame = socket.next_json().await;
            if frame["subscription"] == name {
                events.push(frame["event"]["id"].as_str().unwrap().to_owned());
            } else {
                answers.push(frame["id"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(answers, [own], "a socket's answers are its own");
        events.sort();
        assert_eq!(
            events,
            ["via-first", "via-second"],
            "each replica delivers every event to its subscribers"
        );
    }
}

/// A WebSocket client nobody here wrote (`websockets` from PyPI): a
/// bearer token at the upgrade, a subscription and ten requests in flight
/// on one socket, a bad frame, ping/pong and a normal close.
#[tokio::test]
async fn a_third_party_websocket_client_gets_answers_and_events() {
    let topology = Topology::new();
    let (_dispatcher, _listener, public_web) = stack_requiring_tokens(&topology).await;
    let url = format!("{}/ws", public_web.url().replacen("http", "ws", 1));
    let token = hs256_token(
        TEST_TOKEN_KEY,
        &json!({"exp": unix_in(300), "event_types": ["PingResponse"]}),
    );
    let seen = run_python_check("ws_check.py", &[&url, &token, "10"]).await;

    assert_eq!(seen["subscribed"], json!({"subscribed": "pongs"}));
    for i in 0..10 {
        let id = format!("ws-check-{i}");
        let answer = &seen["answers"][&id];
        assert_eq!(answer["type"], "PingResponse", "{answer}");
        assert_eq!(answer["data"]["n"], id.as_str(), "its own answer");
        let event = &seen["events"][&id];
        assert_eq!(event["subscription"], "pongs");
        assert_eq!(event["event"], *answer, "the live event is the answer");
        assert!(event["offset"].is_u64());
    }
    assert_eq!(seen["bad_frame"]["status"], 400, "{}", seen["bad_frame"]);
    assert!(seen["bad_frame"]["error"]["code"].is_string());
    assert!(seen["pong_seconds"].as_f64().is_some());
    assert_eq!(seen["unsubscribed"], json!({"unsubscribed": "pongs"}));
    assert_eq!(seen["close_code"], 1000);
}

/// Runs the `req` binary against public-web at `base` with `args` and
/// `env`; returns (success, stdout, stderr).
async fn req(base: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = tokio::process::Command::new(processes::binary("req"))
        .args(args)
        .env("PUBLIC_WEB_URL", base)
        .env_remove("SUBSCRIBE_JWT_HS256_KEY")
        .env_remove("SUBSCRIBE_TOKEN")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("req finishes")
        .expect("req runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.success(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// `req --ws` sends its ping as a frame; `req --watch` prints the stream's
/// events with a token it mints from the key; `req --mint-token` makes
/// tokens public-web accepts, whose claims still bound what they watch.
#[tokio::test]
async fn req_pings_over_the_websocket_and_watches_the_stream() {
    let topology = Topology::new();
    let (_dispatcher, _listener, public_web) = stack_requiring_tokens(&topology).await;
    let base = public_web.url();

    let (ok, stdout, stderr) = req(&base, &["--ws"], &[]).await;
    assert!(ok, "{stdout}{stderr}");
    let json_end = stdout.find("\n}\n").expect("the answer, pretty") + 2;
    let answer: Value = serde_json::from_str(&stdout[..json_end]).unwrap();
    assert_eq!(answer["type"], "PingResponse");
    assert!(stdout.contains("round trip: "), "{stdout}");
    let trace_line = stdout
        .lines()
        .find(|l| l.starts_with("trace id: "))
        .unwrap();
    assert_eq!(trace_line.len(), "trace id: ".len() + 32, "{trace_line}");

    let (ok, _, stderr) = req(&base, &["--ws", "--type", "Unrouted"], &[]).await;
    assert!(!ok, "an error answer fails the run");
    assert!(stderr.contains("HTTP "), "{stderr}");

    let key = [("SUBSCRIBE_JWT_HS256_KEY", TEST_TOKEN_KEY)];
    let filter = r#"{"exact": {"type": "PingResponse"}}"#;
    let (ok, stdout, stderr) = req(
        &base,
        &["--watch", filter, "--from", "0", "--events", "1"],
        &key,
    )
    .await;
    assert!(ok, "{stdout}{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        line["event"], answer,
        "the ping's response, from the stream"
    );
    assert!(line["offset"].is_u64());

    let (ok, token, stderr) = req(
        &base,
        &[
            "--mint-token",
            "--token-types",
            "PingResponse",
            "--token-ttl",
            "5m",
        ],
        &key,
    )
    .await;
    assert!(ok, "{stderr}");
    let token = token.trim();
    let (ok, stdout, _) = req(
        &base,
        &[
            "--watch", filter, "--from", "0", "--events", "1", "--token", token,
        ],
        &[],
    )
    .await;
    assert!(ok && stdout.contains("PingResponse"), "{stdout}");
    let (ok, _, stderr) = req(
        &base,
        &[
            "--watch",
            r#"{"prefix": {"type": "Order"}}"#,
            "--token",
            token,
        ],
        &[],
    )
    .await;
    assert!(!ok, "outside the token's claims");
    assert!(stderr.contains("403 outside_claims"), "{stderr}");
    let (ok, _, stderr) = req(&base, &["--mint-token"], &[]).await;
    assert!(
        !ok && stderr.contains("SUBSCRIBE_JWT_HS256_KEY"),
        "{stderr}"
    );
}

/// The three services as processes exporting to `receiver`, reading
/// `topology`'s stream, anonymous subscriptions allowed.
async fn traced_processes(topology: &Topology, receiver: &Receiver) -> ProcessStack {
    let mut env = receiver.service_env("http/protobuf");
    env.extend(processes::env(&[
        ("AMQP_URL", &amqp_url()),
        ("EVENT_STREAM", &topology.stream),
        ("SUBSCRIBE_ANONYMOUS", "true"),
    ]));
    ProcessStack::start(topology, &env).await
}

/// The console page in a real browser (Debian's chromium, driven through
/// chromedriver by Selenium): a ping sent from the page is answered, with
/// its status and the trace id the services exported shown, and appears
/// in the live panel.
#[tokio::test]
async fn the_console_page_sends_a_ping_and_shows_it_live_in_a_browser() {
    let receiver = Receiver::start().await;
    let topology = Topology::new();
    let stack = traced_processes(&topology, &receiver).await;
    let page = run_python_check("console_check.py", &[&stack.public_web.url()]).await;

    assert_eq!(page["title"], "dispatcher console");
    assert_eq!(page["status"], 200, "{page}");
    assert_eq!(page["answer"]["type"], "PingResponse", "{page}");
    let live = page["live"].as_array().expect("live rows");
    let row = live
        .iter()
        .find(|row| row["id"] == page["answer"]["id"])
        .expect("the answer in the live panel");
    assert_eq!(row["type"], "PingResponse");
    assert!(
        row["offset"]
            .as_str()
            .is_some_and(|o| o.parse::<u64>().is_ok())
    );
    assert_eq!(page["console_errors"], json!([]), "no CSP or script errors");

    let trace_id = page["trace_id"].as_str().unwrap_or_default().to_owned();
    let spans = receiver
        .wait_for_spans(&trace_id, 1, Duration::from_secs(10))
        .await;
    only_span(&spans, "public-web", SERVER, "POST /");
    assert!(stack.terminate().await, "the services exit cleanly");
}

/// A request frame's `traceparent` makes its "WS request" span a child of
/// the client's span, and the hops behind it join that trace.
#[tokio::test]
async fn a_request_frames_traceparent_parents_its_span() {
    let receiver = Receiver::start().await;
    let topology = Topology::new();
    let stack = traced_processes(&topology, &receiver).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let mut socket = WsClient::connect(&stack.public_web.url(), None).await;
    let mut frame = ping("traced", json!({}));
    frame["traceparent"] = json!(format!("00-{trace_id}-{parent}-01"));
    socket.send_json(&frame).await;
    let answer = socket.next_json().await;
    assert_eq!(answer["type"], "PingResponse", "{answer}");
    // Untraced frames get a trace of their own.
    socket.send_json(&ping("untraced", json!({}))).await;
    assert_eq!(socket.next_json().await["id"], "untraced");

    // The whole chain, as a POST's: nine hops.
    let spans = receiver
        .wait_for_spans(trace_id, 9, Duration::from_secs(10))
        .await;
    let request = only_span(&spans, "public-web", SERVER, "WS request");
    assert_eq!(request.parent_span_id(), parent);
    assert_eq!(
        request.attribute("event.type").as_deref(),
        Some("PingRequest")
    );
    let forward = only_span(&spans, "public-web", CLIENT, "POST");
    assert_eq!(forward.parent_span_id(), request.span_id());
    only_span(&spans, "dispatcher", SERVER, "POST /");
    only_span(
        &spans,
        "ping-listener",
        CONSUMER,
        &format!("{} process", topology.request_queue),
    );
    let untraced_roots = || {
        receiver
            .spans()
            .into_iter()
            .filter(|span| span.span.name == "WS request" && span.trace_id() != trace_id)
            .count()
    };
    // The untraced frame's span may reach the receiver in a later batch.
    wait_for(
        "the untraced frame's span",
        Duration::from_secs(10),
        || async { untraced_roots() >= 1 },
    )
    .await;
    assert_eq!(untraced_roots(), 1, "the untraced frame's own trace");
    assert!(stack.terminate().await, "the services exit cleanly");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
