//! Callback targets kept apart, so one slow or dead public-web instance
//! cannot hold up the callbacks to the others.
//!
//! Every response holds one of the consumer's prefetch slots until its
//! callback ends. Without limits, a target that accepts connections and
//! never answers collects every slot, each for the whole timeout and its
//! retries, and all callbacks stop. So each target (a callback URL) gets:
//! - a share of callbacks in flight (`CALLBACK_TARGET_CONCURRENCY`), and a
//!   bounded number waiting for a turn, together at most half the
//!   consumer's prefetch, so that whatever one target holds, other
//!   targets' responses find free slots (several slow targets at once can
//!   still fill them, until their cooldowns start). A response beyond both
//!   is dead-lettered rather than hold a slot: requeueing it would put it
//!   back at the head of the queue, ahead of every other target's
//!   responses, the stall again one step removed. The share only protects
//!   other targets, so a target alone (no other called within
//!   [`ACTIVE_WINDOW`], as with a single public-web instance) may hold the
//!   whole prefetch: its responses beyond the backlog wait for a turn like
//!   the backlog's, rather than be shed while nobody else wants the slots;
//! - a cooldown: once calls to it have timed out or failed to connect
//!   [`FAILURES_TO_DOWN`] times in a row, it is marked down for
//!   `CALLBACK_TARGET_COOLDOWN_MS`, and calls to it fail at once, retries
//!   included, instead of each waiting out the timeout. One slow answer
//!   is not enough: a healthy instance has those. A request forwarded by
//!   the instance ends its cooldown ([`Target::heard_from`]): an instance
//!   restarted at the same address gets its answers at once.
//!
//! Targets are kept by callback URL (one per public-web instance),
//! [`MAX_TARGETS`] at most; beyond that the rest share one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Consecutive timeouts or connection failures that mark a target down.
pub const FAILURES_TO_DOWN: u32 = 3;

/// How recently another target must have been called for a target's
/// share to apply beyond its backlog.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(10);

/// Callback URLs kept apart at most: far more than a deployment's
/// public-web instances.
pub const MAX_TARGETS: usize = 1024;

/// The targets seen so far; see the module documentation.
pub struct Targets {
    by_url: RwLock<HashMap<String, Arc<Target>>>,
    /// Shared by the callback URLs beyond [`MAX_TARGETS`].
    overflow: Arc<Target>,
    per_target: usize,
    backlog: usize,
    cooldown: Duration,
}

/// One callback URL's share and state.
pub struct Target {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    failures: AtomicU32,
    /// When a turn was last asked for, in milliseconds since `epoch`.
    last_asked: AtomicU64,
    epoch: Instant,
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
        let per_target = per_target.max(1);
        Self {
            by_url: RwLock::new(HashMap::new()),
            overflow: Arc::new(Target::new(per_target, backlog, cooldown)),
            per_target,
            backlog,
            cooldown,
        }
    }

    /// The target `url` is.
    pub fn of(&self, url: &Url) -> Arc<Target> {
        if let Some(target) = self.by_url.read().expect("targets lock").get(url.as_str()) {
            return target.clone();
        }
        let mut by_url = self.by_url.write().expect("targets lock");
        if by_url.len() >= MAX_TARGETS && !by_url.contains_key(url.as_str()) {
            return self.overflow.clone();
        }
        by_url
            .entry(url.as_str().to_owned())
            .or_insert_with(|| Arc::new(Target::new(self.per_target, self.backlog, self.cooldown)))
            .clone()
    }

    /// Whether no target but `target` was asked for a turn within
    /// [`ACTIVE_WINDOW`].
    pub fn alone(&self, target: &Target) -> bool {
        let by_url = self.by_url.read().expect("targets lock");
        by_url
            .values()
            .map(Arc::as_ref)
            .chain([self.overflow.as_ref()])
            .filter(|other| !std::ptr::eq(*other, target))
            .all(|other| other.idle_for() >= ACTIVE_WINDOW)
    }
}

