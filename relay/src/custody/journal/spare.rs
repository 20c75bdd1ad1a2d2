//! The next segment, prepared ahead: a file of the segment's size whose blocks are already
//! written and synced, so that commits overwrite them instead of growing the file.
//!
//! Why: appending to a file changes its size, so every fdatasync of an append-only segment
//! also commits that metadata through the filesystem's journal. Overwriting blocks that were
//! already written and synced needs only the data and a cache flush. Measured on this
//! project's VM (ext4 on virtio, 7 KiB written then fdatasync, 3,000 times, scripted): append
//! 162–174 µs per sync and 63–83 µs of machine CPU; overwriting zeros 103–108 µs and 37–40 µs.
//! `fallocate` alone is not enough (167 µs): its unwritten extents are converted, in the
//! filesystem's journal, on first write. Databases prepare their write-ahead log segments the
//! same way.
//!
//! A spare comes from one of two places:
//! - **Reused**: a delivered segment's file, handed over by the journal instead of deleted
//!   (as databases recycle their log files). Its blocks hold its earlier records; the records
//!   of its next use are told apart from them by their stamp (see `record`), never by
//!   zeros. Making it ready costs one truncation back to the segment's size and a sync of
//!   that, off the worker. While the receiver keeps up, every rotation reuses the segment
//!   delivered before it and nothing else is written.
//! - **Zero-filled**: a new file of zeros, made on a low-priority thread, for the first
//!   rotations and whenever no delivered segment is at hand (a receiver that lags keeps
//!   every segment). Paced (1 MiB written and synced, then a pause) so that it never floods
//!   the disk queue the journal's own syncs wait in: unpaced, the 64 MiB burst after each
//!   rotation took the p99 ACK latency at 17k msgs/s from 3–4 ms to 11–17 ms. At most one
//!   zero-filled spare exists; it waits, ready, while reused ones are at hand.
//!
//! When no spare is ready at rotation, the next segment is created empty as before: slower
//! syncs for one segment, never a lost or delayed message. Spares left by a crash are deleted
//! at start-up, unused.

use std::fs::{self, File as StdFile, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};

use tracing::warn;

/// Suffix of spare files in a worker's journal directory (not a segment name: recovery and
/// the dead-letter tools never read them).
const SPARE_SUFFIX: &str = ".spare";

/// Numbers each preparation in this process, so that no two threads ever write one file (a
/// journal opened again in the same process while an earlier preparation still runs).
static PREPARATIONS: AtomicU64 = AtomicU64::new(0);

/// Zeros are written in pieces of this size: large enough for few system calls, small enough
/// that the thread yields the CPU often.
const CHUNK: usize = 1 << 20;

/// Pause after each piece: under ~30 MiB/s of zeros, a 64 MiB spare in two to three seconds.
/// A segment filled faster than that (closed-loop saturation here fills one in about two) is
/// followed by one created empty, as described above.
const PACE: std::time::Duration = std::time::Duration::from_millis(30);

/// What asking for the spare gave.
#[derive(Debug)]
enum Taken {
    /// The file, and whether it is a reused one.
    Ready(StdFile, bool),
    NotReady,
    Failed(io::Error),
}

/// One spare being made on a thread, or made: its path and the thread's answer.
#[derive(Debug)]
struct Preparation {
    path: PathBuf,
    answer: Receiver<io::Result<StdFile>>,
    /// The answer, once received and not yet taken.
    finished: Option<io::Result<StdFile>>,
}

impl Preparation {
    /// Receives the thread's answer, if it has come.
    fn collect(&mut self) {
        if self.finished.is_none() {
            self.finished = match self.answer.try_recv() {
                Err(TryRecvError::Empty) => None,
                Ok(result) => Some(result),
                Err(TryRecvError::Disconnected) => {
                    Some(Err(io::Error::other("the preparing thread ended")))
                }
            };
        }
    }

    fn is_ready(&mut self) -> bool {
        self.collect();
        matches!(self.finished, Some(Ok(_)))
    }
}

