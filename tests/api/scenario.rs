//! scenario-listener end to end, against the real broker: nested calls
//! through public-web and the dispatcher (to itself and to prime-listener),
//! parallel groups, failure chances mapped to HTTP statuses, and call
//! cycles cut at the depth limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Event;
use integration_tests::*;
use serde_json::{Value, json};

/// The step named `name` among `steps` (a report's `steps` array).
fn step<'a>(steps: &'a Value, name: &str) -> &'a Value {
    steps
        .as_array()
        .and_then(|steps| steps.iter().find(|step| step["name"] == name))
        .unwrap_or_else(|| panic!("no step {name:?} in {steps}"))
}

#[tokio::test]
async fn a_nested_call_and_a_parallel_group_report_every_step() {
    let platform = ScenarioPlatform::start(&["OrderRequest", "InventoryRequest"]).await;
    let _listener = platform
        .scenario_listener(&json!({"handlers": {
            "OrderRequest": {"name": "order-service", "response_type": "OrderPlaced", "steps": [
                {"sleep": {"name": "validate order", "ms": 5}},
                {"parallel": {"name": "reserve and charge", "steps": [
                    {"call": {"name": "reserve stock", "type": "InventoryRequest", "data": {"sku": "A1"}}},
                    {"call": {"name": "score risk", "type": "NthPrimeRequest", "data": {"n": 1001}}},
                    {"sleep": {"name": "charge card", "ms": 300}},
                    {"sleep": {"name": "notify warehouse", "ms": 300}}
                ]}},
                {"sequence": {"name": "confirm", "steps": [
                    {"sleep": {"name": "write order", "ms": {"min": 1, "max": 3}}}
                ]}}
            ]},
            "InventoryRequest": {"steps": [
                {"sleep": {"name": "check stock", "ms": {"min": 1, "max": 10}}}
            ]}
        }}))
        .await;

    let client = reqwest::Client::new();
    let id = uuid::Uuid::new_v4().to_string();
    let (status, body) = post_json(
        &client,
        &platform.public_web.url(),
        &json!({"id": id, "type": "OrderRequest", "data": {"orderId": "o-1"}}),
    )
    .await;

    assert_eq!(status, 200, "{body}");
    let response = as_event(body);
    assert_eq!(response.id, id);
    assert_eq!(response.kind, "OrderPlaced");
    assert_eq!(response.data["handled"], "OrderRequest");
    assert_eq!(response.data["callDepth"], 0);
    let steps = &response.data["steps"];
    let names: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["validate order", "reserve and charge", "confirm"]);
    assert_eq!(step(steps, "validate order")["sleptMs"], 5);

    let group = step(steps, "reserve and charge");
    assert_eq!(group["kind"], "parallel");
    assert_eq!(group["ok"], true);
    assert_eq!(group["steps"].as_array().unwrap().len(), 4);
    // Two 300 ms sleeps side by side: together well under their sum.
    let group_ms = group["elapsedMs"].as_u64().unwrap();
    assert!(
        (300..550).contains(&group_ms),
        "the group took {group_ms} ms"
    );

    let inventory = step(&group["steps"], "reserve stock");
    assert_eq!(inventory["ok"], true);
    assert_eq!(inventory["status"], 200);
    assert_eq!(inventory["type"], "InventoryRequest");
    assert_eq!(inventory["callDepth"], 1);
    assert_eq!(inventory["responseType"], "InventoryResponse");
    // The nested scenario's own report, one call deep.
    assert_eq!(inventory["response"]["handled"], "InventoryRequest");
    assert_eq!(inventory["response"]["callDepth"], 1);
    let check = step(&inventory["response"]["steps"], "check stock");
    assert_eq!(check["ok"], true);
    assert_eq!(check["path"], "handlers.InventoryRequest.steps[0]");
    assert!((1..=10).contains(&check["sleptMs"].as_u64().unwrap()));

    let risk = step(&group["steps"], "score risk");
    assert_eq!(risk["responseType"], "NthPrimeResponse");
    assert_eq!(risk["response"], json!({"n": 1001, "prime": 7927}));

    let confirm = step(steps, "confirm");
    assert_eq!(confirm["kind"], "sequence");
    assert_eq!(
        step(&confirm["steps"], "write order")["path"],
        "handlers.OrderRequest.steps[2].sequence.steps[0]"
    );
}

