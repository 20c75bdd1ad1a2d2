//! `local` ACK mode: the relay answers the sender on receipt and a per-worker forwarder task
//! delivers the message afterwards, without durability.
//!
//! This mode exists for benchmarks and for links where the sender cannot wait; it can lose
//! messages (a crash, a receiver that refuses or never answers), and the relay says so at
//! start-up and counts every loss. The durable mode is the safe way to decouple a sender from
//! a slow receiver.
//!
//! The queue is per worker and bounded both in messages and in bytes. Full-queue policy: the
//! sender gets an AE/CE ("relay queue full") instead of an AA, and may resend later; nothing is
//! dropped silently. One forwarder task per worker delivers in queue order, so the order of each
//! connection (which lives on one worker) is kept.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use mllp::hl7::Msh;
use tracing::{error, warn};

use crate::metrics::Stats;
use crate::outbound::{DeliverySlot, Expect, Timing};

/// Messages a worker may hold for forwarding in `local` mode.
pub(crate) const LOCAL_QUEUE_MESSAGES: usize = 10_000;

/// Bytes a worker may hold for forwarding in `local` mode: 64 MiB bounds the memory a slow
/// receiver can make a worker hold while still absorbing bursts of large results.
pub(crate) const LOCAL_QUEUE_BYTES: usize = 64 << 20;

/// A bounded single-consumer queue of messages on one worker thread.
pub(crate) struct LocalQueue {
    stats: Arc<Stats>,
    /// Each message with the downstream its session routed it to.
    messages: RefCell<VecDeque<(usize, Vec<u8>)>>,
    bytes: Cell<usize>,
    consumer: RefCell<Option<Waker>>,
    /// True while the forwarder is delivering a message it took off the queue.
    busy: Cell<bool>,
}

impl LocalQueue {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            stats,
            messages: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            consumer: RefCell::new(None),
            busy: Cell::new(false),
        }
    }

    /// Queues a copy of `message` for `downstream`; false when the queue is full.
    pub(crate) fn try_push(&self, downstream: usize, message: &[u8]) -> bool {
        let mut messages = self.messages.borrow_mut();
        if messages.len() >= LOCAL_QUEUE_MESSAGES
            || self.bytes.get() + message.len() > LOCAL_QUEUE_BYTES
        {
            return false;
        }
        messages.push_back((downstream, message.to_vec()));
        self.bytes.set(self.bytes.get() + message.len());
        Stats::bump(&self.stats.local_queue_depth);
        if let Some(waker) = self.consumer.borrow_mut().take() {
            waker.wake();
        }
        true
    }

    /// Messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.messages.borrow().len()
    }

    /// Nothing queued and nothing being delivered.
    pub(crate) fn is_idle(&self) -> bool {
        self.len() == 0 && !self.busy.get()
    }

    async fn pop(&self) -> (usize, Vec<u8>) {
        poll_fn(|cx| match self.messages.borrow_mut().pop_front() {
            Some((downstream, message)) => {
                self.bytes.set(self.bytes.get() - message.len());
                self.stats
                    .local_queue_depth
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.busy.set(true);
                Poll::Ready((downstream, message))
            }
            None => {
                *self.consumer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The forwarder task of one worker: delivers queued messages one by one, forever.
pub(crate) async fn run(queue: Rc<LocalQueue>, delivery: Rc<DeliverySlot>, stats: Arc<Stats>) {
    let mut ack = Vec::new();
    let mut timing = Timing::default();
    loop {
        let (downstream, message) = queue.pop().await;
        // Sessions queue only messages whose header they have read.
        if let Ok(msh) = Msh::parse_lenient(&message) {
            let expect = Expect::ack_of(&msh);
            ack.clear();
            match delivery
                .get()
                .deliver(
                    downstream,
                    &message,
                    msh.control_id(),
                    expect,
                    &mut ack,
                    &mut timing,
                )
                .await
            {
                Ok(code) => {
                    Stats::bump(&stats.messages_delivered);
                    Stats::add(&stats.bytes_forwarded, message.len());
                    if let Some(code) = code.filter(|c| !c.is_accept()) {
                        Stats::bump(&stats.local_refused_after_ack);
                        warn!(
                            msh10 = %String::from_utf8_lossy(msh.control_id()),
                            %code,
                            "local mode: the receiver refused a message the sender was already told was accepted"
                        );
                    }
                }
                Err(failure) => {
                    Stats::bump(&stats.local_lost);
                    error!(
                        msh10 = %String::from_utf8_lossy(msh.control_id()),
                        error = %failure,
                        "local mode: message LOST (acknowledged to the sender, never delivered)"
                    );
                }
            }
        }
        queue.busy.set(false);
    }
}
