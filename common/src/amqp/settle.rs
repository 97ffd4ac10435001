//! Settling one channel's deliveries with as few frames as the broker
//! allows: acks that complete in delivery order go out as one `multiple`
//! ack per burst, instead of one ack frame (and one round of broker work)
//! each.
//!
//! Handlers run concurrently, so deliveries finish out of order. A delivery
//! that finishes while an earlier one is still running is settled on its
//! own at once: holding it back for a batch would keep its prefetch slot
//! taken by a finished delivery, and one slow handler would stall the whole
//! window. Requeues and dead-letters are always sent on their own, before
//! any batch that could cover them (a `multiple` ack acknowledges every
//! unsettled delivery up to its tag, so it must never reach one that is to
//! be rejected).
//!
//! [`Plan`] decides which frames to send; [`Settler`] sends them from one
//! task per channel.

use std::collections::BTreeSet;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The frame a handled delivery asks for: the consumer runtime's `Settle`
/// without the consumer's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    Requeue,
    DeadLetter,
}

/// A frame to send for the channel's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `basic.ack` of this delivery alone.
    Ack(u64),
    /// `basic.ack` with `multiple`: every unsettled delivery up to this
    /// tag, this one included.
    AckUpTo(u64),
    /// `basic.nack` with `requeue`.
    Requeue(u64),
    /// `basic.reject` without `requeue`.
    DeadLetter(u64),
}

/// The bookkeeping behind the frames: which deliveries, in tag order, are
/// settled, and the in-order acks not sent yet.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The lowest tag not settled yet. A channel's tags start at 1.
    next: u64,
    /// Tags above `next` already settled (sent on their own).
    settled_early: BTreeSet<u64>,
    /// The highest in-order ack not sent yet: the tag of the next
    /// [`Frame::AckUpTo`].
    batched: Option<u64>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            next: 1,
            settled_early: BTreeSet::new(),
            batched: None,
        }
    }
}

impl Plan {
    /// Delivery `tag` is handled with `outcome`: adds the frames to send
    /// now, and says whether the delivery joined the batch instead (an
    /// in-order ack, sent by the next [`flush`](Self::flush)).
    pub(crate) fn settle(&mut self, tag: u64, outcome: Outcome, frames: &mut Vec<Frame>) -> bool {
        let batched = outcome == Outcome::Ack && tag == self.next;
        if batched {
            self.batched = Some(tag);
        } else {
            if outcome != Outcome::Ack {
                // Before the rejection, so a batch never reaches past a
                // delivery it must not acknowledge (it cannot: the batch
                // is below `next`; this keeps the frames in tag order).
                self.flush(frames);
            }
            frames.push(match outcome {
                Outcome::Ack => Frame::Ack(tag),
                Outcome::Requeue => Frame::Requeue(tag),
                Outcome::DeadLetter => Frame::DeadLetter(tag),
            });
            if tag != self.next {
                self.settled_early.insert(tag);
                return false;
            }
        }
        self.next = tag + 1;
        while self.settled_early.remove(&self.next) {
            self.next += 1;
        }
        batched
    }

    /// Sends the batched in-order acks, if any.
    pub(crate) fn flush(&mut self, frames: &mut Vec<Frame>) {
        if let Some(tag) = self.batched.take() {
            frames.push(Frame::AckUpTo(tag));
        }
    }
}

/// A handled delivery, for the settler.
struct Handled {
    tag: u64,
    outcome: Outcome,
    /// Told whether the broker took the frame (its ack, or the batch's).
    done: tokio::sync::oneshot::Sender<bool>,
}

/// Settles one channel's deliveries from one task; see the module
/// documentation. Once every clone is dropped, the task sends what is left
/// and ends.
#[derive(Clone)]
pub struct Settler {
    handled: mpsc::UnboundedSender<Handled>,
}

impl Settler {
    /// Starts the task for `channel`.
    pub fn start(channel: Channel) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(channel, receiver));
        (Self { handled: sender }, task)
    }

    /// Settles delivery `tag`; resolves once its frame was sent, with
    /// whether the channel took it.
    pub async fn settle(&self, tag: u64, outcome: Outcome) -> bool {
        let (done, sent) = tokio::sync::oneshot::channel();
        let handled = Handled { tag, outcome, done };
        if self.handled.send(handled).is_err() {
            return false;
        }
        sent.await.unwrap_or(false)
    }
}

/// Takes handled deliveries as they come; sends the batch after each burst
/// (nothing more waiting), and with any frame sent on its own, so a steady
/// stream of completions never holds the batch back.
async fn run(channel: Channel, mut handled: mpsc::UnboundedReceiver<Handled>) {
    let mut plan = Plan::default();
    let mut frames = Vec::new();
    // Who waits for the batch: told when its `AckUpTo` is sent.
    let mut batch_waiters = Vec::new();
    while let Some(first) = handled.recv().await {
        let mut next = Some(first);
        while let Some(Handled { tag, outcome, done }) = next {
            if plan.settle(tag, outcome, &mut frames) {
                batch_waiters.push(done);
            } else {
                plan.flush(&mut frames);
                let sent = send_all(&channel, &mut frames, &mut batch_waiters).await;
                let _ = done.send(sent);
            }
            next = handled.try_recv().ok();
        }
        plan.flush(&mut frames);
        send_all(&channel, &mut frames, &mut batch_waiters).await;
    }
}

