//! The parked requests: one oneshot sender per client waiting for its
//! response, keyed by a correlation id made here.
//!
//! The correlation id, not the client's event id, is what travels on the
//! bus and comes back to `/dispatch`: 128 random bits, so nobody can
//! answer, or find out about, a request they did not send. Two clients
//! may use the same event id; each gets its own answer, and nothing tells
//! one about the other's request.
//!
//! The map is bounded by construction: an entry exists only while a
//! [`Parked`] guard lives, and the guard lives only inside the request
//! handler. Whether the handler ends by answer, timeout, error or the client
//! hanging up (axum drops the handler's future), the guard's `Drop` removes
//! the entry. A cap refuses new entries beyond `max`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use common::HandlerError;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::oneshot;

/// Why a request could not be parked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} requests are already waiting")]
pub struct Full(pub usize);

/// What a parked request answers its client with: the response event's
/// JSON as the dispatcher delivered it, or the handler's failure.
pub type Answer = Result<Bytes, HandlerError>;

/// Why a response could not be delivered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotWaiting {
    #[error("no request is waiting for this correlation id")]
    Unknown,
    #[error("the response's id {0:?} is not the id of the request waiting for it")]
    OtherId(String),
}

struct Waiter {
    /// The client's event id, which the response must carry.
    event_id: Box<str>,
    sender: oneshot::Sender<Answer>,
}

/// Requests waiting for their response event.
#[derive(Clone)]
pub struct PendingRequests {
    inner: Arc<Inner>,
}

struct Inner {
    waiters: DashMap<String, Waiter>,
    /// Counted apart from the map because `DashMap::len` locks every shard.
    len: AtomicUsize,
    max: usize,
    gauge: metrics::Gauge,
}

impl Inner {
    fn added(&self) {
        self.gauge.increment(1.0);
    }

    fn removed(&self) {
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.gauge.decrement(1.0);
    }
}

impl PendingRequests {
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                waiters: DashMap::new(),
                len: AtomicUsize::new(0),
                max,
                gauge: crate::metrics::pending_requests_gauge(),
            }),
        }
    }

    /// How many requests are waiting.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks the request for the event `event_id` under a new correlation
    /// id; the returned guard receives the response and removes the entry
    /// when dropped.
    pub fn park(&self, event_id: &str) -> Result<Parked, Full> {
        let inner = &self.inner;
        if inner.len.fetch_add(1, Ordering::AcqRel) >= inner.max {
            inner.len.fetch_sub(1, Ordering::AcqRel);
            return Err(Full(inner.max));
        }
        let (sender, receiver) = oneshot::channel();
        let waiter = Waiter {
            event_id: event_id.into(),
            sender,
        };
        // 128 random bits: a collision is not a case to handle, but a
        // vacant entry is checked rather than assumed.
        let correlation = loop {
            let candidate = new_correlation_id();
            if let Entry::Vacant(slot) = inner.waiters.entry(candidate.clone()) {
                slot.insert(waiter);
                break candidate;
            }
        };
        inner.added();
        Ok(Parked {
            pending: self.clone(),
            correlation,
            event_id: event_id.to_owned(),
            receiver: Some(receiver),
        })
    }

    /// Hands `answer`, the response to the event `event_id`, to the
    /// request parked under `correlation`. Each parked request takes one
    /// answer: a replay finds nobody waiting.
    pub fn complete(
        &self,
        correlation: &str,
        event_id: &str,
        answer: Answer,
    ) -> Result<(), NotWaiting> {
        let mut other_id = false;
        let removed = self.inner.waiters.remove_if(correlation, |_, waiter| {
            other_id = &*waiter.event_id != event_id;
            !other_id
        });
        let Some((_, waiter)) = removed else {
            return Err(if other_id {
                NotWaiting::OtherId(event_id.to_owned())
            } else {
                NotWaiting::Unknown
            });
        };
        self.inner.removed();
        // A failed send means the handler is gone (timed out or the client
        // hung up) between our remove and its guard's drop.
        waiter.sender.send(answer).map_err(|_| NotWaiting::Unknown)
    }

    fn remove(&self, correlation: &str) {
        if self.inner.waiters.remove(correlation).is_some() {
            self.inner.removed();
        }
    }
}

/// A fresh correlation id: 128 random bits from the operating system's
/// generator, as 32 hex digits.
pub(crate) fn new_correlation_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A parked request. Await [`Parked::response`]; dropping it unparks.
pub struct Parked {
    pending: PendingRequests,
    correlation: String,
    event_id: String,
    receiver: Option<oneshot::Receiver<Answer>>,
}

impl Parked {
    /// The client's id of the event whose response this request waits for.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// The id the request travels under on the bus.
    pub fn correlation(&self) -> &str {
        &self.correlation
    }

    /// The answer, or `None` if the entry was removed without one.
    pub async fn response(&mut self) -> Option<Answer> {
        self.receiver.as_mut()?.await.ok()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.pending.remove(&self.correlation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str) -> Answer {
        Ok(Bytes::from(format!(
            r#"{{"id":"{id}","type":"PingResponse"}}"#
        )))
    }

    #[tokio::test]
    async fn completes_the_waiting_request() {
        let pending = PendingRequests::new(10);
        let mut parked = pending.park("a").unwrap();
        pending
            .complete(parked.correlation(), "a", answer("a"))
            .unwrap();
        assert_eq!(parked.response().await, Some(answer("a")));
        assert!(pending.is_empty());
    }

    #[test]
    fn an_answer_is_taken_once() {
        let pending = PendingRequests::new(10);
        let parked = pending.park("a").unwrap();
        let correlation = parked.correlation().to_owned();
        pending.complete(&correlation, "a", answer("a")).unwrap();
        assert_eq!(
            pending.complete(&correlation, "a", answer("a")),
            Err(NotWaiting::Unknown)
        );
    }

    #[test]
    fn dropping_the_guard_unparks() {
        let pending = PendingRequests::new(10);
        let parked = pending.park("a").unwrap();
        let correlation = parked.correlation().to_owned();
        drop(parked);
        assert!(pending.is_empty());
        assert_eq!(
            pending.complete(&correlation, "a", answer("a")),
            Err(NotWaiting::Unknown)
        );
    }

    #[test]
    fn the_event_id_is_not_a_key() {
        let pending = PendingRequests::new(10);
        let first = pending.park("a").unwrap();
        let second = pending.park("a").unwrap();
        assert_ne!(first.correlation(), second.correlation());
        assert_eq!(first.correlation().len(), 32);
        assert_eq!(
            pending.complete("a", "a", answer("a")),
            Err(NotWaiting::Unknown)
        );
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn a_response_with_another_id_completes_nothing() {
        let pending = PendingRequests::new(10);
        let parked = pending.park("a").unwrap();
        assert_eq!(
            pending.complete(parked.correlation(), "b", answer("b")),
            Err(NotWaiting::OtherId("b".into()))
        );
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn refuses_beyond_the_cap() {
        let pending = PendingRequests::new(2);
        let _a = pending.park("a").unwrap();
        let _b = pending.park("b").unwrap();
        assert_eq!(pending.park("c").err(), Some(Full(2)));
        assert_eq!(pending.len(), 2);
    }
}
