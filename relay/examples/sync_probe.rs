//! How fast, and at what CPU cost, this machine's disk makes a small write durable through
//! io_uring, two ways:
//!
//! - `buffered`: a write into the page cache, then `fdatasync` (what the journal does today;
//!   io_uring always hands the sync to one of its worker threads);
//! - `direct`: an `O_DIRECT` write with `RWF_DSYNC` (the data goes to the device and is
//!   flushed as one operation, which io_uring issues without a worker thread).
//!
//! Each durable write is `SIZE` bytes at the next block-aligned offset of a 64 MiB file that
//! was zero-filled and synced first (so no write changes the file's size, as in the journal's
//! prepared segments), one at a time. Reports operations per second, latency percentiles and
//! the process's CPU time per operation (user + system, io_uring's worker threads included).
//!
//! ```text
//! cargo run --release -p relay --example sync_probe -- buffered|direct [COUNT] [SIZE] [DIR]
//! ```
//! DIR (default: the current directory) should be on the disk the journal will use; the
//! probe file is deleted at the end.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use io_uring::{IoUring, opcode, squeue, types};

/// The `RWF_DSYNC` flag of `pwritev2` (linux/fs.h): this write is durable when it completes.
const RWF_DSYNC: i32 = 0x2;
const FILE_SIZE: u64 = 64 << 20;
const ALIGN: usize = 4096;

fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let direct = match args.get(1).map(String::as_str) {
        Some("direct") => true,
        Some("buffered") => false,
        _ => {
            eprintln!("usage: sync_probe buffered|direct [COUNT] [SIZE] [DIR]");
            std::process::exit(2);
        }
    };
    let count: usize = args.get(2).map_or(5000, |n| n.parse().expect("COUNT"));
    let size: usize = args.get(3).map_or(8192, |n| n.parse().expect("SIZE"));
    assert!(
        size.is_multiple_of(ALIGN) && size > 0 && (size as u64) < FILE_SIZE,
        "SIZE must be a multiple of {ALIGN}"
    );
    let dir = args
        .get(4)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let path = dir.join(format!("sync-probe-{}.tmp", std::process::id()));

    {
        let file = std::fs::File::create(&path).expect("create the probe file");
        let mut out = std::io::BufWriter::new(&file);
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..FILE_SIZE >> 20 {
            out.write_all(&zeros).expect("zero-fill the probe file");
        }
        out.flush().expect("zero-fill the probe file");
        drop(out);
        file.sync_all().expect("sync the probe file");
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let file = options.open(&path).expect("open the probe file");
    let fd = types::Fd(file.as_raw_fd());
    let mut ring = IoUring::new(8).expect("io_uring");

    // O_DIRECT needs a block-aligned buffer.
    let layout = std::alloc::Layout::from_size_align(size, ALIGN).unwrap();
    // SAFETY: the layout has a non-zero size; the buffer is freed at the end.
    #[allow(unsafe_code)]
    let buf = unsafe { std::alloc::alloc(layout) };
    assert!(!buf.is_null());
    // SAFETY: `buf` holds `size` bytes.
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::write_bytes(buf, b'x', size);
    }

    let mut latencies = Vec::with_capacity(count);
    let mut offset = 0u64;
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    for _ in 0..count {
        let op_started = Instant::now();
        let len = u32::try_from(size).unwrap();
        let expected = if direct { 1 } else { 2 };
        let write = opcode::Write::new(fd, buf, len).offset(offset);
        // SAFETY: `buf` outlives the operations, which complete before the next round.
        #[allow(unsafe_code)]
        unsafe {
            if direct {
                ring.submission()
                    .push(&write.rw_flags(RWF_DSYNC).build())
                    .unwrap();
            } else {
                let sync = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                ring.submission()
                    .push(&write.build().flags(squeue::Flags::IO_LINK))
                    .unwrap();
                ring.submission().push(&sync).unwrap();
            }
        }
        ring.submit_and_wait(expected).expect("io_uring_enter");
        for completion in ring.completion() {
            assert!(
                completion.result() >= 0,
                "write or sync failed: {}",
                std::io::Error::from_raw_os_error(-completion.result())
            );
        }
        latencies.push(op_started.elapsed());
        offset += size as u64;
        if offset + size as u64 > FILE_SIZE {
            offset = 0;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    // SAFETY: allocated above with this layout.
    #[allow(unsafe_code)]
    unsafe {
        std::alloc::dealloc(buf, layout);
    }
    drop(file);
    std::fs::remove_file(&path).expect("delete the probe file");

    latencies.sort();
    // The latency at `per_mille` thousandths of the sorted list.
    let at = |per_mille: usize| latencies[(count * per_mille / 1000).min(count - 1)].as_micros();
    println!(
        "{} {size} B: {:.0} durable writes/s, p50 {} p90 {} p99 {} max {} µs, {:.1} µs CPU each",
        if direct {
            "direct (O_DIRECT + RWF_DSYNC)"
        } else {
            "buffered (write + fdatasync)"
        },
        count as f64 / elapsed,
        at(500),
        at(900),
        at(990),
        latencies[count - 1].as_micros(),
        cpu / count as f64 * 1e6,
    );
}
