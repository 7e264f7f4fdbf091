//! Hedged requests: a second attempt for a request that is taking too long.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use tokio::time::Instant;

use crate::ConfigError;

/// How long the retry layer waits for a slow attempt before sending the
/// same request a second time, to whichever endpoint the balancer picks.
///
/// A few slow replicas (a garbage collection, a noisy neighbour) make the
/// tail latency of everyone who calls them; a second copy of a request that
/// is already slower than most usually finishes first (Dean and Barroso,
/// "The Tail at Scale", CACM 2013). The first answer that is a success
/// wins and the other attempt is dropped, which cancels it.
///
/// Hedges are for idempotent requests only (the upstream may well run both
/// copies), each hedge takes a retry from the same [`Budget`](super::Budget)
/// as retries do, counts towards the attempts, and a request is hedged at
/// most once. A request whose body has not been read to its end yet is not
/// hedged: both copies would need it at once.
///
/// * [`Hedge::after`]: a fixed delay.
/// * [`Hedge::percentile`]: the given percentile of the latencies of recent
///   successful requests through the layer: those of the last 5 s period
///   that saw at least 20, recomputed every 5 s. Until the first such
///   period, nothing is hedged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hedge {
    delay: HedgeDelay,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum HedgeDelay {
    Fixed(Duration),
    Percentile(f64),
}

impl Hedge {
    /// Hedge a request still unanswered after `delay`.
    pub const fn after(delay: Duration) -> Self {
        Self {
            delay: HedgeDelay::Fixed(delay),
        }
    }

    /// Hedge a request that is slower than `percentile` (in `(0, 1)`, e.g.
    /// `0.95`) of recent requests.
    pub const fn percentile(percentile: f64) -> Self {
        Self {
            delay: HedgeDelay::Percentile(percentile),
        }
    }

    pub(crate) fn delay(&self) -> HedgeDelay {
        self.delay
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let HedgeDelay::Percentile(p) = self.delay {
            if !(p > 0.0 && p < 1.0) {
                return Err(ConfigError::new(
                    "retry.hedge",
                    "the percentile must be between 0 and 1, exclusive",
                ));
            }
        }
        Ok(())
    }
}

/// How often the percentile is recomputed, and over what.
pub(crate) const PERIOD: Duration = Duration::from_secs(5);
/// Fewer latencies than this in a period say too little to hedge on.
pub(crate) const MIN_SAMPLES: u64 = 20;
const BINS: usize = 128;
const UNKNOWN: u64 = u64::MAX;

/// A lock-free latency histogram over the current period, turned into a
/// percentile once per period.
///
/// Bins are log-linear in microseconds: four per power of two, so a
/// percentile is at most 25% above the true value (the bin's upper bound
/// is reported, so a hedge errs on the late side).
pub(crate) struct Latencies {
    percentile: f64,
    start: Instant,
    period: AtomicU64,
    counts: [AtomicU32; BINS],
    delay_nanos: AtomicU64,
    rotating: Mutex<()>,
}

impl Latencies {
    pub(crate) fn new(percentile: f64, start: Instant) -> Self {
        Self {
            percentile,
            start,
            period: AtomicU64::new(0),
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            delay_nanos: AtomicU64::new(UNKNOWN),
            rotating: Mutex::new(()),
        }
    }

    pub(crate) fn record(&self, now: Instant, latency: Duration) {
        self.roll(now);
        self.counts[bin(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The hedge delay: the percentile of the last full period with enough
    /// samples.
    pub(crate) fn delay(&self, now: Instant) -> Option<Duration> {
        self.roll(now);
        match self.delay_nanos.load(Ordering::Acquire) {
            UNKNOWN => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    fn roll(&self, now: Instant) {
        let period =
            (now.saturating_duration_since(self.start).as_nanos() / PERIOD.as_nanos()) as u64;
        if period <= self.period.load(Ordering::Acquire) {
            return;
        }
        let _guard = match self.rotating.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if period <= self.period.load(Ordering::Acquire) {
            return;
        }
        let mut counts = [0u64; BINS];
        let mut total = 0u64;
        for (count, atomic) in counts.iter_mut().zip(&self.counts) {
            *count = u64::from(atomic.swap(0, Ordering::AcqRel));
            total += *count;
        }
        if total >= MIN_SAMPLES {
            let rank = ((self.percentile * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (index, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    let nanos = upper_bound_micros(index).saturating_mul(1_000);
                    self.delay_nanos.store(nanos, Ordering::Release);
                    break;
                }
            }
        }
        self.period.store(period, Ordering::Release);
    }
}

impl fmt::Debug for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latencies")
            .field("percentile", &self.percentile)
            .field("delay_nanos", &self.delay_nanos.load(Ordering::Relaxed))
            .finish()
    }
}

/// The bin of a latency: values below 4 µs have a bin each; above, four
/// bins per power of two.
pub(crate) fn bin(latency: Duration) -> usize {
    let micros = latency.as_micros().clamp(1, (1u128 << 33) - 1) as u64;
    if micros < 4 {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros() as usize;
    let sub = ((micros >> (octave - 2)) & 3) as usize;
    (4 * (octave - 1) + sub).min(BINS - 1)
}

/// The first latency, in microseconds, above the bin.
pub(crate) fn upper_bound_micros(bin: usize) -> u64 {
    if bin < 4 {
        return bin as u64 + 1;
    }
    let octave = bin / 4 + 1;
    let sub = (bin % 4) as u64;
    (5 + sub) << (octave - 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_their_latencies() {
        for micros in [
            1u64, 2, 3, 4, 5, 7, 8, 9, 15, 16, 100, 1_000, 123_456, 10_000_000,
        ] {
            let b = bin(Duration::from_micros(micros));
            assert!(upper_bound_micros(b) > micros, "{micros} in bin {b}");
            if b > 1 {
                assert!(upper_bound_micros(b - 1) <= micros, "{micros} in bin {b}");
            }
            // Four bins per power of two: the bound is within 25%.
            assert!(upper_bound_micros(b) as f64 <= micros as f64 * 1.25 + 1.0);
        }
        assert_eq!(bin(Duration::from_secs(1 << 40)), BINS - 1);
    }

    #[test]
    fn the_percentile_is_known_after_a_full_period_with_enough_samples() {
        let start = Instant::now();
        let l = Latencies::new(0.9, start);
        for i in 1..=100u64 {
            l.record(start, Duration::from_millis(i));
        }
        assert_eq!(l.delay(start), None, "the period is not over");
        let delay = l.delay(start + PERIOD).unwrap();
        // The 90th of 1..=100 ms is 90 ms; its bin's upper bound is within 25%.
        assert!(
            delay >= Duration::from_millis(90) && delay <= Duration::from_micros(112_500),
            "{delay:?}"
        );

        // Too few samples in the next period: the last percentile stays.
        for _ in 0..5 {
            l.record(start + PERIOD, Duration::from_secs(3));
        }
        assert_eq!(l.delay(start + PERIOD * 2), Some(delay));
    }
}
