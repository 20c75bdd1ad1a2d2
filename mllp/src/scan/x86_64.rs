//! SSE2 and AVX2 engines: one block algorithm, written once over a [`Vector`] trait and
//! compiled twice, inside `#[target_feature]` functions.
//!
//! # The algorithm (the same for all three searches)
//!
//! ```text
//! match(block) = lanes of block equal to a needle (for find_pair: lanes i where
//!                block_at(i) == first AND block_at(i + 1) == second)
//! i = 0
//! while 4 blocks remain:                      # unrolled: one branch per 4 blocks
//!     m0..m3 = match(block at i), … , match(block at i + 3·W)
//!     if any lane of (m0 | m1 | m2 | m3) is set:
//!         return i + position of the first set lane, looking at m0, m1, m2, m3 in order
//!     i += 4·W
//! while 1 block remains: same with one block
//! if bytes remain (fewer than W):
//!     load the LAST W bytes of the haystack (they overlap bytes already searched),
//!     shift the already-searched lanes out of the mask, test as above
//! ```
//!
//! The overlapping final load avoids a scalar tail loop and never reads outside the slice.
//! Haystacks shorter than one vector go to the smaller engine or the scalar loop.
//!
//! # Safety contract
//! Every `unsafe fn` here requires (a) that the CPU supports the vector width's target feature,
//! which is guaranteed by holding an [`Sse2`] or [`Avx2`] value (only constructible after
//! detection), and (b) the pointer arithmetic bounds stated at each load.

#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, __m256i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8,
    _mm_or_si128, _mm_set1_epi8, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_loadu_si256,
    _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
};

use super::scalar;

/// Proof that SSE2 is available; on x86_64 it always is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sse2(());

impl Sse2 {
    pub(super) fn new() -> Self {
        // SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
        Self(())
    }

    #[inline]
    pub(super) fn find_byte(self, haystack: &[u8], needle: u8) -> Option<usize> {
        if haystack.len() < 16 {
            return scalar::find_byte(haystack, needle);
        }
        // SAFETY: `self` proves SSE2; the haystack holds at least one 16-byte vector.
        unsafe { sse2_find_byte(haystack, needle) }
    }

    #[inline]
    pub(super) fn find_either(self, haystack: &[u8], a: u8, b: u8) -> Option<usize> {
        if haystack.len() < 16 {
            return scalar::find_either(haystack, a, b);
        }
        // SAFETY: `self` proves SSE2; the haystack holds at least one 16-byte vector.
        unsafe { sse2_find_either(haystack, a, b) }
    }

    #[inline]
    pub(super) fn find_pair(self, haystack: &[u8], first: u8, second: u8) -> Option<usize> {
        if haystack.len() < 17 {
            return scalar::find_pair(haystack, first, second);
        }
        // SAFETY: `self` proves SSE2; the haystack holds one vector plus the byte after it.
        unsafe { sse2_find_pair(haystack, first, second) }
    }
}

/// Proof that AVX2 is available, made only by [`Avx2::new`] after run-time detection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx2(());

impl Avx2 {
    pub(super) fn new() -> Option<Self> {
        std::is_x86_feature_detected!("avx2").then_some(Self(()))
    }

    #[inline]
    pub(super) fn find_byte(self, haystack: &[u8], needle: u8) -> Option<usize> {
        if haystack.len() < 32 {
            return Sse2::new().find_byte(haystack, needle);
        }
        // SAFETY: `self` proves AVX2; the haystack holds at least one 32-byte vector.
        unsafe { avx2_find_byte(haystack, needle) }
    }

    #[inline]
    pub(super) fn find_either(self, haystack: &[u8], a: u8, b: u8) -> Option<usize> {
        if haystack.len() < 32 {
            return Sse2::new().find_either(haystack, a, b);
        }
        // SAFETY: `self` proves AVX2; the haystack holds at least one 32-byte vector.
        unsafe { avx2_find_either(haystack, a, b) }
    }

    #[inline]
    pub(super) fn find_pair(self, haystack: &[u8], first: u8, second: u8) -> Option<usize> {
        if haystack.len() < 33 {
            return Sse2::new().find_pair(haystack, first, second);
        }
        // SAFETY: `self` proves AVX2; the haystack holds one vector plus the byte after it.
        unsafe { avx2_find_pair(haystack, first, second) }
    }
}

#[target_feature(enable = "sse2")]
unsafe fn sse2_find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    // SAFETY: forwarded contract: SSE2 available, haystack.len() >= 16.
    unsafe { find_byte::<__m128i>(haystack, needle) }
}