/// The spare segments of one worker's journal: a zero-filled one (being made, ready, or after
/// a failure not made until the next rotation asks again) and a reused one.
#[derive(Debug)]
pub(crate) struct Spare {
    dir: PathBuf,
    size: u64,
    zero_filled: Option<Preparation>,
    reused: Option<Preparation>,
    /// Set when the journal goes away: a preparation still running stops and removes its file.
    abandoned: Arc<AtomicBool>,
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

/// Deletes the spares in `dir` (left half-written by a crash, or by an earlier journal).
pub(crate) fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(SPARE_SUFFIX))
        {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

impl Spare {
    /// Deletes the spares a previous run may have left half-written, and starts preparing one
    /// of `size` bytes in `dir`.
    pub(crate) fn new(dir: &Path, size: u64) -> Self {
        if let Err(e) = remove_leftovers(dir) {
            warn!(dir = %dir.display(), error = %e, "journal: cannot delete an old spare segment");
        }
        let mut spare = Self {
            dir: dir.to_path_buf(),
            size,
            zero_filled: None,
            reused: None,
            abandoned: Arc::new(AtomicBool::new(false)),
        };
        spare.prepare();
        spare
    }

    /// Takes the spare if one is ready (a reused one first), renamed to `target` (the caller
    /// makes the rename durable by syncing the directory). `None` when none is ready yet or
    /// could be made; the caller then creates `target` itself. With the file comes whether
    /// it is a reused one.
    pub(crate) fn take_as(&mut self, target: &Path) -> Option<(StdFile, bool)> {
        match self.try_take(target) {
            Taken::Ready(file, reused) => Some((file, reused)),
            Taken::NotReady => None,
            Taken::Failed(e) => {
                warn!(dir = %self.dir.display(), error = %e, "journal: the next segment could not be prepared in advance; creating it empty (its syncs are slower)");
                None
            }
        }
    }

    /// Whether a spare is ready and can be taken now.
    pub(crate) fn is_ready(&mut self) -> bool {
        self.reused.as_mut().is_some_and(Preparation::is_ready)
            || self.zero_filled.as_mut().is_some_and(Preparation::is_ready)
    }

    /// Offers the file of a delivered segment, at `path`, for reuse. Taken when no other
    /// reused spare is waiting and the file is at least a segment long (a shorter one would
    /// have to grow, as a new one does); otherwise `file` is given back and the caller
    /// deletes it. A taken file is renamed to a spare's name at once (not synced: after a
    /// crash it is a delivered segment or a spare, both deleted at start-up), then cut back
    /// to the segment's size and synced on a thread.
    ///
    /// # Errors
    /// `file`, given back, when it is not taken.
    pub(crate) fn reuse(&mut self, file: StdFile, path: &Path) -> Result<(), StdFile> {
        if self.reused.is_some() || file.metadata().map_or(true, |m| m.len() < self.size) {
            return Err(file);
        }
        let spare = self.spare_path("reused");
        if let Err(e) = fs::rename(path, &spare) {
            warn!(segment = %path.display(), error = %e, "journal: cannot rename a delivered segment for reuse; deleting it");
            return Err(file);
        }
        let size = self.size;
        let answer = self.spawn(move || {
            file.set_len(size)?;
            file.sync_data()?;
            Ok(file)
        });
        match answer {
            Some(answer) => {
                self.reused = Some(Preparation {
                    path: spare,
                    answer,
                    finished: None,
                });
                Ok(())
            }
            None => {
                // Renamed already: the caller's path is gone, so delete it here.
                let _ = fs::remove_file(&spare);
                Ok(())
            }
        }
    }

    fn try_take(&mut self, target: &Path) -> Taken {
        if let Some(reused) = &mut self.reused {
            reused.collect();
            if let Some(Err(e)) = &reused.finished {
                warn!(spare = %reused.path.display(), error = %e, "journal: a delivered segment could not be made ready for reuse; deleting it");
                let _ = fs::remove_file(&reused.path);
                self.reused = None;
            }
        }
        let reused_ready = self.reused.as_mut().is_some_and(Preparation::is_ready);
        let slot = if reused_ready {
            &mut self.reused
        } else {
            if self.zero_filled.is_none() {
                // The thread could not be started last time; try again for the next rotation.
                self.prepare();
                return Taken::NotReady;
            }
            &mut self.zero_filled
        };
        let preparation = slot.as_mut().expect("checked above");
        preparation.collect();
        let Some(result) = preparation.finished.take() else {
            return Taken::NotReady;
        };
        let path = slot.take().expect("checked above").path;
        let taken = result.and_then(|file| {
            // Never over an existing segment (names are unique; this makes sure).
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &path,
                rustix::fs::CWD,
                target,
                rustix::fs::RenameFlags::NOREPLACE,
            )?;
            Ok(file)
        });
        if taken.is_err() {
            let _ = fs::remove_file(&path);
        }
        if self.zero_filled.is_none() {
            self.prepare();
        }
        match taken {
            Ok(file) => Taken::Ready(file, reused_ready),
            Err(e) => Taken::Failed(e),
        }
    }

    /// A new spare's path in the journal directory.
    fn spare_path(&self, what: &str) -> PathBuf {
        let number = PREPARATIONS.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!(
            "{what}-{}-{number}{SPARE_SUFFIX}",
            std::process::id()
        ))
    }

    /// Runs `make` on a low-priority thread; its answer, or `None` (logged) when no thread
    /// could be started.
    fn spawn(
        &self,
        make: impl FnOnce() -> io::Result<StdFile> + Send + 'static,
    ) -> Option<Receiver<io::Result<StdFile>>> {
        let (done, answer) = mpsc::sync_channel(1);
        let started = std::thread::Builder::new()
            .name("mllp-relay-spare".into())
            .spawn(move || {
                lowest_priority();
                let _ = done.send(make());
            });
        match started {
            Ok(_) => Some(answer),
            Err(e) => {
                warn!(error = %e, "journal: cannot start the thread that prepares the next segment");
                None
            }
        }
    }

    fn prepare(&mut self) {
        let path = self.spare_path("next-segment");
        let (file, size, abandoned) = (path.clone(), self.size, self.abandoned.clone());
        self.zero_filled = self
            .spawn(move || zero_filled(&file, size, &abandoned))
            .map(|answer| Preparation {
                path,
                answer,
                finished: None,
            });
    }
}

