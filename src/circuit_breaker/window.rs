//! A sliding window of call outcomes, made of time buckets of atomics.
//!
//! Time is cut into ticks of one bucket width, counted from the breaker's
//! creation. The window is the last `n` ticks, the current one included: an
//! outcome recorded at tick `t` counts while the current tick is below
//! `t + n`, and is forgotten after that, whatever the breaker did in between.
//!
//! Bucket `t % n` holds tick `t`. Each bucket has two words that change
//! with one compare-and-swap each:
//!
//! ```text
//! tick:   tick it holds (56 bits) | use (8 bits)
//! counts: use (8 bits) | calls (28 bits) | failures (28 bits)
//! slow:   use (8 bits) | slow calls (56 bits)
//! ```
//!
//! *use* counts, modulo 256, the times the bucket was moved on to a new
//! tick. Recording first moves the bucket's tick forward to the current
//! tick (bumping its use), then adds to the counts if they carry the
//! bucket's current use, or replaces them if they carry an older one. Counts
//! of an older use therefore never mix with the new tick's, however long the
//! bucket sat idle, and no thread ever waits for another: reusing a bucket
//! needs no lock and no "being reset" state. A reader takes a bucket's
//! counts only when they carry the use of the tick it holds.
//!
//! The one approximation: a thread stalled between reading a bucket and
//! writing it while the bucket is reused 128 times could add its one
//! outcome to the wrong tick. With the default window that is a stall of
//! twenty minutes.
//!
//! Each bucket's counts are split in *stripes*, one per core up to eight,
//! each on a cache line of its own; a thread always records in the same
//! stripe, and a reader adds the stripes up. Without them, every call
//! completing on two cores at once would move the bucket's cache line from
//! one core to the other. The tick word is shared by the stripes: it is
//! written once per bucket width.
//!
//! Counts saturate at 2^28 − 1 (268 million calls per bucket and stripe).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::time::saturating_nanos;

const USE_BITS: u32 = 8;
const USE_MASK: u64 = (1 << USE_BITS) - 1;
const TICK_MAX: u64 = (1 << (64 - USE_BITS)) - 1;
const TAG_SHIFT: u32 = 64 - USE_BITS;
const FIELD_BITS: u32 = 28;
const FIELD_MAX: u64 = (1 << FIELD_BITS) - 1;
const SLOW_MAX: u64 = (1 << TAG_SHIFT) - 1;

/// The counts of the window at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// One thread's share of a bucket's counts, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Stripe {
    counts: AtomicU64,
    slow: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Window {
    // The tick word of each bucket: read by every call, written once per
    // bucket width.
    ticks: Box<[AtomicU64]>,
    // `stripes` stripes per bucket, bucket after bucket.
    counts: Box<[Stripe]>,
    stripes: usize,
    bucket_nanos: u64,
}

/// At most this many stripes per bucket, and at most this many stripes in
/// all (64 bytes each).
const MAX_STRIPES: usize = 8;
const MAX_TOTAL_STRIPES: usize = 1024;

/// This thread's stripe number (to be taken modulo the number of stripes):
/// threads are numbered in the order they first record.
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed);
    }
    STRIPE.with(|stripe| *stripe)
}

impl Window {
    /// A window of `n` buckets of `bucket` each, each bucket's counts
    /// split in up to `stripes` stripes. The builder checks that `n >= 1`.
    pub(crate) fn new(n: u32, bucket: Duration, stripes: usize) -> Self {
        let n = n.max(1) as usize;
        // A power of two, so that picking one is a mask, not a division.
        let stripes = prev_power_of_two(
            stripes
                .clamp(1, MAX_STRIPES)
                .min((MAX_TOTAL_STRIPES / n).max(1)),
        );
        // Bucket i holds tick i, use 0, with nothing in it.
        let ticks = (0..n as u64)
            .map(|i| AtomicU64::new(i << USE_BITS))
            .collect();
        let counts = (0..n * stripes).map(|_| Stripe::default()).collect();
        Self {
            ticks,
            counts,
            stripes,
            bucket_nanos: saturating_nanos(bucket).max(1),
        }
    }

