//! `durable` ACK mode's delivery side: the forwarder that takes journaled messages to their
//! downstream, for as long as it takes, and the dead letters for those the receiver refuses.
//!
//! Order: every sender connection's messages go to one *lane* (its lane key modulo the lane
//! count), and a lane delivers one message at a time, the next only once the previous one has
//! left the queue. So each connection's order is kept, while different connections are
//! delivered in parallel, as in passthrough mode. A `single` downstream has one lane per worker,
//! so each worker's journal order is kept on the one link. After a restart, recovered messages
//! go to the same lanes in journal order, ahead of new ones.
//!
//! A message leaves the queue when the receiver answers:
//! - AA/CA (or nothing, when MSH-15/16 asked for no accept ACK): delivered.
//! - AE/AR/CE/CR: a final answer. The message and the answer go to the dead-letter file
//!   (synced) before the message leaves the queue; `mllp-relay dead-letters` lists and replays
//!   them.
//! - No answer (down, timeout, wrong MSA-2, ...): the downstream's own retries run, then the
//!   lane pauses (backoff with jitter, up to the downstream's cap) and tries again, forever.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::future::poll_fn;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use mllp::hl7::Msh;
use tracing::{error, info, warn};

use super::journal::record;
use super::journal::{Entry, Journal};
use crate::config::LinkPolicy;
use crate::metrics::Stats;
use crate::outbound::{DeliverySlot, Expect, Timing};

/// The sub-directory of the journal holding dead letters.
pub(crate) const DEAD_LETTER_DIR: &str = "dead-letters";

/// How long a lane waits before retrying a read of a message from its segment.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// One lane: a queue delivered in order.
#[derive(Debug, Default)]
struct Lane {
    queue: RefCell<VecDeque<Entry>>,
    waiter: RefCell<Option<Waker>>,
    busy: Cell<bool>,
}

/// A worker's durable forwarder.
#[derive(Debug)]
pub(crate) struct Forwarder {
    pub(crate) journal: Rc<Journal>,
    /// Per downstream (as `config.downstreams`), its lanes.
    lanes: Vec<Vec<Rc<Lane>>>,
    /// Messages with no route under the current configuration (found at recovery).
    unrouted: Rc<Lane>,
    dead_letter_path: PathBuf,
    dead_letters: RefCell<Option<File>>,
    stopping: Cell<bool>,
}

impl Forwarder {
    /// A forwarder for `journal` with `lanes` lanes per `per-core` downstream; `recovered`
    /// messages are queued first, in journal order.
    pub(crate) fn new(
        journal: Rc<Journal>,
        links: &[LinkPolicy],
        lanes: usize,
        root: &std::path::Path,
        worker: usize,
        recovered: Vec<Entry>,
    ) -> Self {
        let forwarder = Self {
            journal,
            lanes: links
                .iter()
                .map(|link| {
                    let n = if *link == LinkPolicy::Single {
                        1
                    } else {
                        lanes.max(1)
                    };
                    (0..n).map(|_| Rc::new(Lane::default())).collect()
                })
                .collect(),
            unrouted: Rc::new(Lane::default()),
            dead_letter_path: root
                .join(DEAD_LETTER_DIR)
                .join(format!("worker-{worker}.log")),
            dead_letters: RefCell::new(None),
            stopping: Cell::new(false),
        };
        for entry in recovered {
            forwarder.dispatch(entry);
        }
        forwarder
    }

