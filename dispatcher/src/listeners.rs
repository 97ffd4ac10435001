//! Whether anyone listens on each routed queue, so that a request nobody
//! will answer is refused at once (`503 no_listener`) instead of waiting
//! out its whole timeout.
//!
//! The broker knows each queue's consumer count; asking it per request
//! would add a round trip to every request, so a task asks for every
//! routed queue once per [`POLL_EVERY`] (a passive declare) and requests
//! read the cached answer. A queue counts as unattended only after it has
//! had no consumer for the grace (`NO_LISTENER_GRACE_MS`): a listener that
//! restarts, or a deployment that scales listeners up from zero within
//! the grace, is not an outage. Until the first answer, and whenever the
//! broker cannot be asked, every queue counts as attended: the watch
//! never refuses on a guess.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::time::Instant;

/// How often the consumer counts are asked for.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// The routed queues' last known attendance.
pub struct ListenerWatch {
    queues: HashMap<String, Mutex<Attendance>>,
    grace: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Attendance {
    /// Not asked yet, or the broker could not be asked.
    Unknown,
    /// Consumers at the last poll.
    Attended,
    /// No consumer since this instant.
    Unattended(Instant),
}

/// A queue that has had no consumer for longer than the grace.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "nobody has consumed queue {queue:?} for {seconds} s: no listener is running for this event type"
)]
pub struct NoListener {
    pub queue: String,
    pub seconds: u64,
}

impl ListenerWatch {
    pub fn new<'a>(queues: impl IntoIterator<Item = &'a str>, grace: Duration) -> Self {
        Self {
            queues: queues
                .into_iter()
                .map(|queue| (queue.to_owned(), Mutex::new(Attendance::Unknown)))
                .collect(),
            grace,
        }
    }

    /// `Ok` unless `queue` has had no consumer for longer than the grace.
    pub fn check(&self, queue: &str) -> Result<(), NoListener> {
        self.check_at(queue, Instant::now())
    }

    fn check_at(&self, queue: &str, now: Instant) -> Result<(), NoListener> {
        let Some(attendance) = self.queues.get(queue) else {
            return Ok(());
        };
        match *attendance.lock().expect("attendance lock") {
            Attendance::Unattended(since) if now - since > self.grace => Err(NoListener {
                queue: queue.to_owned(),
                seconds: (now - since).as_secs(),
            }),
            _ => Ok(()),
        }
    }

    /// Records `consumers` for `queue`, or `None` when it could not be
    /// asked.
    fn record(&self, queue: &str, consumers: Option<u32>) {
        self.record_at(queue, consumers, Instant::now());
    }

    fn record_at(&self, queue: &str, consumers: Option<u32>, now: Instant) {
        let Some(attendance) = self.queues.get(queue) else {
            return;
        };
        let mut attendance = attendance.lock().expect("attendance lock");
        *attendance = match (consumers, *attendance) {
            (None, _) => Attendance::Unknown,
            (Some(0), Attendance::Unattended(since)) => Attendance::Unattended(since),
            (Some(0), _) => Attendance::Unattended(now),
            (Some(_), _) => Attendance::Attended,
        };
    }

    /// Asks the broker for every queue's consumers, every [`POLL_EVERY`],
    /// over `channel`, until the channel fails; then every queue is
    /// unknown again.
    pub async fn poll(&self, channel: Channel) {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        loop {
            for queue in self.queues.keys() {
                let declared = channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await;
                match declared {
                    Ok(state) => self.record(queue, Some(state.consumer_count())),
                    Err(error) => {
                        // Fails open: until the next session, no request is
                        // refused for want of a listener.
                        tracing::warn!(%error, queue, "cannot ask the broker for consumer counts until the next session");
                        self.forget();
                        return;
                    }
                }
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Every queue unknown: the session that could ask has ended.
    pub fn forget(&self) {
        for queue in self.queues.keys() {
            self.record(queue, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_unattended_only_after_the_grace() {
        let watch = ListenerWatch::new(["orders", "pings"], Duration::from_secs(5));
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(
            watch.check_at("orders", at(0)),
            Ok(()),
            "unknown counts as attended"
        );
        watch.record_at("orders", Some(0), at(0));
        watch.record_at("pings", Some(2), at(0));
        watch.record_at("orders", Some(0), at(4));
        assert_eq!(watch.check_at("orders", at(4)), Ok(()), "within the grace");
        let refused = watch.check_at("orders", at(6)).unwrap_err();
        assert_eq!(refused.queue, "orders");
        assert_eq!(refused.seconds, 6);
        assert_eq!(watch.check_at("pings", at(6)), Ok(()));
        assert_eq!(watch.check_at("not-routed", at(6)), Ok(()));

        watch.record_at("orders", Some(1), at(7));
        assert_eq!(
            watch.check_at("orders", at(7)),
            Ok(()),
            "a listener came back"
        );
        watch.record_at("orders", Some(0), at(8));
        watch.forget();
        assert_eq!(watch.check_at("orders", at(60)), Ok(()), "unknown again");
    }
}
