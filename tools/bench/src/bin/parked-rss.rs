//! parked-rss: how much resident memory public-web spends on parked
//! requests.
//!
//! Run it against a public-web whose dispatcher has no listener behind its
//! route and whose `REQUEST_TIMEOUT_MS` outlasts the run, so every request
//! stays parked. It reads public-web's `VmRSS`, sends `--requests` pings
//! that it never reads, waits until `public_web_pending_requests` says they
//! are all parked, reads `VmRSS` again, then hangs up and reads it once
//! more after the map has drained. Every wait is bounded by `--deadline`.
//!
//! `--protocol http1` sends each request on a connection of its own (an
//! HTTP/1.1 connection carries one request at a time); `--protocol h2c`
//! sends them as streams of HTTP/2 connections (prior knowledge, no TLS),
//! as many per connection as public-web allows at once, the way a proxy or
//! a gRPC-style client in front of it would. Connections come from several
//! 127.0.1.x source addresses, since one address has fewer ephemeral ports
//! than 100,000 sockets need, and are paced by the pending gauge so the
//! accept backlog never overflows.
//!
//! The process needs a file descriptor per connection: with HTTP/1.1, raise
//! `ulimit -n` for it (and for public-web) first. Prints one JSON line.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Park requests on public-web and measure its memory.
#[derive(Debug, Parser)]
#[command(name = "parked-rss")]
struct Cli {
    /// public-web's address.
    #[arg(long)]
    addr: SocketAddrV4,
    /// public-web's pid, whose /proc/<pid>/status is read.
    #[arg(long)]
    pid: u32,
    /// Requests to park.
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// The count the budget is for: when `--requests` is smaller
    /// (a process may hold only so many sockets), the extra memory at this
    /// count is extrapolated from the measured slope.
    #[arg(long)]
    target: Option<usize>,
    /// How the requests reach public-web.
    #[arg(long, value_enum, default_value_t = Protocol::Http1)]
    protocol: Protocol,
    /// With h2c: parked requests per connection, at most the server's
    /// stream limit.
    #[arg(long, default_value_t = HYPER_MAX_CONCURRENT_STREAMS,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(HYPER_MAX_CONCURRENT_STREAMS)))]
    streams_per_connection: u16,
    /// Give up (and fail) when the requests are not all parked by then.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

/// The HTTP version of the parked requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// HTTP/1.1: one connection per parked request.
    Http1,
    /// HTTP/2 over cleartext: many parked requests per connection.
    H2c,
}

/// hyper's default limit of concurrent streams per HTTP/2 connection.
const HYPER_MAX_CONCURRENT_STREAMS: u16 = 200;

/// A client connection with its requests in flight; dropping it hangs up.
enum Held {
    Http1(#[allow(dead_code, reason = "held open, never read")] TcpStream),
    H2c {
        driver: tokio::task::JoinHandle<()>,
        /// Unanswered streams; h2 resets a stream whose handles are all
        /// dropped, so they are kept.
        _streams: Vec<(h2::client::ResponseFuture, h2::SendStream<Bytes>)>,
    },
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::H2c { driver, .. } = self {
            driver.abort();
        }
    }
}

