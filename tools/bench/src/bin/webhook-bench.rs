//! webhook-bench: how fast answers reach a webhook endpoint.
//!
//! It starts a receiver on a loopback port (answering `204` at once),
//! registers it with the webhook-sender for every ping answer, then sends
//! `--requests` pings through public-web with `Prefer: respond-async`,
//! `--concurrency` at a time (closed loop on the `202`s), and waits until
//! every answer was delivered: deliveries per second (from the first `202`
//! to the last delivery) and, per answer, the time from its `202` to its
//! delivery (p50, p99, max) — under that burst, mostly time in the queue.
//! Then it sends `--idle-requests` more one at a time, each after the
//! previous one's delivery: the time from `202` to delivery of an idle
//! platform. The registration is deleted at the end. Prints one JSON line.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

/// Measure webhook deliveries through the whole platform.
#[derive(Debug, Parser)]
#[command(name = "webhook-bench")]
struct Cli {
    /// public-web's base URL.
    #[arg(long)]
    public_web: String,
    /// The webhook-sender's management API.
    #[arg(long)]
    sender: String,
    /// Its ADMIN_TOKEN.
    #[arg(long)]
    admin_token: String,
    /// Answers to have delivered.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Asynchronous requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Answers then sent one at a time, for the unloaded latency.
    #[arg(long, default_value_t = 100)]
    idle_requests: usize,
    /// Give up (and fail) when not every answer is delivered by then.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

/// When each answer arrived, by event id.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let receiver = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.concurrency)
        .build()?;
    let registered: Value = http
        .post(format!("{}/webhooks", cli.sender))
        .bearer_auth(&cli.admin_token)
        .json(&json!({
            "url": receiver,
            "filters": [{"prefix": {"type": "Ping"}}],
            "description": "bin/bench",
        }))
        .send()
        .await
        .context("registering the receiver")?
        .error_for_status()
        .context("registering the receiver")?
        .json()
        .await?;
    let endpoint = registered["id"]
        .as_str()
        .context("no endpoint id")?
        .to_owned();

    let run = format!("wb-{}", uuid::Uuid::new_v4().simple());
    let began = Instant::now();
    let accepted: Vec<anyhow::Result<(String, Instant)>> =
        futures_util::stream::iter(0..cli.requests)
            .map(|n| {
                let (http, url, id) = (http.clone(), cli.public_web.clone(), format!("{run}-{n}"));
                async move {
                    let response = http
                        .post(&url)
                        .header("prefer", "respond-async")
                        .json(&json!({"id": id, "type": "PingRequest", "data": {}}))
                        .send()
                        .await?;
                    if response.status() != StatusCode::ACCEPTED {
                        bail!("{id}: public-web answered {}", response.status());
                    }
                    Ok((id, Instant::now()))
                }
            })
            .buffer_unordered(cli.concurrency.max(1))
            .collect()
            .await;
    let sent_s = began.elapsed().as_secs_f64();
    let errors = accepted.iter().filter(|sent| sent.is_err()).count();
    let accepted: HashMap<String, Instant> = accepted.into_iter().flatten().collect();

    let deadline = began + cli.deadline;
    wait_delivered(&arrivals, &accepted, deadline).await?;
    let burst_arrivals = arrivals.lock().expect("arrivals lock").clone();

    let mut idle = bench::latency_histogram();
    for n in 0..cli.idle_requests {
        let id = format!("{run}-idle-{n}");
        let response = http
            .post(&cli.public_web)
            .header("prefer", "respond-async")
            .json(&json!({"id": id, "type": "PingRequest", "data": {}}))
            .send()
            .await?;
        let at = Instant::now();
        if response.status() != StatusCode::ACCEPTED {
            bail!("{id}: public-web answered {}", response.status());
        }
        let one = HashMap::from([(id.clone(), at)]);
        wait_delivered(&arrivals, &one, deadline).await?;
        let delivered = arrivals.lock().expect("arrivals lock")[&id];
        bench::record(&mut idle, delivered.saturating_duration_since(at));
    }
    let _ = http
        .delete(format!("{}/webhooks/{endpoint}", cli.sender))
        .bearer_auth(&cli.admin_token)
        .send()
        .await;

    let arrivals = burst_arrivals;
    let mut latencies = bench::latency_histogram();
    let mut last = began;
    for (id, at) in &accepted {
        let delivered = arrivals[id];
        last = last.max(delivered);
        bench::record(&mut latencies, delivered.saturating_duration_since(*at));
    }
    let span_s = (last - began).as_secs_f64();
    let ms = |quantile: f64| latencies.value_at_quantile(quantile) as f64 / 1000.0;
    let report = json!({
        "requests": cli.requests,
        "concurrency": cli.concurrency,
        "delivered": accepted.len(),
        "errors": errors,
        "sent_s": (sent_s * 1000.0).round() / 1000.0,
        "delivered_per_s": (accepted.len() as f64 / span_s * 10.0).round() / 10.0,
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": latencies.max() as f64 / 1000.0,
        "idle_requests": cli.idle_requests,
        "idle_p50_ms": idle.value_at_quantile(0.50) as f64 / 1000.0,
        "idle_p99_ms": idle.value_at_quantile(0.99) as f64 / 1000.0,
    });
    eprintln!(
        "webhook-bench: {} answers delivered in {span_s:.2} s ({:.1}/s); 202 -> delivery p50 {:.1} ms, p99 {:.1} ms; one at a time p50 {:.1} ms, p99 {:.1} ms",
        accepted.len(),
        accepted.len() as f64 / span_s,
        ms(0.50),
        ms(0.99),
        idle.value_at_quantile(0.50) as f64 / 1000.0,
        idle.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!("{report}");
    if errors > 0 {
        bail!("{errors} requests were not accepted");
    }
    Ok(())
}

/// Waits until every answer of `sent` arrived; fails at `deadline`.
async fn wait_delivered(
    arrivals: &Arrivals,
    sent: &HashMap<String, Instant>,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let delivered = {
            let arrivals = arrivals.lock().expect("arrivals lock");
            sent.keys().filter(|id| arrivals.contains_key(*id)).count()
        };
        if delivered == sent.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{delivered} of {} answers delivered by the deadline",
                sent.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Notes when each answer arrived (the first time: a repeat changes nothing).
async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    if let Some(id) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|event| event["id"].as_str().map(str::to_owned))
    {
        arrivals
            .lock()
            .expect("arrivals lock")
            .entry(id)
            .or_insert(at);
    }
    StatusCode::NO_CONTENT
}
