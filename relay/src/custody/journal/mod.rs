//! The `durable` ACK mode's journal: one append-only log per worker, written with io_uring and
//! made durable with group commit (many messages, one `fdatasync`), read back after a crash.
//!
//! ```text
//!  DIR/lock                         held (flock) by the running relay: one relay per journal
//!  DIR/worker-0/00000000000000000001.log   segments, named by their first sequence number
//!  DIR/worker-0/00000000000000052113.log
//!  DIR/worker-0/*.spare             the next segment, prepared ahead of time (spare.rs)
//!  DIR/worker-1/…
//!  DIR/dead-letters/worker-0.log    messages the receiver refused, with its answer
//! ```
//!
//! The rules that make an AA honest:
//! - A session's message is answered only after the batch holding it has been written *and*
//!   `fdatasync`'ed. A write or sync error fails the batch (its senders get AE/CE) and the
//!   journal for good: a failed fsync is never retried, because the kernel may already have
//!   dropped the dirty pages it could not write (the "fsyncgate" lesson).
//! - A message leaves the queue only once a *delivered* record for it is written (after the
//!   receiver's AA/CA, or after it is safe in the dead-letter file). Those records need no
//!   fsync of their own: losing one to a power cut means a redelivery (at least once), never a
//!   loss. They are written with the next commit of messages, or on their own within a few
//!   milliseconds, so a `kill -9` (the page cache survives) redelivers only what was in flight
//!   or delivered in those last milliseconds.
//! - Recovery reads every segment, drops messages that have a delivered record, and truncates
//!   a torn or corrupt tail of the newest segment; nothing after a damaged record is trusted.
//!   Zeros after the last record are a segment's unwritten, preallocated end, not damage.
//! - Segments after the first are begun from a spare file whose blocks were written and synced
//!   ahead of time (zeros, or a delivered segment's records), so that a commit overwrites
//!   blocks instead of growing the file and its `fdatasync` has no size change to push
//!   through the filesystem's journal. Every record is stamped with its segment (see
//!   `record`), so a reused file's earlier records are never read as its own.
//! - A segment is reused or deleted once every message in it has left the queue and it is
//!   not the one being written.
//!
//! What this module is not: the delivery loop (`custody::durable`) or the policy for senders
//! (`inbound::session`).

pub(crate) mod record;
mod spare;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File as StdFile, OpenOptions};
use std::future::poll_fn;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::config::JournalConfig;
use crate::metrics::{Stats, unix_ms};
use record::{Kind, Record, Stamp};

/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".log";

/// Why a message could not be taken into custody.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum JournalError {
    /// Writing or syncing the journal failed; it accepts nothing more until restarted.
    #[error("the journal failed ({0}); the relay accepts no message on it until restarted")]
    Failed(Rc<str>),
    /// The journal is at its size cap.
    #[error("the journal is full ({0} bytes); resend later")]
    Full(u64),
}

/// A journaled message waiting for delivery.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    /// The inbound connection it came on (its order is kept per lane key).
    pub(crate) lane: u32,
    /// When it was taken into custody, ms since the Unix epoch.
    pub(crate) time_ms: u64,
    /// Where it goes (`None`: no route under the current configuration).
    pub(crate) downstream: Option<usize>,
    segment: u64,
    /// Offset of the payload in the segment file.
    offset: u64,
    len: usize,
    /// The payload, when kept in memory: a committed batch and the payload's offset in it.
    memory: Option<(Rc<Vec<u8>>, usize)>,
}

/// A message recovery found undelivered (an [`Entry`] without memory: it is read back).
#[derive(Debug)]
struct Found {
    seq: u64,
    lane: u32,
    time_ms: u64,
    downstream: Option<usize>,
    segment: u64,
    offset: u64,
    len: usize,
}

impl From<Found> for Entry {
    fn from(found: Found) -> Self {
        Self {
            seq: found.seq,
            lane: found.lane,
            time_ms: found.time_ms,
            downstream: found.downstream,
            segment: found.segment,
            offset: found.offset,
            len: found.len,
            memory: None,
        }
    }
}

/// A message's bytes, from memory or read back from its segment.
#[derive(Debug)]
pub(crate) enum Payload {
    Shared(Rc<Vec<u8>>, usize, usize),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Shared(chunk, start, len) => &chunk[*start..*start + *len],
            Self::Owned(bytes) => bytes,
        }
    }
}

/// One segment file, as recovery leaves it.
#[derive(Debug)]
struct SegmentFile {
    first_seq: u64,
    path: PathBuf,
    file: StdFile,
    bytes: u64,
    /// Messages in it still in the queue.
    live: usize,
}

/// A worker's journal as found on disk, before its worker starts.
#[derive(Debug)]
pub(crate) struct Recovered {
    dir: PathBuf,
    segments: Vec<SegmentFile>,
    entries: Vec<Found>,
    next_seq: u64,
    /// The new segment new messages go to (created by [`Recovered::begin_segment`]).
    active: Option<StdFile>,
}

impl Recovered {
    /// Messages found undelivered.
    pub(crate) fn undelivered(&self) -> usize {
        self.entries.len()
    }

    /// Counts what was found in the relay's gauges (before the worker starts, so they are
    /// right as soon as the relay is).
    pub(crate) fn count_in(&self, stats: &Stats) {
        let bytes: u64 = self.segments.iter().map(|s| s.bytes).sum();
        Stats::add(&stats.journal_messages, self.entries.len());
        Stats::add(
            &stats.journal_bytes,
            usize::try_from(bytes).unwrap_or(usize::MAX),
        );
        Stats::add(&stats.journal_recovered, self.entries.len());
    }

    /// Creates the segment new messages will be written to, and syncs it into the directory.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub(crate) fn begin_segment(&mut self) -> io::Result<()> {
        let path = self.dir.join(segment_name(self.next_seq));
        // Never over a segment found at start-up (recovery names it past them all).
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| context(e, "cannot create", &path))?;
        sync_dir(&self.dir)?;
        self.active = Some(file);
        Ok(())
    }
}

/// Holds the journal directory's lock for the life of the relay: a second relay on the same
/// journal would interleave two writers' records.
#[derive(Debug)]
pub(crate) struct JournalLock {
    _file: StdFile,
}

/// Takes the journal directory (creating it) and its lock.
///
/// # Errors
/// When the directory cannot be created or written, or another process holds the lock.
pub(crate) fn lock(dir: &Path) -> io::Result<JournalLock> {
    fs::create_dir_all(dir).map_err(|e| context(e, "cannot create the journal directory", dir))?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| context(e, "cannot write in the journal directory", dir))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "journal {} is in use by another process (it holds {})",
                    dir.display(),
                    path.display()
                ),
            )
        },
    )?;
    Ok(JournalLock { _file: file })
}