#[tokio::test]
async fn a_sure_failure_answers_500_naming_the_step_and_bad_input_422() {
    let platform =
        ScenarioPlatform::start(&["OrderRequest", "PaymentRequest", "RefundRequest"]).await;
    let _listener = platform
        .scenario_listener(&json!({"handlers": {
            "OrderRequest": {"steps": [
                {"parallel": {"steps": [
                    {"call": {"name": "charge payment", "type": "PaymentRequest"}},
                    {"sleep": {"name": "reserve stock", "ms": 1}}
                ]}},
                {"sleep": {"name": "ship", "ms": 1}}
            ]},
            "PaymentRequest": {"steps": [
                {"sleep": {"name": "authorize card", "ms": 1, "failure_chance": 1.0}}
            ]}
        }}))
        .await;

    let (status, body) = platform.send("PaymentRequest", json!({})).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "listener_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "step \"authorize card\" at handlers.PaymentRequest.steps[0] failed: rolled 0."
        ),
        "{message}"
    );
    assert!(message.ends_with("below its failure_chance 1"), "{message}");

    // Nested: the caller's step fails with the callee's answer inside.
    let (status, body) = platform.send("OrderRequest", json!({})).await;
    assert_eq!(status, 500, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "step \"charge payment\" at handlers.OrderRequest.steps[0].parallel.steps[0] \
             failed: PaymentRequest answered 500 listener_error: step \"authorize card\""
        ),
        "{message}"
    );

    // Routed here but not in the scenario, or with a bad callDepth: 422.
    let (status, body) = platform.send("RefundRequest", json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["message"],
        "this scenario does not handle RefundRequest; it handles OrderRequest, PaymentRequest"
    );
    let (status, body) = platform
        .send("OrderRequest", json!({"callDepth": -1}))
        .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn a_zero_failure_chance_never_fails() {
    let platform = ScenarioPlatform::start(&["SafeRequest"]).await;
    let _listener = platform
        .scenario_listener(&json!({"handlers": {
            "SafeRequest": {"steps": [
                {"parallel": {"steps": [
                    {"sleep": {"name": "a", "ms": 0, "failure_chance": 0.0}},
                    {"sleep": {"name": "b", "ms": 0, "failure_chance": 0.0}}
                ]}}
            ]}
        }}))
        .await;

    let requests: Vec<_> = (0..50)
        .map(|_| {
            let url = platform.public_web.url();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let event = json!({"type": "SafeRequest", "data": {}});
                post_json(&client, &url, &event).await
            })
        })
        .collect();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        for name in ["a", "b"] {
            let report = step(&body["data"]["steps"][0]["steps"], name);
            assert_eq!(report["ok"], true);
            assert_eq!(report["failureChance"], 0.0);
            // The dice were rolled, and lost to a chance of zero.
            let roll = report["roll"].as_f64().unwrap();
            assert!((0.0..1.0).contains(&roll));
        }
    }
}

#[tokio::test]
async fn a_call_cycle_stops_at_the_depth_limit() {
    let platform = ScenarioPlatform::start(&["PingPongA", "PingPongB"]).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let scenario = scenario(
        &json!({"max_call_depth": 3, "handlers": {
            "PingPongA": {"steps": [{"call": {"name": "to B", "type": "PingPongB"}}]},
            "PingPongB": {"steps": [{"call": {"name": "to A", "type": "PingPongA"}}]}
        }}),
        &platform.public_web.url(),
    );
    let counted = {
        let handled = handled.clone();
        move |request: Event| {
            handled.fetch_add(1, Ordering::Relaxed);
            let scenario = scenario.clone();
            async move { scenario.answer(request).await }
        }
    };
    let listener = spawn_listener(
        listener_config_on("scenario-listener-test", &platform.scenarios.request_queue),
        counted,
    )
    .await;
    wait_ready(&listener.url()).await;

    let started = Instant::now();
    let (status, body) = platform.send("PingPongA", json!({})).await;

    assert_eq!(status, 500, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    // A → B → A → B, then B's call back to A would be depth 4.
    assert!(
        message.ends_with(
            "step \"to A\" at handlers.PingPongB.steps[0] failed: the call depth limit (3) \
             is reached, so PingPongA is not sent; is there a call cycle?"
        ),
        "{message}"
    );
    assert_eq!(message.matches("answered 500 listener_error").count(), 3);
    assert_eq!(handled.load(Ordering::Relaxed), 4, "depths 0 to 3");
    // Cut by the limit, not by a timeout (each call would wait 5 s).
    assert!(started.elapsed() < Duration::from_secs(4));
}
