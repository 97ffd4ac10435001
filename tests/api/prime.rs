//! prime-listener end to end: `NthPrimeRequest` through public-web, the
//! dispatcher and the real broker, its 422s, and instances sharing a queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Event;
use integration_tests::*;
use prime_listener::{PrimeConfig, PrimeHandler};
use serde_json::{Value, json};

/// A dispatcher routing `NthPrimeRequest` to the test's queue, public-web
/// in front of it. The listeners are the test's to start.
async fn front(topology: &Topology) -> (Running, Running) {
    spawn_front(
        topology,
        &format!("NthPrimeRequest={}", topology.request_queue),
    )
    .await
}

fn nth_prime(n: Value) -> Value {
    json!({"type": "NthPrimeRequest", "data": {"n": n}})
}

#[tokio::test]
async fn answers_the_known_primes() {
    let topology = Topology::new();
    let (_dispatcher, public_web) = front(&topology).await;
    let _listener = spawn_prime_listener(&topology.request_queue, 1_000_000).await;
    let client = reqwest::Client::new();

    let requests = [(1, 2), (1001, 7927), (5001, 48619), (9001, 93187)].map(|(n, prime)| {
        let client = client.clone();
        let url = public_web.url();
        tokio::spawn(async move {
            let id = uuid::Uuid::new_v4().to_string();
            let mut body = nth_prime(json!(n));
            body["id"] = json!(id);
            let (status, body) = post_json(&client, &url, &body).await;
            (id, n, prime, status, body)
        })
    });
    for request in requests {
        let (id, n, prime, status, body) = request.await.unwrap();
        assert_eq!(status, 200, "n={n}: {body}");
        assert_eq!(
            body,
            json!({"id": id, "type": "NthPrimeResponse", "data": {"n": n, "prime": prime}})
        );
    }
}

#[tokio::test]
async fn an_invalid_n_is_a_422_with_a_json_error() {
    let topology = Topology::new();
    let (_dispatcher, public_web) = front(&topology).await;
    let _listener = spawn_prime_listener(&topology.request_queue, 10_000).await;
    let client = reqwest::Client::new();

    for (n, message) in [
        (json!(0), "data.n must be at least 1, got 0"),
        (json!(-7), "data.n must be at least 1, got -7"),
        (json!(10_001), "data.n must be at most 10000, got 10001"),
        (json!(2.5), "data.n must be a whole number, got 2.5"),
        (json!("1001"), "data.n must be a whole number, got \"1001\""),
    ] {
        let response = client
            .post(public_web.url())
            .json(&nth_prime(n.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "n={n}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "n={n}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "listener_error", "message": message}}),
            "n={n}"
        );
    }
    let (status, body) = post_json(
        &client,
        &public_web.url(),
        &json!({"type": "NthPrimeRequest", "data": {}}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data.n is required"),
        "{body}"
    );
}

#[tokio::test]
async fn instances_share_the_queue() {
    let topology = Topology::new();
    let (_dispatcher, public_web) = front(&topology).await;
    let counts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut listeners = Vec::new();
    for count in &counts {
        let handler = PrimeHandler::new(&PrimeConfig {
            max_n: 100_000,
            workers: 1,
        });
        let count = count.clone();
        let counting = move |request: Event| {
            count.fetch_add(1, Ordering::Relaxed);
            let handler = handler.clone();
            async move { handler.answer(request).await }
        };
        let listener = spawn_listener(
            listener_config_on("prime-listener-test", &topology.request_queue),
            counting,
        )
        .await;
        wait_ready(&listener.url()).await;
        listeners.push(listener);
    }
    let client = reqwest::Client::new();

    let requests: Vec<_> = (0..40u64)
        .map(|i| {
            let client = client.clone();
            let url = public_web.url();
            tokio::spawn(async move {
                let n = 20_000 + i;
                (n, post_json(&client, &url, &nth_prime(json!(n))).await)
            })
        })
        .collect();
    let mut primes = Vec::new();
    for request in requests {
        let (n, (status, body)) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["n"], json!(n));
        primes.push(body["data"]["prime"].as_u64().unwrap());
    }
    // The 20,000th prime is 224,737; consecutive n give increasing primes.
    assert_eq!(primes[0], 224_737);
    assert!(primes.windows(2).all(|pair| pair[0] < pair[1]));
    let served = counts.each_ref().map(|count| count.load(Ordering::Relaxed));
    assert_eq!(served.iter().sum::<usize>(), 40);
    assert!(
        served.iter().all(|&n| n > 0),
        "both instances served: {served:?}"
    );
}