fn context(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

/// The directory of worker `id`'s journal.
pub(crate) fn worker_dir(root: &Path, id: usize) -> PathBuf {
    root.join(format!("worker-{id}"))
}

/// The entries of `dir` whose names `number` reads as a number, sorted by it.
fn numbered<N: Ord>(
    dir: &Path,
    number: impl Fn(&str) -> Option<N>,
) -> io::Result<Vec<(N, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(&number) {
            found.push((n, entry.path()));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// The worker journals present under `root`, by worker number.
fn worker_dirs(root: &Path) -> io::Result<Vec<(usize, PathBuf)>> {
    let mut dirs = numbered(root, |name| name.strip_prefix("worker-")?.parse().ok())?;
    dirs.retain(|(_, path)| path.is_dir());
    Ok(dirs)
}

/// Segment files of `dir`, oldest first.
fn segment_paths(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    numbered(dir, |name| name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok())
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    StdFile::open(dir)?.sync_all()
}

/// Reads worker `id`'s journal under `root`: every segment, the messages still undelivered,
/// and a torn tail cut off. Segments with nothing undelivered are deleted. `route` names each
/// message's downstream under the current configuration; `seen` is shown every message found
/// (delivered or not, oldest first) with the time it was taken in, ms since the Unix epoch.
///
/// # Errors
/// When a segment cannot be read or the directory written.
pub(crate) fn recover(
    root: &Path,
    id: usize,
    route: &dyn Fn(&[u8]) -> Option<usize>,
    seen: &mut dyn FnMut(&[u8], u64),
    stats: &Stats,
) -> io::Result<Recovered> {
    let dir = worker_dir(root, id);
    fs::create_dir_all(&dir).map_err(|e| context(e, "cannot create", &dir))?;
    let paths = segment_paths(&dir)?;
    let mut undelivered: BTreeMap<u64, Found> = BTreeMap::new();
    let mut segments = Vec::with_capacity(paths.len());
    let mut max_seq = None::<u64>;
    let mut next_seq = 1;
    for (index, (first_seq, path)) in paths.iter().enumerate() {
        let bytes = fs::read(path).map_err(|e| context(e, "cannot read", path))?;
        // Past every segment's name too: a segment begun when nothing but delivered records
        // had been written since the one before it is named one past that one, above the
        // next sequence number, and the new segment must not take its name.
        next_seq = next_seq.max(*first_seq + 1);
        let scan = record::scan(&bytes, Stamp::Segment(*first_seq), |offset, record| {
            max_seq = Some(max_seq.map_or(record.seq, |m| m.max(record.seq)));
            match record.kind {
                Kind::Message => {
                    seen(record.payload, record.time_ms);
                    undelivered.insert(
                        record.seq,
                        Found {
                            seq: record.seq,
                            lane: record.lane,
                            time_ms: record.time_ms,
                            downstream: route(record.payload),
                            segment: *first_seq,
                            offset: (offset + record::HEADER_LEN) as u64,
                            len: record.payload.len(),
                        },
                    );
                }
                Kind::Delivered => {
                    undelivered.remove(&record.seq);
                }
                Kind::DeadLetter | Kind::Padding => {}
            }
        });
        let mut size = bytes.len() as u64;
        if let Some((offset, damage)) = scan.damage {
            if index + 1 == paths.len() {
                // The newest segment: what follows its last complete commit was never
                // acknowledged. Bytes stamped for another segment are most likely the rest of
                // a reused file's earlier use, cut at a record boundary that is not one of its
                // own (see `record`); only a record of this segment cut short is a torn write.
                if let record::Damage::OtherSegment(_) = damage {
                    info!(
                        segment = %path.display(), offset,
                        cut = bytes.len() - offset,
                        "journal: the newest segment ends at its last complete commit; what follows (an earlier use of the file, or a commit the crash cut short, never acknowledged) is truncated"
                    );
                } else {
                    Stats::bump(&stats.journal_damaged_tails);
                    warn!(
                        segment = %path.display(), offset, %damage,
                        cut = bytes.len() - offset,
                        "journal: torn or corrupt tail of the newest segment truncated (records after the last complete commit; none of them was acknowledged)"
                    );
                }
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(offset as u64)?;
                file.sync_all()?;
                size = offset as u64;
            } else {
                Stats::bump(&stats.journal_damaged_tails);
                error!(
                    segment = %path.display(), offset, %damage,
                    "journal: a segment that was committed is damaged (disk corruption?); records after the damage cannot be read and are NOT delivered; the file is kept for inspection"
                );
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| context(e, "cannot open", path))?;
        segments.push(SegmentFile {
            first_seq: *first_seq,
            path: path.clone(),
            file,
            bytes: size,
            live: 0,
        });
    }
    if let Some(max) = max_seq {
        next_seq = next_seq.max(max + 1);
    }
    for entry in undelivered.values() {
        if let Some(segment) = segments.iter_mut().find(|s| s.first_seq == entry.segment) {
            segment.live += 1;
        }
    }
    // Fully delivered segments are not needed any more; a new segment is started anyway.
    let (keep, drop): (Vec<_>, Vec<_>) = segments.into_iter().partition(|s| s.live > 0);
    for segment in &drop {
        fs::remove_file(&segment.path).map_err(|e| context(e, "cannot delete", &segment.path))?;
    }
    if !drop.is_empty() {
        sync_dir(&dir)?;
    }
    let entries: Vec<Found> = undelivered.into_values().collect();
    if !entries.is_empty() {
        info!(
            worker = id,
            undelivered = entries.len(),
            segments = keep.len(),
            "journal: undelivered messages found; they are delivered first, in their order"
        );
    }
    Ok(Recovered {
        dir,
        segments: keep,
        entries,
        next_seq,
        active: None,
    })
}

/// Moves the undelivered messages of worker journals numbered `workers` and above (left by a
/// run with more workers) into the journal of worker `id % workers`, then deletes them, so no
/// message waits for a worker that no longer exists. A crash during the move can only cause
/// redelivery (the copy is synced before the original is deleted).
///
/// # Errors
/// When a journal cannot be read or written.
pub(crate) fn adopt_orphans(root: &Path, workers: usize, stats: &Stats) -> io::Result<()> {
    for (id, dir) in worker_dirs(root)? {
        if id < workers {
            continue;
        }
        let orphan = recover(root, id, &|_| None, &mut |_, _| {}, stats)?;
        let target = id % workers;
        if !orphan.entries.is_empty() {
            let heir = recover(root, target, &|_| None, &mut |_, _| {}, stats)?;
            let mut bytes = Vec::new();
            let first_seq = heir.next_seq;
            for (seq, entry) in (first_seq..).zip(&orphan.entries) {
                let segment = orphan
                    .segments
                    .iter()
                    .find(|s| s.first_seq == entry.segment)
                    .expect("an entry's segment is kept");
                let mut payload = vec![0; entry.len];
                std::os::unix::fs::FileExt::read_exact_at(
                    &segment.file,
                    &mut payload,
                    entry.offset,
                )?;
                record::encode(
                    &Record {
                        kind: Kind::Message,
                        seq,
                        time_ms: entry.time_ms,
                        lane: entry.lane,
                        payload: &payload,
                    },
                    &mut bytes,
                );
            }
            record::stamp(&mut bytes, Stamp::Segment(first_seq));
            let path = heir.dir.join(segment_name(first_seq));
            let file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)?;
            io::Write::write_all(&mut &file, &bytes)?;
            file.sync_all()?;
            sync_dir(&heir.dir)?;
            warn!(
                from = %dir.display(), to = %heir.dir.display(), messages = orphan.entries.len(),
                "journal: undelivered messages of a worker that no longer exists moved to a running worker's journal"
            );
        }
        for segment in &orphan.segments {
            fs::remove_file(&segment.path)?;
        }
        spare::remove_leftovers(&dir)?;
        fs::remove_dir(&dir)?;
        sync_dir(root)?;
    }
    Ok(())
}

/// The segment being written.
#[derive(Debug)]
struct Active {
    first_seq: u64,
    /// Opened through the page cache: for reading messages back, and for writing commits when
    /// the filesystem has no `O_DIRECT`.
    file: Rc<monoio::fs::File>,
    /// The same file opened for direct writes (a prepared segment, when the filesystem allows
    /// them and the configuration asks for them).
    direct: Option<Rc<DirectFiles>>,
    /// Whether the segment was prepared ahead (zero-filled or reused); one that was not is
    /// sealed as soon as a prepared one is ready.
    prepared: bool,
    written: u64,
    /// The file's length when the segment began (a prepared one's blocks not written over
    /// yet lie between `written` and this).
    file_len: u64,
    /// The same file, for dropping its synced pages from the page cache as it grows.
    cache: PageCache,
}

/// A segment opened with `O_DIRECT`: commits bypass the page cache and go to the device as they
/// are. Why: a buffered write and its `fdatasync` cost 59–62 µs of CPU per commit here, most of
/// it in the io_uring worker thread the sync is handed to; an `O_DIRECT | O_DSYNC` write that
/// overwrites the segment's preallocated blocks is issued by io_uring inline, without that
/// thread, for 24 µs (`examples/sync_probe.rs`). The price: every commit is a whole number of
/// [`record::BLOCK`]s at a block-aligned offset, filled up with a padding record.
#[derive(Debug)]
struct DirectFiles {
    /// `O_DIRECT | O_DSYNC`: a commit holding messages is durable when its write completes
    /// (data and a cache flush in one operation), the same promise as write + fdatasync.
    durable: monoio::fs::File,
    /// `O_DIRECT` alone: commits of delivered records only, which need no sync (see the
    /// module's rules).
    unsynced: monoio::fs::File,
}

impl DirectFiles {
    /// Opens `path` for direct writes; `None` when its filesystem does not support them
    /// (`EINVAL`, e.g. tmpfs before Linux 6.6).
    ///
    /// # Errors
    /// Any other failure to open it.
    fn open(path: &Path) -> io::Result<Option<Self>> {
        use std::os::unix::fs::OpenOptionsExt;
        // libc's flags, not rustix's: rustix's `OFlags::DSYNC` is `O_SYNC` on Linux, which
        // writes the inode's new timestamps out with every commit (measured: an fd opened
        // through it showed `O_SYNC` in /proc/PID/fdinfo).
        let open = |extra: libc::c_int| {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT | extra)
                .open(path)
        };
        let (durable, unsynced) = match (open(libc::O_DSYNC), open(0)) {
            (Ok(durable), Ok(unsynced)) => (durable, unsynced),
            (Err(e), _) | (_, Err(e))
                if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
            {
                return Ok(None);
            }
            (Err(e), _) | (_, Err(e)) => {
                return Err(context(e, "cannot open for direct writes", path));
            }
        };
        Ok(Some(Self {
            durable: monoio::fs::File::from_std(durable)?,
            unsynced: monoio::fs::File::from_std(unsynced)?,
        }))
    }
}

/// Copies `records` into `out` (emptied first) so that they start at a block-aligned address
/// and end, after a padding record, on a block boundary, as `O_DIRECT` needs, and stamps them
/// for the segment they go to; returns where they start in `out`. One copy per commit
/// (~17 KiB at saturation): cheaper than keeping the batch being gathered aligned through its
/// growth.
fn block_aligned(records: &[u8], stamp: Stamp, out: &mut Vec<u8>) -> usize {
    out.clear();
    let pad = record::padding_len(records.len());
    // Reserved in full first, so that nothing below moves the buffer.
    out.reserve(record::BLOCK + records.len() + pad);
    let lead = out.as_ptr().addr().wrapping_neg() % record::BLOCK;
    out.resize(lead, 0);
    out.extend_from_slice(records);
    if pad > 0 {
        record::encode_padding(pad, out);
    }
    record::stamp(&mut out[lead..], stamp);
    debug_assert_eq!(out[lead..].as_ptr().addr() % record::BLOCK, 0);
    debug_assert_eq!((out.len() - lead) % record::BLOCK, 0);
    lead
}

/// Drops a segment's synced pages from the page cache as the segment grows: the relay reads
/// messages back from its own memory, so cached segment pages only crowd out other data, and
/// freeing them all at once when the segment is deleted made that delete slower (closing a
/// deleted 64 MiB file on this VM's ext4: 14.7 ms with its pages cached, 10.1 ms without).
#[derive(Debug)]
struct PageCache {
    file: StdFile,
    /// Bytes from the start of the segment already dropped.
    dropped: u64,
}

/// Pages are dropped in steps of at least this many bytes: each step is one syscall that
/// frees ~64 pages, short enough not to be felt by the ACKs waiting behind it.
const PAGE_CACHE_STEP: u64 = 256 * 1024;

impl PageCache {
    fn new(file: &StdFile) -> io::Result<Self> {
        Ok(Self {
            file: file.try_clone()?,
            dropped: 0,
        })
    }

    /// Drops the cached pages below `synced` (rounded down to a page), once they make a step.
    fn drop_below(&mut self, synced: u64) {
        let end = synced & !4095;
        if end >= self.dropped + PAGE_CACHE_STEP {
            self.advise(end);
        }
    }

    fn advise(&mut self, end: u64) {
        let Some(len) = std::num::NonZeroU64::new(end.saturating_sub(self.dropped)) else {
            return;
        };
        // Advisory: a failure costs memory, never data.
        let _ = rustix::fs::fadvise(
            &self.file,
            self.dropped,
            Some(len),
            rustix::fs::Advice::DontNeed,
        );
        self.dropped = end;
    }

    /// Drops every page not dropped yet, to the end of the file (for a segment no longer
    /// written: its records are synced, and the zeros after them will not be written over).
    fn advise_to_end(&mut self) {
        let _ = rustix::fs::fadvise(&self.file, self.dropped, None, rustix::fs::Advice::DontNeed);
        self.dropped = u64::MAX;
    }
}

/// A segment that is no longer written, still holding undelivered messages.
#[derive(Debug)]
struct Sealed {
    path: PathBuf,
    file: Rc<monoio::fs::File>,
    /// Another descriptor of the file, closed last (see [`Journal::reclaim`]).
    last: StdFile,
    bytes: u64,
    live: usize,
    /// Begun by this run (every record in it stamped), so its file may be reused once it is
    /// delivered. Segments found at start-up are deleted instead.
    reusable: bool,
}

/// A worker's live journal (single-threaded: it lives on its worker).
#[derive(Debug)]
pub(crate) struct Journal {
    worker: usize,
    dir: PathBuf,
    config: JournalConfig,
    stats: Arc<Stats>,
    next_seq: Cell<u64>,
    /// Records waiting for the next commit.
    pending: RefCell<Vec<u8>>,
    /// Messages in `pending`: (seq, lane, downstream, time, offset of payload in `pending`, len).
    pending_messages: RefCell<Vec<PendingMessage>>,
    /// The batch new records join; batches up to `committed` are durable.
    open_batch: Cell<u64>,
    committed: Cell<u64>,
    /// The first batch that failed: it and every later one fail.
    failed: RefCell<Option<(u64, Rc<str>)>>,
    /// Sessions waiting for a commit, and the committer waiting for records.
    waiters: RefCell<Vec<Waker>>,
    committer: RefCell<Option<Waker>>,
    /// Sessions waiting for space (`when_full = pause`).
    space_waiters: RefCell<Vec<Waker>>,
    active: RefCell<Active>,
    /// The next segment, prepared ahead of time: reused or zero-filled (see [`spare`]).
    next_segment: RefCell<spare::Spare>,
    /// Whether prepared segments are written with [`DirectFiles`]: configured, and not found
    /// unsupported by the filesystem.
    direct_io: Cell<bool>,
    /// Commits started and not finished, and the messages in them.
    in_flight: Cell<usize>,
    in_flight_messages: Cell<usize>,
    /// Which sessions have been appending lately, to know when every one of them is waiting.
    writers: ActiveWriters,
    /// The journal is full and the active segment holds only delivered messages: seal it.
    rotate_requested: Cell<bool>,
    /// Commits finished while an earlier one was still in flight, by batch.
    completed: RefCell<BTreeMap<u64, Commit>>,
    /// A buffer for the next batch (given back by a batch whose messages are not kept in
    /// memory).
    spare: RefCell<Vec<u8>>,
    /// Segments no longer written, by first sequence number; the active one's live count is in
    /// `active_live`.
    sealed: RefCell<BTreeMap<u64, Sealed>>,
    active_live: Cell<usize>,
    /// Bytes on disk in this journal's segments (active included), plus pending.
    bytes: Cell<u64>,
    /// Payload bytes of undelivered messages kept in memory.
    memory_used: Cell<usize>,
    /// Undelivered messages in sequence order with their time, for the oldest-age gauge.
    outstanding: RefCell<VecDeque<(u64, u64, bool)>>,
    stopped: Cell<bool>,
}

/// A batch on its way to disk.
#[derive(Debug)]
struct Commit {
    batch: u64,
    /// The records from `lead` on (see [`block_aligned`]).
    buf: Vec<u8>,
    lead: usize,
    messages: Vec<PendingMessage>,
    /// The segment it is written to, and where.
    segment: u64,
    position: u64,
}

/// How long delivered records wait for company before they are written on their own (see
/// [`Journal::linger_delivered`]): a `kill -9` loses at most this long's delivered records, and
/// those messages are delivered again after the restart.
const DELIVERED_LINGER: Duration = Duration::from_millis(5);

/// Commits that may be in flight at once. Concurrent fdatasyncs on one file share the
/// filesystem's journal commits: measured on this project's VM (ext4 on virtio), 1, 2 and 4
/// concurrent append+fdatasync streams gave 3,600, 5,800 and 7,300 syncs/s. Four keeps each
/// batch from waiting for the previous one's sync without piling up tiny batches.
const COMMITS_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, Copy)]
struct PendingMessage {
    seq: u64,
    lane: u32,
    downstream: usize,
    time_ms: u64,
    offset: usize,
    len: usize,
}

