//! amqp-floor: the raw AMQP request/reply floor the full path is compared
//! with — only the two broker hops, nothing else.
//!
//! One process: a "server" consumes the request queue and publishes each
//! reply to the request's `reply_to`; a closed-loop client keeps
//! `--concurrency` requests in flight and matches replies on one shared
//! reply queue through a correlation map (the layout the pitfalls note
//! measured fastest). Every run keeps the product's guarantees: publisher
//! confirms on both publishes, manual acks, and the request queue declared
//! as the product declares its work queues (a dead-letter queue behind it).
//! Prints the `req --json` line: rps, p50/p90/p99/max, requests, errors.
//!
//! Each property the product adds on top of those guarantees is an option,
//! so bin/bench's floor study can price them one at a time: a connection
//! (and its I/O thread) per side, `mandatory`, per-message or queue-level
//! expiration, a header table, prefetch, the channel layout, the runtime,
//! acks one by one or batched with `multiple`, and the event stream's two
//! records per round trip.
//!
//! Its queues have unique names and are deleted at the end; the reply
//! queue is auto-delete, so even a killed run leaves only the request
//! queue, its dead-letter queue and the stream (named `amqp-floor-…`)
//! behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use common::amqp::message;
use common::amqp::stream::StreamConfig;
use common::wire::{STREAM_DIRECTION_HEADER, STREAM_FILTER_HEADER, STREAM_SOURCE_HEADER};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{mpsc, oneshot};
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
    /// Both sides on one connection (one lapin I/O thread) instead of a
    /// connection each, as the dispatcher and a listener have.
    #[arg(long)]
    one_connection: bool,
    /// Publish without `mandatory` (the product sets it, so an unroutable
    /// message comes back instead of vanishing).
    #[arg(long)]
    no_mandatory: bool,
    /// How requests expire: `message` (an `expiration` property on each,
    /// as the dispatcher sets MESSAGE_TTL_MS), `queue` (`x-message-ttl` on
    /// the request queue) or `none`.
    #[arg(long, default_value = "message")]
    expiration: Expiration,
    /// Send no header table (the product's messages carry
    /// `x-callback-url`, and the trace context when tracing is on).
    #[arg(long)]
    no_headers: bool,
    /// Acknowledge with `multiple`: one ack for every delivery completed
    /// in order since the last one, instead of one ack each.
    #[arg(long)]
    ack_multiple: bool,
    /// Also append each request (once confirmed) and each reply (as it
    /// arrives) to a stream, as the dispatcher records both in the event
    /// stream: on a connection of its own, confirmed with up to
    /// `STREAM_CONFIRM_WINDOW` outstanding, off the round trip's path.
    #[arg(long)]
    stream_records: bool,
    /// Pad each request and reply body to about this many bytes (a `pad`
    /// field in its data), as the payload sweep sends larger events; the
    /// default is a PingRequest's and a PingResponse's own size.
    #[arg(long)]
    body_size: Option<usize>,
}

/// Where a request's time to live is set; see `--expiration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Expiration {
    Message,
    Queue,
    None,
}

/// The requests' time to live, as the dispatcher's default MESSAGE_TTL_MS.
const MESSAGE_TTL_MS: u32 = 10_000;

/// A request body the size of the dispatcher's PingRequest message, or
/// padded to about `size` bytes.
fn request_body(size: Option<usize>) -> Vec<u8> {
    padded(
        serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "type": "PingRequest",
            "data": {"sentAt": 1_700_000_000_000u64},
        }),
        size,
    )
}

/// A reply body the size of ping-listener's PingResponse message (which
/// repeats the request's data), or padded to about `size` bytes.
fn reply_body(size: Option<usize>) -> Vec<u8> {
    padded(
        serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "type": "PingResponse",
            "data": {"sentAt": 1_700_000_000_000u64, "receivedAt": 1_700_000_000_001u64},
        }),
        size,
    )
}

