//! The `single` link policy's cross-core handoff: every worker hands messages for such a
//! downstream to one link task on worker 0, which owns the only connection and delivers them
//! one at a time, in the order they arrived; the answer travels back the same way.
//!
//! This is the only place where workers share mutable state. The queue is a bounded lock-free
//! `crossbeam` queue; a task waiting on the other side is woken with its (thread-safe) monoio
//! waker. Full-queue policy: the message is not queued and the sender gets an AE/CE naming the
//! full queue, so a stalled receiver makes senders back off instead of growing memory.

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};

use crossbeam_queue::ArrayQueue;
use mllp::ack::AckCode;

use super::pool::{Failure, Timing};
use crate::metrics::Stats;

/// Messages waiting for a `single` link: enough to absorb a burst from every connection of
/// every worker, small enough that a stalled receiver is noticed quickly (each waits its turn).
pub(crate) const HANDOFF_CAPACITY: usize = 4096;

/// What a delivery produced: the ACK code and payload (or nothing when no ACK was due).
pub(crate) type Outcome = Result<(Option<AckCode>, Vec<u8>, Timing), Failure>;

/// One message on its way to the link task.
pub(crate) struct Request {
    pub(crate) payload: Vec<u8>,
    pub(crate) control_id: Vec<u8>,
    pub(crate) expect: super::Expect,
    pub(crate) reply: Arc<ReplySlot>,
}

/// Where the link task puts the outcome and the waiting session finds it.
#[derive(Default)]
pub(crate) struct ReplySlot {
    outcome: Mutex<Option<Outcome>>,
    waiter: Mutex<Option<Waker>>,
}

impl ReplySlot {
    /// Stores the outcome and wakes the session waiting for it.
    pub(crate) fn complete(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        if let Some(waker) = self
            .waiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            waker.wake();
        }
    }

    /// Waits for the outcome.
    pub(crate) async fn wait(&self) -> Outcome {
        poll_fn(|cx| {
            let mut outcome = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(outcome) = outcome.take() {
                return Poll::Ready(outcome);
            }
            // Registered while holding the outcome lock: `complete` cannot slip in between.
            *self.waiter.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// The queue of one `single` downstream, shared by every worker.
pub(crate) struct Handoff {
    queue: ArrayQueue<Request>,
    link_task: Mutex<Option<Waker>>,
    stats: Arc<Stats>,
}

impl Handoff {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            queue: ArrayQueue::new(HANDOFF_CAPACITY),
            link_task: Mutex::new(None),
            stats,
        }
    }

    /// Queues `request` for the link task; gives it back when the queue is full.
    pub(crate) fn submit(&self, request: Request) -> Result<(), Request> {
        self.queue.push(request)?;
        self.stats
            .handoff_queue_depth
            .fetch_add(1, Ordering::Relaxed);
        if let Some(waker) = self
            .link_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            waker.wake();
        }
        Ok(())
    }

    /// The link task's next request.
    pub(crate) async fn next(&self) -> Request {
        poll_fn(|cx| {
            let mut slot = self
                .link_task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(request) = self.queue.pop() {
                self.stats
                    .handoff_queue_depth
                    .fetch_sub(1, Ordering::Relaxed);
                return Poll::Ready(request);
            }
            // Registered under the lock `submit` takes after pushing: no wake-up is lost.
            *slot = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
