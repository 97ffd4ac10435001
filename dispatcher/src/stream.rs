//! Appending every routed event to the event stream, off the request path.
//!
//! A request or response is handed to [`EventStream::record`], which never
//! waits: it puts the record in a bounded buffer and returns. One task, the
//! [`Writer`], publishes the buffer in order on a confirm channel and awaits
//! the broker's confirms in a window, pipelined. When the buffer is full
//! (the broker lags), no session is up, the stream cannot be declared, or
//! the broker refuses a record, the record is lost: counted in
//! `dispatcher_stream_lost_total` by why, and logged (the first loss of a
//! streak, then at most every few seconds), while the request itself
//! completes as if the stream did not exist.
//!
//! The writer has an AMQP connection of its own. RabbitMQ's flow control
//! acts per connection: a stream that stops confirming (its leader moving
//! after a node loss, say) blocks the channel publishing to it, and then
//! the whole connection stops being read, so a stream channel beside the
//! request path's channels would stall requests and responses with it.
//!
//! The answer to an asynchronous request has no other way on than the
//! stream: [`EventStream::append`] waits for room in the buffer and for the
//! broker's confirm, and says whether the record made it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::Event;
use common::amqp::connection::{self, Broker, Readiness};
use common::amqp::stream::{StreamConfig, record_properties};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, StreamLoss};

/// Whether an event is a request or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

/// The source of a client's request: it came in through public-web.
pub const REQUEST_SOURCE: &str = "public-web";

struct Entry {
    direction: Direction,
    source: Box<str>,
    id: Box<str>,
    kind: Box<str>,
    body: Bytes,
    /// The trace it was recorded in.
    context: opentelemetry::Context,
    /// Told whether the record made it, when someone waits for that.
    confirmed: Option<oneshot::Sender<Result<(), StreamLoss>>>,
}

/// The request path's side: records events without waiting.
pub struct EventStream {
    entries: mpsc::Sender<Entry>,
    losses: LossLog,
}

/// The publishing side: one task per process, fed by [`EventStream`], on
/// a connection of its own ([`Sessions`]).
pub struct Writer {
    stream: String,
    entries: mpsc::Receiver<Entry>,
    channel: watch::Receiver<Option<Channel>>,
    losses: LossLog,
    sessions: Sessions,
}

/// The writer's connection: each session opens the stream's channel and
/// hands it to the [`Writer`] until the connection fails.
struct Sessions {
    broker: Broker,
    config: StreamConfig,
    channel: watch::Sender<Option<Channel>>,
}

/// A record's fate, and whoever waits to hear it.
type Confirmed = (
    Result<(), StreamLoss>,
    Option<oneshot::Sender<Result<(), StreamLoss>>>,
);

/// Confirms awaited at once, at most: beyond, the writer waits for the
/// oldest before publishing more.
const CONFIRM_WINDOW: usize = 1024;

/// How long a record may wait for its confirm before it counts as lost.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates both sides, the writer to connect to `broker`; `buffer`
/// records may wait to be published.
pub fn new(broker: Broker, config: StreamConfig, buffer: usize) -> (EventStream, Writer) {
    let (sender, receiver) = mpsc::channel(buffer.max(1));
    let (channel_sender, channel_receiver) = watch::channel(None);
    (
        EventStream {
            entries: sender,
            losses: LossLog::default(),
        },
        Writer {
            stream: config.name.clone(),
            entries: receiver,
            channel: channel_receiver,
            losses: LossLog::default(),
            sessions: Sessions {
                broker,
                config,
                channel: channel_sender,
            },
        },
    )
}

impl EventStream {
    /// Appends `event` (whose JSON is `body`) to the stream, in the
    /// background; a record that cannot wait is counted and dropped.
    pub fn record(&self, direction: Direction, source: &str, event: &Event, body: Bytes) {
        let entry = Entry::new(direction, source, event, body, None);
        if let Err(error) = self.entries.try_send(entry) {
            let why = match error {
                mpsc::error::TrySendError::Full(_) => StreamLoss::Lagging,
                mpsc::error::TrySendError::Closed(_) => StreamLoss::Unavailable,
            };
            self.losses.lost(why);
        }
    }
}

impl EventStream {
    /// Appends `event` and waits until the broker confirmed it, or it was
    /// lost (counted, as [`record`](Self::record)'s losses are).
    pub async fn append(
        &self,
        direction: Direction,
        source: &str,
        event: &Event,
        body: Bytes,
    ) -> Result<(), StreamLoss> {
        let (confirmed, outcome) = oneshot::channel();
        let entry = Entry::new(direction, source, event, body, Some(confirmed));
        if self.entries.send(entry).await.is_err() {
            self.losses.lost(StreamLoss::Unavailable);
            return Err(StreamLoss::Unavailable);
        }
        outcome.await.unwrap_or(Err(StreamLoss::Unavailable))
    }
}

impl Entry {
    fn new(
        direction: Direction,
        source: &str,
        event: &Event,
        body: Bytes,
        confirmed: Option<oneshot::Sender<Result<(), StreamLoss>>>,
    ) -> Self {
        Self {
            direction,
            source: source.into(),
            id: event.id.as_str().into(),
            kind: event.kind.as_str().into(),
            body,
            context: common::telemetry::hop::current_context(),
            confirmed,
        }
    }
}

impl Sessions {
    /// Runs the writer's connection until `done`.
    async fn run(&self, done: &CancellationToken) {
        let name = format!("{}-events", crate::SERVICE_NAME);
        let readiness = Readiness::ungauged();
        connection::supervise(&self.broker, &name, &readiness, done, |connection| {
            self.session(connection, done)
        })
        .await;
    }

