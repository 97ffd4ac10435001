//! Appending every routed event to the event stream, off the request path.
//!
//! A request or response is handed to [`EventStream::record`], which never
//! waits: it puts the record in a bounded buffer and returns. One task, the
//! [`Writer`], publishes the buffer in order on a confirm channel of its own
//! and awaits the broker's confirms in a window, pipelined. When the buffer
//! is full (the broker lags), no session is up, the stream cannot be
//! declared, or the broker refuses a record, the record is lost: counted in
//! `dispatcher_stream_lost_total` by why, and logged (the first loss of a
//! streak, then at most every few seconds), while the request itself
//! completes as if the stream did not exist.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::Event;
use common::amqp::message::{self, event_properties};
use common::amqp::stream::StreamConfig;
use common::wire::{STREAM_DIRECTION_HEADER, STREAM_FILTER_HEADER, STREAM_SOURCE_HEADER};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::{mpsc, watch};
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
}

/// The request path's side: records events without waiting.
pub struct EventStream {
    entries: mpsc::Sender<Entry>,
    losses: LossLog,
}

/// The publishing side: one task per process, fed by [`EventStream`].
pub struct Writer {
    stream: String,
    entries: mpsc::Receiver<Entry>,
    channel: watch::Receiver<Option<Channel>>,
    losses: LossLog,
}

/// Hands each AMQP session's stream channel to the [`Writer`].
pub struct Sessions {
    config: StreamConfig,
    channel: watch::Sender<Option<Channel>>,
}

/// Confirms awaited at once, at most: beyond, the writer waits for the
/// oldest before publishing more.
const CONFIRM_WINDOW: usize = 1024;

/// How long a record may wait for its confirm before it counts as lost.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates the three parts; `buffer` records may wait to be published.
pub fn new(config: StreamConfig, buffer: usize) -> (EventStream, Writer, Sessions) {
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
        },
        Sessions {
            config,
            channel: channel_sender,
        },
    )
}

impl EventStream {
    /// Appends `event` (whose JSON is `body`) to the stream, in the
    /// background; a record that cannot wait is counted and dropped.
    pub fn record(&self, direction: Direction, source: &str, event: &Event, body: Bytes) {
        let entry = Entry {
            direction,
            source: source.into(),
            id: event.id.as_str().into(),
            kind: event.kind.as_str().into(),
            body,
        };
        if let Err(error) = self.entries.try_send(entry) {
            let why = match error {
                mpsc::error::TrySendError::Full(_) => StreamLoss::Lagging,
                mpsc::error::TrySendError::Closed(_) => StreamLoss::Unavailable,
            };
            self.losses.lost(why);
        }
    }
}

impl Sessions {
    /// A session is up: opens the stream's channel on `connection` and
    /// declares the stream. A stream that cannot be declared leaves the
    /// stream off for this session (logged), never the session itself.
    pub async fn started(&self, connection: &Connection) {
        let opened = async {
            let channel = connection.create_channel().await?;
            self.config.declare(&channel).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            lapin::Result::Ok(channel)
        };
        match opened.await {
            Ok(channel) => {
                self.channel.send_replace(Some(channel));
            }
            Err(error) => {
                tracing::error!(stream = %self.config.name, %error, "the event stream is unavailable this session; events are not recorded");
                self.channel.send_replace(None);
            }
        }
    }

    /// The session ended: records are lost until the next one.
    pub fn ended(&self) {
        self.channel.send_replace(None);
    }
}

impl Writer {
    /// Publishes records until `shutdown`, then what is buffered (while a
    /// channel is up), then waits for the outstanding confirms.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let stream = std::mem::take(&mut self.stream);
        let mut confirms = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some(confirmed) = confirms.next(), if !confirms.is_empty() => self.settled(confirmed),
                entry = self.entries.recv(), if confirms.len() < CONFIRM_WINDOW => match entry {
                    Some(entry) => {
                        if let Some(confirm) = self.publish(&stream, entry).await {
                            confirms.push(confirm);
                        }
                    }
                    None => break,
                },
                _ = shutdown.cancelled() => {
                    self.entries.close();
                    while let Ok(entry) = self.entries.try_recv() {
                        if let Some(confirm) = self.publish(&stream, entry).await {
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
        entry: Entry,
    ) -> Option<impl Future<Output = Result<(), StreamLoss>> + use<>> {
        let Some(channel) = self.channel.borrow().clone() else {
            self.losses.lost(StreamLoss::Unavailable);
            return None;
        };
        let mut headers = FieldTable::default();
        message::set_header(
            &mut headers,
            STREAM_DIRECTION_HEADER,
            entry.direction.label(),
        );
        message::set_header(&mut headers, STREAM_SOURCE_HEADER, &entry.source);
        message::set_header(&mut headers, STREAM_FILTER_HEADER, &entry.kind);
        let properties = event_properties(&entry.id, &entry.kind).with_headers(headers);
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
                match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                    Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
                    Ok(Ok(_)) => Err(StreamLoss::Nacked),
                    Ok(Err(_)) => Err(StreamLoss::BrokerError),
                    Err(_) => Err(StreamLoss::Timeout),
                }
            }),
            Err(error) => {
                tracing::debug!(%error, "publishing to the event stream");
                self.losses.lost(StreamLoss::BrokerError);
                None
            }
        }
    }

    fn settled(&self, confirmed: Result<(), StreamLoss>) {
        match confirmed {
            Ok(()) => metrics::stream_appended(),
            Err(why) => self.losses.lost(why),
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