/// `event` as JSON, with a `pad` string in its data bringing it to `size`
/// bytes when that is larger.
fn padded(mut event: serde_json::Value, size: Option<usize>) -> Vec<u8> {
    let bare = serde_json::to_vec(&event).expect("a literal serialises");
    // `,"pad":""` is 9 bytes.
    match size.and_then(|size| size.checked_sub(bare.len() + 9)) {
        Some(pad) => {
            event["data"]["pad"] = serde_json::Value::from("x".repeat(pad));
            serde_json::to_vec(&event).expect("a literal serialises")
        }
        None => bare,
    }
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

/// A record for the stream: its properties and body.
type StreamRecord = (BasicProperties, Arc<[u8]>);

/// Hands records to the stream writer, if the run has one; a record that
/// finds the writer's buffer full is counted as lost, as the dispatcher
/// counts it, rather than slowing the round trip.
#[derive(Clone, Default)]
struct Recorder(Option<mpsc::Sender<StreamRecord>>);

impl Recorder {
    fn record(&self, direction: &str, kind: &str, body: Arc<[u8]>) {
        let Some(sender) = &self.0 else { return };
        let mut headers = FieldTable::default();
        for (name, value) in [
            (STREAM_DIRECTION_HEADER, direction),
            (STREAM_SOURCE_HEADER, "amqp-floor"),
            (STREAM_FILTER_HEADER, kind),
        ] {
            message::set_header(&mut headers, name, value);
        }
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(kind.into())
            .with_headers(headers);
        sender.try_send((properties, body)).ok();
    }
}

/// Unconfirmed stream records at once, as the dispatcher's writer allows.
const STREAM_CONFIRM_WINDOW: usize = 1024;

/// Records waiting for the stream writer, as the dispatcher's default
/// `EVENT_STREAM_BUFFER`.
const STREAM_BUFFER: usize = 8192;

/// Appends the records it is handed to `stream`, keeping up to
/// [`STREAM_CONFIRM_WINDOW`] confirms outstanding; returns how many were
/// appended and confirmed.
async fn write_stream(
    channel: Channel,
    stream: String,
    mut records: mpsc::Receiver<StreamRecord>,
) -> u64 {
    let mut confirms = FuturesUnordered::new();
    let mut confirmed = 0;
    let mut settle = |outcome: lapin::Result<lapin::Confirmation>| {
        if outcome.is_ok_and(|confirmation| confirmation.is_ack()) {
            confirmed += 1;
        }
    };
    loop {
        tokio::select! {
            record = records.recv() => {
                let Some((properties, body)) = record else { break };
                if let Ok(confirm) = channel
                    .basic_publish("".into(), stream.as_str().into(), BasicPublishOptions::default(), &body, properties)
                    .await
                {
                    confirms.push(confirm);
                }
                while confirms.len() >= STREAM_CONFIRM_WINDOW {
                    if let Some(outcome) = confirms.next().await {
                        settle(outcome);
                    }
                }
            }
            Some(outcome) = confirms.next(), if !confirms.is_empty() => settle(outcome),
        }
    }
    while let Some(outcome) = confirms.next().await {
        settle(outcome);
    }
    confirmed
}

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
    let client_connection = if cli.one_connection {
        None
    } else {
        Some(
            connect("amqp-floor-client")
                .await
                .context("connecting the client side")?,
        )
    };
    let server = Side::open(&server_connection, &cli).await?;
    let client = Side::open(
        client_connection.as_ref().unwrap_or(&server_connection),
        &cli,
    )
    .await?;

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let request_queue = format!("amqp-floor-{run_id}-requests");
    let dead_queue = format!("{request_queue}.dead");
    let reply_queue = format!("amqp-floor-{run_id}-replies");
    declare_request_queue(&server.consume, &request_queue, &dead_queue, cli.expiration).await?;
    client
        .consume
        .queue_declare(
            reply_queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;

    let stream_name = format!("amqp-floor-{run_id}-events");
    let mut stream_writer = None;
    let recorder = if cli.stream_records {
        let connection = connect("amqp-floor-events")
            .await
            .context("connecting the stream writer")?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        StreamConfig {
            name: stream_name.clone(),
            max_age: "1h".parse().expect("a valid age"),
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
        }
        .declare(&channel)
        .await
        .context("declaring the stream")?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let writer = tokio::spawn(write_stream(channel.clone(), stream_name.clone(), receiver));
        stream_writer = Some((connection, channel, writer));
        Recorder(Some(sender))
    } else {
        Recorder::default()
    };

    let message = MessageShape::from_cli(&cli);
    let server_task = tokio::spawn(serve(
        server.consume.clone(),
        server.publish.clone(),
        request_queue.clone(),
        message.clone(),
        cli.body_size,
    ));
    let waiters: Waiters = Arc::default();
    let replies_task = tokio::spawn(route_replies(
        client.consume.clone(),
        reply_queue.clone(),
        waiters.clone(),
        message.ack_multiple,
        recorder.clone(),
    ));

    let began = Instant::now();
    let deadline = began + cli.duration;
    let shared = Arc::new(Shared {
        channel: client.publish.clone(),
        request_queue: request_queue.clone(),
        reply_queue: reply_queue.clone(),
        body: request_body(cli.body_size).into(),
        waiters,
        recorder,
        next_id: AtomicU64::new(0),
        message: message.clone(),
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
    // The workers' recorder went with `shared`; the replies' with its task.
    drop(shared);
    if let Some((connection, channel, writer)) = stream_writer {
        let appended = writer.await?;
        eprintln!("amqp-floor: {appended} stream records appended and confirmed");
        if let Err(error) = channel
            .queue_delete(stream_name.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            eprintln!("amqp-floor: deleting {stream_name}: {error}");
        }
        connection.close(200, "done".into()).await.ok();
    }
    for (channel, queue) in [
        (&server.consume, &request_queue),
        (&server.consume, &dead_queue),
        (&client.consume, &reply_queue),
    ] {
        if let Err(error) = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            eprintln!("amqp-floor: deleting {queue}: {error}");
        }
    }
    for connection in client_connection.iter().chain([&server_connection]) {
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
        if message.confirms { "on" } else { "off" },
        report.p50_ms,
        report.p99_ms,
        report.errors
    );
    println!("{}", report.to_json_line());
    Ok(())
}

/// Declares the request queue as the product declares a work queue
/// (durable, dead-lettering to `dead`, which is declared too), with
/// `x-message-ttl` when requests expire at the queue level.
async fn declare_request_queue(
    channel: &Channel,
    queue: &str,
    dead: &str,
    expiration: Expiration,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(dead.into(), durable, FieldTable::default())
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(dead)),
    );
    if expiration == Expiration::Queue {
        args.insert(
            ShortString::from("x-message-ttl"),
            AMQPValue::LongUInt(MESSAGE_TTL_MS),
        );
    }
    channel
        .queue_declare(queue.into(), durable, args)
        .await
        .map(|_| ())
}

