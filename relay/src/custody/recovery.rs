//! Custody at start-up: the journal directory locked, surplus workers' journals adopted, each
//! worker's journal recovered before any connection is accepted, and the duplicate windows
//! refilled from what the journal still holds.

use std::io::{self, Write as _};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::duplicates::{DuplicateWindow, DuplicateWindows};
use super::durable::Forwarder;
use super::journal;
use crate::config::{AckMode, Config, LinkPolicy};
use crate::metrics::Stats;
use crate::route;

/// `durable` mode: locks the journal directory, moves the messages of surplus worker journals
/// to running ones, and recovers each worker's journal (before any connection is accepted),
/// one entry per worker.
#[allow(clippy::type_complexity)]
pub(crate) fn open_journals(
    config: &Config,
    workers: usize,
    windows: &DuplicateWindows,
    stats: &Stats,
) -> io::Result<(
    Option<journal::JournalLock>,
    Vec<Option<journal::Recovered>>,
)> {
    let Some(durable) = config
        .listeners
        .iter()
        .find(|l| l.ack_mode == AckMode::Durable)
    else {
        return Ok((None, Vec::new()));
    };
    let Some(journal) = &config.journal else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "listener {:?} has ack mode durable, which needs a journal directory \
                 (--journal DIR, or [journal] dir)",
                durable.name
            ),
        ));
    };
    let lock = journal::lock(&journal.dir)?;
    journal::adopt_orphans(&journal.dir, workers, stats)?;
    let route = |payload: &[u8]| {
        mllp::hl7::Msh::parse_lenient(payload).ok().and_then(|msh| {
            // Routes that look at the origin are refused beside a durable listener, so
            // the MSH alone routes a journaled message as its session did.
            route::pick(
                &config.routes,
                config.default_downstream,
                &msh,
                route::Origin::default(),
            )
            .ok()
        })
    };
    let mut windows = WindowsFromJournal::new(config, windows);
    let mut recovered = Vec::with_capacity(workers);
    for id in 0..workers {
        let mut journal = journal::recover(
            &journal.dir,
            id,
            &route,
            &mut |payload, taken_ms| windows.remember(payload, taken_ms),
            stats,
        )?;
        journal.begin_segment()?;
        journal.count_in(stats);
        recovered.push(Some(journal));
    }
    let undelivered: usize = recovered
        .iter()
        .flatten()
        .map(journal::Recovered::undelivered)
        .sum();
    info!(
        journal = %journal.dir.display(),
        undelivered,
        commit_interval = ?journal.commit_interval,
        "ack mode DURABLE: senders get AA/CA once their message is fsync'ed to the journal"
    );
    Ok((Some(lock), recovered))
}

/// Refills the duplicate windows of durable listeners with the messages found in the journal
/// at start-up (delivered or not, within each window's age), so that a sender that resends a
/// message after a restart (it may never have seen the ACK: the relay went down between the
/// fdatasync and the answer) gets an ACK instead of a second copy queued. The window does not
/// keep the ACK itself across a restart: it is made anew, with the same code and MSA-2 under
/// the listener's ACK policy, a new MSH-7 and an MSH-10 of the form `RJ-<n>`. A
/// record does not say which listener took it, so with several durable listeners every window
/// learns every message. Segments already reclaimed are gone: the window then covers what is
/// still on disk (at least the undelivered messages).
struct WindowsFromJournal<'c> {
    windows: Vec<(&'c DuplicateWindow, mllp::ack::AckPolicy)>,
    now: Instant,
    now_ms: u64,
    timestamp: Vec<u8>,
    control_id: Vec<u8>,
    key: Vec<u8>,
    ack: Vec<u8>,
    remembered: u64,
}

impl<'c> WindowsFromJournal<'c> {
    fn new(config: &Config, windows: &'c DuplicateWindows) -> Self {
        let windows = config
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, listener)| listener.ack_mode == AckMode::Durable)
            .filter_map(|(index, listener)| Some((windows.of(index)?, listener.ack_policy)))
            .collect();
        let wall = std::time::SystemTime::now();
        let now_ms = wall
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut timestamp = Vec::new();
        mllp::timestamp::write_hl7_timestamp(wall, &mut timestamp);
        Self {
            windows,
            now: Instant::now(),
            now_ms,
            timestamp,
            control_id: Vec::new(),
            key: Vec::new(),
            ack: Vec::new(),
            remembered: 0,
        }
    }

    /// Remembers one message found in the journal, taken in at `taken_ms`.
    fn remember(&mut self, payload: &[u8], taken_ms: u64) {
        if self.windows.is_empty() {
            return;
        }
        let Ok(msh) = mllp::hl7::Msh::parse_lenient(payload) else {
            return;
        };
        let age = Duration::from_millis(self.now_ms.saturating_sub(taken_ms));
        let Some(at) = self.now.checked_sub(age) else {
            return;
        };
        for (window, policy) in &self.windows {
            if age > window.max_age() {
                continue;
            }
            self.remembered += 1;
            self.control_id.clear();
            let _ = write!(self.control_id, "RJ-{}", self.remembered);
            self.ack.clear();
            let params = mllp::ack::AckParams::new(&self.timestamp, &self.control_id);
            let answer = match mllp::ack::build_ack(
                &msh,
                mllp::ack::Outcome::Accepted,
                *policy,
                &params,
                &mut self.ack,
            ) {
                mllp::ack::AckDecision::Send(code) => Some((code, self.ack.as_slice())),
                mllp::ack::AckDecision::NotDue => None,
            };
            window.remember(&msh, payload, answer, at, &mut self.key);
        }
    }
}

impl Drop for WindowsFromJournal<'_> {
    fn drop(&mut self) {
        if self.remembered > 0 {
            info!(
                messages = self.remembered,
                "duplicate window: messages found in the journal remembered, so that their resends after this restart are answered, not queued again"
            );
        }
    }
}

/// Opens a worker's journal and forwarder on its runtime.
pub(crate) fn open_forwarder(
    recovered: journal::Recovered,
    id: usize,
    config: &Arc<Config>,
    stats: &Arc<Stats>,
) -> io::Result<Rc<Forwarder>> {
    let journal_config = config.journal.clone().expect("durable mode has a journal");
    let root = journal_config.dir.clone();
    let lanes = journal_config.forward_lanes;
    let (journal, entries) = journal::Journal::open(recovered, id, journal_config, stats.clone())?;
    let links: Vec<LinkPolicy> = config.downstreams.iter().map(|d| d.link).collect();
    Ok(Rc::new(Forwarder::new(
        journal, &links, lanes, &root, id, entries,
    )))
}
