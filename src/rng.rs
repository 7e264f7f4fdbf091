//! A small, seedable, lock-free random number generator.
//!
//! Layers that draw random numbers on the request path (fault injection now;
//! jitter and power-of-two-choices later) share one generator between every
//! clone of a service. A mutex around a `rand` generator would be a lock on
//! the request path, so this is SplitMix64 (Steele, Lea and Flood, "Fast
//! splittable pseudorandom number generators", OOPSLA 2014) over one atomic
//! counter: each draw is a single `fetch_add` followed by a pure mixing
//! function. Two generators built from the same seed give the same sequence
//! of draws, whichever clones make them, so seeded tests are reproducible.
//!
//! It is not a cryptographic generator and must never be used as one.

use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug)]
pub(crate) struct Rng {
    state: AtomicU64,
}

impl Rng {
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded differently in every process.
    pub(crate) fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // `RandomState` is seeded from the operating system's randomness once
        // per process; hashing nothing with it yields a fresh random u64.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::from_seed(seed)
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        mix(z)
    }

    /// A uniform float in `[0, 1)`, with 53 bits of precision.
    pub(crate) fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_sequence() {
        let a = Rng::from_seed(7);
        let b = Rng::from_seed(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn matches_the_reference_splitmix64_output() {
        // First outputs of the reference implementation for seed 1234567.
        let rng = Rng::from_seed(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
    }

    #[test]
    fn floats_are_in_the_unit_interval_and_spread() {
        let rng = Rng::from_seed(42);
        let mut below_half = 0;
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            if x < 0.5 {
                below_half += 1;
            }
        }
        assert!((4_800..5_200).contains(&below_half), "{below_half}");
    }
}
