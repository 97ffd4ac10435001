//! End-to-end telemetry: the three services as processes, exporting to a
//! real OTLP receiver over gRPC and HTTP/protobuf, against the real broker.
//! One ping must be one trace with every hop parented correctly; every hop
//! logs one line in its span, found by the provisioned trace -> logs
//! query; `/metrics` counts what happened.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use integration_tests::otlp::{
    CLIENT, CONSUMER, PRODUCER, ReceivedLog, ReceivedSpan, Receiver, SERVER, only_span,
};
use integration_tests::processes::{ProcessStack, metric_names, metric_value};
use integration_tests::*;

/// Spans a ping produces, in causal order: (service, kind, name).
fn expected_chain(topology: &Topology) -> Vec<(&'static str, i32, String)> {
    let request = &topology.request_queue;
    let response = &topology.response_queue;
    vec![
        ("public-web", SERVER, "POST /".to_owned()),
        ("public-web", CLIENT, "POST".to_owned()),
        ("dispatcher", SERVER, "POST /".to_owned()),
        ("dispatcher", PRODUCER, format!("{request} publish")),
        ("ping-listener", CONSUMER, format!("{request} process")),
        ("ping-listener", PRODUCER, format!("{response} publish")),
        ("dispatcher", CONSUMER, format!("{response} process")),
        ("dispatcher", CLIENT, "POST".to_owned()),
        ("public-web", SERVER, "POST /dispatch".to_owned()),
    ]
}

fn otel_env(receiver: &Receiver, protocol: &str) -> Vec<(String, String)> {
    let mut env = receiver.service_env(protocol);
    env.extend(
        [
            ("AMQP_URL", amqp_url()),
            ("RUST_LOG", "info,dispatcher=debug".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    env
}

/// Finds the chain in `spans` and checks each link's parent and kind.
/// Returns the spans in chain order.
fn assert_chain(
    spans: &[ReceivedSpan],
    topology: &Topology,
    root_parent: Option<&str>,
) -> Vec<ReceivedSpan> {
    let mut chain = Vec::new();
    for (service, kind, name) in expected_chain(topology) {
        chain.push(only_span(spans, service, kind, &name).clone());
    }
    match root_parent {
        Some(parent) => assert_eq!(chain[0].parent_span_id(), parent),
        None => assert_eq!(chain[0].parent_span_id(), ""),
    }
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].parent_span_id(),
            pair[0].span_id(),
            "{} {} is a child of {} {}",
            pair[1].service,
            pair[1].span.name,
            pair[0].service,
            pair[0].span.name
        );
    }
    let ids: HashSet<String> = spans.iter().map(ReceivedSpan::span_id).collect();
    for span in spans {
        let parent = span.parent_span_id();
        assert!(
            parent.is_empty() || ids.contains(&parent) || Some(parent.as_str()) == root_parent,
            "the parent of {} {} is in the trace",
            span.service,
            span.span.name
        );
    }
    chain
}

