//! Behaviour that depends on the broker: any start order, readiness, and
//! poison messages going to the dead-letter queue instead of looping.

use std::time::Duration;

use common::amqp;
use common::wire::{CALLBACK_URL_HEADER, dead_letter_queue};
use integration_tests::*;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;

#[tokio::test]
async fn services_started_before_the_broker_become_ready_when_it_appears() {
    let topology = Topology::new();
    let mut broker = TcpProxy::reserve(broker_addr()).await;
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &broker.amqp_url())).await;
    let listener = spawn_listener(
        listener_config(&topology, &broker.amqp_url()),
        ping_listener::handle,
    )
    .await;
    let (public_web, _pending) = spawn_public_web(public_web_config(&dispatcher.url())).await;
    let client = reqwest::Client::new();

    // Nothing answers on the broker's port yet: alive, but not ready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for service in [&dispatcher, &listener, &public_web] {
        let health = client
            .get(format!("{}/healthz", service.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let ready = client
            .get(format!("{}/readyz", service.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503);
    }
    let (status, body) = post_json(&client, &public_web.url(), &ping_body()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "broker_unavailable");

    broker.start().await;
    wait_ready(&dispatcher.url()).await;
    wait_ready(&listener.url()).await;
    wait_ready(&public_web.url()).await;
    let (status, body) = post_json(&client, &public_web.url(), &ping_body()).await;
    assert_eq!(status, 200, "{body}");
    broker.stop().await;
}

#[tokio::test]
async fn poison_requests_are_dead_lettered_once_not_redelivered() {
    let topology = Topology::new();
    let stack = Stack::start(&topology).await;

    let connection = connect().await;
    let channel = amqp::publish::confirm_channel(&connection).await.unwrap();
    let poisons: [(&[u8], BasicProperties); 3] = [
        (b"not json", BasicProperties::default()),
        (br#"{"id": "p", "data": {}}"#, BasicProperties::default()),
        // A valid event nobody can answer: no reply_to.
        (
            br#"{"id": "q", "type": "PingRequest", "data": {}}"#,
            BasicProperties::default(),
        ),
    ];
    for (body, properties) in poisons {
        channel
            .basic_publish(
                "".into(),
                topology.request_queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dead = dead_letter_queue(&topology.request_queue);
    assert_eq!(Topology::wait_for_depth(&dead, 3).await, 3);
    assert_eq!(Topology::depth(&topology.request_queue).await, 0);

    let (status, _) = post_json(
        &reqwest::Client::new(),
        &stack.public_web.url(),
        &ping_body(),
    )
    .await;
    assert_eq!(status, 200, "the listener keeps serving");
    amqp::connection::close(&connection).await;
}

/// A response that is not an event, or whose callback URL is outside the
/// allow-list, is dead-lettered; one without a callback URL answers an
/// asynchronous request and goes to the event stream instead.
#[tokio::test]
async fn poison_responses_are_dead_lettered() {
    let topology = Topology::new();
    let _stack = Stack::start(&topology).await;
    let connection = connect().await;
    let channel = amqp::publish::confirm_channel(&connection).await.unwrap();
    let mut outside = FieldTable::default();
    amqp::message::set_header(
        &mut outside,
        CALLBACK_URL_HEADER,
        "http://192.0.2.1/dispatch",
    );
    let event = br#"{"id": "r", "type": "PingResponse", "data": {}}"#;
    for (body, headers) in [
        (&b"{"[..], FieldTable::default()),
        (&event[..], outside),
        (&event[..], FieldTable::default()),
    ] {
        channel
            .basic_publish(
                "".into(),
                topology.response_queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dead = dead_letter_queue(&topology.response_queue);
    assert_eq!(Topology::wait_for_depth(&dead, 2).await, 2);
    let records = integration_tests::live::read_stream(&topology.stream, 1).await;
    assert_eq!(records[0].event["id"], "r");
    assert_eq!(records[0].header("x-direction"), Some("response"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        Topology::depth(&dead).await,
        2,
        "the asynchronous answer is not poison"
    );
    amqp::connection::close(&connection).await;
}

#[tokio::test]
async fn a_panicking_handler_is_retried_once_then_dead_lettered() {
    let topology = Topology::new();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let handler = move |_request: common::Event| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { panic!("a handler bug") }
    };
    let listener = spawn_listener(listener_config(&topology, &amqp_url()), handler).await;
    wait_ready(&listener.url()).await;

    let connection = connect().await;
    let channel = amqp::publish::confirm_channel(&connection).await.unwrap();
    channel
        .basic_publish(
            "".into(),
            topology.request_queue.as_str().into(),
            BasicPublishOptions::default(),
            br#"{"id": "boom", "type": "PingRequest", "data": {}}"#,
            BasicProperties::default().with_reply_to(topology.response_queue.as_str().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let dead = dead_letter_queue(&topology.request_queue);
    assert_eq!(Topology::wait_for_depth(&dead, 1).await, 1);
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one retry, no more"
    );
    let (status, _) = reqwest::get(format!("{}/readyz", listener.url()))
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200, "the listener keeps serving");
    amqp::connection::close(&connection).await;
}

/// Quorum queues end to end on the shared node, and a deployment that
/// switches `QUEUE_TYPE` over queues that exist is told what to do: the
/// listener stays unready and says how to move, instead of consuming a
/// queue of the other type.
#[tokio::test]
async fn quorum_queues_serve_and_a_queue_type_change_is_refused_with_what_to_do() {
    use integration_tests::processes::{ProcessStack, ServiceProcess, env, free_port};

    let topology = Topology::new();
    let quorum = env(&[("AMQP_URL", &amqp_url()), ("QUEUE_TYPE", "quorum")]);
    let stack = ProcessStack::start(&topology, &quorum).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let (status, body) = post_json(&client, &stack.public_web.url(), &ping_body()).await;
        assert_eq!(status, 200, "{body}");
    }
    // Redeclaring with the quorum arguments succeeds only on a quorum queue.
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    amqp::topology::declare_queue(
        &channel,
        &topology.request_queue,
        amqp::topology::QueueType::Quorum,
    )
    .await
    .expect("the request queue is a quorum queue");
    assert!(stack.terminate().await);

    // The same queues, now wanted classic.
    let classic = env(&[
        ("AMQP_URL", &amqp_url()),
        ("QUEUE", &topology.request_queue),
    ]);
    let mut listener = ServiceProcess::spawn("ping-listener", free_port(), &classic).await;
    let mut said = String::new();
    wait_for(
        "the listener says what to do",
        Duration::from_secs(20),
        || {
            said.push_str(&listener.drain_stdout().join("\n"));
            let told = said.contains("QUEUE_TYPE=classic") && said.contains("delete_queue");
            async move { told }
        },
    )
    .await;
    let ready = client
        .get(format!("{}/readyz", listener.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        503,
        "not ready on a queue of the other type"
    );
    assert!(listener.terminate().await);
}
