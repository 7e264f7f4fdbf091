//! The throttle's shared state: requests and accepts over a sliding window
//! of buckets, with running totals so that a request reads two counters,
//! not the whole window.
//!
//! The circuit breaker's window (`circuit_breaker::window`) records the
//! same kind of counts, but is summed bucket by bucket and stripe by stripe
//! when read, which the breaker does only when a call fails. The throttle
//! reads its counts on every request, so it keeps running totals instead,
//! and takes expired buckets off them when the window moves.
//!
//! A bucket and the totals each keep both counts in one `AtomicU64`
//! ([`Counts`]): recording an answer is one atomic add to the bucket and
//! one to the totals, where two counters each would take four, every one
//! on a cache line that every core serving requests writes; and a read of
//! the totals sees both counts of one moment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::observability::Series;
use crate::rng::Rng;
use crate::time::saturating_nanos;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub(crate) k: f64,
    pub(crate) max_probability: f64,
    pub(crate) min_requests: u64,
    pub(crate) retry_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            k: 2.0,
            max_probability: 0.9,
            min_requests: 60,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// A number of requests and of accepts in one word: the requests in the
/// high 32 bits, the accepts in the low 32, so that adding [`Counts::one`]
/// counts both at once and subtracting a bucket's word takes both off.
///
/// Each count is read as a signed 32-bit number: the totals may be one
/// count short for a moment (a rotation's subtraction seen before a racing
/// addition, see [`Window`]), and a short count must read as the small
/// negative number it is (clamped to zero), not borrow from its
/// neighbour. That holds up to 2^31 − 1 of each in a window: over the
/// default 60 s window, 35 million requests a second.
struct Counts;

impl Counts {
    const REQUEST: u64 = 1 << 32;

    /// The word that counts one request, accepted or not.
    const fn one(accepted: bool) -> u64 {
        Self::REQUEST | accepted as u64
    }

    /// `(requests, accepts)` of a word, each clamped to zero.
    fn read(word: u64) -> (u64, u64) {
        // The low half as the signed number it is; what is left, shifted,
        // is the high half with any borrow the low half took given back.
        let accepts = i64::from(word as u32 as i32);
        let requests = (word.wrapping_sub(accepts as u64) as i64) >> 32;
        (requests.max(0) as u64, accepts.max(0) as u64)
    }
}

/// Requests and accepts over the last `buckets.len()` bucket widths.
///
/// Counts go to the bucket of the current epoch and to the running totals;
/// when time moves into a new bucket, one caller (under a `try_lock`, once
/// per bucket width) empties the buckets that left the window and takes
/// their counts off the totals. A count racing with that lands in the
/// bucket being emptied or in the new one; either way the totals stay the
/// sum of the buckets.
#[derive(Debug)]
pub(crate) struct Window {
    origin: Instant,
    bucket_nanos: u64,
    /// Each bucket's [`Counts`].
    buckets: Box<[AtomicU64]>,
    /// The current bucket's number since `origin`.
    epoch: AtomicU64,
    /// The [`Counts`] of the whole window.
    totals: AtomicU64,
    rotate: Mutex<()>,
}

impl Window {
    pub(crate) fn new(bucket: Duration, buckets: usize, origin: Instant) -> Self {
        Self {
            origin,
            bucket_nanos: saturating_nanos(bucket).max(1),
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            totals: AtomicU64::new(0),
            rotate: Mutex::new(()),
        }
    }

    /// Moves the window to `now`, forgetting what left it.
    pub(crate) fn advance(&self, now: Instant) {
        let epoch = self.epoch_at(now);
        if epoch > self.epoch.load(Ordering::Acquire) {
            self.rotate(epoch);
        }
    }

    fn epoch_at(&self, now: Instant) -> u64 {
        // In 64 bits: a 128-bit division is a call into the compiler's
        // runtime.
        saturating_nanos(now.saturating_duration_since(self.origin)) / self.bucket_nanos
    }

    #[cold]
    fn rotate(&self, to: u64) {
        let Ok(_guard) = self.rotate.try_lock() else {
            // Someone else is rotating; count into the old bucket meanwhile.
            return;
        };
        let from = self.epoch.load(Ordering::Acquire);
        if to <= from {
            return;
        }
        let len = self.buckets.len() as u64;
        // Each epoch after `from` reuses the bucket of the epoch one window
        // before it; empty those (at most the whole ring).
        for epoch in (from + 1)..=to.min(from + len) {
            let counts = self.buckets[(epoch % len) as usize].swap(0, Ordering::Relaxed);
            self.totals.fetch_sub(counts, Ordering::Relaxed);
        }
        self.epoch.store(to, Ordering::Release);
    }

    /// Counts a request, and whether the upstream accepted it.
    pub(crate) fn record(&self, accepted: bool) {
        let len = self.buckets.len() as u64;
        let bucket = &self.buckets[(self.epoch.load(Ordering::Acquire) % len) as usize];
        // The bucket first, then the total: a rotation in between takes the
        // count off the total before it is added, never twice.
        let one = Counts::one(accepted);
        bucket.fetch_add(one, Ordering::Relaxed);
        self.totals.fetch_add(one, Ordering::Relaxed);
    }

    /// Requests and accepts in the window.
    pub(crate) fn totals(&self) -> (u64, u64) {
        // A rotation's subtraction may be seen before a racing addition:
        // `Counts::read` reads a count short for a moment as zero.
        Counts::read(self.totals.load(Ordering::Relaxed))
    }
}

