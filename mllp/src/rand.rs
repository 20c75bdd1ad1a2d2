//! A small deterministic pseudo-random generator, shared by the load generator (message
//! templates, arrival times, injected faults), the benches and the tests, so that a run can be
//! repeated from its seed.

/// A xorshift64 generator: deterministic for a seed, tiny, and no dependency. Not for
/// anything that needs unpredictability (keys, nonces).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed`; every seed, zero included, gives a usable (non-zero) state, and
    /// consecutive seeds start far apart.
    pub fn new(seed: u64) -> Self {
        Self(
            seed.wrapping_add(0x9E37_79B9_7F4A_7C15)
                .wrapping_mul(0xBF58_476D_1CE4_E5B9)
                | 1,
        )
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value uniformly distributed in `[0, 1)`, from the top 53 bits (an `f64`'s precision).
    pub fn unit(&mut self) -> f64 {
        // 53 bits convert to f64 exactly.
        #[allow(clippy::cast_precision_loss)]
        let top = (self.next_u64() >> 11) as f64;
        top / (1u64 << 53) as f64
    }

    /// A value in `0..n` (`n > 0`); the modulo bias (below 2^-40 for any `n` under 2^24) does
    /// not matter for test data or load shapes.
    pub fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        usize::try_from(self.next_u64() % n).unwrap_or(0)
    }

    /// One element of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_sequence_and_seeds_differ() {
        let take = |seed| {
            let mut rng = XorShift::new(seed);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(take(7), take(7));
        assert_ne!(take(7), take(8));
        // Zero is a usable seed (xorshift's state must not be zero).
        assert!(take(0).iter().all(|&x| x != 0));
    }

    #[test]
    fn unit_below_and_pick_stay_in_range() {
        let mut rng = XorShift::new(42);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u), "{u}");
            assert!(rng.below(7) < 7);
            assert!([3, 5].contains(&rng.pick(&[3, 5])));
        }
        assert_eq!(rng.below(1), 0);
    }
}