    fn len(&self) -> u64 {
        self.ticks.len() as u64
    }

    fn stripes_of(&self, index: usize) -> &[Stripe] {
        &self.counts[index * self.stripes..(index + 1) * self.stripes]
    }

    /// The tick of a moment, given as the time since the breaker's creation.
    pub(crate) fn tick(&self, since_start: Duration) -> u64 {
        (saturating_nanos(since_start) / self.bucket_nanos).min(TICK_MAX)
    }

    /// Records one outcome at `tick`. `slow` is `None` when slow calls are
    /// not tracked.
    pub(crate) fn record(&self, tick: u64, failure: bool, slow: Option<bool>) {
        let index = (tick % self.len()) as usize;
        let held = &self.ticks[index];
        let mut word = held.load(Relaxed);
        while word >> USE_BITS < tick {
            let next = (tick << USE_BITS) | ((word + 1) & USE_MASK);
            match held.compare_exchange_weak(word, next, Relaxed, Relaxed) {
                Ok(_) => word = next,
                Err(current) => word = current,
            }
        }
        if word >> USE_BITS > tick {
            // This thread was so slow that the bucket has moved on to a later
            // tick: the outcome has already left the window.
            return;
        }
        let tag = word & USE_MASK;
        let stripe = &self.stripes_of(index)[thread_stripe() & (self.stripes - 1)];
        add(&stripe.counts, tag, |w| {
            let calls = ((w >> FIELD_BITS) & FIELD_MAX) + 1;
            let failures = (w & FIELD_MAX) + u64::from(failure);
            (calls.min(FIELD_MAX) << FIELD_BITS) | failures.min(FIELD_MAX)
        });
        if slow == Some(true) {
            add(&stripe.slow, tag, |w| ((w & SLOW_MAX) + 1).min(SLOW_MAX));
        }
    }

    /// The counts of the window whose current tick is `now`.
    pub(crate) fn sum(&self, now: u64) -> Counts {
        self.sum_last(now, self.len())
    }

    /// The counts of the last `buckets` buckets up to tick `now` (the
    /// current one included).
    pub(crate) fn sum_last(&self, now: u64, buckets: u64) -> Counts {
        let mut sum = Counts::default();
        let buckets = buckets.clamp(1, self.len());
        for (index, held) in self.ticks.iter().enumerate() {
            let word = held.load(Relaxed);
            // A tick a little ahead of `now` was recorded by a thread whose
            // clock read came later than ours: it is in the window too.
            if now.saturating_sub(word >> USE_BITS) >= buckets {
                continue;
            }
            let tag = word & USE_MASK;
            for stripe in self.stripes_of(index) {
                let counts = stripe.counts.load(Relaxed);
                if counts >> TAG_SHIFT == tag {
                    sum.calls += (counts >> FIELD_BITS) & FIELD_MAX;
                    sum.failures += counts & FIELD_MAX;
                }
                let slow = stripe.slow.load(Relaxed);
                if slow >> TAG_SHIFT == tag {
                    sum.slow += slow & SLOW_MAX;
                }
            }
        }
        sum
    }

    /// Forgets every outcome recorded so far.
    pub(crate) fn clear(&self) {
        for (index, held) in self.ticks.iter().enumerate() {
            let tag = (held.load(Relaxed) & USE_MASK) << TAG_SHIFT;
            for stripe in self.stripes_of(index) {
                stripe.counts.store(tag, Relaxed);
                stripe.slow.store(tag, Relaxed);
            }
        }
    }
}

