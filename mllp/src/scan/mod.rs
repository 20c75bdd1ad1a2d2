//! Finding framing bytes in a slice, fast.
//!
//! The deframer spends nearly all of its time looking for two bytes: the start byte (VT) and
//! the first end byte (FS). HL7 payloads are long runs of printable text with neither, so the
//! search is a vector compare over 16 or 32 bytes at a time.
//!
//! Three searches are offered, each with the same answer on every engine:
//! - [`Scanner::find_byte`]: first position of one byte (memchr);
//! - [`Scanner::find_either`]: first position of either of two bytes (memchr2), which is what
//!   the deframer runs inside a frame: the end byte ends it, the start byte is an error;
//! - [`Scanner::find_pair`]: first position of a two-byte sequence such as FS CR (memmem with
//!   a two-byte needle).
//!
//! # Engines
//! [`Engine::Scalar`] is the reference: a plain loop, obviously correct, always compiled, and
//! the engine on every architecture but x86_64. On x86_64, [`Engine::Sse2`] (always present
//! there) and [`Engine::Avx2`] (when the CPU has it) run the same block algorithm on 16- and
//! 32-byte vectors. [`Scanner::new`] picks the best engine the CPU supports;
//! [`Scanner::with_engine`] forces one, for tests and benchmarks, and returns `None` when the
//! CPU lacks it. Every engine is tested equal to the scalar reference at every length from 0
//! to 300 and every alignment, and on large random buffers (see the `proptests` crate).
//!
//! NEON on aarch64 is not implemented: we cannot test it on our machines, and an untested SIMD
//! path is worse than the scalar one.
//!
//! This is the only module of the protocol core with `unsafe` code, all of it in the
//! architecture-specific submodule, each block with a `SAFETY` comment (the workspace's one
//! other `unsafe` block is `relay::memory`'s call into the allocator).

pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(test)]
mod tests;

/// A search implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// The byte-at-a-time reference.
    Scalar,
    /// 16-byte vectors (x86_64 baseline).
    Sse2,
    /// 32-byte vectors (x86_64 with AVX2).
    Avx2,
}

impl Engine {
    /// Every engine this crate knows, best last; some may be unavailable on this CPU.
    pub const ALL: [Self; 3] = [Self::Scalar, Self::Sse2, Self::Avx2];

    /// A short lower-case name, for logs and benchmark ids.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Sse2 => "sse2",
            Self::Avx2 => "avx2",
        }
    }

    /// Parses a [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(name))
    }

    /// Whether this CPU can run the engine.
    pub fn is_available(self) -> bool {
        Scanner::with_engine(self).is_some()
    }

    /// The best engine this CPU supports.
    pub fn detect() -> Self {
        Scanner::new().engine()
    }
}

/// The chosen engine, carrying the proof that the CPU supports it.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Sse2(x86_64::Sse2),
    #[cfg(target_arch = "x86_64")]
    Avx2(x86_64::Avx2),
}

/// Searches byte slices with one engine, chosen once.
///
/// `Copy` and one word wide: keep one per connection or per worker and call it on every read.
#[derive(Debug, Clone, Copy)]
pub struct Scanner {
    backend: Backend,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// A scanner with the best engine this CPU supports.
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(avx2) = x86_64::Avx2::new() {
                return Self {
                    backend: Backend::Avx2(avx2),
                };
            }
            Self {
                backend: Backend::Sse2(x86_64::Sse2::new()),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self {
                backend: Backend::Scalar,
            }
        }
    }

    /// A scanner forced to `engine`, or `None` if this CPU cannot run it.
    pub fn with_engine(engine: Engine) -> Option<Self> {
        let backend = match engine {
            Engine::Scalar => Backend::Scalar,
            #[cfg(target_arch = "x86_64")]
            Engine::Sse2 => Backend::Sse2(x86_64::Sse2::new()),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2 => Backend::Avx2(x86_64::Avx2::new()?),
            #[cfg(not(target_arch = "x86_64"))]
            Engine::Sse2 | Engine::Avx2 => return None,
        };
        Some(Self { backend })
    }

    /// The engine in use.
    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Scalar => Engine::Scalar,
            #[cfg(target_arch = "x86_64")]
            Backend::Sse2(_) => Engine::Sse2,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(_) => Engine::Avx2,
        }
    }

    /// Position of the first `needle` in `haystack`.
    #[inline]
    pub fn find_byte(&self, haystack: &[u8], needle: u8) -> Option<usize> {
        match self.backend {
            Backend::Scalar => scalar::find_byte(haystack, needle),
            #[cfg(target_arch = "x86_64")]
            Backend::Sse2(e) => e.find_byte(haystack, needle),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(e) => e.find_byte(haystack, needle),
        }
    }

    /// Position of the first byte of `haystack` that is `a` or `b`.
    #[inline]
    pub fn find_either(&self, haystack: &[u8], a: u8, b: u8) -> Option<usize> {
        match self.backend {
            Backend::Scalar => scalar::find_either(haystack, a, b),
            #[cfg(target_arch = "x86_64")]
            Backend::Sse2(e) => e.find_either(haystack, a, b),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(e) => e.find_either(haystack, a, b),
        }
    }

    /// Position of the first `first` that is immediately followed by `second`.
    #[inline]
    pub fn find_pair(&self, haystack: &[u8], first: u8, second: u8) -> Option<usize> {
        match self.backend {
            Backend::Scalar => scalar::find_pair(haystack, first, second),
            #[cfg(target_arch = "x86_64")]
            Backend::Sse2(e) => e.find_pair(haystack, first, second),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(e) => e.find_pair(haystack, first, second),
        }
    }
}
