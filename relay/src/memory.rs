//! Handing memory the relay no longer uses back to the operating system.
//!
//! The binaries use mimalloc as the global allocator. When a page of small objects becomes
//! free (a burst of TLS handshakes is over, a thousand connections went idle and dropped their
//! buffers), mimalloc does not return it at once: it schedules a purge after a delay (1 s by
//! default), and it only carries out scheduled purges from inside a later allocation or
//! collection *on some thread*. An idle relay allocates nothing, so without help the memory a
//! burst freed stays resident for as long as the relay stays idle: about half of the RSS per
//! idle TLS connection, measured with the periodic collection turned off.
//!
//! [`return_freed_memory`] is that help; each worker calls it on a slow tick. It is cheap
//! (it visits the calling thread's own pages and the arenas whose purge delay has passed) and
//! never frees anything that is in use. Where mimalloc is not the global allocator (the
//! library's tests), it finds nothing to do.

// The only `unsafe` outside `mllp::scan`: one call into mimalloc's C API. `mi_collect` has no
// preconditions (any thread, any time); it only takes the calling thread's heap lock-free.
#![allow(unsafe_code)]

use std::time::Duration;

/// How often each worker hands freed memory back: as often as the allocator's purge delay
/// (1 s), so memory freed by a burst goes back within two or three seconds, while the cost (a
/// few microseconds per call) stays invisible.
pub(crate) const RETURN_PERIOD: Duration = Duration::from_secs(1);

/// Carries out the purges mimalloc has scheduled whose delay has passed, and returns this
/// thread's fully free pages to the shared arenas (from where the next such call purges them).
pub(crate) fn return_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and has no preconditions; mimalloc documents it
    // as safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(false) }
}