/// Connections per source address, well under the ephemeral port range.
const PER_SOURCE: usize = 20_000;
/// Connects in progress at once.
const CONNECTING: usize = 256;
/// Requests sent but not yet parked, at most. It also bounds public-web's
/// concurrent forwards, and so the connections its pool opens to the
/// dispatcher, which count against the same file descriptor limit.
const UNPARKED_WINDOW: usize = 256;
/// How long one connect and write may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let began = Instant::now();
    let deadline = began + cli.deadline;
    let metrics = format!("http://{}/metrics", cli.addr);
    let http = reqwest::Client::new();
    let start_pending = pending(&http, &metrics).await?;
    if start_pending != 0 {
        bail!("public-web already has {start_pending} parked requests");
    }
    let rss_before = bench::vm_rss_kib(cli.pid)?;

    let per_connection = match cli.protocol {
        Protocol::Http1 => 1,
        Protocol::H2c => usize::from(cli.streams_per_connection),
    };
    let mut held: Vec<Held> = Vec::with_capacity(cli.requests.div_ceil(per_connection));
    let mut opened = 0;
    // (parked, RSS KiB) along the way, for the slope.
    let mut samples = vec![(0, rss_before)];
    while opened < cli.requests {
        if Instant::now() >= deadline {
            bail!("{opened} of {} requests sent by the deadline", cli.requests);
        }
        // Never run more than the window ahead of what public-web parked.
        let parked = pending(&http, &metrics).await?;
        samples.push((parked, bench::vm_rss_kib(cli.pid)?));
        let room = (parked + UNPARKED_WINDOW).saturating_sub(opened);
        if room == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let left = cli.requests - opened;
        let mut batch = room.min(left).min(CONNECTING * per_connection);
        // Whole connections only, but the last: a half-used HTTP/2
        // connection would count its overhead against too few requests.
        if batch < left {
            batch -= batch % per_connection;
            if batch == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let first_connection = held.len();
        let connections = batch.div_ceil(per_connection);
        let mut connects = futures_util::stream::iter(0..connections)
            .map(|i| {
                let requests = per_connection.min(batch - i * per_connection);
                open(cli.addr, cli.protocol, first_connection + i, requests)
            })
            .buffer_unordered(CONNECTING);
        while let Some(connection) = connects.next().await {
            held.push(connection.with_context(|| {
                format!(
                    "connection {} (out of file descriptors? see `ulimit -n`)",
                    held.len()
                )
            })?);
        }
        opened += batch;
    }
    let opened_s = began.elapsed().as_secs_f64();

    let parked = wait_for(&http, &metrics, deadline, |parked| parked >= cli.requests).await?;
    if parked < cli.requests {
        bail!(
            "only {parked} of {} requests parked by the deadline",
            cli.requests
        );
    }
    let parked_s = began.elapsed().as_secs_f64();
    // Let the last forwards and their pooled connections settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_parked = bench::vm_rss_kib(cli.pid)?;
    samples.push((parked, rss_parked));
    let slope = slope_bytes_per_request(&samples, parked / 4);
    let target = cli.target.unwrap_or(cli.requests);
    let extra_at_target_kib = rss_parked.saturating_sub(rss_before) as f64
        + slope * target.saturating_sub(parked) as f64 / 1024.0;

    let held_connections = held.len();
    let protocol = cli
        .protocol
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default();
    drop(held);
    let drained = wait_for(&http, &metrics, deadline, |parked| parked == 0).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_released = bench::vm_rss_kib(cli.pid)?;

    let extra_kib = rss_parked.saturating_sub(rss_before);
    let report = serde_json::json!({
        "requests": cli.requests,
        "protocol": protocol,
        "connections": held_connections,
        "parked": parked,
        "rss_before_kib": rss_before,
        "rss_parked_kib": rss_parked,
        "extra_kib": extra_kib,
        "extra_bytes_per_request": extra_kib * 1024 / cli.requests as u64,
        "slope_bytes_per_request": slope.round(),
        "target": target,
        "extra_at_target_kib": extra_at_target_kib.round(),
        "left_after_hangup": drained,
        "rss_after_hangup_kib": rss_released,
        "open_s": (opened_s * 10.0).round() / 10.0,
        "parked_s": (parked_s * 10.0).round() / 10.0,
    });
    eprintln!(
        "parked-rss: {parked} parked over {held_connections} {protocol} connections in {parked_s:.1} s; public-web RSS {} -> {} MiB (+{:.1} MiB, {} B per request); {} MiB after the clients hung up",
        rss_before / 1024,
        rss_parked / 1024,
        extra_kib as f64 / 1024.0,
        extra_kib * 1024 / cli.requests as u64,
        rss_released / 1024,
    );
    println!("{report}");
    Ok(())
}