#[target_feature(enable = "sse2")]
unsafe fn sse2_find_either(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    // SAFETY: forwarded contract: SSE2 available, haystack.len() >= 16.
    unsafe { find_either::<__m128i>(haystack, a, b) }
}

#[target_feature(enable = "sse2")]
unsafe fn sse2_find_pair(haystack: &[u8], first: u8, second: u8) -> Option<usize> {
    // SAFETY: forwarded contract: SSE2 available, haystack.len() >= 17.
    unsafe { find_pair::<__m128i>(haystack, first, second) }
}

#[target_feature(enable = "avx2")]
unsafe fn avx2_find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    // SAFETY: forwarded contract: AVX2 available, haystack.len() >= 32.
    unsafe { find_byte::<__m256i>(haystack, needle) }
}

#[target_feature(enable = "avx2")]
unsafe fn avx2_find_either(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    // SAFETY: forwarded contract: AVX2 available, haystack.len() >= 32.
    unsafe { find_either::<__m256i>(haystack, a, b) }
}

#[target_feature(enable = "avx2")]
unsafe fn avx2_find_pair(haystack: &[u8], first: u8, second: u8) -> Option<usize> {
    // SAFETY: forwarded contract: AVX2 available, haystack.len() >= 33.
    unsafe { find_pair::<__m256i>(haystack, first, second) }
}

/// The operations the block algorithm needs from a vector register.
///
/// # Safety
/// Implementations are `#[inline(always)]` so that they inline into the `#[target_feature]`
/// function that calls them; callers must only use an implementation when the CPU supports
/// its feature.
trait Vector: Copy {
    /// Lanes (bytes) per vector.
    const LANES: usize;
    unsafe fn splat(byte: u8) -> Self;
    /// Loads `LANES` bytes from `ptr`, which need not be aligned.
    unsafe fn load(ptr: *const u8) -> Self;
    unsafe fn eq(self, other: Self) -> Self;
    unsafe fn or(self, other: Self) -> Self;
    unsafe fn and(self, other: Self) -> Self;
    /// One bit per lane, lane 0 in bit 0.
    unsafe fn mask(self) -> u32;
}

impl Vector for __m128i {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(byte: u8) -> Self {
        // SAFETY: trait contract: SSE2 is available.
        unsafe { _mm_set1_epi8(byte.cast_signed()) }
    }
    #[inline(always)]
    unsafe fn load(ptr: *const u8) -> Self {
        // SAFETY: trait contract: SSE2 is available and `ptr..ptr + 16` is readable.
        unsafe { _mm_loadu_si128(ptr.cast()) }
    }
    #[inline(always)]
    unsafe fn eq(self, other: Self) -> Self {
        // SAFETY: trait contract: SSE2 is available.
        unsafe { _mm_cmpeq_epi8(self, other) }
    }
    #[inline(always)]
    unsafe fn or(self, other: Self) -> Self {
        // SAFETY: trait contract: SSE2 is available.
        unsafe { _mm_or_si128(self, other) }
    }
    #[inline(always)]
    unsafe fn and(self, other: Self) -> Self {
        // SAFETY: trait contract: SSE2 is available.
        unsafe { _mm_and_si128(self, other) }
    }
    #[inline(always)]
    unsafe fn mask(self) -> u32 {
        // SAFETY: trait contract: SSE2 is available. The movemask of 16 lanes fits in the
        // low 16 bits, so the sign-preserving cast is exact.
        unsafe { _mm_movemask_epi8(self).cast_unsigned() }
    }
}

impl Vector for __m256i {
    const LANES: usize = 32;
    #[inline(always)]
    unsafe fn splat(byte: u8) -> Self {
        // SAFETY: trait contract: AVX2 is available.
        unsafe { _mm256_set1_epi8(byte.cast_signed()) }
    }
    #[inline(always)]
    unsafe fn load(ptr: *const u8) -> Self {
        // SAFETY: trait contract: AVX2 is available and `ptr..ptr + 32` is readable.
        unsafe { _mm256_loadu_si256(ptr.cast()) }
    }
    #[inline(always)]
    unsafe fn eq(self, other: Self) -> Self {
        // SAFETY: trait contract: AVX2 is available.
        unsafe { _mm256_cmpeq_epi8(self, other) }
    }
    #[inline(always)]
    unsafe fn or(self, other: Self) -> Self {
        // SAFETY: trait contract: AVX2 is available.
        unsafe { _mm256_or_si256(self, other) }
    }
    #[inline(always)]
    unsafe fn and(self, other: Self) -> Self {
        // SAFETY: trait contract: AVX2 is available.
        unsafe { _mm256_and_si256(self, other) }
    }
    #[inline(always)]
    unsafe fn mask(self) -> u32 {
        // SAFETY: trait contract: AVX2 is available. All 32 bits are lane bits; the cast
        // reinterprets them without change.
        unsafe { _mm256_movemask_epi8(self).cast_unsigned() }
    }
}