impl Journal {
    /// Opens worker `worker`'s journal from what recovery found (after
    /// [`Recovered::begin_segment`]): the found segments are kept for reading. Returns the
    /// journal and the undelivered messages, oldest first. Must run on the worker's runtime.
    ///
    /// # Errors
    /// When a file cannot be registered with the runtime, or no segment was begun.
    pub(crate) fn open(
        recovered: Recovered,
        worker: usize,
        config: JournalConfig,
        stats: Arc<Stats>,
    ) -> io::Result<(Rc<Self>, Vec<Entry>)> {
        let Recovered {
            dir,
            segments,
            entries,
            next_seq,
            active,
        } = recovered;
        let file = active.ok_or_else(|| io::Error::other("no journal segment was begun"))?;
        let mut bytes = 0;
        let mut sealed = BTreeMap::new();
        for segment in segments {
            bytes += segment.bytes;
            sealed.insert(
                segment.first_seq,
                Sealed {
                    path: segment.path,
                    last: segment.file.try_clone()?,
                    file: Rc::new(monoio::fs::File::from_std(segment.file)?),
                    bytes: segment.bytes,
                    live: segment.live,
                    reusable: false,
                },
            );
        }
        let outstanding = entries.iter().map(|e| (e.seq, e.time_ms, false)).collect();
        let entries: Vec<Entry> = entries.into_iter().map(Entry::from).collect();
        let next_segment = spare::Spare::new(&dir, config.segment_bytes);
        let direct_io = config.direct_io;
        let journal = Rc::new(Self {
            worker,
            dir,
            config,
            stats,
            next_seq: Cell::new(next_seq),
            pending: RefCell::new(Vec::new()),
            pending_messages: RefCell::new(Vec::new()),
            open_batch: Cell::new(1),
            committed: Cell::new(0),
            failed: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
            committer: RefCell::new(None),
            space_waiters: RefCell::new(Vec::new()),
            active: RefCell::new(Active {
                first_seq: next_seq,
                cache: PageCache::new(&file)?,
                file: Rc::new(monoio::fs::File::from_std(file)?),
                // Begun empty: it grows with every commit, which a direct write could not do
                // without io_uring's worker thread and a metadata sync each time. It is
                // sealed as soon as the first prepared segment is ready.
                direct: None,
                prepared: false,
                written: 0,
                file_len: 0,
            }),
            next_segment: RefCell::new(next_segment),
            direct_io: Cell::new(direct_io),
            in_flight: Cell::new(0),
            in_flight_messages: Cell::new(0),
            writers: ActiveWriters::new(),
            rotate_requested: Cell::new(false),
            completed: RefCell::new(BTreeMap::new()),
            spare: RefCell::new(Vec::new()),
            sealed: RefCell::new(sealed),
            active_live: Cell::new(0),
            bytes: Cell::new(bytes),
            memory_used: Cell::new(0),
            outstanding: RefCell::new(outstanding),
            stopped: Cell::new(false),
        });
        journal.publish_oldest();
        Ok((journal, entries))
    }

