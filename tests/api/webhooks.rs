//! Webhooks end to end, against the real RabbitMQ and PostgreSQL: the
//! management API and its token, an asynchronous request's answer
//! delivered signed (and verified by the `standardwebhooks` package from
//! PyPI), filters, retries while an endpoint is down, `Retry-After`, `410`,
//! and egress refusals recorded in the endpoint's state.

use std::time::Duration;

use common::egress::EgressPolicy;
use common::webhook::{Secret, Verifier};
use integration_tests::live::{read_stream, run_python_check};
use integration_tests::otlp::{CLIENT, SERVER, only_span};
use integration_tests::processes::{self, ProcessStack};
use integration_tests::webhooks::{
    Receiver, Reply, Sender, TEST_ADMIN_TOKEN, TestDatabase, admin, sender_config,
    spawn_sender_process, wait_reading_process,
};
use integration_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A compressed schedule: four attempts 300 ms apart.
const QUICK: &str = "0s,300ms,300ms,300ms";

/// A test's world: the platform on its own queues and stream, a database
/// of its own, and a sender on both, reading the stream. Dropped in this
/// order: the sender before its database.
struct Rig {
    sender: Sender,
    public_web: Running,
    _platform: (Running, Running),
    topology: Topology,
    _database: TestDatabase,
}

/// A [`Rig`] whose sender retries on `schedule`, configured by `configure`.
async fn rig(schedule: &str, configure: impl FnOnce(&mut webhook_sender::config::Config)) -> Rig {
    let database = TestDatabase::create().await;
    let topology = Topology::new();
    let (dispatcher, listener, public_web) = platform(&topology).await;
    let mut config = sender_config(&database, &topology, schedule);
    configure(&mut config);
    let sender = Sender::start(config).await;
    sender.wait_reading().await;
    Rig {
        sender,
        public_web,
        _platform: (dispatcher, listener),
        topology,
        _database: database,
    }
}

/// The platform (dispatcher, ping listener, public-web) on `topology`.
async fn platform(topology: &Topology) -> (Running, Running, Running) {
    let url = amqp_url();
    let dispatcher = spawn_dispatcher(dispatcher_config(topology, &url)).await;
    let listener = spawn_listener(listener_config(topology, &url), ping_listener::handle).await;
    let (public_web, _) = spawn_public_web(public_web_config_on(topology, &dispatcher.url())).await;
    wait_ready(&dispatcher.url()).await;
    wait_ready(&listener.url()).await;
    (dispatcher, listener, public_web)
}

