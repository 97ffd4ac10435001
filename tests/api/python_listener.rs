//! A listener in another language on the same trace: the Python listener
//! of `examples/python-listener/` (pika and the OpenTelemetry SDK, its
//! virtual environment made by its `run.sh` when missing) answers
//! `EchoRequest` behind public-web, following the wire contract only, and
//! its CONSUMER and PRODUCER spans join the Rust services' trace.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use integration_tests::otlp::{CONSUMER, PRODUCER, Receiver, only_span};
use integration_tests::processes::{env, free_port, spawn_front_processes};
use integration_tests::*;
use serde_json::json;
use tokio::process::{Child, Command};

/// The Python listener as a process, stopped with SIGTERM when dropped.
struct PythonListener {
    child: Child,
}

impl PythonListener {
    /// Starts it on `queue` with `extra` in its environment and waits until
    /// it consumes (the first start installs its requirements from PyPI).
    async fn start(queue: &str, extra: &[(String, String)]) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python-listener/run.sh");
        let port = free_port();
        let mut command = Command::new(script);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("AMQP_URL", amqp_url())
            .env("QUEUE", queue)
            .env("PORT", port.to_string())
            .envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command.spawn().expect("run.sh starts");
        let listener = Self { child };
        let ready = format!("http://127.0.0.1:{port}/readyz");
        wait_for(
            "the Python listener consumes",
            Duration::from_secs(180),
            || {
                let ready = ready.clone();
                async move {
                    reqwest::get(&ready)
                        .await
                        .is_ok_and(|response| response.status().is_success())
                }
            },
        )
        .await;
        listener
    }
}

impl Drop for PythonListener {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test]
async fn a_python_listener_answers_through_public_web_on_the_same_trace() {
    let receiver = Receiver::start().await;
    let topology = Topology::new();
    let otel = receiver.service_env("http/protobuf");
    let _python = PythonListener::start(&topology.request_queue, &otel).await;
    let mut front_env = otel.clone();
    let queue = &topology.request_queue;
    front_env.extend(env(&[(
        "ROUTES",
        &format!("EchoRequest={queue},ReverseRequest={queue}"),
    )]));
    let (_dispatcher, public_web) = spawn_front_processes(&topology, &front_env).await;

    let echo = json!({"type": "EchoRequest", "data": {"hello": "wörld", "n": [1, 2, 3]}});
    let (answer, trace_id) = post_traced(&reqwest::Client::new(), &public_web.url(), &echo).await;
    assert_eq!(answer.kind, "EchoResponse");
    assert_eq!(serde_json::Value::Object(answer.data), echo["data"]);

    // public-web's SERVER and CLIENT, the dispatcher's SERVER and PRODUCER,
    // the Python CONSUMER and PRODUCER, the dispatcher's CONSUMER and
    // CLIENT, public-web's `/dispatch` SERVER: nine, as for a ping.
    let spans = receiver
        .wait_for_spans(&trace_id, 9, Duration::from_secs(20))
        .await;
    let request = &topology.request_queue;
    let responses = &topology.response_queue;
    let published = only_span(
        &spans,
        "dispatcher",
        PRODUCER,
        &format!("{request} publish"),
    );
    let consumed = only_span(
        &spans,
        "python-listener",
        CONSUMER,
        &format!("{request} process"),
    );
    let replied = only_span(
        &spans,
        "python-listener",
        PRODUCER,
        &format!("{responses} publish"),
    );
    let taken = only_span(
        &spans,
        "dispatcher",
        CONSUMER,
        &format!("{responses} process"),
    );
    assert_eq!(consumed.parent_span_id(), published.span_id());
    assert_eq!(replied.parent_span_id(), consumed.span_id());
    assert_eq!(taken.parent_span_id(), replied.span_id());
    assert_eq!(
        consumed.attribute("messaging.system").as_deref(),
        Some("rabbitmq")
    );

    // An event it cannot answer gets the contract's error event, which
    // public-web answers as a Rust listener's.
    let wrong = json!({"type": "ReverseRequest", "data": {}});
    let (status, body) = post_json(&reqwest::Client::new(), &public_web.url(), &wrong).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "listener_error");
}