    /// One session: opens the stream's channel and declares the stream,
    /// then lends the channel to the writer until the connection fails
    /// (an error) or `done`. A stream that cannot be declared ends the
    /// session too, so the supervisor tries again with backoff (its
    /// leader may be moving); a stream declared with other arguments is
    /// logged each time with what to do.
    async fn session(&self, connection: Connection, done: &CancellationToken) -> lapin::Result<()> {
        // Listening before the first channel opens: lapin drops the events
        // nobody listens to yet.
        let failed = connection::connection_failed(&connection);
        tokio::pin!(failed);
        let opened = async {
            let channel = connection.create_channel().await?;
            self.config.declare(&channel).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            lapin::Result::Ok(channel)
        };
        let outcome = tokio::select! {
            opened = opened => match opened {
                Ok(channel) => {
                    self.channel.send_replace(Some(channel));
                    tokio::select! {
                        error = &mut failed => Err(error),
                        _ = done.cancelled() => Ok(()),
                    }
                }
                Err(error) => {
                    tracing::error!(stream = %self.config.name, %error, "the event stream is unavailable; events are not recorded until it is declared");
                    Err(error)
                }
            },
            error = &mut failed => Err(error),
            _ = done.cancelled() => Ok(()),
        };
        self.channel.send_replace(None);
        if outcome.is_ok() {
            connection::close(&connection).await;
        }
        outcome
    }
}

impl Writer {
    /// Connects, and publishes records until `shutdown`, then what is
    /// buffered (while a channel is up), then waits for the outstanding
    /// confirms before closing the connection.
    pub async fn run(self, shutdown: CancellationToken) {
        let done = CancellationToken::new();
        let Self {
            stream,
            entries,
            channel,
            losses,
            sessions,
        } = self;
        let publishing = Publishing {
            entries,
            channel,
            losses,
        };
        tokio::join!(sessions.run(&done), async {
            publishing.run(&stream, &shutdown).await;
            done.cancel();
        });
    }
}

/// The writer's publishing half.
struct Publishing {
    entries: mpsc::Receiver<Entry>,
    channel: watch::Receiver<Option<Channel>>,
    losses: LossLog,
}

impl Publishing {
    async fn run(mut self, stream: &str, shutdown: &CancellationToken) {
        let mut confirms = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some(confirmed) = confirms.next(), if !confirms.is_empty() => self.settled(confirmed),
                entry = self.entries.recv(), if confirms.len() < CONFIRM_WINDOW => match entry {
                    Some(entry) => {
                        if let Some(confirm) = self.publish(stream, entry).await {
                            confirms.push(confirm);
                        }
                    }
                    None => break,
                },
                _ = shutdown.cancelled() => {
                    self.entries.close();
                    while let Ok(entry) = self.entries.try_recv() {
                        if let Some(confirm) = self.publish(stream, entry).await {
                            confirms.push(confirm);
                        }
                    }
                    break;
                }
            }
        }
        while let Some(confirmed) = confirms.next().await {
            self.settled(confirmed);
        }
    }

    /// Publishes one record; the future of its confirm, or `None` when it
    /// is already lost.
    async fn publish(
        &self,
        stream: &str,
        mut entry: Entry,
    ) -> Option<impl Future<Output = Confirmed> + use<>> {
        let confirmed = entry.confirmed.take();
        let Some(channel) = self.channel.borrow().clone() else {
            self.lose(StreamLoss::Unavailable, confirmed);
            return None;
        };
        let properties = record_properties(
            &entry.id,
            &entry.kind,
            entry.direction.label(),
            &entry.source,
            &entry.context,
        );
        let published = channel
            .basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                &entry.body,
                properties,
            )
            .await;
        match published {
            Ok(confirm) => Some(async move {
                let outcome = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                    Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
                    Ok(Ok(_)) => Err(StreamLoss::Nacked),
                    Ok(Err(_)) => Err(StreamLoss::BrokerError),
                    Err(_) => Err(StreamLoss::Timeout),
                };
                (outcome, confirmed)
            }),
            Err(error) => {
                tracing::debug!(%error, "publishing to the event stream");
                self.lose(StreamLoss::BrokerError, confirmed);
                None
            }
        }
    }

    fn settled(&self, (outcome, confirmed): Confirmed) {
        match outcome {
            Ok(()) => metrics::stream_appended(),
            Err(why) => self.losses.lost(why),
        }
        if let Some(confirmed) = confirmed {
            let _ = confirmed.send(outcome);
        }
    }

    fn lose(&self, why: StreamLoss, confirmed: Option<oneshot::Sender<Result<(), StreamLoss>>>) {
        self.losses.lost(why);
        if let Some(confirmed) = confirmed {
            let _ = confirmed.send(Err(why));
        }
    }
}

/// Counts losses, and logs the first of a streak, then at most one line
/// every [`LossLog::EVERY`] with how many were lost since the last line.
#[derive(Default)]
struct LossLog {
    /// Milliseconds since `epoch` of the last line, plus one (0: never).
    last_logged: AtomicU64,
    since_logged: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl LossLog {
    const EVERY: Duration = Duration::from_secs(5);

    fn lost(&self, why: StreamLoss) {
        metrics::stream_lost(why);
        let lost = self.since_logged.fetch_add(1, Ordering::Relaxed) + 1;
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::EVERY.as_millis() as u64;
        if due
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.since_logged.fetch_sub(lost, Ordering::Relaxed);
            tracing::warn!(
                reason = why.label(),
                lost,
                "events not recorded in the event stream; requests are not affected"
            );
        }
    }
}