/// Bytes of RSS per parked request: the least-squares slope of the
/// samples taken with at least `from` requests parked (past the start-up
/// steps of the first allocations).
fn slope_bytes_per_request(samples: &[(usize, u64)], from: usize) -> f64 {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(parked, _)| *parked >= from)
        .map(|(parked, kib)| (*parked as f64, *kib as f64 * 1024.0))
        .collect();
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if variance > 0.0 {
        covariance / variance
    } else {
        0.0
    }
}

/// Connection `index`, from 127.0.1.x, carrying `requests` pings that are
/// sent and never read.
async fn open(
    addr: SocketAddrV4,
    protocol: Protocol,
    index: usize,
    requests: usize,
) -> anyhow::Result<Held> {
    let source = Ipv4Addr::new(127, 0, 1, 1 + u8::try_from(index / PER_SOURCE)?);
    let socket = TcpSocket::new_v4().context("creating a socket")?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .with_context(|| format!("binding to {source}"))?;
    let connect = async {
        let mut stream = socket.connect(SocketAddr::V4(addr)).await?;
        stream.set_nodelay(true)?;
        match protocol {
            Protocol::Http1 => {
                stream.write_all(&http1_request_bytes()).await?;
                Ok(Held::Http1(stream))
            }
            Protocol::H2c => send_h2c(stream, requests).await,
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .context("connect timed out (is public-web out of file descriptors, or not answering?)")?
        .context("connecting")
}

/// Sends `requests` pings as concurrent streams of one HTTP/2 connection.
async fn send_h2c(stream: TcpStream, requests: usize) -> anyhow::Result<Held> {
    let (mut sender, connection) = h2::client::handshake(stream).await?;
    let driver = tokio::spawn(async move {
        // Ends when public-web or the drop of `Held` closes the connection.
        let _ = connection.await;
    });
    let body = Bytes::from(ping_body());
    let mut streams = Vec::with_capacity(requests);
    for _ in 0..requests {
        sender = sender.ready().await?;
        let request = http::Request::post("http://127.0.0.1/")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(())?;
        let (response, mut send) = sender.send_request(request, false)?;
        send.send_data(body.clone(), true)?;
        streams.push((response, send));
    }
    Ok(Held::H2c {
        driver,
        _streams: streams,
    })
}

/// A ping, as `req` sends it.
fn ping_body() -> String {
    serde_json::json!({
        "type": "PingRequest",
        "data": {"sentAt": req::payload::now_millis()},
    })
    .to_string()
}

/// One HTTP/1.1 `POST /` with a ping.
fn http1_request_bytes() -> Vec<u8> {
    let body = ping_body();
    format!(
        "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `public_web_pending_requests` from public-web's /metrics.
async fn pending(http: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
    bench::scrape_gauge(http, url, "public_web_pending_requests").await
}

/// Polls the gauge until `done` holds or the deadline passes; returns the
/// last value.
async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    deadline: Instant,
    done: impl Fn(usize) -> bool,
) -> anyhow::Result<usize> {
    loop {
        let value = pending(http, url).await?;
        if done(value) || Instant::now() >= deadline {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_fits_the_samples_past_the_start() {
        // 2 KiB per request after a 1 MiB step at the start.
        let samples: Vec<(usize, u64)> = (0..=10)
            .map(|i| {
                (
                    i * 1000,
                    if i == 0 {
                        0
                    } else {
                        1024 + 2 * i as u64 * 1000
                    },
                )
            })
            .collect();
        let slope = slope_bytes_per_request(&samples, 2000);
        assert!((slope - 2048.0).abs() < 1e-6, "{slope}");
        assert_eq!(slope_bytes_per_request(&[(5, 10)], 0), 0.0);
    }

    #[test]
    fn the_request_is_complete_http() {
        let request = String::from_utf8(http1_request_bytes()).unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST / HTTP/1.1\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let event: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "PingRequest");
    }
}
