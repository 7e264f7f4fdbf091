//! The state every clone of an [`AdaptiveLimit`](super::AdaptiveLimit)
//! shares: the admission counters, the window being measured, and the
//! algorithm behind a lock taken once per window.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::vegas::{Reason, Sample, Vegas};
use crate::load_shed::Criticality;
use crate::rng::Rng;

/// How requests are measured into windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowSettings {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) samples: u32,
}

impl Default for WindowSettings {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            samples: 10,
        }
    }
}

/// What a completed request tells the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observation {
    /// Its latency is a sample.
    Latency,
    /// It timed out: the limit must come down.
    Dropped,
    /// Nothing: a fast failure's latency says nothing about queueing.
    Ignored,
}

#[derive(Debug)]
pub(crate) struct Limiter {
    /// The admission limit; sheddable requests get `sheddable_ratio` of it.
    limit: AtomicU32,
    sheddable_ratio: f64,
    in_flight: AtomicU32,
    rejected: AtomicU64,
    rejected_sheddable: AtomicU64,
    retry_after: Duration,
    adaptive: Option<Adaptive>,
}

/// The measuring half, absent in fixed mode.
#[derive(Debug)]
struct Adaptive {
    origin: Instant,
    /// When the current window may close, in nanoseconds since `origin`.
    window_end: AtomicU64,
    rtt_sum: AtomicU64,
    samples: AtomicU32,
    drops: AtomicU32,
    max_in_flight: AtomicU32,
    window: WindowSettings,
    vegas: Mutex<Vegas>,
    rng: Rng,
}

/// A reason the request was not admitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shed {
    pub(crate) in_flight: u32,
    pub(crate) limit: u32,
}

impl Limiter {
    pub(crate) fn fixed(limit: u32, sheddable_ratio: f64, retry_after: Duration) -> Self {
        // The gauge exists from the start, not from the first change.
        crate::observability::emit::concurrency_limit(limit);
        Self {
            limit: AtomicU32::new(limit),
            sheddable_ratio,
            in_flight: AtomicU32::new(0),
            rejected: AtomicU64::new(0),
            rejected_sheddable: AtomicU64::new(0),
            retry_after,
            adaptive: None,
        }
    }