/// What every message of a run carries and how it is published and
/// acknowledged, from the options.
#[derive(Debug, Clone)]
struct MessageShape {
    confirms: bool,
    mandatory: bool,
    per_message_expiration: bool,
    headers: bool,
    ack_multiple: bool,
}

impl MessageShape {
    fn from_cli(cli: &Cli) -> Self {
        Self {
            confirms: !cli.no_confirms,
            mandatory: !cli.no_mandatory,
            per_message_expiration: cli.expiration == Expiration::Message,
            headers: !cli.no_headers,
            ack_multiple: cli.ack_multiple,
        }
    }

    fn options(&self) -> BasicPublishOptions {
        BasicPublishOptions {
            mandatory: self.mandatory,
            ..BasicPublishOptions::default()
        }
    }

    /// The properties both kinds of message share, with the header table
    /// unless `--no-headers`.
    fn properties(&self, id: ShortString, kind: &str) -> BasicProperties {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(id)
            .with_type(kind.into());
        if self.headers {
            properties.with_headers(callback_headers())
        } else {
            properties
        }
    }

    /// Publishes `body` to `queue` on `channel`, waiting for its confirm
    /// when confirms are on.
    async fn publish(
        &self,
        channel: &Channel,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), &'static str> {
        let confirm = channel
            .basic_publish("".into(), queue.into(), self.options(), body, properties)
            .await
            .map_err(|_| "publish")?;
        if self.confirms && confirm.await.map_err(|_| "publish")?.is_nack() {
            return Err("nack");
        }
        Ok(())
    }
}

