//! amqp-floor: the raw AMQP request/reply floor the full path is compared
//! with — only the two broker hops, nothing else.
//!
//! One process, two connections: a "server" consumes the request queue and
//! publishes each reply to the request's `reply_to`; a closed-loop client
//! keeps `--concurrency` requests in flight and matches replies on one
//! shared reply queue through a correlation map (the layout the pitfalls
//! note measured fastest). By default it does the same broker work per
//! round trip as the product: publisher confirms on both publishes, manual
//! acks with a prefetch of 64, transient messages of the product's sizes and
//! properties. Prints the `req --json` line: rps, p50/p90/p99/max, requests,
//! errors.
//!
//! Its queues have unique names, are auto-delete (so even a killed run
//! leaves nothing once its connections drop) and are deleted at the end.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Raw AMQP request/reply at a fixed concurrency.
#[derive(Debug, Parser)]
#[command(name = "amqp-floor")]
struct Cli {
    /// Requests in flight at once.
    #[arg(long, default_value = "1")]
    concurrency: NonZeroUsize,
    /// How long to run (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Publish without publisher confirms (the product always confirms).
    #[arg(long)]
    no_confirms: bool,
    /// Unacked deliveries per consumer, as the services' PREFETCH.
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// Publish on a channel of its own on each side, as the services do,
    /// instead of one channel per side for publishing and consuming.
    #[arg(long)]
    split_channels: bool,
    /// Tokio worker threads; 0 runs everything on one current-thread
    /// runtime (lapin's I/O threads, one per connection, come on top).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

/// A request body the size of the dispatcher's PingRequest message.
fn request_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "PingRequest",
        "data": {"sentAt": 1_700_000_000_000u64},
    }))
    .expect("a literal serialises")
}

/// A reply body the size of ping-listener's PingResponse message.
fn reply_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "PingResponse",
        "data": {"sentAt": 1_700_000_000_000u64, "receivedAt": 1_700_000_000_001u64},
    }))
    .expect("a literal serialises")
}

/// The `x-callback-url` header every product message carries.
fn callback_headers() -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("x-callback-url"),
        AMQPValue::LongString(LongString::from("http://127.0.0.1:3000/dispatch")),
    );
    headers
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// One side's channels: where it consumes and where it publishes (the same
/// channel unless `--split-channels`).
struct Side {
    consume: Channel,
    publish: Channel,
}