/// The block algorithm of the module documentation, for any per-block match function.
///
/// `matches(offset)` returns the match lanes for the block starting at `offset`; `candidates`
/// is the number of positions that can match (the haystack length, or one less for a pair).
///
/// # Safety
/// `V`'s feature must be available; `candidates >= V::LANES`; and `matches(offset)` must be
/// sound to call for every `offset <= candidates - V::LANES`.
#[inline(always)]
unsafe fn search<V: Vector>(candidates: usize, matches: impl Fn(usize) -> V) -> Option<usize> {
    let w = V::LANES;
    let mut i = 0;
    while i + 4 * w <= candidates {
        let (m0, m1, m2, m3) = (
            matches(i),
            matches(i + w),
            matches(i + 2 * w),
            matches(i + 3 * w),
        );
        // SAFETY: the feature is available (contract).
        let any = unsafe { m0.or(m1).or(m2.or(m3)).mask() };
        if any != 0 {
            for (k, m) in [m0, m1, m2, m3].into_iter().enumerate() {
                // SAFETY: the feature is available (contract).
                let bits = unsafe { m.mask() };
                if bits != 0 {
                    return Some(i + k * w + bits.trailing_zeros() as usize);
                }
            }
        }
        i += 4 * w;
    }
    while i + w <= candidates {
        // SAFETY: the feature is available (contract).
        let bits = unsafe { matches(i).mask() };
        if bits != 0 {
            return Some(i + bits.trailing_zeros() as usize);
        }
        i += w;
    }
    if i < candidates {
        // The final block overlaps the last one searched: lanes below `i` were already
        // searched and are shifted out. `0 < i - last < w <= 32`, so the shift is in range.
        let last = candidates - w;
        // SAFETY: the feature is available (contract); `last <= candidates - w`.
        let bits = unsafe { matches(last).mask() } >> (i - last);
        if bits != 0 {
            return Some(i + bits.trailing_zeros() as usize);
        }
    }
    None
}

/// # Safety
/// `V`'s feature is available and `haystack.len() >= V::LANES`.
#[inline(always)]
unsafe fn find_byte<V: Vector>(haystack: &[u8], needle: u8) -> Option<usize> {
    let base = haystack.as_ptr();
    // SAFETY: the feature is available (contract).
    let n = unsafe { V::splat(needle) };
    // SAFETY: `search` only asks for offsets `<= len - LANES`, so each load of LANES bytes
    // stays inside the haystack; the feature is available (contract).
    let matches = |offset: usize| unsafe { V::load(base.add(offset)).eq(n) };
    // SAFETY: contract forwarded; candidates = len >= LANES.
    unsafe { search::<V>(haystack.len(), matches) }
}

/// # Safety
/// `V`'s feature is available and `haystack.len() >= V::LANES`.
#[inline(always)]
unsafe fn find_either<V: Vector>(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    let base = haystack.as_ptr();
    // SAFETY: the feature is available (contract).
    let (va, vb) = unsafe { (V::splat(a), V::splat(b)) };
    let matches = |offset: usize| {
        // SAFETY: `search` only asks for offsets `<= len - LANES`, so the load stays inside
        // the haystack; the feature is available (contract).
        unsafe {
            let block = V::load(base.add(offset));
            block.eq(va).or(block.eq(vb))
        }
    };
    // SAFETY: contract forwarded; candidates = len >= LANES.
    unsafe { search::<V>(haystack.len(), matches) }
}

/// # Safety
/// `V`'s feature is available and `haystack.len() >= V::LANES + 1`.
#[inline(always)]
unsafe fn find_pair<V: Vector>(haystack: &[u8], first: u8, second: u8) -> Option<usize> {
    let base = haystack.as_ptr();
    // SAFETY: the feature is available (contract).
    let (v1, v2) = unsafe { (V::splat(first), V::splat(second)) };
    let matches = |offset: usize| {
        // SAFETY: candidates = len - 1 and `search` only asks for offsets
        // `<= candidates - LANES`, so both loads (at offset and offset + 1) end at or before
        // `len`; the feature is available (contract).
        unsafe {
            let here = V::load(base.add(offset));
            let next = V::load(base.add(offset + 1));
            here.eq(v1).and(next.eq(v2))
        }
    };
    // SAFETY: contract forwarded; candidates = len - 1 >= LANES.
    unsafe { search::<V>(haystack.len() - 1, matches) }
}