/// Answers every request with a reply of the listener's size: publish
/// (confirmed), then ack, each delivery in its own task as the listener
/// runtime does.
async fn serve(
    consume: Channel,
    publish: Channel,
    queue: String,
    message: MessageShape,
    body_size: Option<usize>,
) -> lapin::Result<()> {
    let mut deliveries = consume
        .basic_consume(
            queue.as_str().into(),
            "amqp-floor-server".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let acks = Acks::start(consume.clone(), message.ack_multiple);
    let reply: Arc<[u8]> = reply_body(body_size).into();
    let message = Arc::new(message);
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let (publish, reply, message, acks) = (
            publish.clone(),
            reply.clone(),
            message.clone(),
            acks.clone(),
        );
        tokio::spawn(async move {
            let properties = &delivery.properties;
            let (Some(reply_to), Some(id)) = (properties.reply_to(), properties.message_id())
            else {
                return;
            };
            let reply_properties = message
                .properties(id.clone(), "PingResponse")
                .with_correlation_id(id.clone());
            // A failed reply is still acknowledged: the client counts it
            // as a timeout, and an ack in order keeps `multiple` going.
            message
                .publish(&publish, reply_to.as_str(), &reply, reply_properties)
                .await
                .ok();
            acks.done(delivery.delivery_tag).await;
        });
    }
    Ok(())
}

/// Acknowledges the deliveries of one channel: each on its own, or (with
/// `--ack-multiple`) the longest run completed in delivery order with one
/// `multiple` ack, so deliveries that finish out of order still batch.
#[derive(Clone)]
enum Acks {
    Each(Channel),
    InOrder(mpsc::UnboundedSender<u64>),
}

impl Acks {
    fn start(channel: Channel, multiple: bool) -> Self {
        if !multiple {
            return Self::Each(channel);
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(ack_in_order(channel, receiver));
        Self::InOrder(sender)
    }

    /// The delivery `tag` is handled and may be acknowledged.
    async fn done(&self, tag: u64) {
        match self {
            Self::Each(channel) => {
                channel
                    .basic_ack(tag, BasicAckOptions::default())
                    .await
                    .ok();
            }
            Self::InOrder(sender) => {
                sender.send(tag).ok();
            }
        }
    }
}

/// Collects handled delivery tags and acknowledges, each time the run of
/// consecutive handled tags grows, up to its end at once. A channel's tags
/// start at 1.
async fn ack_in_order(channel: Channel, mut handled: mpsc::UnboundedReceiver<u64>) {
    let mut waiting = BTreeSet::new();
    let mut next = 1;
    while let Some(tag) = handled.recv().await {
        waiting.insert(tag);
        while let Ok(tag) = handled.try_recv() {
            waiting.insert(tag);
        }
        let mut last = None;
        while waiting.remove(&next) {
            last = Some(next);
            next += 1;
        }
        if let Some(last) = last {
            channel
                .basic_ack(last, BasicAckOptions { multiple: true })
                .await
                .ok();
        }
    }
}

/// Hands each reply to the request waiting for its correlation id, then
/// acknowledges it.
async fn route_replies(
    channel: Channel,
    queue: String,
    waiters: Waiters,
    ack_multiple: bool,
    recorder: Recorder,
) -> lapin::Result<()> {
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "amqp-floor-client".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let acks = Acks::start(channel.clone(), ack_multiple);
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        recorder.record("response", "PingResponse", delivery.data.as_slice().into());
        let waiter = delivery
            .properties
            .correlation_id()
            .as_ref()
            .and_then(|id| id.as_str().parse::<u64>().ok())
            .and_then(|id| waiters.lock().expect("waiters lock").remove(&id));
        if let Some(waiter) = waiter {
            waiter.send(()).ok();
        }
        acks.done(delivery.delivery_tag).await;
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
    body: Arc<[u8]>,
    waiters: Waiters,
    recorder: Recorder,
    next_id: AtomicU64,
    message: MessageShape,
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
    let mut properties = shared
        .message
        .properties(id.as_str().into(), "PingRequest")
        .with_reply_to(shared.reply_queue.as_str().into());
    if shared.message.per_message_expiration {
        properties = properties.with_expiration(MESSAGE_TTL_MS.to_string().into());
    }
    shared
        .message
        .publish(
            &shared.channel,
            &shared.request_queue,
            &shared.body,
            properties,
        )
        .await?;
    shared
        .recorder
        .record("request", "PingRequest", shared.body.clone());
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, reply).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("lost"),
        Err(_) => Err("timeout"),
    }
}
