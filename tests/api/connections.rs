//! Connection limits: slow, idle and silent connections are closed or
//! displaced, a full server says so in JSON, and clients who send requests
//! keep being answered through all of it.

use std::time::Duration;

use common::http::ServerLimits;
use integration_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A ping stack whose public-web has `limits`.
async fn stack_with_limits(
    topology: &Topology,
    limits: ServerLimits,
) -> (Running, Running, Running) {
    let url = amqp_url();
    let dispatcher = spawn_dispatcher(dispatcher_config(topology, &url)).await;
    let listener = spawn_listener(listener_config(topology, &url), ping_listener::handle).await;
    let mut config = public_web_config(&dispatcher.url());
    config.limits = limits;
    let (public_web, _pending) = spawn_public_web(config).await;
    wait_ready(&dispatcher.url()).await;
    wait_ready(&listener.url()).await;
    (public_web, dispatcher, listener)
}

/// Whether the server has closed `stream` (EOF or reset) by `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Pings `url` until `for_how_long` has passed; the slowest answer.
async fn ping_for(url: &str, for_how_long: Duration) -> Duration {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < for_how_long {
        let sent = Instant::now();
        let (status, body) = post_json(&client, url, &ping_body()).await;
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

#[tokio::test]
async fn slowloris_connections_are_closed_at_the_header_timeout_and_pings_stay_fast() {
    let topology = Topology::new();
    let limits = ServerLimits::new(
        Duration::from_secs(2),
        Duration::from_secs(60),
        16 * 1024,
        4096,
    );
    let (public_web, _dispatcher, _listener) = stack_with_limits(&topology, limits).await;
    let addr = public_web.url().trim_start_matches("http://").to_owned();

    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let opened = Instant::now();
    // One more header byte a second on each, as slowloris does.
    let drip = tokio::spawn(async move {
        let mut open = slow;
        let mut closed_at = Vec::new();
        while !open.is_empty() && opened.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut still_open = Vec::new();
            for mut stream in open {
                let mut probe = [0u8; 256];
                let gone = match stream.try_read(&mut probe) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
                };
                if gone || stream.write_all(b"X").await.is_err() {
                    closed_at.push(opened.elapsed());
                } else {
                    still_open.push(stream);
                }
            }
            open = still_open;
        }
        (open.len(), closed_at)
    });
    let slowest = ping_for(&public_web.url(), Duration::from_secs(4)).await;
    let (still_open, closed_at) = drip.await.unwrap();
    assert_eq!(still_open, 0, "every slow connection is closed");
    let last = closed_at.iter().max().copied().unwrap_or_default();
    eprintln!("slowloris: 300 closed, the last {last:?} after opening; slowest ping {slowest:?}");
    assert!(
        last < Duration::from_secs(5),
        "closed within the 2 s header timeout (and a second of drip): {last:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "pings stayed fast: {slowest:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let topology = Topology::new();
    let limits = ServerLimits::new(
        Duration::from_secs(5),
        Duration::from_secs(1),
        16 * 1024,
        4096,
    );
    let (public_web, _dispatcher, _listener) = stack_with_limits(&topology, limits).await;
    let addr = public_web.url().trim_start_matches("http://").to_owned();

    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    assert!(closed_by(&mut stream, idle_from + Duration::from_secs(3)).await);
    assert!(
        idle_from.elapsed() >= Duration::from_millis(900),
        "not before its time"
    );
}

#[tokio::test]
async fn at_the_cap_silent_connections_make_room_and_busy_ones_are_refused_in_json() {
    let topology = Topology::new();
    // Nobody consumes the orders: they stay parked, their connections busy.
    let (dispatcher, _listener) = spawn_pings_and_unanswered_orders(&topology).await;
    let mut config = public_web_config(&dispatcher.url());
    config.limits = ServerLimits::new(
        Duration::from_secs(30),
        Duration::from_secs(60),
        16 * 1024,
        20,
    );
    config.request_timeout = Duration::from_secs(5);
    let (public_web, internal, pending) = spawn_public_web_with_internal(config).await;
    let addr = public_web.url().trim_start_matches("http://").to_owned();

    // Twenty silent connections fill the cap; pings still get through,
    // each displacing the longest-silent one.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..5 {
        let (status, body) = post_json(&client, &public_web.url(), &ping_body()).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut displaced = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    for stream in &mut silent {
        if closed_by(stream, deadline).await {
            displaced += 1;
        }
    }
    // Each ping's connection, and the dispatcher's callback connection,
    // took the slot of a silent one (a ping whose predecessor had hung up
    // found that slot free): the oldest ones, in order.
    assert!(
        displaced >= 2,
        "the oldest silent connections made room: {displaced}"
    );
    for stream in &mut silent[..displaced] {
        assert!(closed_by(stream, Instant::now()).await, "oldest first");
    }
    drop(silent);

    // Twenty parked orders, each on its own connection, fill it with
    // connections that are all busy: the next one is told so, in JSON.
    let parked: Vec<_> = (0..20)
        .map(|n| {
            let url = public_web.url();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let order =
                    serde_json::json!({"id": format!("o{n}"), "type": "OrderRequest", "data": {}});
                post_json(&client, &url, &order).await
            })
        })
        .collect();
    wait_for("twenty orders parked", Duration::from_secs(5), || async {
        pending.len() == 20
    })
    .await;
    let mut refused = TcpStream::connect(&addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), refused.read_to_string(&mut answer))
        .await
        .expect("answered at once")
        .ok();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    // The internal port has connections of its own: the probes answer.
    let health = reqwest::get(format!("{internal}/readyz")).await.unwrap();
    assert_eq!(health.status(), 200);
    for order in parked {
        assert_eq!(
            order.await.unwrap().0,
            504,
            "parked requests are not cut off"
        );
    }
}

