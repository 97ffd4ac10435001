//! `/dispatch` is not open to whoever can reach public-web: with
//! `CALLBACK_SECRET` set, only callbacks signed with it complete requests,
//! and `/dispatch` can live on an internal port of its own.

use std::time::Duration;

use common::wire::{CallbackSecret, SIGNATURE_HEADER};
use integration_tests::*;
use serde_json::json;

/// public-web with a secret and an internal `/dispatch` port.
async fn spawn_guarded_public_web(
    dispatcher_url: &str,
    secret: &str,
) -> (Running, String, public_web::pending::PendingRequests) {
    let mut config = public_web_config(dispatcher_url);
    config.callback_secret = Some(CallbackSecret::new(secret));
    config.dispatch_port = Some(0);
    config.request_timeout = Duration::from_secs(2);
    let app = public_web::startup::Application::build(config)
        .await
        .unwrap();
    let dispatch_url = format!("http://{}/dispatch", app.dispatch_addr());
    let pending = app.pending();
    (
        Running::start(app.local_addr(), |shutdown| app.run(shutdown)),
        dispatch_url,
        pending,
    )
}

fn signed_dispatcher(topology: &Topology, secret: &str) -> dispatcher::config::Config {
    let mut config = dispatcher_config(topology, &amqp_url());
    config.callbacks.secret = Some(CallbackSecret::new(secret));
    config
}

#[tokio::test]
async fn signed_callbacks_complete_requests_through_the_internal_port() {
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(signed_dispatcher(&topology, "shared")).await;
    let _listener = spawn_listener(
        listener_config(&topology, &amqp_url()),
        ping_listener::handle,
    )
    .await;
    let (public_web, dispatch_url, pending) =
        spawn_guarded_public_web(&dispatcher.url(), "shared").await;
    wait_ready(&dispatcher.url()).await;
    let client = reqwest::Client::new();

    let (status, body) = post_json(&client, &public_web.url(), &ping_body()).await;
    assert_eq!(status, 200, "{body}");
    assert!(pending.is_empty());

    // The public port does not serve /dispatch at all.
    let (status, _) = post_json(
        &client,
        &format!("{}/dispatch", public_web.url()),
        &json!({"id": "x", "type": "PingResponse", "data": {}}),
    )
    .await;
    assert_eq!(status, 404);
    assert_ne!(dispatch_url, format!("{}/dispatch", public_web.url()));
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_callbacks_are_401_and_complete_nothing() {
    let (_public_web, dispatch_url, pending) =
        spawn_guarded_public_web("http://127.0.0.1:9", "shared").await;
    let _parked = pending.park("waiting").unwrap();
    let body = br#"{"id":"waiting","type":"PingResponse","data":{}}"#.to_vec();
    let client = reqwest::Client::new();

    for signature in [
        None,
        Some("sha256=00".to_owned()),
        Some(CallbackSecret::new("wrong").sign(&body)),
        Some(CallbackSecret::new("shared").sign(b"another body")),
    ] {
        let mut request = client
            .post(&dispatch_url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(signature) = &signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{signature:?}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unauthenticated");
        assert_eq!(pending.len(), 1, "a refused callback completes nothing");
    }

    let response = client
        .post(&dispatch_url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, CallbackSecret::new("shared").sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(pending.is_empty());
}

#[tokio::test]
async fn a_dispatcher_with_another_secret_never_completes_a_request() {
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(signed_dispatcher(&topology, "not-the-same")).await;
    let _listener = spawn_listener(
        listener_config(&topology, &amqp_url()),
        ping_listener::handle,
    )
    .await;
    let (public_web, _dispatch_url, pending) =
        spawn_guarded_public_web(&dispatcher.url(), "shared").await;
    wait_ready(&dispatcher.url()).await;

    let (status, body) = post_json(&reqwest::Client::new(), &public_web.url(), &ping_body()).await;
    assert_eq!(status, 504, "{body}");
    assert!(pending.is_empty());
    let dead = common::wire::dead_letter_queue(&topology.response_queue);
    assert_eq!(
        Topology::wait_for_depth(&dead, 1).await,
        1,
        "the refused callback is dead-lettered"
    );
}
