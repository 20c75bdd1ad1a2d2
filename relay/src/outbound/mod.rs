//! The way out: how one worker delivers a message to a downstream and gets its ACK back.
//!
//! [`Delivery`] is the one entry point. A `per-core` downstream is reached through this
//! worker's own connection pool ([`pool`]); a `single` downstream through the cross-core
//! [`handoff`] to the one link task (on worker 0) that owns its only connection. Either way
//! the caller gets the downstream's verdict or the last failure after the retries.

mod handoff;
mod pool;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use mllp::ack::{AckCode, expects_accept_ack};
use mllp::hl7::Msh;

use crate::config::{Config, LinkPolicy};
use crate::metrics::{DownstreamFailureKind, Stats};
use handoff::{Handoff, ReplySlot, Request};
pub(crate) use pool::{Downstream, Failure, Timing};

/// What a delivery waits for after writing a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Nothing: the message's MSH-15 asks for no accept ACK.
    Nothing,
    /// The ACK whose MSA-2 is the message's control ID (anything else is a failed attempt).
    Ack,
    /// One frame, whatever it holds: the receiver's answer to a forwarded batch, which names
    /// no single control ID and goes back to the sender byte for byte.
    AnyFrame,
}

impl Expect {
    /// What a message with this header is answered with: an ACK unless MSH-15 says none.
    pub(crate) fn ack_of(msh: &Msh<'_>) -> Self {
        if expects_accept_ack(msh) {
            Self::Ack
        } else {
            Self::Nothing
        }
    }
}

/// The handoffs of the `single` downstreams, shared by every worker (`None` for a `per-core`
/// one), indexed like `Config::downstreams`. Made once per relay.
#[derive(Clone)]
pub(crate) struct SingleLinks(Arc<Vec<Option<Arc<Handoff>>>>);

impl SingleLinks {
    pub(crate) fn new(config: &Config, stats: &Arc<Stats>) -> Self {
        Self(Arc::new(
            config
                .downstreams
                .iter()
                .map(|d| {
                    (d.link == LinkPolicy::Single).then(|| Arc::new(Handoff::new(stats.clone())))
                })
                .collect(),
        ))
    }

    /// Whether any downstream is a `single` link.
    pub(crate) fn any(&self) -> bool {
        self.0.iter().any(Option::is_some)
    }
}

/// The `Delivery` a worker uses now: replaced when a reload changes the downstreams. Whoever
/// delivers takes it per message, so a message in flight finishes on the one it started with
/// (its connections close when the last holder lets go) and the next one uses the new.
pub(crate) struct DeliverySlot(RefCell<Rc<Delivery>>);

impl DeliverySlot {
    pub(crate) fn new(delivery: Delivery) -> Self {
        Self(RefCell::new(Rc::new(delivery)))
    }

    /// The delivery in force.
    pub(crate) fn get(&self) -> Rc<Delivery> {
        Rc::clone(&self.0.borrow())
    }

    /// Puts `delivery` in force for the next message. The idle connections of a plain
    /// downstream whose address and framing did not change move over to it, so a reload does
    /// not make every sender's next message wait for a new connection (a TLS downstream's
    /// connections are not kept: its new trust settings apply from the next connection).
    pub(crate) fn replace(&self, delivery: Delivery) {
        let old = self.get();
        for (fresh, before) in delivery.downstreams.iter().zip(&old.downstreams) {
            fresh.adopt_idle(before);
        }
        *self.0.borrow_mut() = Rc::new(delivery);
    }
}

/// One worker's way to every downstream.
pub(crate) struct Delivery {
    stats: Arc<Stats>,
    /// This worker's pools, indexed like `Config::downstreams`.
    downstreams: Vec<Downstream>,
    single: SingleLinks,
}

impl Delivery {
    pub(crate) fn new(config: &Config, stats: Arc<Stats>, single: SingleLinks) -> Self {
        Self {
            stats,
            downstreams: config
                .downstreams
                .iter()
                .cloned()
                .enumerate()
                .map(|(index, d)| Downstream::new(index, d))
                .collect(),
            single,
        }
    }

    /// Downstream `index` as this worker sees it (its name, its backoff).
    pub(crate) fn downstream(&self, index: usize) -> &Downstream {
        &self.downstreams[index]
    }

    /// Delivers one message to downstream `index` and waits for what `expect` says: the ACK
    /// whose MSA-2 is `control_id` (appended to `ack`, its code returned), any one frame
    /// (appended, no code), or nothing. `timing` tells when
    /// the last attempt wrote the message and read its ACK.
    ///
    /// # Errors
    /// The last attempt's failure when every attempt failed, or a full handoff queue.
    pub(crate) async fn deliver(
        &self,
        index: usize,
        payload: &[u8],
        control_id: &[u8],
        expect: Expect,
        ack: &mut Vec<u8>,
        timing: &mut Timing,
    ) -> Result<Option<AckCode>, Failure> {
        let downstream = &self.downstreams[index];
        let Some(handoff) = self.single.0.get(index).and_then(Option::as_ref) else {
            return downstream
                .deliver(payload, control_id, expect, ack, &self.stats, timing)
                .await;
        };
        let reply = Arc::new(ReplySlot::default());
        let request = Request {
            payload: payload.to_vec(),
            control_id: control_id.to_vec(),
            expect,
            reply: Arc::clone(&reply),
        };
        if handoff.submit(request).is_err() {
            self.stats
                .downstream_failure(DownstreamFailureKind::HandoffFull);
            return Err(Failure::HandoffFull {
                addr: downstream.config().addr,
            });
        }
        let (code, bytes, took) = reply.wait().await?;
        ack.extend_from_slice(&bytes);
        *timing = took;
        Ok(code)
    }

    /// Starts the link task of every `single` downstream on this worker's runtime (worker 0
    /// runs them all).
    pub(crate) fn spawn_single_links(self: &Rc<Self>) {
        for (index, handoff) in self.single.0.iter().enumerate() {
            if let Some(handoff) = handoff {
                monoio::spawn(link_task(self.clone(), index, Arc::clone(handoff)));
            }
        }
    }
}

/// Owns the only connection of a `single` downstream: delivers handed-over messages one at a
/// time, in arrival order, and hands each outcome back.
async fn link_task(delivery: Rc<Delivery>, index: usize, handoff: Arc<Handoff>) {
    let mut ack = Vec::new();
    loop {
        let request = handoff.next().await;
        ack.clear();
        let mut timing = Timing::default();
        let outcome = delivery.downstreams[index]
            .deliver(
                &request.payload,
                &request.control_id,
                request.expect,
                &mut ack,
                &delivery.stats,
                &mut timing,
            )
            .await
            .map(|code| (code, std::mem::take(&mut ack), timing));
        request.reply.complete(outcome);
    }
}