impl Target {
    /// How long since a turn was last asked for (forever if never).
    fn idle_for(&self) -> Duration {
        match self.last_asked.load(Ordering::Relaxed) {
            0 => Duration::MAX,
            asked => self
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(asked - 1)),
        }
    }

    fn new(per_target: usize, backlog: usize, cooldown: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(per_target)),
            waiting: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            last_asked: AtomicU64::new(0),
            epoch: Instant::now(),
            down_until: Mutex::new(None),
            backlog,
            cooldown,
        }
    }

    /// A turn to call this target, waiting at most `patience` for one;
    /// beyond the backlog, only when `alone` says no other target wants
    /// the slots.
    pub async fn turn(
        &self,
        patience: Duration,
        alone: impl FnOnce() -> bool,
    ) -> Result<OwnedSemaphorePermit, Unavailable> {
        let asked = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_asked.store(asked, Ordering::Relaxed);
        if self.is_down() {
            return Err(Unavailable::Down);
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.backlog && !alone() {
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

    /// A call timed out or could not connect: the target is down for the
    /// cooldown once that has happened [`FAILURES_TO_DOWN`] times in a row.
    pub fn failed(&self) {
        if self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= FAILURES_TO_DOWN {
            self.failures.store(0, Ordering::Release);
            *self.down_until.lock().expect("target lock") = Some(Instant::now() + self.cooldown);
        }
    }

    /// The instance behind the target just forwarded a request, so it is
    /// up: its cooldown and failures in a row end.
    pub fn heard_from(&self) {
        // Called on every forward: write only when there is something to
        // clear, so the common case stays a read.
        if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.is_down() {
            *self.down_until.lock().expect("target lock") = None;
        }
    }

    /// A call got an answer: the failures in a row start over.
    pub fn answered(&self) {
        self.failures.store(0, Ordering::Release);
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
            slow.turn(Duration::ZERO, || false).await.unwrap(),
            slow.turn(Duration::ZERO, || false).await.unwrap(),
        ];
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let slow = slow.clone();
                tokio::spawn(
                    async move { slow.turn(Duration::from_secs(5), || false).await.is_ok() },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            slow.turn(Duration::from_secs(5), || false).await.err(),
            Some(Unavailable::Busy)
        );
        // Another target is not affected.
        let other = targets.of(&url("http://127.0.0.1:2/dispatch"));
        assert!(other.turn(Duration::ZERO, || false).await.is_ok());
        drop(held);
        for waiter in waiters {
            assert!(waiter.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_target_alone_waits_beyond_its_backlog() {
        let targets = Targets::new(1, 0, Duration::from_secs(5));
        let lone = targets.of(&url("http://127.0.0.1:1/dispatch"));
        let held = lone
            .turn(Duration::ZERO, || targets.alone(&lone))
            .await
            .unwrap();
        let waiter = {
            let lone = lone.clone();
            let alone = targets.alone(&lone);
            tokio::spawn(async move { lone.turn(Duration::from_secs(5), || alone).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.await.unwrap(), "no other target: it waits its turn");

        // Once another target is being called, the share applies again.
        let other = targets.of(&url("http://127.0.0.1:2/dispatch"));
        let _other_turn = other.turn(Duration::ZERO, || false).await.unwrap();
        let _held = lone.turn(Duration::ZERO, || false).await.unwrap();
        assert!(!targets.alone(&lone));
        assert_eq!(
            lone.turn(Duration::from_secs(5), || targets.alone(&lone))
                .await
                .err(),
            Some(Unavailable::Busy)
        );
    }

    #[tokio::test]
    async fn a_target_that_fails_in_a_row_is_not_called_until_its_cooldown_ends() {
        let targets = Targets::new(2, 2, Duration::from_millis(100));
        let target = targets.of(&url("http://127.0.0.1:1/x"));
        target.failed();
        target.failed();
        target.answered();
        target.failed();
        target.failed();
        assert!(
            target.turn(Duration::ZERO, || false).await.is_ok(),
            "not three in a row"
        );
        target.failed();
        assert_eq!(
            target.turn(Duration::ZERO, || false).await.err(),
            Some(Unavailable::Down)
        );
        assert!(Arc::ptr_eq(
            &target,
            &targets.of(&url("http://127.0.0.1:1/x"))
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(target.turn(Duration::ZERO, || false).await.is_ok());
    }

    #[tokio::test]
    async fn a_target_heard_from_is_called_again_before_its_cooldown_ends() {
        let targets = Targets::new(2, 2, Duration::from_secs(60));
        let target = targets.of(&url("http://127.0.0.1:1/x"));
        for _ in 0..FAILURES_TO_DOWN {
            target.failed();
        }
        assert!(target.is_down());
        targets.of(&url("http://127.0.0.1:1/x")).heard_from();
        assert!(!target.is_down());
        assert!(target.turn(Duration::ZERO, || false).await.is_ok());
        target.failed();
        target.failed();
        target.heard_from();
        target.failed();
        assert!(!target.is_down(), "the failures in a row start over");
    }
}