/// Sends `frames`, all at once and in order (lapin queues each frame when
/// its future is first polled, and `join_all` polls them in order), so
/// one write of the connection carries them; an `AckUpTo` tells the
/// batch's waiters whether the channel took it. Returns whether the frames
/// sent on their own (not batches) were taken.
async fn send_all(
    channel: &Channel,
    frames: &mut Vec<Frame>,
    batch_waiters: &mut Vec<tokio::sync::oneshot::Sender<bool>>,
) -> bool {
    let sends = frames.iter().map(|&frame| async move {
        let sent = match frame {
            Frame::Ack(tag) => channel.basic_ack(tag, BasicAckOptions::default()).await,
            Frame::AckUpTo(tag) => {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }
            Frame::Requeue(tag) => {
                channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        },
                    )
                    .await
            }
            Frame::DeadLetter(tag) => {
                channel
                    .basic_reject(tag, BasicRejectOptions { requeue: false })
                    .await
            }
        };
        (frame, sent)
    });
    let mut taken = true;
    for (frame, sent) in futures_util::future::join_all(sends).await {
        if let Err(error) = &sent {
            tracing::warn!(%error, "could not settle deliveries; the broker will redeliver them");
        }
        if matches!(frame, Frame::AckUpTo(_)) {
            for waiter in batch_waiters.drain(..) {
                let _ = waiter.send(sent.is_ok());
            }
        } else {
            taken &= sent.is_ok();
        }
    }
    frames.clear();
    taken
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn settle_all(steps: &[(u64, Outcome)]) -> Vec<Frame> {
        let mut plan = Plan::default();
        let mut frames = Vec::new();
        for &(tag, outcome) in steps {
            plan.settle(tag, outcome, &mut frames);
        }
        plan.flush(&mut frames);
        frames
    }

    #[test]
    fn acks_in_delivery_order_go_out_as_one() {
        let steps: Vec<_> = (1..=5).map(|tag| (tag, Outcome::Ack)).collect();
        assert_eq!(settle_all(&steps), [Frame::AckUpTo(5)]);
    }

    #[test]
    fn an_ack_ahead_of_an_unfinished_delivery_goes_out_at_once() {
        let mut plan = Plan::default();
        let mut frames = Vec::new();
        plan.settle(2, Outcome::Ack, &mut frames);
        assert_eq!(frames, [Frame::Ack(2)], "its prefetch slot is freed now");
        plan.settle(1, Outcome::Ack, &mut frames);
        plan.settle(3, Outcome::Ack, &mut frames);
        plan.flush(&mut frames);
        assert_eq!(frames, [Frame::Ack(2), Frame::AckUpTo(3)]);
    }

    #[test]
    fn a_rejection_is_sent_on_its_own_after_the_batch_before_it() {
        let frames = settle_all(&[
            (1, Outcome::Ack),
            (2, Outcome::DeadLetter),
            (3, Outcome::Ack),
            (4, Outcome::Requeue),
        ]);
        assert_eq!(
            frames,
            [
                Frame::AckUpTo(1),
                Frame::DeadLetter(2),
                Frame::AckUpTo(3),
                Frame::Requeue(4)
            ]
        );
    }

    /// The broker's side: which deliveries are unsettled, and what each
    /// became. A frame naming a delivery that is not unsettled is the
    /// channel error RabbitMQ raises (`unknown delivery tag`).
    fn broker_applies(count: u64, frames: &[Frame]) -> Result<BTreeMap<u64, Outcome>, String> {
        let mut unsettled: BTreeSet<u64> = (1..=count).collect();
        let mut fate = BTreeMap::new();
        for frame in frames {
            let (tag, outcome, multiple) = match *frame {
                Frame::Ack(tag) => (tag, Outcome::Ack, false),
                Frame::AckUpTo(tag) => (tag, Outcome::Ack, true),
                Frame::Requeue(tag) => (tag, Outcome::Requeue, false),
                Frame::DeadLetter(tag) => (tag, Outcome::DeadLetter, false),
            };
            if !unsettled.remove(&tag) {
                return Err(format!("unknown delivery tag {tag} in {frames:?}"));
            }
            fate.insert(tag, outcome);
            if multiple {
                let below: Vec<u64> = unsettled.range(..tag).copied().collect();
                for earlier in below {
                    unsettled.remove(&earlier);
                    fate.insert(earlier, outcome);
                }
            }
        }
        Ok(fate)
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            6 => Just(Outcome::Ack),
            1 => Just(Outcome::Requeue),
            1 => Just(Outcome::DeadLetter),
        ]
    }

    /// Outcomes for deliveries 1..=n, the order their handlers finish
    /// in, and after which of them the settler finds nothing more waiting
    /// (a burst ends).
    fn case() -> impl Strategy<Value = (Vec<Outcome>, Vec<u64>, Vec<bool>)> {
        proptest::collection::vec(outcome(), 1..40).prop_flat_map(|outcomes| {
            let count = outcomes.len();
            let order = Just((1..=count as u64).collect::<Vec<u64>>()).prop_shuffle();
            let bursts = proptest::collection::vec(any::<bool>(), count);
            (Just(outcomes), order, bursts)
        })
    }

    proptest! {
        /// Whatever order handlers finish in, each delivery ends as its
        /// handler said, and no frame names a settled delivery.
        #[test]
        fn every_delivery_gets_its_own_outcome_in_any_finishing_order(
            (outcomes, order, bursts) in case()
        ) {
            let mut plan = Plan::default();
            let mut frames = Vec::new();
            for (&tag, &burst_ends) in order.iter().zip(&bursts) {
                plan.settle(tag, outcomes[tag as usize - 1], &mut frames);
                if burst_ends {
                    plan.flush(&mut frames);
                }
            }
            plan.flush(&mut frames);
            let fate = broker_applies(outcomes.len() as u64, &frames).map_err(TestCaseError::fail)?;
            for (index, outcome) in outcomes.iter().enumerate() {
                prop_assert_eq!(fate.get(&(index as u64 + 1)), Some(outcome));
            }
        }
    }
}