/// Everything every clone of a [`Throttle`](super::Throttle) shares.
#[derive(Debug)]
pub(crate) struct Throttler {
    pub(crate) window: Window,
    settings: Settings,
    rng: Rng,
    rejected: AtomicU64,
    /// `tower_steady_shed_total{layer="throttle", throttle=name}`.
    pub(crate) shed: Series,
}

impl Throttler {
    pub(crate) fn new(settings: Settings, window: Window, rng: Rng, name: &str) -> Self {
        let shed = Series::new(
            "tower_steady_shed_total",
            &[("layer", "throttle"), ("throttle", name)],
        );
        // The series exists from the start, not from the first refusal.
        crate::observability::emit::described();
        shed.add(0);
        Self {
            window,
            settings,
            rng,
            rejected: AtomicU64::new(0),
            shed,
        }
    }

    pub(crate) fn retry_after(&self) -> Duration {
        self.settings.retry_after
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The SRE book's rejection probability for these counts.
    pub(crate) fn probability(&self, requests: u64, accepts: u64) -> f64 {
        if requests < self.settings.min_requests {
            return 0.0;
        }
        let requests = requests as f64;
        let p = (requests - self.settings.k * accepts as f64) / (requests + 1.0);
        p.clamp(0.0, self.settings.max_probability)
    }

    /// Whether to send a request now; `Err` with the probability it was
    /// refused with.
    pub(crate) fn admit(&self, now: Instant) -> Result<(), f64> {
        self.window.advance(now);
        let (requests, accepts) = self.window.totals();
        let p = self.probability(requests, accepts);
        if p > 0.0 && self.rng.next_f64() < p {
            // A refused request still counts as one: that is what keeps the
            // throttle from rising until the upstream recovers.
            self.window.record(false);
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn throttler(settings: Settings) -> (Throttler, Instant) {
        let now = Instant::now();
        (
            Throttler::new(
                settings,
                Window::new(SEC, 60, now),
                Rng::from_seed(1),
                "test",
            ),
            now,
        )
    }

    #[test]
    fn the_probability_is_the_sre_formula() {
        let (t, _) = throttler(Settings {
            min_requests: 0,
            max_probability: 1.0,
            ..Settings::default()
        });
        assert_eq!(t.probability(100, 50), 0.0);
        assert_eq!(t.probability(100, 60), 0.0);
        // (100 - 2 * 25) / 101
        assert_eq!(t.probability(100, 25), 50.0 / 101.0);
        assert_eq!(t.probability(99, 0), 0.99);
    }

    #[test]
    fn the_probability_is_capped_and_off_at_low_rates() {
        let (t, _) = throttler(Settings::default());
        assert_eq!(t.probability(59, 0), 0.0);
        assert_eq!(t.probability(60, 0), 0.9);
        assert_eq!(t.probability(1000, 0), 0.9);
    }

    #[test]
    fn counts_leave_the_window_after_it_passes() {
        let now = Instant::now();
        let w = Window::new(SEC, 3, now);
        w.record(true);
        w.advance(now + SEC);
        w.record(false);
        assert_eq!(w.totals(), (2, 1));
        w.advance(now + SEC * 3);
        // The first bucket's counts are gone.
        assert_eq!(w.totals(), (1, 0));
        w.advance(now + SEC * 100);
        assert_eq!(w.totals(), (0, 0));
        w.record(true);
        assert_eq!(w.totals(), (1, 1));
    }

    #[test]
    fn both_counts_share_a_word_and_a_short_count_reads_as_zero() {
        let word = |requests: i64, accepts: i64| (requests << 32).wrapping_add(accepts) as u64;
        assert_eq!(Counts::read(0), (0, 0));
        assert_eq!(Counts::read(Counts::one(true)), (1, 1));
        assert_eq!(Counts::read(Counts::one(false)), (1, 0));
        assert_eq!(Counts::read(word(7, 3)), (7, 3));
        // Counts one short for a moment: the low half's borrow is not
        // taken from the requests, and neither half reads as a huge number.
        assert_eq!(Counts::read(word(5, -1)), (5, 0));
        assert_eq!(Counts::read(word(-1, 0)), (0, 0));
        assert_eq!(Counts::read(word(-1, -1)), (0, 0));
        let most = i64::from(i32::MAX);
        assert_eq!(Counts::read(word(most, most)), (most as u64, most as u64));
        // Subtracting a bucket's word takes both of its counts off.
        let totals = word(10, 4).wrapping_sub(word(3, 2));
        assert_eq!(Counts::read(totals), (7, 2));
    }

    #[test]
    fn a_rotation_racing_a_record_never_reads_as_a_full_window() {
        // The count lands in the bucket, the rotation takes the bucket off
        // the totals, and only then is the count added to the totals.
        let now = Instant::now();
        let w = Window::new(SEC, 2, now);
        let one = Counts::one(false);
        w.buckets[0].fetch_add(one, Ordering::Relaxed);
        w.advance(now + SEC * 2);
        assert_eq!(w.totals(), (0, 0), "one short, read as none");
        w.totals.fetch_add(one, Ordering::Relaxed);
        assert_eq!(w.totals(), (0, 0));
        w.record(true);
        assert_eq!(w.totals(), (1, 1));
    }

    #[test]
    fn refusals_count_as_requests() {
        let (t, now) = throttler(Settings {
            min_requests: 10,
            max_probability: 1.0,
            ..Settings::default()
        });
        for _ in 0..10 {
            t.window.record(false);
        }
        let mut refused = 0;
        for _ in 0..100 {
            if t.admit(now).is_err() {
                refused += 1;
            } else {
                t.window.record(false);
            }
        }
        assert_eq!(t.rejected(), refused);
        assert_eq!(t.window.totals(), (110, 0));
        assert!(refused > 80, "refused {refused}");
    }
}
