//! The `req` binary end to end against the in-process stub: what a single
//! ping prints, how failures exit, and the `--json` last line of a load run.

mod support;

use std::process::{Command, Output};

use serde_json::Value;

/// Runs `req` with `PUBLIC_WEB_URL=base` off the async runtime, so the stub
/// keeps serving meanwhile.
async fn req(base: String, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_req"))
            .args(&args)
            .env("PUBLIC_WEB_URL", base)
            .env("GRAFANA_URL", "http://grafana.test:3300")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ping_prints_response_timings_and_trace_link() {
    let stub = support::start().await;
    let output = req(stub.base(), &["--path", "/ping"]).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));

    // The response JSON, pretty-printed, comes first.
    let json_end = stdout.find("\n}\n").expect("a pretty JSON object") + 2;
    let response: Value = serde_json::from_str(&stdout[..json_end]).unwrap();
    assert_eq!(response["type"], "PingResponse");
    assert!(stdout.starts_with("{\n  \""), "{stdout}");

    let lines: Vec<&str> = stdout[json_end + 1..].lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("listener received it +"), "{stdout}");
    assert!(lines[0].ends_with(" ms after sentAt"), "{stdout}");
    assert!(lines[1].starts_with("round trip: ") && lines[1].ends_with(" ms"));
    assert_eq!(lines[2], format!("trace id: {}", support::TRACE_ID));
    let link = lines[3].strip_prefix("grafana: ").unwrap();
    assert!(
        link.starts_with("http://grafana.test:3300/explore?schemaVersion=1&panes="),
        "{link}"
    );
    assert!(link.contains(support::TRACE_ID), "{link}");
    assert_eq!(
        stub.seen.pings.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_status_goes_to_stderr_and_exits_1() {
    let stub = support::start().await;
    let output = req(
        stub.base(),
        &["--path", "/ping", "--type", "Other", "--data", "{}"],
    )
    .await;
    let stderr = text(&output.stderr);

    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(
        stderr.starts_with("HTTP 422 Unprocessable Entity\n"),
        "{stderr}"
    );
    let body: Value = serde_json::from_str(stderr.split_once('\n').unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], "listener_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_one_clear_line() {
    let url = support::refusing_url().await;
    let base = url.as_str().trim_end_matches('/').to_owned();
    let output = req(base, &[]).await;
    let stderr = text(&output.stderr);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(url.as_str()), "{stderr}");
    assert!(stderr.contains("bin/restart.sh"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_json_report_is_the_last_stdout_line() {
    let stub = support::start().await;
    let output = req(
        stub.base(),
        &[
            "--path",
            "/ping",
            "--concurrency",
            "2",
            "--requests",
            "40",
            "--json",
        ],
    )
    .await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let last = stdout.lines().last().expect("a report line");
    let report: Value = serde_json::from_str(last).unwrap();
    assert_eq!(report["requests"], 40);
    assert_eq!(report["errors"], 0);
    for key in ["rps", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {last}"
        );
    }
    // The readable summary went to stderr, keeping stdout parseable.
    assert!(text(&output.stderr).contains("40 requests in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_by_duration_stops_by_itself() {
    let stub = support::start().await;
    let began = std::time::Instant::now();
    let output = req(
        stub.base(),
        &[
            "--path",
            "/ping",
            "--concurrency",
            "2",
            "--duration",
            "500ms",
        ],
    )
    .await;
    let stdout = text(&output.stdout);

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(began.elapsed() < std::time::Duration::from_secs(10));
    assert!(stdout.contains(" req/s (concurrency 2)"), "{stdout}");
    assert!(stdout.contains("latency  p50 "), "{stdout}");
    assert!(stdout.contains("errors   none"), "{stdout}");
}