/// Creates `path` (a new file) with `size` zero bytes, synced; stops and removes it when the
/// journal is `abandoned` meanwhile.
fn zero_filled(path: &Path, size: u64, abandoned: &AtomicBool) -> io::Result<StdFile> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)?;
    let zeros = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        if abandoned.load(Ordering::Relaxed) {
            let _ = fs::remove_file(path);
            return Err(io::Error::other("the journal was closed"));
        }
        let piece = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        file.write_all(&zeros[..piece])?;
        file.sync_data()?;
        left -= piece as u64;
        if left > 0 {
            std::thread::sleep(PACE);
        }
    }
    Ok(file)
}

/// Puts the calling thread at nice 19, so that it runs when the worker sharing its CPU does
/// not need it. Advisory: at normal priority the spare is still correct, only more intrusive.
fn lowest_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use testkit::TempDir;

    /// Waits for the spare being prepared (before the test's directory goes).
    fn cleanup(mut spare: Spare) {
        for preparation in [spare.zero_filled.take(), spare.reused.take()]
            .into_iter()
            .flatten()
        {
            let _ = preparation.answer.recv();
        }
    }

    /// Asks for the spare as `target` until it is no longer "not ready" (bounded).
    fn take_within(spare: &mut Spare, target: &Path) -> Taken {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match spare.try_take(target) {
                Taken::NotReady if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                taken => return taken,
            }
        }
    }

    #[test]
    fn a_spare_is_a_zero_filled_file_renamed_into_place_and_the_next_is_prepared() {
        let tmp = TempDir::new("spare-ready");
        let dir = tmp.path();
        // A half-written spare from a crashed run is not reused.
        let left_over = dir.join(format!("next-segment-1-7{SPARE_SUFFIX}"));
        fs::write(&left_over, b"left over").unwrap();
        let size = 3 * CHUNK as u64 + 5;
        let mut spare = Spare::new(dir, size);
        let first = dir.join("00000000000000000001.log");
        let Taken::Ready(file, false) = take_within(&mut spare, &first) else {
            panic!("the spare gets ready");
        };
        assert!(!left_over.exists());
        assert_eq!(file.metadata().unwrap().len(), size);
        let bytes = fs::read(&first).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert!(bytes.iter().all(|&b| b == 0));
        // The next one is prepared under the spare's name, not over the segment just taken.
        let second = dir.join("00000000000000000100.log");
        assert!(matches!(take_within(&mut spare, &second), Taken::Ready(..)));
        assert_eq!(fs::metadata(&second).unwrap().len(), size);
        assert_eq!(
            fs::read(&first).unwrap(),
            bytes,
            "the first segment is untouched"
        );
        cleanup(spare);
    }

    #[test]
    fn a_journal_that_goes_away_stops_its_preparation_and_leaves_no_file() {
        let tmp = TempDir::new("spare-abandoned");
        let dir = tmp.path();
        // Large enough to be mid-way (paced) when the journal goes away.
        let spare = Spare::new(dir, 64 * CHUNK as u64);
        let (path, preparing) = {
            let mut spare = spare;
            let taken = spare.zero_filled.take().unwrap();
            drop(spare);
            (taken.path, taken.answer)
        };
        let outcome = preparing
            .recv_timeout(Duration::from_secs(20))
            .expect("the thread answers");
        assert!(outcome.is_err(), "stopped, not finished");
        assert!(!path.exists());
    }

    #[test]
    fn a_spare_never_replaces_an_existing_segment() {
        let tmp = TempDir::new("spare-noreplace");
        let dir = tmp.path();
        let mut spare = Spare::new(dir, 4096);
        let existing = dir.join("00000000000000000001.log");
        fs::write(&existing, b"records").unwrap();
        assert!(matches!(
            take_within(&mut spare, &existing),
            Taken::Failed(_)
        ));
        assert_eq!(fs::read(&existing).unwrap(), b"records");
        cleanup(spare);
    }

    #[test]
    fn a_spare_that_cannot_be_put_in_place_is_a_failure_and_the_next_is_prepared() {
        let tmp = TempDir::new("spare-fails");
        let dir = tmp.path();
        let mut spare = Spare::new(dir, 4096);
        let nowhere = dir.join("missing").join("00000000000000000001.log");
        assert!(matches!(
            take_within(&mut spare, &nowhere),
            Taken::Failed(_)
        ));
        // The public form says "create it yourself"; the next spare still comes.
        assert!(spare.take_as(&nowhere).is_none());
        let target = dir.join("00000000000000000002.log");
        assert!(matches!(take_within(&mut spare, &target), Taken::Ready(..)));
        cleanup(spare);
    }

    #[test]
    fn a_delivered_segment_is_reused_before_a_zero_filled_spare_and_cut_to_size() {
        let tmp = TempDir::new("spare-reuse");
        let dir = tmp.path();
        let size = 2 * CHUNK as u64;
        let mut spare = Spare::new(dir, size);
        // Wait for the zero-filled spare, so that the reused one is preferred over a ready one.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !spare.is_ready() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(spare.is_ready());
        // A delivered segment that grew past the size (its last commit went beyond it).
        let delivered = dir.join("00000000000000000001.log");
        let mut old = vec![0xa5u8; usize::try_from(size).unwrap() + 8192];
        old[..4].copy_from_slice(b"old!");
        fs::write(&delivered, &old).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&delivered)
            .unwrap();
        assert!(spare.reuse(file, &delivered).is_ok());
        assert!(!delivered.exists(), "renamed to a spare's name at once");
        // A second one, and one shorter than a segment, are given back.
        let other = dir.join("00000000000000000050.log");
        fs::write(&other, vec![1u8; usize::try_from(size).unwrap()]).unwrap();
        assert!(spare.reuse(StdFile::open(&other).unwrap(), &other).is_err());
        let short = dir.join("00000000000000000090.log");
        fs::write(&short, b"short").unwrap();
        assert!(spare.reuse(StdFile::open(&short).unwrap(), &short).is_err());
        assert!(other.exists() && short.exists(), "given back, not renamed");

        // Once cut to size and synced, it is taken first.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !spare.reused.as_mut().unwrap().is_ready() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let next = dir.join("00000000000000000100.log");
        let Taken::Ready(file, true) = take_within(&mut spare, &next) else {
            panic!("the reused file is taken");
        };
        assert_eq!(file.metadata().unwrap().len(), size);
        let bytes = fs::read(&next).unwrap();
        assert_eq!(&bytes[..4], b"old!", "its blocks are reused as they are");
        assert_eq!(bytes.len() as u64, size);
        // The zero-filled spare waited; it is the next one.
        let after = dir.join("00000000000000000200.log");
        assert!(matches!(
            take_within(&mut spare, &after),
            Taken::Ready(_, false)
        ));
        assert!(fs::read(&after).unwrap().iter().all(|&b| b == 0));
        // Only the segments and the next zero-filled spare are left.
        cleanup(spare);
    }
}
