//! The way in: senders' connections, from the accept to the ACK written back.
//!
//! - [`accept`]: the accept loop of one listener on one worker, and admission (allowlist,
//!   connection limit, TLS session).
//! - [`session`]: one connection's read loop, message by message, in order.
//! - [`answer`]: the ACKs the relay writes itself; every one is made there.
//!
//! [`Inbound`] is what the sessions of one worker share; [`Sessions`] is how the worker finds
//! them again at shutdown.

pub(crate) mod accept;
mod answer;
mod session;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use netio::conn::{SharedCanceller, fire};

use crate::audit::Audit;
use crate::config::{Config, Live};
use crate::custody::Custody;
use crate::metrics::Stats;
use crate::outbound::{Delivery, DeliverySlot, SingleLinks};
use answer::ControlIds;

/// What the sessions of one worker share. Lives on the worker's thread (`Rc`), so nothing here
/// needs a lock.
pub(crate) struct Inbound {
    /// The configuration in force, shared by the workers (replaced by a reload).
    live: Arc<Live>,
    /// This worker's copy of it, and which generation that is.
    config: RefCell<Rc<Config>>,
    generation: Cell<u64>,
    pub(crate) stats: Arc<Stats>,
    /// The audit trail (shared by every worker).
    pub(crate) audit: Arc<Audit>,
    /// Where messages go (passthrough, and the custody tasks); rebuilt with the configuration.
    pub(crate) delivery: Rc<DeliverySlot>,
    /// The `single` links' handoffs (fixed for the relay's life), for a rebuilt delivery.
    single: SingleLinks,
    /// What `local` and `durable` listeners keep.
    pub(crate) custody: Custody,
    pub(crate) sessions: Sessions,
    /// MSH-10 of the ACKs this worker writes itself.
    ids: ControlIds,
    /// The next lane key for a connection (`durable` mode keeps each one's order).
    next_lane: Cell<u32>,
}

impl Inbound {
    pub(crate) fn new(
        worker: usize,
        live: Arc<Live>,
        stats: Arc<Stats>,
        audit: Arc<Audit>,
        single: SingleLinks,
        custody: Custody,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        let generation = live.generation();
        let config = live.current();
        let sessions = Sessions::new(config.listeners.len(), shutdown);
        let delivery = Rc::new(DeliverySlot::new(Delivery::new(
            &config,
            stats.clone(),
            single.clone(),
        )));
        Self {
            live,
            config: RefCell::new(Rc::new((*config).clone())),
            generation: Cell::new(generation),
            stats,
            audit,
            delivery,
            single,
            custody,
            sessions,
            ids: ControlIds::new(worker),
            next_lane: Cell::new(0),
        }
    }

    /// The configuration in force: this worker's copy, first renewed (with the delivery built
    /// from it) when a reload replaced it since the last call. One relaxed load when nothing
    /// changed.
    pub(crate) fn config(&self) -> Rc<Config> {
        let now = self.live.generation();
        if now != self.generation.get() {
            let config = self.live.current();
            self.delivery.replace(Delivery::new(
                &config,
                self.stats.clone(),
                self.single.clone(),
            ));
            *self.config.borrow_mut() = Rc::new((*config).clone());
            self.generation.set(now);
        }
        Rc::clone(&self.config.borrow())
    }

    /// A lane key for a new connection.
    fn next_lane(&self) -> u32 {
        let lane = self.next_lane.get();
        self.next_lane.set(lane.wrapping_add(1));
        lane
    }
}

/// The sessions of one worker, for shutdown: how many are open per listener, and the signals
/// that cancel the reads of those idle between messages.
pub(crate) struct Sessions {
    shutdown: Arc<AtomicBool>,
    idle: RefCell<HashMap<u64, SharedCanceller>>,
    next_idle: Cell<u64>,
    /// Open sessions per listener (indexed like `Config::listeners`).
    active: Box<[Cell<usize>]>,
}

impl Sessions {
    fn new(listeners: usize, shutdown: Arc<AtomicBool>) -> Self {
        Self {
            shutdown,
            idle: RefCell::new(HashMap::new()),
            next_idle: Cell::new(0),
            active: (0..listeners).map(|_| Cell::new(0)).collect(),
        }
    }

    /// Whether the relay is shutting down (the flag the handle sets).
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Open sessions, all listeners together.
    pub(crate) fn open(&self) -> usize {
        self.active.iter().map(Cell::get).sum()
    }

    /// Cancels the reads of every session idle between messages (they then close).
    pub(crate) fn cancel_idle(&self) {
        let idle: Vec<SharedCanceller> = self.idle.borrow_mut().drain().map(|(_, c)| c).collect();
        for canceller in &idle {
            fire(canceller);
        }
    }

    /// Registers an idle session's read so shutdown can cancel it.
    fn register_idle(&self, canceller: &SharedCanceller) -> u64 {
        let id = self.next_idle.get();
        self.next_idle.set(id + 1);
        self.idle.borrow_mut().insert(id, canceller.clone());
        id
    }

    fn unregister_idle(&self, id: u64) {
        self.idle.borrow_mut().remove(&id);
    }
}