    /// Queues a committed message on its lane.
    pub(crate) fn dispatch(&self, entry: Entry) {
        let lane = match entry.downstream.and_then(|d| self.lanes.get(d)) {
            Some(lanes) => &lanes[entry.lane as usize % lanes.len()],
            None => &self.unrouted,
        };
        lane.queue.borrow_mut().push_back(entry);
        if let Some(waker) = lane.waiter.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Starts one task per lane.
    pub(crate) fn spawn_lanes(self: &Rc<Self>, delivery: &Rc<DeliverySlot>, stats: &Arc<Stats>) {
        let lanes = self
            .lanes
            .iter()
            .enumerate()
            .flat_map(|(downstream, lanes)| lanes.iter().map(move |lane| (lane, Some(downstream))));
        for (lane, downstream) in lanes.chain([(&self.unrouted, None)]) {
            let out = Out {
                forwarder: self.clone(),
                delivery: delivery.clone(),
                stats: stats.clone(),
            };
            monoio::spawn(run_lane(out, lane.clone(), downstream));
        }
    }

    /// Asks the lanes to stop after the message each is delivering (shutdown); undelivered
    /// messages stay in the journal for the next start.
    pub(crate) fn stop(&self) {
        self.stopping.set(true);
        for lane in self.lanes.iter().flatten().chain([&self.unrouted]) {
            if let Some(waker) = lane.waiter.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Whether no lane is in the middle of a delivery.
    pub(crate) fn is_idle(&self) -> bool {
        self.lanes
            .iter()
            .flatten()
            .chain([&self.unrouted])
            .all(|lane| !lane.busy.get())
    }

    async fn next(&self, lane: &Lane) -> Option<Entry> {
        poll_fn(|cx| {
            if self.stopping.get() {
                return Poll::Ready(None);
            }
            if let Some(entry) = lane.queue.borrow_mut().pop_front() {
                return Poll::Ready(Some(entry));
            }
            *lane.waiter.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Appends a refused message and its answer to this worker's dead-letter file and syncs it.
    fn write_dead_letter(
        &self,
        entry: &Entry,
        message: &[u8],
        answer: &[u8],
    ) -> std::io::Result<()> {
        let mut slot = self.dead_letters.borrow_mut();
        if slot.is_none() {
            let dir = self
                .dead_letter_path
                .parent()
                .expect("the dead-letter file is in a directory");
            std::fs::create_dir_all(dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.dead_letter_path)?;
            File::open(dir)?.sync_all()?;
            *slot = Some(file);
        }
        let file = slot.as_mut().expect("opened above");
        let mut bytes = Vec::new();
        record::encode_dead_letter(entry.seq, entry.time_ms, message, answer, &mut bytes);
        let result = file.write_all(&bytes).and_then(|()| file.sync_data());
        if result.is_err() {
            // A half-written record must not stay before the next one: reopen next time (the
            // reader stops at the damage, and says so).
            *slot = None;
        }
        result
    }

    /// Keeps a refused message as a dead letter, retrying the write until it succeeds (the
    /// message must not leave the queue before): false when stopped first.
    async fn dead_letter(
        &self,
        stats: &Stats,
        entry: &Entry,
        message: &[u8],
        answer: &[u8],
    ) -> bool {
        loop {
            match self.write_dead_letter(entry, message, answer) {
                Ok(()) => {
                    Stats::bump(&stats.dead_letters);
                    return true;
                }
                Err(e) => {
                    error!(file = %self.dead_letter_path.display(), error = %e, "cannot write a dead letter; the message stays in the queue and the write is retried");
                    if self.stopping.get() {
                        return false;
                    }
                    monoio::time::sleep(LOAD_RETRY).await;
                }
            }
        }
    }
}

/// What a lane task delivers with.
struct Out {
    forwarder: Rc<Forwarder>,
    delivery: Rc<DeliverySlot>,
    stats: Arc<Stats>,
}

/// One lane's delivery loop.
async fn run_lane(out: Out, lane: Rc<Lane>, downstream: Option<usize>) {
    let mut answer = Vec::new();
    let mut timing = Timing::default();
    while let Some(entry) = out.forwarder.next(&lane).await {
        lane.busy.set(true);
        let done = deliver_one(&out, &entry, downstream, &mut answer, &mut timing).await;
        if done {
            out.forwarder.journal.delivered(&entry);
        }
        lane.busy.set(false);
        if !done {
            // Stopped mid-delivery: the message stays in the journal.
            break;
        }
    }
}

/// Delivers one message until it has left the queue (true) or the forwarder stops (false).
async fn deliver_one(
    out: &Out,
    entry: &Entry,
    downstream: Option<usize>,
    answer: &mut Vec<u8>,
    timing: &mut Timing,
) -> bool {
    let (forwarder, stats) = (&out.forwarder, &*out.stats);
    let payload = loop {
        match forwarder.journal.load(entry).await {
            Ok(payload) => break payload,
            Err(e) => {
                error!(seq = entry.seq, error = %e, "cannot read a journaled message back; retrying");
                if forwarder.stopping.get() {
                    return false;
                }
                monoio::time::sleep(LOAD_RETRY).await;
            }
        }
    };
    // Sessions journal only messages with a readable header.
    let Ok(msh) = Msh::parse_lenient(&payload) else {
        error!(
            seq = entry.seq,
            "a journaled message has no readable MSH; kept as a dead letter"
        );
        return forwarder
            .dead_letter(stats, entry, &payload, b"not forwarded: no readable MSH")
            .await;
    };
    let Some(downstream) = downstream else {
        warn!(
            seq = entry.seq,
            msh9 = %String::from_utf8_lossy(msh.raw_field(9)),
            "a recovered message has no route under the current configuration; kept as a dead letter"
        );
        return forwarder
            .dead_letter(
                stats,
                entry,
                &payload,
                b"not forwarded: no route under the current configuration",
            )
            .await;
    };
    let expect = Expect::ack_of(&msh);
    let mut round: u32 = 0;
    loop {
        answer.clear();
        match out
            .delivery
            .get()
            .deliver(
                downstream,
                &payload,
                msh.control_id(),
                expect,
                answer,
                timing,
            )
            .await
        {
            Ok(code) => {
                Stats::bump(&stats.messages_delivered);
                Stats::add(&stats.bytes_forwarded, payload.len());
                if let Some(code) = code {
                    stats.ack(code, false);
                }
                if let (Some(written), Some(acked)) = (timing.written, timing.acked) {
                    stats
                        .latency_ack_wait
                        .record(acked.saturating_duration_since(written));
                }
                return match code {
                    Some(code) if !code.is_accept() => {
                        warn!(
                            msh10 = %String::from_utf8_lossy(msh.control_id()),
                            code = %code,
                            "the receiver refused a journaled message; kept as a dead letter (mllp-relay dead-letters list)"
                        );
                        forwarder.dead_letter(stats, entry, &payload, answer).await
                    }
                    _ => true,
                };
            }
            Err(failure) => {
                Stats::bump(&stats.durable_retries);
                let delivery = out.delivery.get();
                let link = delivery.downstream(downstream);
                let pause = link.backoff(round.saturating_add(4));
                if round == 0 {
                    warn!(
                        downstream = %link.name(),
                        msh10 = %String::from_utf8_lossy(msh.control_id()),
                        error = %failure,
                        "journaled message not delivered; it stays queued and is retried until the receiver takes it"
                    );
                }
                round = round.saturating_add(1);
                if round.is_power_of_two() && round > 1 {
                    info!(
                        downstream = %link.name(),
                        rounds = round,
                        error = %failure,
                        "still retrying a journaled message"
                    );
                }
                if forwarder.stopping.get() {
                    return false;
                }
                monoio::time::sleep(pause).await;
                if forwarder.stopping.get() {
                    return false;
                }
            }
        }
    }
}
