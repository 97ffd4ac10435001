//! Callback targets kept apart, so one slow or dead public-web instance
//! cannot hold up the callbacks to the others.
//!
//! Every response holds one of the consumer's prefetch slots until its
//! callback ends. Without limits, a target that accepts connections and
//! never answers collects every slot, each for the whole timeout and its
//! retries, and all callbacks stop. So each target (an origin) gets:
//! - a share of callbacks in flight (`CALLBACK_TARGET_CONCURRENCY`), and a
//!   bounded number waiting for a turn (half the consumer's prefetch), so
//!   that whatever one target holds, other targets' responses find free
//!   slots. A response beyond both is dead-lettered rather than hold a
//!   slot: requeueing it would put it back at the head of the queue,
//!   ahead of every other target's responses, the stall again one step
//!   removed. A healthy public-web answers a callback in well under a
//!   millisecond, so a target with that many outstanding is hung or
//!   drowning;
//! - a cooldown: once a call to it times out or cannot connect, it is
//!   marked down for `CALLBACK_TARGET_COOLDOWN_MS`, and calls to it fail
//!   at once, retries included, instead of each waiting out the timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The targets seen so far; see the module documentation.
pub struct Targets {
    by_origin: RwLock<HashMap<String, Arc<Target>>>,
    per_target: usize,
    backlog: usize,
    cooldown: Duration,
}

/// One origin's share and state.
pub struct Target {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
    backlog: usize,
    cooldown: Duration,
}

/// Why a target cannot be called now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// In its cooldown.
    Down,
    /// Its share is in flight and its backlog waits already, or the wait
    /// for a turn outlasted the call's timeout.
    Busy,
}

impl Targets {
    /// `per_target` calls in flight to each target, `backlog` more
    /// waiting.
    pub fn new(per_target: usize, backlog: usize, cooldown: Duration) -> Self {
        Self {
            by_origin: RwLock::new(HashMap::new()),
            per_target: per_target.max(1),
            backlog,
            cooldown,
        }
    }

    /// The target `url` belongs to. Only URLs the allow-list passed get
    /// here, so the map holds at most the deployment's origins.
    pub fn of(&self, url: &Url) -> Arc<Target> {
        let origin = url.origin().ascii_serialization();
        if let Some(target) = self.by_origin.read().expect("targets lock").get(&origin) {
            return target.clone();
        }
        self.by_origin
            .write()
            .expect("targets lock")
            .entry(origin)
            .or_insert_with(|| {
                Arc::new(Target {
                    permits: Arc::new(Semaphore::new(self.per_target)),
                    waiting: AtomicUsize::new(0),
                    down_until: Mutex::new(None),
                    backlog: self.backlog,
                    cooldown: self.cooldown,
                })
            })
            .clone()
    }
}

impl Target {
    /// A turn to call this target, waiting at most `patience` for one.
    pub async fn turn(&self, patience: Duration) -> Result<OwnedSemaphorePermit, Unavailable> {
        if self.is_down() {
            return Err(Unavailable::Down);
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.backlog {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Unavailable::Busy);
        }
        let waited = tokio::time::timeout(patience, self.permits.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) if !self.is_down() => Ok(permit),
            Ok(_) => Err(Unavailable::Down),
            Err(_) => Err(Unavailable::Busy),
        }
    }

    /// Whether the target is in its cooldown.
    pub fn is_down(&self) -> bool {
        let down_until = self.down_until.lock().expect("target lock");
        down_until.is_some_and(|until| Instant::now() < until)
    }

    /// The target timed out or refused a connection: down for the cooldown.
    pub fn mark_down(&self) {
        *self.down_until.lock().expect("target lock") = Some(Instant::now() + self.cooldown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[tokio::test]
    async fn a_target_has_its_share_and_its_backlog() {
        let targets = Targets::new(2, 2, Duration::from_secs(5));
        let slow = targets.of(&url("http://127.0.0.1:1/dispatch"));
        let held = [
            slow.turn(Duration::ZERO).await.unwrap(),
            slow.turn(Duration::ZERO).await.unwrap(),
        ];
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let slow = slow.clone();
                tokio::spawn(async move { slow.turn(Duration::from_secs(5)).await.is_ok() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            slow.turn(Duration::from_secs(5)).await.err(),
            Some(Unavailable::Busy)
        );
        // Another origin is not affected.
        let other = targets.of(&url("http://127.0.0.1:2/dispatch"));
        assert!(other.turn(Duration::ZERO).await.is_ok());
        drop(held);
        for waiter in waiters {
            assert!(waiter.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_target_marked_down_is_not_called_until_its_cooldown_ends() {
        let targets = Targets::new(2, 2, Duration::from_millis(100));
        let target = targets.of(&url("http://127.0.0.1:1/x"));
        target.mark_down();
        assert_eq!(
            target.turn(Duration::ZERO).await.err(),
            Some(Unavailable::Down)
        );
        assert!(Arc::ptr_eq(
            &target,
            &targets.of(&url("http://127.0.0.1:1/y"))
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(target.turn(Duration::ZERO).await.is_ok());
    }
}
