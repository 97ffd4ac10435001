//! `run_load` against a real HTTP server in-process: counts, percentiles,
//! errors by kind, the hard limits, and the report's JSON shape.

mod support;

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use req::{Limit, LoadConfig, LoadReport, Payload, Transport, run_load};
use serde_json::{Value, json};

fn url(stub: &support::Stub, path: &str) -> reqwest::Url {
    req::target_url(&stub.base(), path).unwrap()
}

fn config(url: reqwest::Url, concurrency: usize, limit: Limit) -> LoadConfig {
    LoadConfig {
        url,
        transport: Transport::Http,
        payload: Payload::Ping,
        concurrency: NonZeroUsize::new(concurrency).unwrap(),
        limit,
        timeout: Duration::from_secs(10),
        show_progress: false,
        rate: None,
    }
}

fn assert_sane_percentiles(report: &LoadReport) {
    assert!(report.p50_ms > 0.0, "{report:?}");
    assert!(report.p50_ms <= report.p90_ms, "{report:?}");
    assert!(report.p90_ms <= report.p99_ms, "{report:?}");
    assert!(report.p99_ms <= report.max_ms, "{report:?}");
    // Loopback pings answer in well under a second.
    assert!(report.max_ms < 1_000.0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_requests_are_sent_exactly_and_all_succeed() {
    let stub = support::start().await;
    let report = run_load(config(url(&stub, "/ping"), 4, Limit::Requests(200)))
        .await
        .unwrap();

    assert_eq!(report.requests, 200);
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.errors_by_kind.is_empty());
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.concurrency, 4);
    assert_eq!(stub.seen.pings.load(Ordering::Relaxed), 200);
    assert_sane_percentiles(&report);
    assert!(report.rps > 0.0 && report.duration_s > 0.0);
    let implied_rps = report.requests as f64 / report.duration_s;
    assert!(
        (report.rps - implied_rps).abs() / implied_rps < 0.01,
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_reuse_keep_alive_connections() {
    let stub = support::start().await;
    let report = run_load(config(url(&stub, "/ping"), 3, Limit::Requests(150)))
        .await
        .unwrap();

    assert_eq!(report.requests, 150);
    assert_eq!(report.errors, 0, "{report:?}");
    let connections = stub.seen.connections.load(Ordering::Relaxed);
    // One connection per worker, give or take hyper's pool racing a
    // connection's return against the next checkout: never one per request.
    assert!(
        (1..=6).contains(&connections),
        "150 requests over {connections} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_status() {
    let stub = support::start().await;
    let not_found = run_load(config(url(&stub, "/nowhere"), 2, Limit::Requests(20)))
        .await
        .unwrap();
    assert_eq!(not_found.requests, 20);
    assert_eq!(not_found.errors, 20);
    assert_eq!(not_found.errors_by_kind, [("404".to_owned(), 20)].into());
    // Percentiles describe successes only, and there were none.
    assert_eq!(not_found.max_ms, 0.0);

    let mut wrong_type = config(url(&stub, "/ping"), 2, Limit::Requests(10));
    wrong_type.payload = Payload::event("NthPrimeRequest", &json!({"n": 3}));
    let rejected = run_load(wrong_type).await.unwrap();
    assert_eq!(rejected.requests, 10);
    assert_eq!(rejected.errors_by_kind, [("422".to_owned(), 10)].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_and_timeouts_are_errors() {
    let refused = run_load(config(support::refusing_url().await, 2, Limit::Requests(6)))
        .await
        .unwrap();
    assert_eq!(refused.requests, 6);
    assert_eq!(refused.errors_by_kind, [("connect".to_owned(), 6)].into());

    let stub = support::start().await;
    let mut hanging = config(url(&stub, "/hang"), 2, Limit::Requests(4));
    hanging.timeout = Duration::from_millis(100);
    let timed_out = run_load(hanging).await.unwrap();
    assert_eq!(timed_out.requests, 4);
    assert_eq!(timed_out.errors_by_kind, [("timeout".to_owned(), 4)].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_stops_the_run() {
    let stub = support::start().await;
    let began = Instant::now();
    let report = run_load(config(
        url(&stub, "/ping"),
        2,
        Limit::Duration(Duration::from_millis(400)),
    ))
    .await
    .unwrap();
    let took = began.elapsed();

    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!((0.4..3.0).contains(&report.duration_s), "{report:?}");
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    // Requests dropped at the deadline may or may not have reached the server.
    let pings = stub.seen.pings.load(Ordering::Relaxed);
    assert!(
        (report.requests..=report.requests + report.abandoned).contains(&pings),
        "{pings} pings for {report:?}"
    );
    assert_sane_percentiles(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_drops_requests_still_in_flight() {
    let stub = support::start().await;
    let began = Instant::now();
    // The per-request timeout is far beyond the deadline: only the deadline
    // can end this run in time.
    let report = run_load(config(
        url(&stub, "/hang"),
        3,
        Limit::Duration(Duration::from_millis(300)),
    ))
    .await
    .unwrap();

    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(report.requests, 0);
    assert_eq!(report.errors, 0);
    assert_eq!(report.abandoned, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_count_wins_when_it_comes_before_the_deadline() {
    let stub = support::start().await;
    let limit = Limit::RequestsWithin(30, Duration::from_secs(60));
    let began = Instant::now();
    let report = run_load(config(url(&stub, "/ping"), 2, limit))
        .await
        .unwrap();
    assert!(began.elapsed() < Duration::from_secs(10));
    assert_eq!(report.requests, 30);
    assert_eq!(report.abandoned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_serializes_to_one_json_line_with_the_contract_keys() {
    let stub = support::start().await;
    let wrong = config(url(&stub, "/nowhere"), 1, Limit::Requests(3));
    let report = run_load(config(url(&stub, "/ping"), 2, Limit::Requests(20)))
        .await
        .unwrap();
    let line = report.to_json_line();
    assert!(!line.contains('\n'));

    let json: Value = serde_json::from_str(&line).unwrap();
    let object = json.as_object().unwrap();
    for key in ["rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "duration_s"] {
        assert!(object[key].is_f64(), "{key} in {line}");
    }
    assert_eq!(json["requests"], 20);
    assert_eq!(json["errors"], 0);
    assert_eq!(json["concurrency"], 2);
    assert_eq!(json["errors_by_kind"], json!({}));
    assert_eq!(json["p99_ms"].as_f64(), Some(report.p99_ms));

    let failing = run_load(wrong).await.unwrap();
    let json: Value = serde_json::from_str(&failing.to_json_line()).unwrap();
    assert_eq!(json["errors"], 3);
    assert_eq!(json["errors_by_kind"], json!({"404": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_paces_the_run() {
    let stub = support::start().await;
    let mut paced = config(url(&stub, "/ping"), 4, Limit::Requests(20));
    paced.rate = Some(50.0);
    let started = Instant::now();
    let report = run_load(paced).await.unwrap();
    let elapsed = started.elapsed();

    assert_eq!(report.requests, 20);
    assert_eq!(report.errors, 0, "{report:?}");
    // 20 slots 20 ms apart, the first at once: at least 380 ms.
    assert!(elapsed >= Duration::from_millis(370), "{elapsed:?}");
    assert!(report.rps <= 55.0, "{report:?}");
}