    /// Whether a message of `len` bytes would take the journal past its cap.
    pub(crate) fn is_full(&self, len: usize) -> bool {
        let full = self.bytes.get() + (record::HEADER_LEN + len) as u64 > self.config.max_bytes;
        if full {
            self.rotate_if_delivered();
        }
        full
    }

    /// When the segment being written holds only delivered messages, asks the committer to
    /// seal it (and so reclaim it) now rather than when it reaches its size: otherwise a full
    /// journal whose cap is close to the segment size would wait for a rotation that needs
    /// room to happen.
    fn rotate_if_delivered(&self) {
        if self.active_live.get() == 0
            && self.active.borrow().written > 0
            && !self.rotate_requested.replace(true)
        {
            self.wake_committer();
        }
    }

    /// Adds a message to the next commit; returns the batch to wait for with
    /// [`committed`](Self::committed).
    ///
    /// # Errors
    /// When the journal has failed, or is full.
    pub(crate) fn append(
        &self,
        writer: &Writer,
        lane: u32,
        downstream: usize,
        payload: &[u8],
    ) -> Result<u64, JournalError> {
        if let Some((_, reason)) = &*self.failed.borrow() {
            return Err(JournalError::Failed(reason.clone()));
        }
        if self.is_full(payload.len()) {
            return Err(JournalError::Full(self.config.max_bytes));
        }
        self.writers.note(writer);
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let time_ms = unix_ms();
        let mut pending = self.pending.borrow_mut();
        let start = pending.len();
        record::encode(
            &Record {
                kind: Kind::Message,
                seq,
                time_ms,
                lane,
                payload,
            },
            &mut pending,
        );
        self.bytes
            .set(self.bytes.get() + (pending.len() - start) as u64);
        self.pending_messages.borrow_mut().push(PendingMessage {
            seq,
            lane,
            downstream,
            time_ms,
            offset: start + record::HEADER_LEN,
            len: payload.len(),
        });
        self.wake_committer();
        Ok(self.open_batch.get())
    }