async fn one_ping_is_one_trace(protocol: &str) {
    let receiver = Receiver::start().await;
    let topology = Topology::new();
    let mut stack = ProcessStack::start(&topology, &otel_env(&receiver, protocol)).await;

    let client_trace = uuid::Uuid::new_v4().simple().to_string();
    let client_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let response = reqwest::Client::new()
        .post(stack.public_web.url())
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .json(&ping_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-trace-id"], client_trace.as_str());
    let event = as_event(response.json().await.unwrap());

    let spans = receiver
        .wait_for_spans(&client_trace, 9, Duration::from_secs(20))
        .await;
    let chain = assert_chain(&spans, &topology, Some(client_span));

    let server = &chain[0];
    assert_eq!(
        server.attribute("http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(server.attribute("http.route").as_deref(), Some("/"));
    assert_eq!(
        server.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    let client = &chain[1];
    assert_eq!(
        client.attribute("http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        client.attribute("http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        client.attribute("server.port"),
        Some(stack.dispatcher.port.to_string())
    );
    for (span, queue, operation) in [
        (&chain[3], &topology.request_queue, "send"),
        (&chain[4], &topology.request_queue, "process"),
        (&chain[5], &topology.response_queue, "send"),
        (&chain[6], &topology.response_queue, "process"),
    ] {
        assert_eq!(
            span.attribute("messaging.system").as_deref(),
            Some("rabbitmq")
        );
        assert_eq!(
            span.attribute("messaging.destination.name").as_ref(),
            Some(queue)
        );
        assert_eq!(
            span.attribute("messaging.operation.type").as_deref(),
            Some(operation)
        );
        assert_eq!(
            span.attribute("messaging.message.id"),
            Some(event.id.clone())
        );
    }
    assert_eq!(
        chain[8].attribute("http.route").as_deref(),
        Some("/dispatch")
    );
    assert_eq!(
        chain[8].attribute("http.response.status_code").as_deref(),
        Some("204")
    );

    // The dispatcher's log line inside the request carries the trace id,
    // both as an OTLP log record and on stdout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !receiver.logs().iter().any(|log| {
        log.service == "dispatcher"
            && log.trace_id() == client_trace
            && log.body() == "event published"
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no OTLP log record with the trace id"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stdout = stack.dispatcher.drain_stdout();
    let line = stdout
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "event published")
        .expect("the JSON log line");
    assert_eq!(line["trace_id"], client_trace.as_str());

    // /metrics counted the request, the publish and the ack.
    let public_web = reqwest::get(format!("{}/metrics", stack.public_web.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels = [
        ("http_route", "/"),
        ("http_request_method", "POST"),
        ("http_response_status_code", "200"),
    ];
    assert_eq!(
        metric_value(
            &public_web,
            "http_server_request_duration_seconds_count",
            &labels
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&public_web, "public_web_pending_requests", &[]),
        Some(0.0)
    );
    let dispatcher = reqwest::get(format!("{}/metrics", stack.dispatcher.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request_queue = [("queue", topology.request_queue.as_str())];
    assert_eq!(
        metric_value(&dispatcher, "amqp_messages_published_total", &request_queue),
        Some(1.0)
    );
    let listener = reqwest::get(format!("{}/metrics", stack.listener.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(&listener, "amqp_messages_acked_total", &request_queue),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &listener,
            "telemetry_export_failures_total",
            &[("signal", "traces")]
        ),
        Some(0.0)
    );

    // Every metric the Grafana dashboard queries is one the services export.
    let exported: HashSet<String> = [&public_web, &dispatcher, &listener]
        .into_iter()
        .flat_map(|text| metric_names(text))
        .collect();
    for name in stack_check::dashboard_metric_names() {
        assert!(
            exported.contains(&name),
            "the dashboard's {name} is exported"
        );
    }

    assert!(stack.terminate().await, "every service exits 0 on SIGTERM");
}

#[tokio::test]
async fn one_ping_is_one_trace_over_grpc() {
    one_ping_is_one_trace("grpc").await;
}

#[tokio::test]
async fn one_ping_is_one_trace_over_http_protobuf() {
    one_ping_is_one_trace("http/protobuf").await;
}

#[tokio::test]
async fn concurrent_pings_make_separate_complete_traces() {
    let receiver = Receiver::start().await;
    let topology = Topology::new();
    let stack = ProcessStack::start(&topology, &otel_env(&receiver, "grpc")).await;
    let client = reqwest::Client::new();

    let requests: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            let url = stack.public_web.url();
            tokio::spawn(async move {
                let response = client.post(url).json(&ping_body()).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.headers()["x-trace-id"]
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut trace_ids = HashSet::new();
    for request in requests {
        trace_ids.insert(request.await.unwrap());
    }
    assert_eq!(trace_ids.len(), 200, "every request has its own trace");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let by_trace = loop {
        let mut by_trace: HashMap<String, Vec<ReceivedSpan>> = HashMap::new();
        for span in receiver.spans() {
            by_trace.entry(span.trace_id()).or_default().push(span);
        }
        let complete = trace_ids
            .iter()
            .filter(|id| by_trace.get(*id).is_some_and(|spans| spans.len() >= 9))
            .count();
        if complete == trace_ids.len() {
            break by_trace;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{complete} of 200 traces complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for trace_id in &trace_ids {
        let spans = &by_trace[trace_id];
        assert_eq!(spans.len(), 9, "trace {trace_id} has only its own 9 spans");
        assert_chain(spans, &topology, None);
    }
    assert!(stack.terminate().await);
}

/// The line each hop writes at `info`: (service, message, attributes it
/// carries).
const HOP_LINES: [(&str, &str, &[&str]); 5] = [
    (
        "public-web",
        "request accepted",
        &["event_id", "event_type"],
    ),
    ("dispatcher", "event published", &["event_id", "queue"]),
    (
        "ping-listener",
        "request handled",
        &["event_id", "queue", "outcome", "handler_ms"],
    ),
    ("dispatcher", "callback delivered", &["status", "attempts"]),
    ("public-web", "request answered", &["status", "elapsed_ms"]),
];

#[tokio::test]
async fn every_hop_of_a_hundred_pings_logs_its_line_in_the_ping_s_trace() {
    let receiver = Receiver::start().await;
    let topology = Topology::new();
    let mut stack = ProcessStack::start(&topology, &otel_env(&receiver, "http/protobuf")).await;
    let client = reqwest::Client::new();
    let mut trace_ids = Vec::new();
    for _ in 0..100 {
        let (_, trace_id) = post_traced(&client, &stack.public_web.url(), &ping_body()).await;
        trace_ids.push(trace_id);
    }

    let complete = |trace_id: &String, spans: &[ReceivedSpan], logs: &[ReceivedLog]| {
        spans.iter().filter(|s| &s.trace_id() == trace_id).count() == 9
            && HOP_LINES.iter().all(|(service, message, _)| {
                logs.iter().any(|log| {
                    &log.trace_id() == trace_id && log.service == *service && log.body() == *message
                })
            })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (spans, logs) = loop {
        let (spans, logs) = (receiver.spans(), receiver.logs());
        let done = trace_ids
            .iter()
            .filter(|id| complete(id, &spans, &logs))
            .count();
        if done == trace_ids.len() {
            break (spans, logs);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of 100 pings have their spans and hop lines"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let span_services: HashMap<String, (String, String)> = spans
        .iter()
        .map(|s| (s.span_id(), (s.trace_id(), s.service.clone())))
        .collect();
    let entries: Vec<_> = logs.iter().map(|log| (log, log.loki_entry())).collect();
    for trace_id in &trace_ids {
        for (service, message, attributes) in HOP_LINES {
            let lines: Vec<&ReceivedLog> = logs
                .iter()
                .filter(|log| {
                    &log.trace_id() == trace_id && log.service == service && log.body() == message
                })
                .collect();
            assert_eq!(lines.len(), 1, "one {message:?} line by {service}");
            let line = lines[0];
            assert_eq!(line.record.severity_text, "INFO");
            assert_eq!(
                span_services.get(&line.span_id()),
                Some(&(trace_id.clone(), service.to_owned())),
                "{service}'s {message:?} line names a span of its own in the ping's trace"
            );
            for attribute in attributes {
                assert!(
                    line.attribute(attribute).is_some(),
                    "{message:?} carries {attribute}"
                );
            }
        }
        // Grafana's trace -> logs link, as provisioned, run the way Loki
        // would on what the services exported: the whole story of this
        // ping, every service, nothing of another ping.
        let query =
            stack_check::logql::Query::parse(&stack_check::logql::trace_to_logs_query(trace_id))
                .unwrap();
        let found: Vec<&ReceivedLog> = entries
            .iter()
            .filter(|(_, entry)| query.matches(entry))
            .map(|(log, _)| *log)
            .collect();
        assert!(found.iter().all(|log| &log.trace_id() == trace_id));
        let services: HashSet<&str> = found.iter().map(|log| log.service.as_str()).collect();
        assert_eq!(
            services,
            HashSet::from(["public-web", "dispatcher", "ping-listener"])
        );
        assert!(found.len() >= HOP_LINES.len());
    }
    let answered = logs
        .iter()
        .find(|log| log.body() == "request answered" && log.trace_id() == trace_ids[0])
        .unwrap();
    assert_eq!(answered.attribute("status").as_deref(), Some("200"));
    let delivered = logs
        .iter()
        .find(|log| log.body() == "callback delivered" && log.trace_id() == trace_ids[0])
        .unwrap();
    assert_eq!(delivered.attribute("status").as_deref(), Some("204"));
    assert_eq!(delivered.attribute("attempts").as_deref(), Some("1"));

    // stdout names the same trace and span.
    let stdout = stack.public_web.drain_stdout();
    let line = stdout
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| {
            line["message"] == "request answered" && line["trace_id"] == trace_ids[0].as_str()
        })
        .expect("public-web's JSON line for the first ping");
    assert_eq!(line["target"], "hop");
    assert_eq!(line["span_id"], answered.span_id().as_str());
    assert!(stack.terminate().await);
}

/// The log lines `bin/trace` prints under the span row labelled `label`.
fn lines_under<'a>(waterfall: &'a str, label: &str) -> Vec<&'a str> {
    let mut lines = waterfall.lines().skip_while(|line| {
        !(line.contains('│') && line.trim_start().split("  ").next() == Some(label))
    });
    assert!(lines.next().is_some(), "a {label:?} row in\n{waterfall}");
    lines
        .map(str::trim_start)
        .take_while(|line| line.starts_with('·'))
        .collect()
}

#[tokio::test]
async fn bin_trace_shows_each_hop_line_under_its_span() {
    let dir = std::env::temp_dir().join(format!("it-traces-{}", uuid::Uuid::new_v4().simple()));
    let topology = Topology::new();
    let env: Vec<(String, String)> = [
        ("AMQP_URL", amqp_url()),
        ("TRACE_FILE_DIR", dir.display().to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100".to_owned()),
    ]
    .map(|(name, value)| (name.to_owned(), value))
    .into();
    let stack = ProcessStack::start(&topology, &env).await;
    let (_, trace_id) = post_traced(
        &reqwest::Client::new(),
        &stack.public_web.url(),
        &ping_body(),
    )
    .await;

    let style = trace_view::Style {
        color: false,
        bar_width: 20,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let waterfall = loop {
        let shown = trace_view::run(
            &dir,
            &trace_view::Selection::Trace(trace_id.clone()),
            &style,
        );
        match shown {
            Ok(output) if output.text.contains("9 spans  ·  5 log lines") => break output.text,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "the trace and its 5 hop lines in {}: {shown:?}",
                dir.display()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let request_process = format!("ping-listener {} process", topology.request_queue);
    let response_process = format!("dispatcher {} process", topology.response_queue);
    for (label, messages) in [
        (
            "public-web POST /",
            &["request accepted", "request answered"][..],
        ),
        ("dispatcher POST /", &["event published"]),
        (request_process.as_str(), &["request handled"]),
        (response_process.as_str(), &["callback delivered"]),
    ] {
        let lines = lines_under(&waterfall, label);
        assert_eq!(lines.len(), messages.len(), "{label}:\n{waterfall}");
        for (line, message) in lines.iter().zip(messages) {
            assert!(line.contains(&format!("INFO {message}")), "{line}");
        }
    }
    assert!(stack.terminate().await);
    std::fs::remove_dir_all(&dir).unwrap();
}
