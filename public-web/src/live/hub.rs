//! One reader of the event stream per public-web instance, fanning records
//! out to this instance's subscribers, each through its own filters.
//!
//! The hub starts reading when the first subscription arrives, at the
//! stream's next record, and keeps its position across reconnections (it
//! resumes after the last offset it saw), so a broker blip loses no record
//! for a live subscriber. A subscription that asks to start from an
//! earlier offset first reads the past on a reader of its own (a
//! catch-up), then joins the hub at the exact record where the two meet:
//! under the hub's lock, once the catch-up has delivered a record the hub
//! has not yet passed (and the hub has read at least one, so it is not
//! behind the end of the stream). Offsets below a subscriber's next one are skipped,
//! so nothing is delivered twice and nothing is skipped.
//!
//! Every subscriber has a bounded queue ([`Sink`]); the hub never waits on
//! one. A subscriber whose queue is full is removed and told so through
//! [`Sink::overflowed`]: its connection is closed, the others keep flowing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Event;
use common::amqp::connection::{self, Broker, Readiness};
use common::amqp::stream::{self, Record, StartAt, StreamConfig};
use common::filter::{Filters, Subject};
use futures_util::StreamExt;
use lapin::Connection;
use lapin::options::BasicAckOptions;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Records in flight to a reader at once (the stream's credit).
const PREFETCH: u16 = 512;

/// Acknowledge every this many records: a stream's ack only returns
/// credit, so one ack per batch is enough.
const ACK_EVERY: u64 = 64;

/// How long a subscription waits for the hub to be reading before it is
/// refused.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Catch-up readers at once; more wait for a turn.
const MAX_CATCHUPS: usize = 64;

/// How long a catch-up waits for room in a subscriber's queue before the
/// subscriber counts as not reading.
const CATCHUP_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A record as subscribers receive it.
#[derive(Debug)]
pub struct StreamEvent {
    pub offset: u64,
    /// The event's JSON, on one line.
    pub json: Box<str>,
}

/// What a subscriber's connection is sent: a text frame of its own, or a
/// matching stream record for one of its subscriptions.
#[derive(Debug)]
pub enum Outgoing {
    Text(String),
    Event {
        subscription: Arc<str>,
        event: Arc<StreamEvent>,
    },
}

/// Where one subscription's records go: the connection's bounded queue.
#[derive(Clone)]
pub struct Sink {
    pub sender: mpsc::Sender<Outgoing>,
    /// The subscription's name on its connection.
    pub subscription: Arc<str>,
    /// Cancelled when the queue was full: the connection must close.
    pub overflow: CancellationToken,
}

impl Sink {
    fn offer(&self, event: &Arc<StreamEvent>) -> bool {
        let outgoing = Outgoing::Event {
            subscription: self.subscription.clone(),
            event: event.clone(),
        };
        match self.sender.try_send(outgoing) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::slow_subscriber_cut_off();
                self.overflow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Why a subscription could not start.
#[derive(Debug, thiserror::Error)]
#[error("the event stream is not available; retry")]
pub struct Unavailable;

struct Subscriber {
    filters: Arc<Filters>,
    sink: Sink,
    /// The first offset this subscriber has not been given.
    next: u64,
}

#[derive(Default)]
struct State {
    subscribers: HashMap<u64, Subscriber>,
    /// The last offset the hub has dispatched.
    last: Option<u64>,
}

/// The instance's stream reader and its subscribers.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    stream: StreamConfig,
    shutdown: CancellationToken,
    started: AtomicBool,
    readiness: Readiness,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// The reading session's connection, for catch-up readers.
    connection: watch::Sender<Option<Arc<Connection>>>,
    catchups: Semaphore,
}

/// A subscription in the hub; dropping it ends the subscription.
pub struct Subscription {
    hub: Arc<Inner>,
    id: u64,
    catchup: CancellationToken,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.catchup.cancel();
        self.hub.lock().subscribers.remove(&self.id);
        crate::metrics::subscriptions_gauge().decrement(1.0);
    }
}

impl Hub {
    /// A hub reading `stream` on `broker` once started, until `shutdown`.
    pub fn new(broker: Broker, stream: StreamConfig, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker,
                stream,
                shutdown,
                started: AtomicBool::new(false),
                readiness: Readiness::default(),
                state: Mutex::new(State::default()),
                next_id: AtomicU64::new(0),
                connection: watch::channel(None).0,
                catchups: Semaphore::new(MAX_CATCHUPS),
            }),
        }
    }

    /// Subscribes `sink` to the records passing `filters`, from `from` on
    /// (offsets at or above it, past ones included) or, with `None`, from
    /// the next record written. Waits until the hub reads the stream.
    pub async fn subscribe(
        &self,
        filters: Filters,
        sink: Sink,
        from: Option<u64>,
    ) -> Result<Subscription, Unavailable> {
        self.start();
        self.ready().await?;
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let filters = Arc::new(filters);
        let subscription = Subscription {
            hub: inner.clone(),
            id,
            catchup: inner.shutdown.child_token(),
        };
        crate::metrics::subscriptions_gauge().increment(1.0);
        let mut state = inner.lock();
        match (from, state.last) {
            // Live only, or a start the hub has not reached yet.
            (None, _) => state.join(id, filters, sink, 0),
            (Some(from), Some(last)) if from > last => state.join(id, filters, sink, from),
            (Some(from), _) => {
                drop(state);
                tokio::spawn(inner.clone().catch_up(
                    id,
                    filters,
                    sink,
                    from,
                    subscription.catchup.clone(),
                ));
            }
        }
        Ok(subscription)
    }

    /// Starts reading, once.
    fn start(&self) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let name = format!("{}-events", crate::SERVICE_NAME);
            connection::supervise(
                &inner.broker,
                &name,
                &inner.readiness,
                &inner.shutdown,
                |connection| inner.clone().session(connection),
            )
            .await;
        });
    }

    async fn ready(&self) -> Result<(), Unavailable> {
        let waited = tokio::time::timeout(READY_TIMEOUT, async {
            while !self.inner.readiness.is_ready() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        waited.await.map_err(|_| Unavailable)
    }
}

impl State {
    fn join(&mut self, id: u64, filters: Arc<Filters>, sink: Sink, next: u64) {
        self.subscribers.insert(
            id,
            Subscriber {
                filters,
                sink,
                next,
            },
        );
    }

    /// Gives `event` to every subscriber whose filters it passes; drops
    /// the subscribers that cannot take it.
    fn dispatch(&mut self, event: &Arc<StreamEvent>, subject: &Subject<'_>) {
        self.last = Some(event.offset);
        self.subscribers.retain(|_, subscriber| {
            if event.offset < subscriber.next || !subscriber.filters.matches(subject) {
                return true;
            }
            subscriber.sink.offer(event)
        });
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("hub lock")
    }

    /// One reading session: from the offset after the last one seen, or
    /// the next record when none was.
    async fn session(self: Arc<Self>, connection: Connection) -> lapin::Result<()> {
        let connection = Arc::new(connection);
        let start = match self.lock().last {
            Some(last) => StartAt::Offset(last + 1),
            None => StartAt::Next,
        };
        let (channel, mut records) =
            stream::read(&connection, &self.stream, PREFETCH, start).await?;
        self.connection.send_replace(Some(connection.clone()));
        self.readiness.set(true);
        tracing::info!(stream = %self.stream.name, ?start, "reading the event stream");
        let failed = connection::connection_failed(&connection);
        tokio::pin!(failed);
        let mut unacked = 0;
        let outcome = loop {
            tokio::select! {
                delivery = records.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let tag = delivery.delivery_tag;
                        if let Some(record) = Record::from_delivery(delivery) {
                            self.dispatch(record);
                        }
                        unacked += 1;
                        if unacked == ACK_EVERY {
                            unacked = 0;
                            channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
                        }
                    }
                    Some(Err(error)) => break Err(error),
                    None => break Err(lapin::Error::from(std::io::Error::other(
                        "the broker cancelled the stream reader",
                    ))),
                },
                error = &mut failed => break Err(error),
                _ = self.shutdown.cancelled() => break Ok(()),
            }
        };
        self.connection.send_replace(None);
        if outcome.is_ok() {
            connection::close(&connection).await;
        }
        outcome
    }

    fn dispatch(&self, record: Record) {
        let Some((event, parsed)) = stream_event(record) else {
            return;
        };
        crate::metrics::stream_record_read();
        let subject = parsed.subject();
        self.lock().dispatch(&event, &subject);
    }

    /// Reads the stream from `from` for one subscriber until it meets the
    /// hub, then hands the subscriber over to the hub.
    async fn catch_up(
        self: Arc<Self>,
        id: u64,
        filters: Arc<Filters>,
        sink: Sink,
        from: u64,
        cancel: CancellationToken,
    ) {
        let Ok(_turn) = self.catchups.acquire().await else {
            return;
        };
        let mut next = from;
        while !cancel.is_cancelled() {
            let read = self
                .catch_up_from(id, &filters, &sink, &mut next, &cancel)
                .await;
            match read {
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(%error, "catch-up reader failed; starting again");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    /// One catch-up reader from `*next`, until it has handed subscriber
    /// `id` to the hub or the subscriber is gone.
    async fn catch_up_from(
        &self,
        id: u64,
        filters: &Arc<Filters>,
        sink: &Sink,
        next: &mut u64,
        cancel: &CancellationToken,
    ) -> lapin::Result<()> {
        let connection = {
            let mut watching = self.connection.subscribe();
            let ready = watching.wait_for(Option::is_some);
            tokio::select! {
                ready = ready => match ready {
                    Ok(connection) => connection.clone().expect("waited for a connection"),
                    Err(_) => return Ok(()),
                },
                _ = cancel.cancelled() => return Ok(()),
            }
        };
        let (channel, mut records) =
            stream::read(&connection, &self.stream, PREFETCH, StartAt::Offset(*next)).await?;
        loop {
            let delivery = tokio::select! {
                delivery = records.next() => delivery,
                _ = cancel.cancelled() => break,
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(lapin::Error::from(std::io::Error::other(
                        "catch-up cancelled",
                    )));
                }
            };
            let tag = delivery.delivery_tag;
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
            let Some(record) = Record::from_delivery(delivery) else {
                continue;
            };
            // A reader starts at the chunk holding its offset: skip what
            // lies before it.
            if record.offset < *next {
                continue;
            }
            let offset = record.offset;
            if let Some((event, parsed)) = stream_event(record)
                && filters.matches(&parsed.subject())
            {
                let outgoing = Outgoing::Event {
                    subscription: sink.subscription.clone(),
                    event,
                };
                let sent = tokio::time::timeout(CATCHUP_SEND_TIMEOUT, sink.sender.send(outgoing));
                match sent.await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        crate::metrics::slow_subscriber_cut_off();
                        sink.overflow.cancel();
                        break;
                    }
                }
            }
            *next = offset + 1;
            // Met the hub when it has read a record and not passed this
            // one: from the next one on, the hub delivers, under this same
            // lock. A hub that has read nothing yet may be behind the end
            // of the stream, so the catch-up reads on until it has.
            let mut state = self.lock();
            if state.last.is_some_and(|last| last <= offset) {
                if !cancel.is_cancelled() {
                    state.join(id, filters.clone(), sink.clone(), *next);
                }
                break;
            }
        }
        let _ = channel.close(200, "caught up".into()).await;
        Ok(())
    }
}

/// What filters read of a record.
struct Parsed {
    event: Event,
    source: String,
    direction: String,
}

impl Parsed {
    fn subject(&self) -> Subject<'_> {
        Subject {
            kind: &self.event.kind,
            id: &self.event.id,
            source: &self.source,
            direction: &self.direction,
            data: &self.event.data,
        }
    }
}

/// The record as subscribers get it and as filters see it; `None` when
/// its body is not an event (never written by the dispatcher).
fn stream_event(record: Record) -> Option<(Arc<StreamEvent>, Parsed)> {
    let Record {
        offset,
        direction,
        source,
        body,
        ..
    } = record;
    let event = Event::from_slice(&body).ok()?;
    // Frames and SSE lines carry the JSON on one line: a listener may have
    // written it pretty-printed.
    let json = match String::from_utf8(body) {
        Ok(text) if !text.contains(['\n', '\r']) => text,
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()?
            .to_string(),
        Err(_) => return None,
    };
    let parsed = Parsed {
        event,
        source,
        direction,
    };
    let event = Arc::new(StreamEvent {
        offset,
        json: json.into_boxed_str(),
    });
    Some((event, parsed))
}