    /// Waits until `batch` is durable.
    ///
    /// # Errors
    /// When writing or syncing it failed.
    pub(crate) async fn committed(&self, batch: u64) -> Result<(), JournalError> {
        poll_fn(|cx| {
            if let Some((first_failed, reason)) = &*self.failed.borrow()
                && batch >= *first_failed
            {
                return Poll::Ready(Err(JournalError::Failed(reason.clone())));
            }
            if self.committed.get() >= batch {
                return Poll::Ready(Ok(()));
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits until a message of `len` bytes fits under the cap (or the journal failed).
    pub(crate) async fn space_for(&self, len: usize) {
        poll_fn(|cx| {
            if !self.is_full(len) || self.failed.borrow().is_some() || self.stopped.get() {
                return Poll::Ready(());
            }
            self.space_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Records that `entry` left the queue (delivered or dead-lettered) and reclaims its
    /// segment when that was the segment's last message.
    pub(crate) fn delivered(&self, entry: &Entry) {
        if self.failed.borrow().is_none() {
            let mut pending = self.pending.borrow_mut();
            let start = pending.len();
            record::encode(
                &Record {
                    kind: Kind::Delivered,
                    seq: entry.seq,
                    time_ms: 0,
                    lane: 0,
                    payload: &[],
                },
                &mut pending,
            );
            self.bytes
                .set(self.bytes.get() + (pending.len() - start) as u64);
            drop(pending);
            self.wake_committer();
        }
        if entry.memory.is_some() {
            self.memory_used.set(self.memory_used.get() - entry.len);
        }
        self.stats
            .journal_messages
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut outstanding = self.outstanding.borrow_mut();
            if let Ok(i) = outstanding.binary_search_by_key(&entry.seq, |o| o.0) {
                outstanding[i].2 = true;
            }
            while outstanding.front().is_some_and(|o| o.2) {
                outstanding.pop_front();
            }
        }
        self.publish_oldest();
        if entry.segment == self.active.borrow().first_seq {
            self.active_live.set(self.active_live.get() - 1);
            if !self.space_waiters.borrow().is_empty() {
                self.rotate_if_delivered();
            }
            return;
        }
        let mut sealed = self.sealed.borrow_mut();
        let Some(segment) = sealed.get_mut(&entry.segment) else {
            return;
        };
        segment.live -= 1;
        if segment.live == 0 {
            let segment = sealed.remove(&entry.segment).expect("present");
            drop(sealed);
            self.reclaim(segment);
        }
    }

    /// Hands a segment whose messages have all been delivered to [`spare`] for reuse, or
    /// deletes it.
    ///
    /// The close of a deleted file's last descriptor is when the filesystem frees its blocks
    /// and cached pages: 10–15 ms for a 64 MiB segment on this VM's ext4, during which the
    /// worker's event loop (and every ACK waiting on it) would stand still. So the runtime's
    /// descriptor is closed here and the last one on a short-lived thread (which still shares
    /// the CPU when the whole relay is confined to one). A reused file frees nothing.
    fn reclaim(&self, segment: Sealed) {
        let Sealed {
            path,
            file,
            last,
            bytes,
            reusable,
            ..
        } = segment;
        drop(file);
        let removed = if reusable {
            self.next_segment.borrow_mut().reuse(last, &path)
        } else {
            Err(last)
        };
        let removed = removed.or_else(|last| {
            let removed = fs::remove_file(&path);
            let closer = std::thread::Builder::new()
                .name("mllp-relay-unlink".into())
                .spawn(move || drop(last));
            if let Err(e) = closer {
                warn!(error = %e, "journal: cannot start a thread to close a deleted segment; closing it on the worker");
            }
            removed
        });
        match removed {
            Ok(()) => {
                self.bytes.set(self.bytes.get().saturating_sub(bytes));
                self.stats
                    .journal_bytes
                    .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
                for waker in self.space_waiters.borrow_mut().drain(..) {
                    waker.wake();
                }
            }
            Err(e) => {
                warn!(segment = %path.display(), error = %e, "journal: cannot delete a delivered segment");
            }
        }
    }

    /// The bytes of `entry`'s message.
    ///
    /// # Errors
    /// When reading it back from its segment fails.
    pub(crate) async fn load(&self, entry: &Entry) -> io::Result<Payload> {
        if let Some((chunk, start)) = &entry.memory {
            return Ok(Payload::Shared(chunk.clone(), *start, entry.len));
        }
        let file = if entry.segment == self.active.borrow().first_seq {
            self.active.borrow().file.clone()
        } else {
            match self.sealed.borrow().get(&entry.segment) {
                Some(segment) => segment.file.clone(),
                None => {
                    return Err(io::Error::other(format!(
                        "segment {} of message {} is gone",
                        entry.segment, entry.seq
                    )));
                }
            }
        };
        let (result, buf) = file.read_exact_at(vec![0; entry.len], entry.offset).await;
        result.map(|()| Payload::Owned(buf))
    }

    /// Stops the committer after its current commit (at shutdown, once sessions are done).
    pub(crate) fn stop(&self) {
        self.stopped.set(true);
        self.wake_committer();
        for waker in self.space_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    fn wake_committer(&self) {
        if let Some(waker) = self.committer.borrow_mut().take() {
            waker.wake();
        }
    }

    fn publish_oldest(&self) {
        let oldest = self
            .outstanding
            .borrow()
            .front()
            .map_or(0, |&(_, time, _)| time);
        self.stats.set_journal_oldest(self.worker, oldest);
    }

    /// The committer task: gathers records into batches and starts their commits (write, then
    /// fdatasync when the batch holds messages), up to [`COMMITS_IN_FLIGHT`] at once; as
    /// commits complete, in batch order, it releases the waiting sessions and hands the
    /// committed messages to `dispatch`. Returns once stopped with nothing pending.
    pub(crate) async fn run_committer(self: Rc<Self>, dispatch: Rc<dyn Fn(Entry)>) {
        loop {
            // Wait for records (and, to stop, for every commit to finish).
            let has_work = poll_fn(|cx| {
                if !self.pending.borrow().is_empty() || self.rotate_requested.get() {
                    return Poll::Ready(true);
                }
                if self.stopped.get() && self.in_flight.get() == 0 {
                    return Poll::Ready(false);
                }
                *self.committer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            if !has_work {
                return;
            }
            if self.rotate_requested.get() && self.pending.borrow().is_empty() {
                self.wait_in_flight_below(1).await;
                self.rotate_requested.set(false);
                if self.active_live.get() == 0
                    && self.active.borrow().written > 0
                    && let Err(e) = self.rotate()
                {
                    self.fail(self.open_batch.get(), &e, false);
                }
                continue;
            }
            self.gather().await;
            self.wait_in_flight_below(COMMITS_IN_FLIGHT).await;
            if self.pending.borrow().is_empty() {
                // A failure cleared it meanwhile.
                continue;
            }
            let batch = self.open_batch.get();
            self.open_batch.set(batch + 1);
            let mut buf = std::mem::take(&mut *self.spare.borrow_mut());
            let lead = {
                let mut pending = self.pending.borrow_mut();
                let stamp = Stamp::Segment(self.active.borrow().first_seq);
                let lead = block_aligned(&pending, stamp, &mut buf);
                let padding = buf.len() - lead - pending.len();
                self.bytes.set(self.bytes.get() + padding as u64);
                pending.clear();
                lead
            };
            let messages = std::mem::take(&mut *self.pending_messages.borrow_mut());
            let (files, segment, position) = {
                let mut active = self.active.borrow_mut();
                let position = active.written;
                active.written += (buf.len() - lead) as u64;
                (
                    (active.file.clone(), active.direct.clone()),
                    active.first_seq,
                    position,
                )
            };
            self.in_flight.set(self.in_flight.get() + 1);
            self.in_flight_messages
                .set(self.in_flight_messages.get() + messages.len());
            monoio::spawn(self.clone().commit(
                Commit {
                    batch,
                    buf,
                    lead,
                    messages,
                    segment,
                    position,
                },
                files,
                dispatch.clone(),
            ));
            let rotate = {
                let active = self.active.borrow();
                active.written >= self.config.segment_bytes
                    || (!active.prepared && self.next_segment.borrow_mut().is_ready())
            };
            if rotate {
                // Every commit to the old segment completes (and is dispatched) before it is
                // sealed, so its live count is final when it is sealed.
                self.wait_in_flight_below(1).await;
                if let Err(e) = self.rotate() {
                    self.fail(self.open_batch.get(), &e, false);
                }
            }
        }
    }

    /// Group commit: decides when the batch being gathered is committed. At once when no
    /// commit is in flight (a lone message, or the first after a quiet spell, never waits), or
    /// when every session that has been appending lately is already waiting for a commit (no
    /// one else is about to add a message). Otherwise the batch keeps growing while the
    /// commits in flight finish, for at most `commit_interval`. So the fdatasync rate follows
    /// the disk instead of the message rate: committing whatever one event-loop turn brought
    /// (the earlier rule) made a commit, and its fdatasync's CPU (~120 µs measured here, most
    /// of it in io_uring's worker thread), for nearly every message at moderate load.
    ///
    /// Sessions answer one message at a time, so the messages pending or in flight are the
    /// sessions waiting.
    async fn gather(&self) {
        if self.pending_messages.borrow().is_empty() {
            self.linger_delivered().await;
            if self.pending_messages.borrow().is_empty() {
                return;
            }
        }
        // monoio's timer has a resolution of one millisecond, so it is only the backstop for
        // a batch that stops growing: while messages arrive, each append wakes this task and
        // the deadline is checked then.
        let deadline = Instant::now() + self.config.commit_interval;
        let mut backstop = std::pin::pin!(monoio::time::sleep_until(deadline.into()));
        poll_fn(|cx| {
            let waiting = self.pending_messages.borrow().len() + self.in_flight_messages.get();
            if self.in_flight.get() == 0
                || waiting >= self.writers.active()
                || Instant::now() >= deadline
                || self.stopped.get()
                || backstop.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(());
            }
            *self.committer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Delivered records alone need no sync and nobody waits for them, but every commit is a
    /// whole block: written one commit each, a receiver draining a backlog made a 4 KiB
    /// write per delivered message. So they wait for the next commit of messages to ride
    /// with, or until a block's worth has gathered, or [`DELIVERED_LINGER`].
    async fn linger_delivered(&self) {
        let deadline = Instant::now() + DELIVERED_LINGER;
        let mut backstop = std::pin::pin!(monoio::time::sleep_until(deadline.into()));
        poll_fn(|cx| {
            if !self.pending_messages.borrow().is_empty()
                || self.pending.borrow().len() >= record::BLOCK - record::HEADER_LEN
                || self.stopped.get()
                || self.rotate_requested.get()
                || Instant::now() >= deadline
                || backstop.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(());
            }
            *self.committer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    async fn wait_in_flight_below(&self, limit: usize) {
        poll_fn(|cx| {
            if self.in_flight.get() < limit {
                return Poll::Ready(());
            }
            *self.committer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// One commit: write the batch at its reserved position and make it durable (an
    /// `O_DSYNC` direct write, or a buffered write and `fdatasync`; neither for delivered
    /// records alone); then, in batch order, release its sessions and dispatch its messages.
    async fn commit(
        self: Rc<Self>,
        commit: Commit,
        (file, direct): (Rc<monoio::fs::File>, Option<Rc<DirectFiles>>),
        dispatch: Rc<dyn Fn(Entry)>,
    ) {
        let Commit {
            batch,
            buf,
            lead,
            messages,
            segment,
            position,
        } = commit;
        let len = buf.len() - lead;
        let durable = !messages.is_empty();
        let started = Instant::now();
        let records = monoio::buf::IoBuf::slice(buf, lead..);
        let (mut outcome, records) = match (&direct, durable) {
            (Some(direct), true) => direct.durable.write_all_at(records, position).await,
            (Some(direct), false) => direct.unsynced.write_all_at(records, position).await,
            (None, _) => file.write_all_at(records, position).await,
        };
        let buf = records.into_inner();
        if outcome.is_ok() && durable && direct.is_none() {
            outcome = file.sync_data().await;
        }
        let synced = durable.then(|| started.elapsed());
        self.in_flight.set(self.in_flight.get() - 1);
        self.in_flight_messages
            .set(self.in_flight_messages.get() - messages.len());
        match outcome {
            Err(e) => self.fail(batch, &e, !messages.is_empty()),
            Ok(()) => {
                Stats::add(&self.stats.journal_bytes, len);
                if let Some(took) = synced {
                    self.stats.journal_fsync.record(took);
                    self.stats.journal_batch.record_count(messages.len());
                    Stats::bump(&self.stats.journal_commits);
                }
                self.completed.borrow_mut().insert(
                    batch,
                    Commit {
                        batch,
                        buf,
                        lead,
                        messages,
                        segment,
                        position,
                    },
                );
                self.advance(&*dispatch);
            }
        }
        self.wake_committer();
    }

    /// Moves `committed` over every completed batch that follows it, in order, releasing
    /// sessions and dispatching messages.
    fn advance(&self, dispatch: &dyn Fn(Entry)) {
        loop {
            let next = self.committed.get() + 1;
            if self
                .failed
                .borrow()
                .as_ref()
                .is_some_and(|(first, _)| next >= *first)
            {
                break;
            }
            let Some(commit) = self.completed.borrow_mut().remove(&next) else {
                break;
            };
            self.committed.set(next);
            if !commit.messages.is_empty() {
                let mut active = self.active.borrow_mut();
                if active.first_seq == commit.segment {
                    active
                        .cache
                        .drop_below(commit.position + (commit.buf.len() - commit.lead) as u64);
                }
            }
            let buf = self.dispatch_batch(commit, dispatch);
            if buf.capacity() > 0 {
                let mut spare = self.spare.borrow_mut();
                if spare.capacity() == 0 {
                    *spare = buf;
                    spare.clear();
                }
            }
        }
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Hands a committed batch's messages to the forwarder; returns the buffer for reuse when
    /// no message kept it.
    fn dispatch_batch(&self, commit: Commit, dispatch: &dyn Fn(Entry)) -> Vec<u8> {
        let Commit {
            buf,
            lead,
            messages,
            segment,
            position,
            ..
        } = commit;
        if messages.is_empty() {
            return buf;
        }
        let batch_bytes: usize = messages.iter().map(|m| m.len).sum();
        let in_memory = self.memory_used.get() + batch_bytes <= self.config.memory_bytes;
        let chunk = Rc::new(buf);
        if segment == self.active.borrow().first_seq {
            self.active_live
                .set(self.active_live.get() + messages.len());
        } else if let Some(sealed) = self.sealed.borrow_mut().get_mut(&segment) {
            sealed.live += messages.len();
        }
        Stats::add(&self.stats.journal_messages, messages.len());
        {
            let mut outstanding = self.outstanding.borrow_mut();
            for m in &messages {
                outstanding.push_back((m.seq, m.time_ms, false));
            }
        }
        if in_memory {
            self.memory_used.set(self.memory_used.get() + batch_bytes);
        }
        for m in &messages {
            dispatch(Entry {
                seq: m.seq,
                lane: m.lane,
                time_ms: m.time_ms,
                downstream: Some(m.downstream),
                segment,
                offset: position + m.offset as u64,
                len: m.len,
                memory: in_memory.then(|| (chunk.clone(), lead + m.offset)),
            });
        }
        self.publish_oldest();
        Rc::try_unwrap(chunk).unwrap_or_default()
    }

    /// Seals the active segment and starts a new one (synced into the directory before any
    /// record in it is acknowledged).
    fn rotate(&self) -> io::Result<()> {
        let live = self.active_live.get();
        {
            // Recovery reads a segment that is not the newest strictly: its records must reach
            // the end of the file, or zeros. A segment sealed with messages still in it has
            // always filled its file (the early rotations seal one with nothing live, which is
            // reclaimed below as it is); should one ever be sealed short, what lies after its
            // records (zeros, or a reused file's earlier records) is cut off, durably, before a
            // newer segment exists.
            let active = self.active.borrow();
            if live > 0 && active.file_len > active.written {
                let file = &active.cache.file;
                file.set_len(active.written)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| context(e, "cannot cut the end off", &self.dir))?;
            }
        }
        // Named by the next sequence number, or one past the active segment's name when no
        // message was written since it began (only delivered records): names stay unique and
        // increasing, and every record in a segment follows those of the segments before it.
        let first_seq = self.next_seq.get().max(self.active.borrow().first_seq + 1);
        let path = self.dir.join(segment_name(first_seq));
        let taken = self.next_segment.borrow_mut().take_as(&path);
        let prepared = taken.is_some();
        let file = match taken {
            Some((file, reused)) => {
                if reused {
                    Stats::bump(&self.stats.journal_segments_reused);
                }
                file
            }
            None => OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| context(e, "cannot create", &path))?,
        };
        sync_dir(&self.dir)?;
        // Only a prepared segment is written direct: growing a file needs its metadata
        // synced with every commit, which io_uring hands to its worker thread (slower than
        // the page cache).
        let direct = if prepared && self.direct_io.get() {
            let direct = DirectFiles::open(&path)?;
            if direct.is_none() {
                self.direct_io.set(false);
                warn!(
                    journal = %self.dir.display(),
                    "journal: this filesystem does not support O_DIRECT; commits are written through the page cache and fdatasync'ed (as safe, more CPU per commit)"
                );
            }
            direct.map(Rc::new)
        } else {
            None
        };
        let new = Active {
            first_seq,
            cache: PageCache::new(&file)?,
            file_len: file.metadata()?.len(),
            file: Rc::new(monoio::fs::File::from_std(file)?),
            direct,
            prepared,
            written: 0,
        };
        let mut old = std::mem::replace(&mut *self.active.borrow_mut(), new);
        old.cache.advise_to_end();
        self.active_live.set(0);
        let old_path = self.dir.join(segment_name(old.first_seq));
        let sealed = Sealed {
            path: old_path,
            file: old.file,
            last: old.cache.file,
            bytes: old.written,
            live,
            reusable: true,
        };
        if live == 0 {
            self.reclaim(sealed);
        } else {
            self.sealed.borrow_mut().insert(old.first_seq, sealed);
        }
        Ok(())
    }

    fn fail(&self, batch: u64, error: &io::Error, syncing: bool) {
        let what = if syncing {
            "write or fdatasync"
        } else {
            "write"
        };
        let reason: Rc<str> = format!("{what} of {} failed: {error}", self.dir.display()).into();
        error!(
            worker = self.worker,
            journal = %self.dir.display(),
            %error,
            "JOURNAL FAILED: {what} failed; the messages of this commit were answered AE/CE, and this worker now refuses every message (AE/CE) until the relay is restarted and the disk checked. fsync is never retried: the kernel may have dropped the data it could not write."
        );
        Stats::bump(&self.stats.journal_failures);
        *self.failed.borrow_mut() = Some((batch, reason));
        self.pending.borrow_mut().clear();
        self.pending_messages.borrow_mut().clear();
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
        for waker in self.space_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Syncs what the committer wrote last (delivered records, which are written without a
    /// sync of their own), at shutdown, so a power cut after a clean stop redelivers nothing.
    pub(crate) async fn sync(&self) {
        if self.failed.borrow().is_some() {
            return;
        }
        let file = self.active.borrow().file.clone();
        if let Err(e) = file.sync_data().await {
            warn!(journal = %self.dir.display(), error = %e, "journal: final sync failed; delivered messages may be delivered again after a power cut");
        }
    }
}

/// A session's mark in [`ActiveWriters`]: give each session one and pass it to
/// [`Journal::append`].
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// The last period in which this session appended (0: never).
    period: Cell<u64>,
}

/// Counts the sessions that appended in the current or the previous period of
/// [`WRITER_PERIOD`]: the senders the group commit may wait for. O(1) per append and no timer:
/// periods roll over when the count is read or a session appends.
#[derive(Debug)]
struct ActiveWriters {
    period: Cell<u64>,
    started: Cell<Instant>,
    current: Cell<usize>,
    previous: Cell<usize>,
}

/// How recently a session must have appended to be waited for. Long enough to cover a
/// stop-and-wait sender's round trip at any load worth batching, short enough that a sender
/// that went quiet stops delaying commits soon.
const WRITER_PERIOD: Duration = Duration::from_millis(20);

impl ActiveWriters {
    fn new() -> Self {
        Self {
            period: Cell::new(1),
            started: Cell::new(Instant::now()),
            current: Cell::new(0),
            previous: Cell::new(0),
        }
    }

    fn roll(&self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started.get());
        if elapsed < WRITER_PERIOD {
            return;
        }
        let previous = if elapsed < 2 * WRITER_PERIOD {
            self.current.get()
        } else {
            0
        };
        self.previous.set(previous);
        self.current.set(0);
        self.period.set(self.period.get() + 1);
        self.started.set(now);
    }

    fn note(&self, writer: &Writer) {
        self.note_at(writer, Instant::now());
    }

    fn note_at(&self, writer: &Writer, now: Instant) {
        self.roll(now);
        if writer.period.replace(self.period.get()) != self.period.get() {
            self.current.set(self.current.get() + 1);
        }
    }

    /// Sessions that appended lately (at least 1).
    fn active(&self) -> usize {
        self.active_at(Instant::now())
    }

    fn active_at(&self, now: Instant) -> usize {
        self.roll(now);
        self.current.get().max(self.previous.get()).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records of `sizes` payload bytes, sequence numbers from 1, as a batch gathers them.
    fn batch_of(sizes: &[usize]) -> Vec<u8> {
        messages((1u64..).zip(sizes.iter().copied()))
    }

    /// Message records (not stamped) with these sequence numbers and payload sizes.
    fn messages(seqs_and_sizes: impl IntoIterator<Item = (u64, usize)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, size) in seqs_and_sizes {
            record::encode(
                &Record {
                    kind: Kind::Message,
                    seq,
                    time_ms: 1,
                    lane: 0,
                    payload: &vec![b'x'; size],
                },
                &mut out,
            );
        }
        out
    }

    /// The message sequence numbers a scan of `bytes` finds, and whether it read them all.
    fn messages_in(bytes: &[u8]) -> (Vec<u64>, bool) {
        let mut seqs = Vec::new();
        let scan = record::scan(bytes, Stamp::Segment(1), |_, r| {
            if r.kind == Kind::Message {
                seqs.push(r.seq);
            }
        });
        (seqs, scan.damage.is_none() && scan.valid_len == bytes.len())
    }

    #[test]
    fn block_aligned_commits_start_on_a_block_in_memory_and_end_on_one_in_the_file() {
        // Batches from empty to several blocks, some a few bytes short of a boundary (where
        // the padding record needs a block of its own) and some exactly on one.
        let mut out = Vec::new();
        for sizes in [
            &[][..],
            &[3],
            &[4096 - 2 * record::HEADER_LEN],
            &[4096 - 2 * record::HEADER_LEN - 10],
            &[4096 - record::HEADER_LEN - 10],
            &[100, 2000, 7000, 1],
            &[65_000],
        ] {
            let records = batch_of(sizes);
            let lead = block_aligned(&records, Stamp::Segment(1), &mut out);
            let commit = &out[lead..];
            assert_eq!(commit.as_ptr().addr() % record::BLOCK, 0, "{sizes:?}");
            assert_eq!(commit.len() % record::BLOCK, 0, "{sizes:?}");
            let mut stamped = records.clone();
            record::stamp(&mut stamped, Stamp::Segment(1));
            assert_eq!(&commit[..records.len()], &stamped[..]);
            let (seqs, whole) = messages_in(commit);
            assert!(whole, "{sizes:?}: the padding scans cleanly to the end");
            assert_eq!(seqs, (1..=sizes.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn direct_commits_land_where_they_are_written_and_read_back_through_the_cache() {
        let dir = testkit::TempDir::new("journal-direct");
        let path = dir.join("segment");
        fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
        // io_uring where the kernel has it, as on a worker.
        let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .expect("runtime");
        let read_back = runtime.block_on(async {
            let Some(direct) = DirectFiles::open(&path).unwrap() else {
                // tmpfs before Linux 6.6: the journal falls back to the page cache.
                return None;
            };
            // O_DSYNC and not O_SYNC, which would also write timestamps out on every commit.
            let flags = |file: &monoio::fs::File| {
                use std::os::fd::AsRawFd;
                let info =
                    fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).unwrap();
                let octal = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
                libc::c_int::from_str_radix(octal.trim(), 8).unwrap()
            };
            let durable = flags(&direct.durable);
            assert_eq!(durable & libc::O_SYNC, libc::O_DSYNC, "{durable:o}");
            assert_eq!(durable & libc::O_DIRECT, libc::O_DIRECT);
            assert_eq!(
                flags(&direct.unsynced) & (libc::O_SYNC | libc::O_DIRECT),
                libc::O_DIRECT
            );
            let mut position = 0;
            let mut buf = Vec::new();
            for (files, sizes) in [
                (&direct.durable, &[10, 20][..]),
                (&direct.unsynced, &[5000]),
            ] {
                let lead = block_aligned(&batch_of(sizes), Stamp::Segment(1), &mut buf);
                let len = (buf.len() - lead) as u64;
                let (written, back) = files
                    .write_all_at(monoio::buf::IoBuf::slice(buf, lead..), position)
                    .await;
                written.expect("a block-aligned direct write");
                buf = back.into_inner();
                position += len;
            }
            Some((position, fs::read(&path).unwrap()))
        });
        let Some((end, bytes)) = read_back else {
            return;
        };
        // First commit: 2 records and padding (one block); second: one record and padding.
        assert_eq!(end, 3 * record::BLOCK as u64);
        let end = usize::try_from(end).unwrap();
        let (seqs, whole) = messages_in(&bytes[..end]);
        assert!(whole);
        assert_eq!(seqs, [1, 2, 1]);
        // The preallocated zeros after the last commit are untouched.
        assert!(bytes[end..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_new_segment_never_takes_the_name_of_one_found_at_start_up() {
        // Segment 10 was begun when only delivered records had been written since segment 9
        // (so named one past it) and then took messages 3 and 4.
        let tmp = testkit::TempDir::new("journal-names");
        let root = tmp.path();
        let dir = worker_dir(root, 0);
        fs::create_dir_all(&dir).unwrap();
        let mut bytes = messages([(3, 20), (4, 20)]);
        record::stamp(&mut bytes, Stamp::Segment(10));
        let path = dir.join(segment_name(10));
        fs::write(&path, &bytes).unwrap();
        let stats = Stats::new(["in"], ["out"]);
        let mut found = 0;
        let mut recovered = recover(root, 0, &|_| Some(0), &mut |_, _| found += 1, &stats).unwrap();
        assert_eq!(found, 2);
        assert_eq!(recovered.undelivered(), 2);
        assert_eq!(recovered.next_seq, 11);
        recovered.begin_segment().unwrap();
        assert_eq!(fs::read(&path).unwrap(), bytes, "segment 10 is untouched");
        assert!(dir.join(segment_name(11)).exists());
    }

    #[test]
    fn active_writers_count_each_session_once_per_period_and_forget_quiet_ones() {
        let writers = ActiveWriters::new();
        let start = writers.started.get();
        let sessions: Vec<Writer> = (0..5).map(|_| Writer::default()).collect();
        // Nobody yet: still 1, so a lone first message never waits for a phantom sender.
        assert_eq!(writers.active_at(start), 1);
        // Five sessions, each appending several times within one period, count five.
        for round in 0..3 {
            for session in &sessions {
                writers.note_at(session, start + Duration::from_micros(round * 100));
            }
        }
        assert_eq!(writers.active_at(start + Duration::from_millis(1)), 5);
        // In the next period two of them append: the five of the previous period still count.
        let next = start + WRITER_PERIOD;
        writers.note_at(&sessions[0], next);
        writers.note_at(&sessions[1], next);
        assert_eq!(writers.active_at(next), 5);
        // One period later only those two were recent.
        let later = next + WRITER_PERIOD;
        assert_eq!(writers.active_at(later), 2);
        // After two quiet periods nobody is waited for.
        assert_eq!(writers.active_at(later + 2 * WRITER_PERIOD), 1);
        // A session coming back counts again.
        writers.note_at(&sessions[4], later + 3 * WRITER_PERIOD);
        assert_eq!(writers.active_at(later + 3 * WRITER_PERIOD), 1);
        writers.note_at(&sessions[3], later + 3 * WRITER_PERIOD);
        assert_eq!(writers.active_at(later + 3 * WRITER_PERIOD), 2);
    }
}
