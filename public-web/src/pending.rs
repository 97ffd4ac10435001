//! The parked requests: one oneshot sender per client waiting for its
//! response, keyed by event id.
//!
//! The map is bounded by construction: an entry exists only while a
//! [`Parked`] guard lives, and the guard lives only inside the request
//! handler. Whether the handler ends by answer, timeout, error or the client
//! hanging up (axum drops the handler's future), the guard's `Drop` removes
//! the entry. A cap refuses new entries beyond `max`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::body::Bytes;
use common::HandlerError;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::oneshot;

/// Why a request could not be parked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParkError {
    #[error("{0} requests are already waiting")]
    Full(usize),
    #[error("a request with id {0:?} is already waiting")]
    DuplicateId(String),
}

/// What a parked request answers its client with: the response event's
/// JSON as the dispatcher delivered it, or the handler's failure.
pub type Answer = Result<Bytes, HandlerError>;

/// Why a response could not be delivered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no request with id {0:?} is waiting")]
pub struct NotWaiting(pub String);

struct Waiter {
    /// Tells this waiter from a later one that reuses the id, so a guard
    /// never removes an entry that is not its own.
    ticket: u64,
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
    next_ticket: AtomicU64,
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
                next_ticket: AtomicU64::new(0),
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

    /// Parks a request for `id`; the returned guard receives the response
    /// and removes the entry when dropped.
    pub fn park(&self, id: &str) -> Result<Parked, ParkError> {
        let inner = &self.inner;
        if inner.len.fetch_add(1, Ordering::AcqRel) >= inner.max {
            inner.len.fetch_sub(1, Ordering::AcqRel);
            return Err(ParkError::Full(inner.max));
        }
        let ticket = inner.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        match inner.waiters.entry(id.to_owned()) {
            Entry::Occupied(_) => {
                inner.len.fetch_sub(1, Ordering::AcqRel);
                Err(ParkError::DuplicateId(id.to_owned()))
            }
            Entry::Vacant(slot) => {
                slot.insert(Waiter { ticket, sender });
                inner.added();
                Ok(Parked {
                    pending: self.clone(),
                    id: id.to_owned(),
                    ticket,
                    receiver: Some(receiver),
                })
            }
        }
    }

    /// Hands `answer` to the request waiting for the event `id`.
    pub fn complete(&self, id: &str, answer: Answer) -> Result<(), NotWaiting> {
        let Some((_, waiter)) = self.inner.waiters.remove(id) else {
            return Err(NotWaiting(id.to_owned()));
        };
        self.inner.removed();
        // A failed send means the handler is gone (timed out or the client
        // hung up) between our remove and its guard's drop.
        waiter
            .sender
            .send(answer)
            .map_err(|_| NotWaiting(id.to_owned()))
    }

    fn remove_own(&self, id: &str, ticket: u64) {
        if self
            .inner
            .waiters
            .remove_if(id, |_, waiter| waiter.ticket == ticket)
            .is_some()
        {
            self.inner.removed();
        }
    }
}

/// A parked request. Await [`Parked::response`]; dropping it unparks.
pub struct Parked {
    pending: PendingRequests,
    id: String,
    ticket: u64,
    receiver: Option<oneshot::Receiver<Answer>>,
}

impl Parked {
    /// The id of the event whose response this request waits for.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The answer, or `None` if the entry was removed without one.
    pub async fn response(&mut self) -> Option<Answer> {
        self.receiver.as_mut()?.await.ok()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.pending.remove_own(&self.id, self.ticket);
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
        pending.complete("a", answer("a")).unwrap();
        assert_eq!(parked.response().await, Some(answer("a")));
        assert!(pending.is_empty());
    }

    #[test]
    fn dropping_the_guard_unparks() {
        let pending = PendingRequests::new(10);
        drop(pending.park("a").unwrap());
        assert!(pending.is_empty());
        assert_eq!(
            pending.complete("a", answer("a")),
            Err(NotWaiting("a".into()))
        );
    }

    #[test]
    fn refuses_beyond_the_cap_and_duplicates() {
        let pending = PendingRequests::new(2);
        let _a = pending.park("a").unwrap();
        assert_eq!(
            pending.park("a").err(),
            Some(ParkError::DuplicateId("a".into()))
        );
        let _b = pending.park("b").unwrap();
        assert_eq!(pending.park("c").err(), Some(ParkError::Full(2)));
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn an_old_guard_does_not_remove_a_newer_waiter() {
        let pending = PendingRequests::new(10);
        let old = pending.park("a").unwrap();
        pending.complete("a", answer("a")).ok();
        let _new = pending.park("a").unwrap();
        drop(old);
        assert_eq!(pending.len(), 1);
    }
}