#[tokio::test]
async fn oversized_headers_are_answered_in_json() {
    let mut config = public_web_config("http://127.0.0.1:9");
    config.limits = ServerLimits::new(
        Duration::from_secs(5),
        Duration::from_secs(60),
        8 * 1024,
        4096,
    );
    let (public_web, _pending) = spawn_public_web(config).await;
    let response = reqwest::Client::new()
        .get(format!("{}/healthz", public_web.url()))
        .header("x-padding", "a".repeat(10 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large");
    // The service goes on serving.
    let response = reqwest::get(format!("{}/healthz", public_web.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn silent_connections_beyond_the_descriptor_limit_leave_healthz_and_pings_answering() {
    const PUBLIC_WEB_FDS: u64 = 6144;
    let topology = Topology::new();
    let dispatcher = spawn_dispatcher(dispatcher_config(&topology, &amqp_url())).await;
    let _listener = spawn_listener(
        listener_config(&topology, &amqp_url()),
        ping_listener::handle,
    )
    .await;
    wait_ready(&dispatcher.url()).await;
    // public-web as a process of its own, with fewer descriptors than the
    // silent connections below: they would exhaust them all. Its header
    // timeout is long, so that the cap, not the timeout, deals with them.
    let public_web = processes::ServiceProcess::spawn_with_fd_limit(
        "public-web",
        processes::free_port(),
        &processes::env(&[
            ("DISPATCHER_URL", &dispatcher.url()),
            ("HEADER_TIMEOUT_MS", "300000"),
        ]),
        Some(PUBLIC_WEB_FDS),
    )
    .await;
    wait_ready(&public_web.url()).await;
    let addr = public_web.url().trim_start_matches("http://").to_owned();
    let silent_count = PUBLIC_WEB_FDS as usize + 1000;
    let mut silent = Vec::with_capacity(silent_count);
    for _ in 0..silent_count {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The kernel completes connections before public-web accepts them:
    // wait until it has taken them all in.
    let displaced = || async {
        let metrics = public_web.metrics().await;
        processes::metric_value(
            &metrics,
            "http_server_connections_closed_total",
            &[("reason", "displaced")],
        )
        .unwrap_or(0.0)
    };
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = displaced().await;
        if seen >= 1000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen >= 1000.0,
        "connections beyond the cap displaced silent ones: {seen}"
    );
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", public_web.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let slowest = ping_for(&public_web.url(), Duration::from_secs(2)).await;
    eprintln!(
        "{silent_count} silent connections against {PUBLIC_WEB_FDS} descriptors: {seen} displaced, slowest ping {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    drop(silent);
}
