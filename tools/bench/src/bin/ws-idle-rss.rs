//! ws-idle-rss: how much resident memory public-web spends on idle
//! WebSocket subscribers.
//!
//! It reads public-web's `VmRSS`, opens `--sockets` WebSockets on `/ws`,
//! each subscribed to a filter nothing matches (so the sockets stay idle
//! but every one sits in the hub's subscriber list), waits until
//! `public_web_subscriptions` counts them all, reads `VmRSS` again, then
//! hangs up and reads it once more after the gauge has drained. A task per
//! socket keeps reading, so the server's keep-alive pings are answered as a
//! browser would. Every wait is bounded by `--deadline`; public-web must
//! allow anonymous subscriptions (`SUBSCRIBE_ANONYMOUS=true`) and enough
//! connections (`MAX_CONNECTIONS`). Prints one JSON line.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use req::ws::Socket;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Hold idle subscribed WebSockets on public-web and measure its memory.
#[derive(Debug, Parser)]
#[command(name = "ws-idle-rss")]
struct Cli {
    /// public-web's address.
    #[arg(long)]
    addr: SocketAddrV4,
    /// public-web's pid, whose /proc/<pid>/status is read.
    #[arg(long)]
    pid: u32,
    /// Sockets to open, each with one subscription.
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Give up (and fail) when the sockets are not all subscribed by then.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

/// Sockets connecting and subscribing at once.
const OPENING: usize = 128;

/// A filter no event matches: the subscription is held, never fed.
const IDLE_FILTER: &str = "BenchIdleNeverSent";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let began = Instant::now();
    let deadline = began + cli.deadline;
    let metrics = format!("http://{}/metrics", cli.addr);
    let url = reqwest::Url::parse(&format!("ws://{}/ws", cli.addr))?;
    let http = reqwest::Client::new();
    let gauge = |name: &'static str| {
        let (http, metrics) = (http.clone(), metrics.clone());
        async move { bench::scrape_gauge(&http, &metrics, name).await }
    };
    let subscriptions_before = gauge("public_web_subscriptions").await?;
    let rss_before = bench::vm_rss_kib(cli.pid)?;

    let mut held = JoinSet::new();
    let mut opening = futures_util::stream::iter(0..cli.sockets)
        .map(|_| subscribe(&url))
        .buffer_unordered(OPENING);
    while let Some(socket) = opening.next().await {
        if Instant::now() >= deadline {
            bail!(
                "{} of {} sockets opened by the deadline",
                held.len(),
                cli.sockets
            );
        }
        let mut socket = socket.with_context(|| {
            format!(
                "socket {} (out of file descriptors? see `ulimit -n` and MAX_CONNECTIONS)",
                held.len()
            )
        })?;
        // Reading answers the server's pings; an error ends the task.
        held.spawn(async move { while socket.next_json().await.is_ok() {} });
    }
    drop(opening);
    let opened_s = began.elapsed().as_secs_f64();

    let wanted = subscriptions_before + cli.sockets;
    let subscribed = wait_for(
        deadline,
        || gauge("public_web_subscriptions"),
        |n| n >= wanted,
    )
    .await?;
    if subscribed < wanted {
        bail!("only {subscribed} of {wanted} subscriptions by the deadline");
    }
    // Let the last upgrades' buffers settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_subscribed = bench::vm_rss_kib(cli.pid)?;
    let still_open = held.len();

    held.shutdown().await;
    let left = wait_for(
        deadline + Duration::from_secs(30),
        || gauge("public_web_subscriptions"),
        |n| n <= subscriptions_before,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_hangup = bench::vm_rss_kib(cli.pid)?;

    let extra_kib = rss_subscribed.saturating_sub(rss_before);
    let report = json!({
        "sockets": cli.sockets,
        "subscribed": subscribed - subscriptions_before,
        "held_open": still_open,
        "rss_before_kib": rss_before,
        "rss_subscribed_kib": rss_subscribed,
        "extra_kib": extra_kib,
        "extra_bytes_per_socket": extra_kib * 1024 / cli.sockets as u64,
        "subscriptions_after_hangup": left.saturating_sub(subscriptions_before),
        "rss_after_hangup_kib": rss_after_hangup,
        "open_s": (opened_s * 10.0).round() / 10.0,
    });
    eprintln!(
        "ws-idle-rss: {} idle subscribed sockets opened in {opened_s:.1} s; public-web RSS {} -> {} MiB (+{:.1} MiB, {} B per socket); {} MiB after the clients hung up",
        cli.sockets,
        rss_before / 1024,
        rss_subscribed / 1024,
        extra_kib as f64 / 1024.0,
        extra_kib * 1024 / cli.sockets as u64,
        rss_after_hangup / 1024,
    );
    println!("{report}");
    Ok(())
}

/// A socket subscribed to [`IDLE_FILTER`], its acknowledgement read.
async fn subscribe(url: &reqwest::Url) -> anyhow::Result<Socket> {
    let mut socket = Socket::connect(url, None).await?;
    let frame = json!({"subscribe": {"id": "idle", "filters": [{"exact": {"type": IDLE_FILTER}}]}});
    socket.send(frame.to_string()).await?;
    let ack = tokio::time::timeout(Duration::from_secs(30), socket.next_json())
        .await
        .context("no subscription acknowledgement within 30 s")??;
    if ack != json!({"subscribed": "idle"}) {
        bail!("subscription refused: {ack} (is SUBSCRIBE_ANONYMOUS=true?)");
    }
    Ok(socket)
}

/// Polls `read` until `done` holds or `deadline` passes; returns the last
/// value.
async fn wait_for<F, Fut>(
    deadline: Instant,
    read: F,
    done: impl Fn(usize) -> bool,
) -> anyhow::Result<usize>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    loop {
        let value = read().await?;
        if done(value) || Instant::now() >= deadline {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