    pub(crate) fn adaptive(
        vegas: Vegas,
        window: WindowSettings,
        sheddable_ratio: f64,
        retry_after: Duration,
        rng: Rng,
        now: Instant,
    ) -> Self {
        let limit = vegas.limit();
        Self {
            adaptive: Some(Adaptive {
                origin: now,
                window_end: AtomicU64::new(nanos(window.min)),
                rtt_sum: AtomicU64::new(0),
                samples: AtomicU32::new(0),
                drops: AtomicU32::new(0),
                max_in_flight: AtomicU32::new(0),
                window,
                vegas: Mutex::new(vegas),
                rng,
            }),
            ..Self::fixed(limit, sheddable_ratio, retry_after)
        }
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    pub(crate) fn retry_after(&self) -> Duration {
        self.retry_after
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn rejected(&self) -> (u64, u64) {
        (
            self.rejected.load(Ordering::Relaxed),
            self.rejected_sheddable.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn no_load(&self) -> Option<Duration> {
        let adaptive = self.adaptive.as_ref()?;
        let vegas = adaptive.vegas.lock().unwrap_or_else(|e| e.into_inner());
        vegas.no_load()
    }

    /// Admits a request if fewer than its limit are in flight: one load
    /// and one compare-and-swap when there is room.
    pub(crate) fn try_acquire(&self, criticality: Criticality) -> Result<(), Shed> {
        let limit = self.limit.load(Ordering::Relaxed);
        let limit = match criticality {
            Criticality::Critical => limit,
            Criticality::Sheddable => sheddable(limit, self.sheddable_ratio),
        };
        let mut in_flight = self.in_flight.load(Ordering::Relaxed);
        loop {
            if in_flight >= limit {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                if criticality == Criticality::Sheddable {
                    self.rejected_sheddable.fetch_add(1, Ordering::Relaxed);
                }
                return Err(Shed { in_flight, limit });
            }
            match self.in_flight.compare_exchange_weak(
                in_flight,
                in_flight + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => in_flight = actual,
            }
        }
        crate::observability::emit::in_flight(in_flight + 1);
        if let Some(adaptive) = &self.adaptive {
            // A load first: the peak only moves when the load climbs.
            if in_flight + 1 > adaptive.max_in_flight.load(Ordering::Relaxed) {
                adaptive
                    .max_in_flight
                    .fetch_max(in_flight + 1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Gives an admitted request's place back, whatever became of it.
    pub(crate) fn release(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        crate::observability::emit::in_flight(before.saturating_sub(1));
    }

    /// Records what a completed request tells the algorithm, and closes the
    /// window if it is over. The request's place must be released first.
    pub(crate) fn observe(&self, observation: Observation, started: Instant, now: Instant) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        match observation {
            Observation::Latency => {
                let rtt = nanos(now.saturating_duration_since(started));
                adaptive.rtt_sum.fetch_add(rtt, Ordering::Relaxed);
                adaptive.samples.fetch_add(1, Ordering::Relaxed);
            }
            Observation::Dropped => {
                adaptive.drops.fetch_add(1, Ordering::Relaxed);
            }
            Observation::Ignored => return,
        }
        let at = nanos(now.saturating_duration_since(adaptive.origin));
        if at >= adaptive.window_end.load(Ordering::Relaxed) {
            self.close_window(adaptive, at, now);
        }
    }

    /// Feeds the window to the algorithm, once: whoever finds the lock taken
    /// leaves it to the holder.
    #[cold]
    fn close_window(&self, adaptive: &Adaptive, at: u64, now: Instant) {
        let Ok(mut vegas) = adaptive.vegas.try_lock() else {
            return;
        };
        if at < adaptive.window_end.load(Ordering::Relaxed) {
            // Someone closed it while we reached for the lock.
            return;
        }
        let samples = adaptive.samples.load(Ordering::Relaxed);
        let drops = adaptive.drops.load(Ordering::Relaxed);
        if samples < adaptive.window.samples && drops == 0 {
            // Too few to judge by: the window runs on.
            return;
        }
        // A completion racing with these swaps lands in one window or the
        // next; either is fine.
        let samples = adaptive.samples.swap(0, Ordering::Relaxed);
        let rtt_sum = adaptive.rtt_sum.swap(0, Ordering::Relaxed);
        adaptive.drops.swap(0, Ordering::Relaxed);
        let max_in_flight = adaptive
            .max_in_flight
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);

        let sample = Sample {
            rtt: (samples > 0).then(|| Duration::from_nanos(rtt_sum / u64::from(samples))),
            max_in_flight,
            dropped: drops > 0,
        };
        let before = vegas.limit();
        let reason = vegas.update(sample, now, adaptive.rng.next_f64());
        let after = vegas.limit();
        if after != before {
            self.limit.store(after, Ordering::Relaxed);
            tracing::debug!(
                target: "tower_steady::load_shed",
                from = before,
                to = after,
                reason = reason.as_str(),
                rtt_us = sample.rtt.map_or(0, |d| d.as_micros() as u64),
                no_load_us = vegas.no_load().map_or(0, |d| d.as_micros() as u64),
                max_in_flight,
                "concurrency limit changed"
            );
            crate::observability::emit::concurrency_limit(after);
        } else if reason == Reason::ProbeDone {
            tracing::debug!(
                target: "tower_steady::load_shed",
                limit = after,
                no_load_us = vegas.no_load().map_or(0, |d| d.as_micros() as u64),
                "unloaded latency measured"
            );
        }
        let no_load = vegas.no_load().unwrap_or(adaptive.window.min);
        let length = (no_load * 2).clamp(adaptive.window.min, adaptive.window.max);
        adaptive
            .window_end
            .store(at.saturating_add(nanos(length)), Ordering::Relaxed);
    }
}

/// The limit for sheddable requests: a share of the whole, at least one.
fn sheddable(limit: u32, ratio: f64) -> u32 {
    ((f64::from(limit) * ratio) as u32).max(1)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheddable_requests_get_a_share_of_the_limit_and_at_least_one() {
        assert_eq!(sheddable(10, 0.8), 8);
        assert_eq!(sheddable(1, 0.8), 1);
        assert_eq!(sheddable(100, 1.0), 100);
    }

    #[test]
    fn admits_up_to_the_limit_and_counts_rejections() {
        let limiter = Limiter::fixed(2, 0.5, Duration::from_secs(1));
        assert!(limiter.try_acquire(Criticality::Sheddable).is_ok());
        let shed = limiter.try_acquire(Criticality::Sheddable).unwrap_err();
        assert_eq!((shed.in_flight, shed.limit), (1, 1));
        assert!(limiter.try_acquire(Criticality::Critical).is_ok());
        assert!(limiter.try_acquire(Criticality::Critical).is_err());
        assert_eq!(limiter.rejected(), (2, 1));
        limiter.release();
        limiter.release();
        assert_eq!(limiter.in_flight(), 0);
    }
}
