//! Custody: what the relay keeps of a message between the sender's ACK and the receiver's,
//! in the ACK modes that answer the sender before the receiver has answered.
//!
//! - `local`: `local` mode's per-worker queue in memory (no durability, losses counted).
//! - `journal`: `durable` mode's per-worker append-only journal (group commit, recovery).
//! - `durable`: `durable` mode's delivery lanes from the journal, and its dead letters.
//! - `recovery`: the journal at start-up (lock, adoption, recovery, duplicate windows).
//! - `duplicates`: the window that answers a resent message instead of queueing it twice.
//! - [`dead_letters`]: listing and replaying dead letters (`mllp-relay dead-letters`).
//!
//! Passthrough mode keeps nothing: it needs no custody at all.

pub mod dead_letters;
pub(crate) mod duplicates;
pub(crate) mod durable;
pub(crate) mod journal;
pub(crate) mod local;
pub(crate) mod recovery;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Stats;
use crate::outbound::DeliverySlot;
use duplicates::DuplicateWindows;
use durable::Forwarder;
use local::LocalQueue;

/// One worker's custody: the queues its listeners' ACK modes need, none for passthrough.
#[derive(Default)]
pub(crate) struct Custody {
    /// `local` mode: messages acknowledged and waiting for the forwarder.
    pub(crate) local: Option<Rc<LocalQueue>>,
    /// `durable` mode: this worker's journal and its delivery lanes.
    pub(crate) durable: Option<Rc<Forwarder>>,
    /// `durable` listeners' duplicate windows (shared by every worker).
    pub(crate) duplicates: DuplicateWindows,
}

/// The durable journal's commit task, awaited at shutdown.
pub(crate) struct Committer(monoio::task::JoinHandle<()>);

impl Custody {
    /// Starts the tasks that take messages out of custody to their downstream on this
    /// worker's runtime: the local forwarder, the durable lanes and the journal's committer.
    pub(crate) fn start(
        &self,
        delivery: &Rc<DeliverySlot>,
        stats: &Arc<Stats>,
    ) -> Option<Committer> {
        if let Some(queue) = &self.local {
            monoio::spawn(local::run(queue.clone(), delivery.clone(), stats.clone()));
        }
        self.durable.as_ref().map(|forwarder| {
            forwarder.spawn_lanes(delivery, stats);
            let journal = forwarder.journal.clone();
            let forwarder = forwarder.clone();
            let dispatch: Rc<dyn Fn(journal::Entry)> =
                Rc::new(move |entry| forwarder.dispatch(entry));
            Committer(monoio::spawn(journal.run_committer(dispatch)))
        })
    }

    /// Whether nothing taken into custody in memory is still waiting or being delivered (the
    /// journal keeps what it holds across a restart, so it never holds shutdown up).
    pub(crate) fn is_idle(&self) -> bool {
        self.local.as_ref().is_none_or(|q| q.is_idle())
    }

    /// Messages waiting in memory (`local` mode).
    pub(crate) fn queued(&self) -> usize {
        self.local.as_ref().map_or(0, |q| q.len())
    }

    /// At shutdown, once no session is left: lets the durable lanes finish the delivery each
    /// is in (up to `grace`), writes the last delivered records and syncs. What is still
    /// queued stays in the journal for the next start.
    pub(crate) async fn stop(&self, committer: Option<Committer>, grace: Duration) {
        let (Some(forwarder), Some(Committer(committer))) = (&self.durable, committer) else {
            return;
        };
        forwarder.stop();
        let deadline = Instant::now() + grace;
        while !forwarder.is_idle() && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        forwarder.journal.stop();
        committer.await;
        forwarder.journal.sync().await;
    }
}