/// Applies `f` to the counts in `word` if they carry use `tag`, or starts
/// them from zero if they carry an older use. Counts of a newer use (this
/// thread fell behind while the bucket moved on) are left alone.
fn add(word: &AtomicU64, tag: u64, f: impl Fn(u64) -> u64) {
    let mut current = word.load(Relaxed);
    loop {
        let held = current >> TAG_SHIFT;
        let counts = if held == tag {
            current & SLOW_MAX
        } else if tag.wrapping_sub(held) & USE_MASK < 0x80 {
            // An older use: those counts belong to a tick that has left the
            // window.
            0
        } else {
            return;
        };
        let new = (tag << TAG_SHIFT) | f(counts);
        match word.compare_exchange_weak(current, new, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn counts_what_was_recorded_in_the_last_n_ticks() {
        let w = Window::new(10, SECOND, 4);
        w.record(0, true, None);
        w.record(3, false, None);
        w.record(9, true, None);
        assert_eq!(
            w.sum(9),
            Counts {
                calls: 3,
                failures: 2,
                slow: 0
            }
        );
        // Tick 0 leaves the window at tick 10, tick 3 at tick 13.
        assert_eq!(w.sum(10).calls, 2);
        assert_eq!(w.sum(12).calls, 2);
        assert_eq!(w.sum(13).calls, 1);
        assert_eq!(w.sum(19), Counts::default());
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let w = Window::new(4, SECOND, 4);
        for _ in 0..5 {
            w.record(1, true, Some(true));
        }
        // Tick 5 reuses the bucket of tick 1.
        w.record(5, false, Some(false));
        assert_eq!(
            w.sum(5),
            Counts {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn a_late_outcome_does_not_overwrite_a_newer_round() {
        let w = Window::new(4, SECOND, 4);
        w.record(5, true, None);
        // A thread that read the clock at tick 1 and records only now.
        w.record(1, false, None);
        assert_eq!(
            w.sum(5),
            Counts {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
    }

    #[test]
    fn long_idle_periods_do_not_bring_old_counts_back() {
        let w = Window::new(10, SECOND, 4);
        w.record(7, true, None);
        // 256 rounds later, the tick's round has the same low byte again.
        let later = 7 + 256 * 10;
        assert_eq!(w.sum(later), Counts::default());
        w.record(later, false, None);
        assert_eq!(w.sum(later).failures, 0);
        assert_eq!(w.sum(later).calls, 1);
    }

    #[test]
    fn clear_forgets_everything() {
        let w = Window::new(10, SECOND, 4);
        w.record(2, true, Some(true));
        w.record(3, true, None);
        w.clear();
        assert_eq!(w.sum(3), Counts::default());
        w.record(3, false, None);
        assert_eq!(w.sum(3).calls, 1);
    }

    #[test]
    fn ticks_are_bucket_widths_since_the_start() {
        let w = Window::new(10, Duration::from_millis(250), 1);
        assert_eq!(w.tick(Duration::ZERO), 0);
        assert_eq!(w.tick(Duration::from_millis(249)), 0);
        assert_eq!(w.tick(Duration::from_millis(250)), 1);
        assert_eq!(w.tick(Duration::from_secs(10)), 40);
    }

    #[test]
    fn stripes_are_a_power_of_two_and_bounded() {
        assert_eq!(Window::new(10, SECOND, 1).stripes, 1);
        assert_eq!(Window::new(10, SECOND, 3).stripes, 2);
        assert_eq!(Window::new(10, SECOND, 64).stripes, 8);
        assert_eq!(Window::new(1000, SECOND, 64).stripes, 1);
        assert_eq!(Window::new(300, SECOND, 64).stripes, 2);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let w = std::sync::Arc::new(Window::new(10, SECOND, 4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for n in 0..10_000u64 {
                        // Every thread crosses ticks 0..=4 in step with the
                        // others, reusing no bucket.
                        w.record(n / 2_000, (n + i) % 2 == 0, None);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let sum = w.sum(4);
        assert_eq!(sum.calls, 40_000);
        assert_eq!(sum.failures, 20_000);
    }
}