/// Registers `url` for `filters`; returns the endpoint's JSON (with its secret).
async fn register(sender: &Sender, url: &str, filters: Value) -> Value {
    let client = reqwest::Client::new();
    let response = admin(&client, Method::POST, format!("{}/webhooks", sender.url()))
        .json(&json!({"url": url, "filters": filters, "description": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}

/// The endpoint's state from `GET /webhooks/{id}`.
async fn state_of(sender: &Sender, id: &str) -> Value {
    let client = reqwest::Client::new();
    admin(
        &client,
        Method::GET,
        format!("{}/webhooks/{id}", sender.url()),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// `POST /` with `Prefer: respond-async`: the 202's body.
async fn send_async(public_web: &Running, body: &Value) -> Value {
    let response = reqwest::Client::new()
        .post(public_web.url())
        .header("prefer", "respond-async")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(
        response.headers()["preference-applied"].to_str().unwrap(),
        "respond-async"
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn management_calls_need_the_admin_token_and_valid_registrations() {
    let database = TestDatabase::create().await;
    let topology = Topology::new();
    let sender = Sender::start(sender_config(&database, &topology, QUICK)).await;
    let client = reqwest::Client::new();
    let base = sender.url();

    for request in [
        client.get(format!("{base}/webhooks")),
        client.post(format!("{base}/webhooks")).json(&json!({})),
        client
            .get(format!("{base}/webhooks"))
            .bearer_auth("not-the-admin-token-at-all"),
        client.delete(format!("{base}/webhooks/ep_x")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }

    let receiver = Receiver::start(Vec::new()).await;
    let created = register(
        &sender,
        &receiver.url("/hook"),
        json!([{"prefix": {"type": "Ping"}}]),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.parse::<Secret>().is_ok());
    let listed: Value = admin(&client, Method::GET, format!("{base}/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["webhooks"][0]["id"], id);
    assert!(
        !listed.to_string().contains("whsec_"),
        "a secret is shown once: {listed}"
    );
    let state = state_of(&sender, id).await;
    assert_eq!(state["disabled"], false);
    assert_eq!(state["deliveries"]["pending"], 0);
    assert!(!state.to_string().contains("whsec_"));

    // Bad registrations: each a JSON error naming what is wrong.
    let refusals = [
        (
            json!({"url": "http://10.1.2.3/hook", "filters": []}),
            422,
            "url_refused",
        ),
        (
            json!({"url": "http://169.254.169.254/latest", "filters": []}),
            422,
            "url_refused",
        ),
        (
            json!({"url": "ftp://example.com/", "filters": []}),
            422,
            "url_refused",
        ),
        (
            json!({"url": "http://u:p@127.0.0.1/", "filters": []}),
            422,
            "url_refused",
        ),
        (
            json!({"url": receiver.url("/"), "filters": [{"fuzzy": {"type": "x"}}]}),
            422,
            "invalid_filter",
        ),
        (
            json!({"url": receiver.url("/"), "filters": [{"exact": {"colour": "x"}}]}),
            422,
            "invalid_filter",
        ),
        (json!({"url": receiver.url("/")}), 422, "invalid_event"),
    ];
    for (body, status, code) in refusals {
        let response = admin(&client, Method::POST, format!("{base}/webhooks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let malformed = admin(&client, Method::POST, format!("{base}/webhooks"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);

    let rotated: Value = admin(
        &client,
        Method::POST,
        format!("{base}/webhooks/{id}/rotate-secret"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_ne!(rotated["secret"], created["secret"]);

    let deleted = admin(&client, Method::DELETE, format!("{base}/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let gone = admin(&client, Method::GET, format!("{base}/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
}

#[tokio::test]
async fn without_an_admin_token_management_is_off() {
    let database = TestDatabase::create().await;
    let topology = Topology::new();
    let mut config = sender_config(&database, &topology, QUICK);
    config.admin_token = None;
    let sender = Sender::start(config).await;
    let response = reqwest::Client::new()
        .get(format!("{}/webhooks", sender.url()))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "admin_disabled");
}

/// The whole path: an asynchronous ping's answer reaches the endpoint
/// registered for its id, signed; the reference verifier accepts it, and
/// its signatures are accepted by ours.
#[tokio::test]
async fn an_async_answer_is_delivered_signed_and_verified_by_the_reference_package() {
    let rig = rig(QUICK, |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let receiver = Receiver::start(Vec::new()).await;
    let endpoint = register(
        sender,
        &receiver.url("/hook"),
        json!([{"exact": {"id": "async-1"}}]),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();

    let accepted = send_async(
        public_web,
        &json!({"id": "async-1", "type": "PingRequest", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(accepted, json!({"id": "async-1"}));
    // Another answer the filter does not select.
    send_async(
        public_web,
        &json!({"id": "async-2", "type": "PingRequest", "data": {}}),
    )
    .await;

    let deliveries = receiver.wait_for(1, Duration::from_secs(15)).await;
    let delivery = &deliveries[0];
    let event: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(event["id"], "async-1");
    assert_eq!(event["type"], "PingResponse");
    assert_eq!(event["data"]["n"], 1);
    assert!(delivery.header("webhook-id").starts_with("msg_"));
    assert_eq!(delivery.header("content-type"), "application/json");
    let ours = Verifier::new(vec![secret.parse().unwrap()]);
    assert_eq!(ours.verify(&delivery.headers, &delivery.body), Ok(()));

    let body = String::from_utf8(delivery.body.to_vec()).unwrap();
    let verified = run_python_check(
        "webhook_check.py",
        &["verify", &secret, &delivery.headers_json(), &body],
    )
    .await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["payload"]["id"], "async-1");
    let tampered = run_python_check(
        "webhook_check.py",
        &[
            "verify",
            &secret,
            &delivery.headers_json(),
            &body.replace("async-1", "async-9"),
        ],
    )
    .await;
    assert_eq!(tampered["ok"], false, "{tampered}");

    // The other way round: the package signs, ours verifies.
    let timestamp = common::webhook::now_seconds().to_string();
    let signed = run_python_check(
        "webhook_check.py",
        &["sign", &secret, "msg_from_python", &timestamp, r#"{"a":1}"#],
    )
    .await;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("webhook-id", "msg_from_python".parse().unwrap());
    headers.insert("webhook-timestamp", timestamp.parse().unwrap());
    headers.insert(
        "webhook-signature",
        signed["signature"].as_str().unwrap().parse().unwrap(),
    );
    assert_eq!(ours.verify(&headers, br#"{"a":1}"#), Ok(()));

    // Only the selected answer came.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.deliveries().len(), 1);
    let state = state_of(sender, endpoint["id"].as_str().unwrap()).await;
    assert_eq!(state["deliveries"]["delivered"], 1, "{state}");
    assert_eq!(state["recent_attempts"][0]["status"], 200);
}

/// Filters select by type prefix and by a data field; each endpoint gets
/// what it asked for and nothing else.
#[tokio::test]
async fn filters_select_what_each_endpoint_gets() {
    let rig = rig(QUICK, |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let (pings, acme) = (
        Receiver::start(Vec::new()).await,
        Receiver::start(Vec::new()).await,
    );
    register(
        sender,
        &pings.url("/"),
        json!([{"prefix": {"type": "Ping"}}]),
    )
    .await;
    register(
        sender,
        &acme.url("/"),
        json!([{"exact": {"data.tenant": "acme"}}]),
    )
    .await;

    for (id, tenant) in [("f-1", "acme"), ("f-2", "globex"), ("f-3", "acme")] {
        send_async(
            public_web,
            &json!({"id": id, "type": "PingRequest", "data": {"tenant": tenant}}),
        )
        .await;
    }
    let ids = |deliveries: Vec<integration_tests::webhooks::Delivery>| {
        let mut ids: Vec<String> = deliveries
            .iter()
            .map(|d| {
                serde_json::from_slice::<Value>(&d.body).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(pings.wait_for(3, Duration::from_secs(15)).await),
        ["f-1", "f-2", "f-3"]
    );
    assert_eq!(
        ids(acme.wait_for(2, Duration::from_secs(15)).await),
        ["f-1", "f-3"]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(acme.deliveries().len(), 2, "nothing else for acme");
}

/// An endpoint that fails, then recovers: the delivery is attempted on the
/// schedule, honouring `Retry-After`, with the same webhook-id each time,
/// until it succeeds; every attempt is in the endpoint's state.
#[tokio::test]
async fn a_failing_endpoint_gets_the_delivery_when_it_recovers() {
    let rig = rig("0s,200ms,200ms,200ms,200ms", |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let receiver = Receiver::start(vec![
        Reply::status(500),
        Reply::status(503).with_header("retry-after", "1"),
        Reply::status(301).with_header("location", "http://10.0.0.1/"),
    ])
    .await;
    let endpoint = register(
        sender,
        &receiver.url("/hook"),
        json!([{"exact": {"id": "r-1"}}]),
    )
    .await;
    send_async(
        public_web,
        &json!({"id": "r-1", "type": "PingRequest", "data": {}}),
    )
    .await;

    let deliveries = receiver.wait_for(4, Duration::from_secs(15)).await;
    let id = deliveries[0].header("webhook-id");
    assert!(
        deliveries.iter().all(|d| d.header("webhook-id") == id),
        "one webhook-id"
    );
    let after_503 = deliveries[2].at - deliveries[1].at;
    assert!(
        after_503 >= Duration::from_millis(950),
        "Retry-After: 1 honoured: {after_503:?}"
    );
    let after_500 = deliveries[1].at - deliveries[0].at;
    assert!(
        after_500 < Duration::from_millis(900),
        "the schedule otherwise: {after_500:?}"
    );

    let id = endpoint["id"].as_str().unwrap();
    wait_for(
        "the delivery is recorded",
        Duration::from_secs(10),
        || async { state_of(sender, id).await["deliveries"]["delivered"] == 1 },
    )
    .await;
    let state = state_of(sender, id).await;
    let attempts = state["recent_attempts"].as_array().unwrap();
    let statuses: Vec<i64> = attempts
        .iter()
        .rev()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 503, 301, 200]);
    let redirect = attempts.iter().find(|a| a["status"] == 301).unwrap();
    assert!(
        redirect["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{redirect}"
    );
    assert!(state["last_success_at"].is_u64());
}

/// An endpoint that is not there at all (connections refused) gets the
/// delivery once it comes up, within the schedule.
#[tokio::test]
async fn an_endpoint_that_was_down_gets_the_delivery_when_it_comes_up() {
    let rig = rig("0s,300ms,1s,1s,1s,1s", |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let port = processes::free_port();
    let endpoint = register(
        sender,
        &format!("http://127.0.0.1:{port}/hook"),
        json!([{"exact": {"id": "d-1"}}]),
    )
    .await;
    send_async(
        public_web,
        &json!({"id": "d-1", "type": "PingRequest", "data": {}}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    wait_for("two refused attempts", Duration::from_secs(10), || async {
        state_of(sender, id).await["recent_attempts"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    })
    .await;
    let state = state_of(sender, id).await;
    let error = state["recent_attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("could not connect"), "{state}");

    let receiver = Receiver::start_on(port, Vec::new()).await;
    let deliveries = receiver.wait_for(1, Duration::from_secs(10)).await;
    let event: Value = serde_json::from_slice(&deliveries[0].body).unwrap();
    assert_eq!(event["id"], "d-1");
}

/// Two senders on one store: each answer is attempted by one of them.
#[tokio::test]
async fn two_senders_deliver_each_answer_once() {
    let database = TestDatabase::create().await;
    let topology = Topology::new();
    let (_dispatcher, _listener, public_web) = platform(&topology).await;
    let first = Sender::start(sender_config(&database, &topology, QUICK)).await;
    let second = Sender::start(sender_config(&database, &topology, QUICK)).await;
    first.wait_reading().await;
    assert!(!second.reading.is_ready(), "one reader at a time");
    let receiver = Receiver::start(Vec::new()).await;
    register(
        &second,
        &receiver.url("/"),
        json!([{"prefix": {"type": "Ping"}}]),
    )
    .await;
    for i in 0..40 {
        send_async(
            &public_web,
            &json!({"id": format!("two-{i}"), "type": "PingRequest", "data": {}}),
        )
        .await;
    }
    receiver.wait_for(40, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: Vec<String> = receiver
        .deliveries()
        .iter()
        .map(|d| d.header("webhook-id").to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    assert_eq!(receiver.deliveries().len(), 40, "no answer delivered twice");

    // The reader's sender stops: the other takes over reading.
    first.running.stop().await;
    second.wait_reading().await;
    send_async(
        &public_web,
        &json!({"id": "after", "type": "PingRequest", "data": {}}),
    )
    .await;
    receiver.wait_for(41, Duration::from_secs(15)).await;
}

/// During a secret's rotation both secrets sign: a receiver holding
/// either verifies the delivery.
#[tokio::test]
async fn during_a_rotation_both_secrets_sign() {
    let rig = rig(QUICK, |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let receiver = Receiver::start(Vec::new()).await;
    let endpoint = register(
        sender,
        &receiver.url("/"),
        json!([{"exact": {"id": "rot-1"}}]),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    let rotated: Value = admin(
        &reqwest::Client::new(),
        Method::POST,
        format!("{}/webhooks/{id}/rotate-secret", sender.url()),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    send_async(
        public_web,
        &json!({"id": "rot-1", "type": "PingRequest", "data": {}}),
    )
    .await;
    let delivery = &receiver.wait_for(1, Duration::from_secs(15)).await[0];
    assert_eq!(delivery.header("webhook-signature").split(' ').count(), 2);
    for secret in [&endpoint["secret"], &rotated["secret"]] {
        let verifier = Verifier::new(vec![secret.as_str().unwrap().parse().unwrap()]);
        assert_eq!(verifier.verify(&delivery.headers, &delivery.body), Ok(()));
    }
}

/// An endpoint failing without a success for longer than
/// `WEBHOOK_DISABLE_AFTER_MS` is disabled, and says why.
#[tokio::test]
async fn an_endpoint_failing_too_long_is_disabled() {
    let rig = rig("0s,200ms,200ms,200ms,200ms", |config| {
        config.delivery.disable_after = Duration::from_millis(300);
    })
    .await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let receiver = Receiver::start(vec![Reply::status(500); 10]).await;
    let endpoint = register(
        sender,
        &receiver.url("/"),
        json!([{"exact": {"id": "dis-1"}}]),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    send_async(
        public_web,
        &json!({"id": "dis-1", "type": "PingRequest", "data": {}}),
    )
    .await;
    wait_for(
        "the endpoint is disabled",
        Duration::from_secs(10),
        || async { state_of(sender, id).await["disabled"] == true },
    )
    .await;
    let state = state_of(sender, id).await;
    let reason = state["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("failing without a success"), "{state}");
    let attempts = receiver.deliveries().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.deliveries().len(),
        attempts,
        "no attempt once disabled"
    );
}

/// The schedule runs out: the delivery is exhausted and counted.
#[tokio::test]
async fn a_delivery_is_exhausted_after_the_last_attempt() {
    let rig = rig("0s,100ms,100ms", |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let receiver = Receiver::start(vec![Reply::status(500); 10]).await;
    let endpoint = register(
        sender,
        &receiver.url("/"),
        json!([{"exact": {"id": "x-1"}}]),
    )
    .await;
    send_async(
        public_web,
        &json!({"id": "x-1", "type": "PingRequest", "data": {}}),
    )
    .await;
    receiver.wait_for(3, Duration::from_secs(15)).await;
    let id = endpoint["id"].as_str().unwrap();
    wait_for(
        "the delivery is exhausted",
        Duration::from_secs(10),
        || async { state_of(sender, id).await["deliveries"]["exhausted"] == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.deliveries().len(), 3, "three attempts, no more");
    let state = state_of(sender, id).await;
    assert_eq!(
        state["disabled"], false,
        "one exhausted delivery does not disable"
    );

    // Announced on the stream after the request and its answer.
    let records = read_stream(&rig.topology.stream, 3).await;
    let notice = &records[2];
    assert_eq!(
        notice.event["type"], "WebhookDeliveryExhausted",
        "{notice:?}"
    );
    assert_eq!(notice.header("x-direction"), Some("notice"));
    assert_eq!(notice.header("x-source"), Some("webhook-sender"));
    let data = &notice.event["data"];
    assert_eq!(data["event_id"], "x-1");
    assert_eq!(data["endpoint_id"], id);
    assert_eq!(data["attempts"], 3);
    assert_eq!(data["last_status"], 500);
    assert_eq!(
        data["webhook_id"],
        receiver.deliveries()[0].header("webhook-id")
    );
}

/// `410 Gone` disables the endpoint: nothing is sent or owed to it until it
/// is enabled again (answers meanwhile are not kept for it); then the
/// delivery it refused goes out, and new answers again.
#[tokio::test]
async fn gone_disables_the_endpoint_until_it_is_enabled() {
    let rig = rig(QUICK, |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let receiver = Receiver::start(vec![Reply::status(410)]).await;
    let endpoint = register(
        sender,
        &receiver.url("/"),
        json!([{"prefix": {"type": "Ping"}}]),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    send_async(
        public_web,
        &json!({"id": "g-1", "type": "PingRequest", "data": {}}),
    )
    .await;
    receiver.wait_for(1, Duration::from_secs(15)).await;
    wait_for(
        "the endpoint is disabled",
        Duration::from_secs(10),
        || async { state_of(sender, id).await["disabled"] == true },
    )
    .await;
    let state = state_of(sender, id).await;
    assert!(
        state["disabled_reason"].as_str().unwrap().contains("410"),
        "{state}"
    );

    send_async(
        public_web,
        &json!({"id": "g-2", "type": "PingRequest", "data": {}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.deliveries().len(),
        1,
        "nothing goes to a disabled endpoint"
    );

    let client = reqwest::Client::new();
    let enabled = admin(
        &client,
        Method::POST,
        format!("{}/webhooks/{id}/enable", sender.url()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(enabled.status().as_u16(), 200);
    let deliveries = receiver.wait_for(2, Duration::from_secs(15)).await;
    let id_of = |delivery: &integration_tests::webhooks::Delivery| {
        serde_json::from_slice::<Value>(&delivery.body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        id_of(&deliveries[1]),
        "g-1",
        "the refused delivery went out"
    );
    send_async(
        public_web,
        &json!({"id": "g-3", "type": "PingRequest", "data": {}}),
    )
    .await;
    let deliveries = receiver.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(id_of(&deliveries[2]), "g-3");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.deliveries().len(), 3, "g-2 was not owed");
}

/// A hung endpoint holds its own slots only: another endpoint gets every
/// answer at once while the hung one's attempts time out.
#[tokio::test]
async fn a_hung_endpoint_does_not_delay_the_others() {
    let rig = rig(QUICK, |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let hung = Receiver::start(vec![Reply::status(200).after(Duration::from_secs(30)); 100]).await;
    let healthy = Receiver::start(Vec::new()).await;
    let filters = json!([{"prefix": {"type": "Ping"}}]);
    register(sender, &hung.url("/"), filters.clone()).await;
    register(sender, &healthy.url("/"), filters).await;

    let started = std::time::Instant::now();
    for i in 0..20 {
        send_async(
            public_web,
            &json!({"id": format!("h-{i}"), "type": "PingRequest", "data": {}}),
        )
        .await;
    }
    healthy.wait_for(20, Duration::from_secs(10)).await;
    let took = started.elapsed();
    // The hung endpoint has its four slots taken, no more.
    assert!(hung.deliveries().len() <= 4, "{}", hung.deliveries().len());
    assert!(
        took < Duration::from_secs(4),
        "the healthy endpoint waited on the hung one: {took:?}"
    );
}

/// A name that resolves to loopback is refused where the connection is
/// made when the policy does not allow loopback, and the endpoint's state
/// says why; nothing reaches the receiver.
#[tokio::test]
async fn egress_to_a_refused_address_is_recorded_with_its_reason() {
    let rig = rig(QUICK, |config| {
        let public_only = EgressPolicy::public_internet(EgressPolicy::default());
        config.delivery.egress = std::sync::Arc::new(public_only);
    })
    .await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let receiver = Receiver::start(Vec::new()).await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let endpoint = register(sender, &url, json!([{"exact": {"id": "e-1"}}])).await;
    send_async(
        public_web,
        &json!({"id": "e-1", "type": "PingRequest", "data": {}}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    wait_for(
        "an attempt is recorded",
        Duration::from_secs(15),
        || async {
            !state_of(sender, id).await["recent_attempts"]
                .as_array()
                .unwrap()
                .is_empty()
        },
    )
    .await;
    let state = state_of(sender, id).await;
    let error = state["recent_attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("egress refused"), "{state}");
    assert!(receiver.deliveries().is_empty());
}

/// Registers through the management API at `base` (a sender process).
async fn register_at(base: &str, url: &str, filters: Value) -> Value {
    let client = reqwest::Client::new();
    let response = admin(&client, Method::POST, format!("{base}/webhooks"))
        .json(&json!({"url": url, "filters": filters}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}

/// SIGKILL the sender while deliveries are in flight, start another: every
/// answer is delivered, and an answer delivered twice carries the same
/// webhook-id both times.
#[tokio::test]
async fn a_sigkilled_sender_loses_nothing_and_repeats_with_the_same_webhook_id() {
    let database = TestDatabase::create().await;
    let topology = Topology::new();
    let (_dispatcher, _listener, public_web) = platform(&topology).await;
    // A second's timeout: a killed sender's claims lapse after 12 s.
    let env = processes::env(&[
        ("WEBHOOK_TIMEOUT_MS", "1000"),
        ("WEBHOOK_RETRY_SCHEDULE", "0s,200ms,200ms,200ms"),
    ]);
    let first = spawn_sender_process(&database, &topology, &env).await;
    wait_reading_process(&first.url()).await;
    // Slow answers: the kill finds deliveries in flight.
    let receiver = Receiver::start(vec![
        Reply::status(200).after(Duration::from_millis(400));
        40
    ])
    .await;
    register_at(
        &first.url(),
        &receiver.url("/"),
        json!([{"prefix": {"type": "Ping"}}]),
    )
    .await;

    let ids: Vec<String> = (0..20).map(|i| format!("k-{i}")).collect();
    for id in &ids {
        send_async(
            &public_web,
            &json!({"id": id, "type": "PingRequest", "data": {}}),
        )
        .await;
    }
    receiver.wait_for(4, Duration::from_secs(15)).await;
    first.kill().await;
    let second = spawn_sender_process(&database, &topology, &env).await;

    // Delivered means acknowledged with a 2xx and recorded so: what the
    // killed sender had in flight goes out again once its claims lapse.
    wait_for(
        "every answer delivered",
        Duration::from_secs(60),
        || async {
            let rows = database
                .query("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")
                .await;
            rows[0].get::<_, i64>(0) == 20
        },
    )
    .await;
    let mut webhook_ids =
        std::collections::HashMap::<String, std::collections::HashSet<String>>::new();
    let deliveries = receiver.deliveries();
    for delivery in &deliveries {
        let event: Value = serde_json::from_slice(&delivery.body).unwrap();
        webhook_ids
            .entry(event["id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(delivery.header("webhook-id").to_owned());
    }
    assert_eq!(webhook_ids.len(), 20, "every answer reached the receiver");
    for (event, seen) in &webhook_ids {
        assert_eq!(
            seen.len(),
            1,
            "{event} went out under one webhook-id: {seen:?}"
        );
    }
    let repeated = deliveries.len() - 20;
    eprintln!(
        "20 answers: {} deliveries across the kill, {repeated} repeated",
        deliveries.len()
    );
    assert!(repeated >= 1, "the kill found deliveries in flight");
    assert!(second.terminate().await, "the second sender exits cleanly");
}

/// Each attempt is a CLIENT span in the trace of the request whose answer
/// it delivers.
#[tokio::test]
async fn each_attempt_is_a_client_span_in_the_request_s_trace() {
    let otlp = integration_tests::otlp::Receiver::start().await;
    let database = TestDatabase::create().await;
    let topology = Topology::new();
    let mut env = otlp.service_env("http/protobuf");
    env.extend(stream_env(&topology.stream));
    env.extend(processes::env(&[("AMQP_URL", &amqp_url())]));
    let stack = ProcessStack::start(&topology, &env).await;
    let mut sender = spawn_sender_process(&database, &topology, &env).await;
    wait_reading_process(&sender.url()).await;
    let receiver = Receiver::start(vec![Reply::status(503)]).await;
    let endpoint = register_at(
        &sender.url(),
        &receiver.url("/hook"),
        json!([{"exact": {"id": "t-1"}}]),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();

    let response = reqwest::Client::new()
        .post(stack.public_web.url())
        .header("prefer", "respond-async")
        .json(&json!({"id": "t-1", "type": "PingRequest", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let trace_id = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    receiver.wait_for(2, Duration::from_secs(15)).await;

    // The request's hops, then both attempts, exported a little later.
    let mut spans = Vec::new();
    wait_for(
        "both attempts in the trace",
        Duration::from_secs(15),
        || {
            spans = otlp.spans_of(&trace_id);
            let attempts = spans
                .iter()
                .filter(|s| s.service == "webhook-sender" && s.span.kind == CLIENT)
                .count();
            async move { attempts >= 2 }
        },
    )
    .await;
    only_span(&spans, "public-web", SERVER, "POST /");
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.service == "webhook-sender" && s.span.kind == CLIENT)
        .collect();
    let numbers: std::collections::BTreeSet<String> = attempts
        .iter()
        .filter_map(|s| s.attribute("webhook.attempt"))
        .collect();
    assert!(
        numbers.contains("1") && numbers.contains("2"),
        "{numbers:?}"
    );

    // The secret is in no log line, printed or exported.
    let key = secret.trim_start_matches("whsec_");
    let printed = sender.drain_stdout().join("\n");
    assert!(
        printed.contains("webhook attempt"),
        "the attempts are logged"
    );
    assert!(!printed.contains(key), "the secret in the sender's log");
    for log in otlp.logs() {
        assert!(!log.body().contains(key), "the secret in an exported log");
    }
    assert!(sender.terminate().await);
    assert!(stack.terminate().await);
}

/// `req --async` sends a ping whose answer reaches `req --webhook-listen`,
/// which verifies it and prints it.
#[tokio::test]
async fn req_sends_async_and_receives_the_answer_verified() {
    use tokio::io::AsyncBufReadExt;

    let rig = rig(QUICK, |_| {}).await;
    let (sender, public_web) = (&rig.sender, &rig.public_web);
    let port = processes::free_port();
    let endpoint = register(
        sender,
        &format!("http://127.0.0.1:{port}/hooks"),
        json!([{"prefix": {"type": "Ping"}}]),
    )
    .await;
    let mut listener = tokio::process::Command::new(processes::binary("req"))
        .args(["--webhook-listen", &port.to_string()])
        .env("WEBHOOK_SECRET", endpoint["secret"].as_str().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(listener.stdout.take().unwrap()).lines();
    wait_for("req listens", Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;

    let sent = tokio::process::Command::new(processes::binary("req"))
        .arg("--async")
        .env("PUBLIC_WEB_URL", public_web.url())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success(), "{stdout}");
    assert!(stdout.contains("accepted (202 Accepted)"), "{stdout}");
    let id =
        serde_json::from_str::<Value>(&stdout[..stdout.find("\n}\n").unwrap() + 2]).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();

    let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("a delivery within 15 s")
        .unwrap()
        .expect("a line");
    let printed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(printed["verified"], true, "{printed}");
    assert_eq!(printed["event"]["id"], id.as_str());
    assert_eq!(printed["event"]["type"], "PingResponse");
    assert!(printed["webhook_id"].as_str().unwrap().starts_with("msg_"));
}