impl Side {
    async fn open(connection: &Connection, cli: &Cli) -> lapin::Result<Self> {
        let consume = connection.create_channel().await?;
        consume
            .basic_qos(cli.prefetch, BasicQosOptions::default())
            .await?;
        let publish = if cli.split_channels {
            connection.create_channel().await?
        } else {
            consume.clone()
        };
        if !cli.no_confirms {
            publish
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        Ok(Self { consume, publish })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = match cli.workers {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        workers => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = bench::amqp_url();
    let connect = |name: &str| {
        let properties =
            ConnectionProperties::default().with_connection_name(LongString::from(name));
        Connection::connect(&url, properties)
    };
    let server_connection = connect("amqp-floor-server")
        .await
        .context("connecting the server side")?;
    let client_connection = connect("amqp-floor-client")
        .await
        .context("connecting the client side")?;
    let server = Side::open(&server_connection, &cli).await?;
    let client = Side::open(&client_connection, &cli).await?;

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let request_queue = format!("amqp-floor-{run_id}-requests");
    let reply_queue = format!("amqp-floor-{run_id}-replies");
    let transient = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    server
        .consume
        .queue_declare(
            request_queue.as_str().into(),
            transient,
            FieldTable::default(),
        )
        .await?;
    client
        .consume
        .queue_declare(
            reply_queue.as_str().into(),
            transient,
            FieldTable::default(),
        )
        .await?;

    let confirms = !cli.no_confirms;
    let server_task = tokio::spawn(serve(
        server.consume.clone(),
        server.publish.clone(),
        request_queue.clone(),
        confirms,
    ));
    let waiters: Waiters = Arc::default();
    let replies_task = tokio::spawn(route_replies(
        client.consume.clone(),
        reply_queue.clone(),
        waiters.clone(),
    ));

    let began = Instant::now();
    let deadline = began + cli.duration;
    let shared = Arc::new(Shared {
        channel: client.publish.clone(),
        request_queue: request_queue.clone(),
        reply_queue: reply_queue.clone(),
        body: request_body(),
        waiters,
        next_id: AtomicU64::new(0),
        confirms,
        deadline,
    });
    let workers: Vec<_> = (0..cli.concurrency.get())
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    let mut latencies = bench::latency_histogram();
    let mut errors = BTreeMap::<String, u64>::new();
    let mut abandoned = 0;
    for worker in workers {
        let tally = worker.await?;
        latencies.add(&tally.latencies)?;
        for (kind, count) in tally.errors {
            *errors.entry(kind.to_owned()).or_default() += count;
        }
        abandoned += tally.abandoned;
    }
    let elapsed = began.elapsed();

    server_task.abort();
    replies_task.abort();
    for (channel, queue) in [
        (&server.consume, &request_queue),
        (&client.consume, &reply_queue),
    ] {
        if let Err(error) = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            eprintln!("amqp-floor: deleting {queue}: {error}");
        }
    }
    for connection in [&client_connection, &server_connection] {
        connection.close(200, "done".into()).await.ok();
    }

    let report = bench::load_report(
        &latencies,
        errors,
        cli.concurrency.get(),
        elapsed,
        abandoned,
    );
    eprintln!(
        "amqp-floor: {} round trips in {:.2} s: {:.1}/s (concurrency {}, confirms {}), p50 {:.3} ms p99 {:.3} ms, errors {}",
        report.requests,
        report.duration_s,
        report.rps,
        report.concurrency,
        if confirms { "on" } else { "off" },
        report.p50_ms,
        report.p99_ms,
        report.errors
    );
    println!("{}", report.to_json_line());
    Ok(())
}

/// Answers every request with a reply of the listener's size: publish
/// (confirmed), then ack, each delivery in its own task as the listener
/// runtime does.
async fn serve(
    consume: Channel,
    publish: Channel,
    queue: String,
    confirms: bool,
) -> lapin::Result<()> {
    let mut deliveries = consume
        .basic_consume(
            queue.as_str().into(),
            "amqp-floor-server".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let reply: Arc<[u8]> = reply_body().into();
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let publish = publish.clone();
        let reply = reply.clone();
        tokio::spawn(async move {
            let properties = &delivery.properties;
            let (Some(reply_to), Some(id)) = (properties.reply_to(), properties.message_id())
            else {
                return;
            };
            let reply_properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(id.clone())
                .with_type("PingResponse".into())
                .with_correlation_id(id.clone())
                .with_headers(callback_headers());
            let published = async {
                let confirm = publish
                    .basic_publish(
                        "".into(),
                        reply_to.clone(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &reply,
                        reply_properties,
                    )
                    .await?;
                if confirms {
                    confirm.await?;
                }
                lapin::Result::Ok(())
            };
            if published.await.is_ok() {
                delivery.ack(BasicAckOptions::default()).await.ok();
            }
        });
    }
    Ok(())
}

/// Hands each reply to the request waiting for its correlation id, then
/// acks it.
async fn route_replies(channel: Channel, queue: String, waiters: Waiters) -> lapin::Result<()> {
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "amqp-floor-client".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let waiter = delivery
            .properties
            .correlation_id()
            .as_ref()
            .and_then(|id| id.as_str().parse::<u64>().ok())
            .and_then(|id| waiters.lock().expect("waiters lock").remove(&id));
        if let Some(waiter) = waiter {
            waiter.send(()).ok();
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    channel
        .basic_cancel("amqp-floor-client".into(), BasicCancelOptions::default())
        .await
}

/// What the client's workers share.
struct Shared {
    channel: Channel,
    request_queue: String,
    reply_queue: String,
    body: Vec<u8>,
    waiters: Waiters,
    next_id: AtomicU64,
    confirms: bool,
    deadline: Instant,
}

/// One worker's results.
struct Tally {
    latencies: Histogram<u64>,
    errors: BTreeMap<&'static str, u64>,
    abandoned: u64,
}

/// How long one round trip may take before it counts as a timeout error.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a request, waits for its reply, and again until the deadline;
/// the exchange in flight at the deadline is dropped, as `req` does.
async fn worker(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally {
        latencies: bench::latency_histogram(),
        errors: BTreeMap::new(),
        abandoned: 0,
    };
    while Instant::now() < shared.deadline {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        shared
            .waiters
            .lock()
            .expect("waiters lock")
            .insert(id, sender);
        let sent = Instant::now();
        let exchange = round_trip(&shared, id, receiver);
        let outcome = tokio::time::timeout_at(shared.deadline, exchange).await;
        match outcome {
            Ok(Ok(())) => bench::record(&mut tally.latencies, sent.elapsed()),
            Ok(Err(kind)) => *tally.errors.entry(kind).or_default() += 1,
            Err(_) => tally.abandoned += 1,
        }
        if !matches!(outcome, Ok(Ok(()))) {
            shared.waiters.lock().expect("waiters lock").remove(&id);
        }
    }
    tally
}

/// One request: publish (confirmed), then the reply.
async fn round_trip(
    shared: &Shared,
    id: u64,
    reply: oneshot::Receiver<()>,
) -> Result<(), &'static str> {
    let id = id.to_string();
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(id.as_str().into())
        .with_type("PingRequest".into())
        .with_reply_to(shared.reply_queue.as_str().into())
        .with_expiration("10000".into())
        .with_headers(callback_headers());
    let confirm = shared
        .channel
        .basic_publish(
            "".into(),
            shared.request_queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &shared.body,
            properties,
        )
        .await
        .map_err(|_| "publish")?;
    if shared.confirms {
        let confirmation = confirm.await.map_err(|_| "publish")?;
        if confirmation.is_nack() {
            return Err("nack");
        }
    }
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, reply).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("lost"),
        Err(_) => Err("timeout"),
    }
}
