//! The state every clone of an [`AdaptiveLimit`](super::AdaptiveLimit)
//! shares: the admission counters, the window being measured, the
//! algorithm behind a lock taken once per window, and the queue of
//! requests waiting for a place behind a lock only waiting requests take.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::delay::{DelayLimit, Reason, Sample};
use super::queue::{Codel, Fate, Queue, Waiter};
use crate::load_shed::Criticality;
use crate::observability::Series;
use crate::rng::Rng;
use crate::time::saturating_nanos;

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
    /// Nothing: a fast failure's latency says nothing about queueing, and a
    /// slow one is an upstream's, not this server's.
    Ignored,
}

#[derive(Debug)]
pub(crate) struct Limiter {
    /// The admission limit; sheddable requests get `sheddable_ratio` of it.
    limit: AtomicU32,
    sheddable_ratio: f64,
    /// Sequentially consistent, as is `Adaptive::waiting`: a place given
    /// back while a request starts to wait is seen by one of the two.
    in_flight: AtomicU32,
    rejected: AtomicU64,
    rejected_sheddable: AtomicU64,
    retry_after: Duration,
    adaptive: Option<Adaptive>,
    pub(crate) metrics: LimitMetrics,
}

/// The series of one named limit (label `limit`).
#[derive(Debug)]
pub(crate) struct LimitMetrics {
    limit: Series,
    in_flight: Series,
    pub(crate) shed: Series,
}

impl LimitMetrics {
    fn new(name: &str) -> Self {
        let labels = [("limit", name)];
        Self {
            limit: Series::new("tower_steady_concurrency_limit", &labels),
            in_flight: Series::new("tower_steady_in_flight", &labels),
            shed: Series::new(
                "tower_steady_shed_total",
                &[("layer", "adaptive_limit"), ("limit", name)],
            ),
        }
    }
}

/// The measuring and waiting half, absent in fixed mode.
#[derive(Debug)]
struct Adaptive {
    origin: Instant,
    /// When the current window opened (the admission of its first request;
    /// `u64::MAX` until then) and may close, in nanoseconds since `origin`.
    window_start: AtomicU64,
    window_end: AtomicU64,
    /// When the last window closed (0 before the first): a window's time
    /// starts no earlier than one mean latency before it, whenever the
    /// requests measured in it were admitted. Written only under
    /// `algorithm`'s lock.
    last_close: AtomicU64,
    rtt_sum: AtomicU64,
    samples: AtomicU32,
    max_in_flight: AtomicU32,
    window: WindowSettings,
    algorithm: Mutex<DelayLimit>,
    rng: Rng,
    queue: Mutex<Queue>,
    /// How many requests wait in `queue`: read without the lock by every
    /// request that gives its place back.
    waiting: AtomicU32,
    /// Completions per second in the last window (`f64` bits), to tell how
    /// long a request that starts waiting would wait.
    rate: AtomicU64,
    /// While a decrease is checked: requests admitted from this time on
    /// (nanoseconds since `origin`) are also measured apart, so that the
    /// check sees only requests admitted under the lower limit. `u64::MAX`
    /// otherwise.
    fresh_since: AtomicU64,
    fresh_sum: AtomicU64,
    fresh_samples: AtomicU32,
}

/// A reason the request was not admitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shed {
    pub(crate) in_flight: u32,
    pub(crate) limit: u32,
}

/// What became of a request that found the limit full and may wait.
#[derive(Debug)]
pub(crate) enum Enqueued {
    /// A place came free meanwhile: it holds it.
    Admitted,
    /// It waits, at most this long.
    Waiting(Arc<Waiter>, Duration),
    /// The queue is full: shed.
    Shed,
}

impl Limiter {
    pub(crate) fn fixed(limit: u32, sheddable_ratio: f64, retry_after: Duration) -> Self {
        Self {
            limit: AtomicU32::new(limit),
            sheddable_ratio,
            in_flight: AtomicU32::new(0),
            rejected: AtomicU64::new(0),
            rejected_sheddable: AtomicU64::new(0),
            retry_after,
            adaptive: None,
            metrics: LimitMetrics::new("server"),
        }
    }

    /// Names the limit in its metrics, and makes its series exist from now
    /// on (the limit, 0 in flight, 0 shed), not from their first change.
    pub(crate) fn named(mut self, name: &str) -> Self {
        crate::observability::emit::described();
        self.metrics = LimitMetrics::new(name);
        self.metrics
            .limit
            .set(f64::from(self.limit.load(Ordering::Relaxed)));
        self.metrics.in_flight.set(0.0);
        self.metrics.shed.add(0);
        self
    }

    pub(crate) fn adaptive(
        algorithm: DelayLimit,
        window: WindowSettings,
        codel: Codel,
        sheddable_ratio: f64,
        retry_after: Duration,
        rng: Rng,
        now: Instant,
    ) -> Self {
        let limit = algorithm.limit();
        // The wait bound is what keeps the queue short; this only bounds
        // its memory.
        let capacity = (algorithm.max_limit() as usize)
            .saturating_mul(10)
            .max(1024);
        Self {
            adaptive: Some(Adaptive {
                origin: now,
                window_start: AtomicU64::new(u64::MAX),
                window_end: AtomicU64::new(saturating_nanos(window.min)),
                last_close: AtomicU64::new(0),
                rtt_sum: AtomicU64::new(0),
                samples: AtomicU32::new(0),
                max_in_flight: AtomicU32::new(0),
                window,
                algorithm: Mutex::new(algorithm),
                rng,
                queue: Mutex::new(Queue::new(codel, capacity)),
                waiting: AtomicU32::new(0),
                rate: AtomicU64::new(0f64.to_bits()),
                fresh_since: AtomicU64::new(u64::MAX),
                fresh_sum: AtomicU64::new(0),
                fresh_samples: AtomicU32::new(0),
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

    /// Requests waiting for a place now.
    pub(crate) fn waiting(&self) -> u32 {
        self.adaptive
            .as_ref()
            .map_or(0, |a| a.waiting.load(Ordering::Relaxed))
    }

    pub(crate) fn rejected(&self) -> (u64, u64) {
        (
            self.rejected.load(Ordering::Relaxed),
            self.rejected_sheddable.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn no_load(&self) -> Option<Duration> {
        let adaptive = self.adaptive.as_ref()?;
        let algorithm = adaptive
            .algorithm
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        algorithm.no_load()
    }

    /// Admits a request if fewer than its limit are in flight: one load
    /// and one compare-and-swap when there is room.
    pub(crate) fn try_acquire(&self, criticality: Criticality) -> Result<(), Shed> {
        let limit = self.limit.load(Ordering::Relaxed);
        let limit = match criticality {
            Criticality::Critical => limit,
            Criticality::Sheddable => sheddable(limit, self.sheddable_ratio),
        };
        self.acquire_below(limit)
    }

    /// Admits a request of either criticality while fewer than the
    /// sheddable share of the limit are in flight: below the share both
    /// are admitted alike, so the request's criticality (a header lookup)
    /// is only asked for near the limit.
    pub(crate) fn try_acquire_either(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.acquire_below(sheddable(limit, self.sheddable_ratio))
            .is_ok()
    }

    /// Takes a place if fewer than `limit` are in flight.
    fn acquire_below(&self, limit: u32) -> Result<(), Shed> {
        let mut in_flight = self.in_flight.load(Ordering::SeqCst);
        loop {
            if in_flight >= limit {
                return Err(Shed { in_flight, limit });
            }
            match self.in_flight.compare_exchange_weak(
                in_flight,
                in_flight + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(actual) => in_flight = actual,
            }
        }
        self.metrics.in_flight.set(f64::from(in_flight + 1));
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

    /// Counts a request shed.
    pub(crate) fn count_shed(&self, criticality: Criticality) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        if criticality == Criticality::Sheddable {
            self.rejected_sheddable.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines up a critical request that found the limit full (adaptive mode
    /// only; a fixed limit sheds at once).
    #[cold]
    pub(crate) fn enqueue(&self, now: Instant) -> Enqueued {
        let Some(adaptive) = &self.adaptive else {
            return Enqueued::Shed;
        };
        let mut queue = adaptive
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if queue.is_full() {
            queue.codel.turned_away(now);
            return Enqueued::Shed;
        }
        // In a standing queue, a request that finds the limit full is shed
        // at once: the places that free go to those already waiting.
        if queue.codel.standing(now) {
            queue.codel.turned_away(now);
            return Enqueued::Shed;
        }
        // A request that would wait longer than the queue allows is shed
        // now rather than at the end of its wait: places free at the rate
        // requests complete, and those over the limit and those already
        // waiting go first.
        let max_wait = queue.codel.interval;
        let rate = f64::from_bits(adaptive.rate.load(Ordering::Relaxed));
        if rate > 0.0 {
            let over = self.in_flight().saturating_sub(self.limit()) as usize;
            let ahead = over + queue.len() + 1;
            if ahead as f64 / rate > max_wait.as_secs_f64() {
                queue.codel.turned_away(now);
                return Enqueued::Shed;
            }
        }
        // Counted as waiting before looking for a place once more: a place
        // given back from now on sees it and admits it.
        adaptive
            .waiting
            .store(queue.len() as u32 + 1, Ordering::SeqCst);
        if self.try_acquire(Criticality::Critical).is_ok() {
            adaptive.waiting.store(queue.len() as u32, Ordering::SeqCst);
            return Enqueued::Admitted;
        }
        let waiter = Arc::new(Waiter::new(now));
        queue.push(waiter.clone());
        Enqueued::Waiting(waiter, max_wait)
    }

    /// Gives an admitted request's place back, whatever became of it, and
    /// hands it on to a waiting request if there is one.
    pub(crate) fn release(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.metrics
            .in_flight
            .set(f64::from(before.saturating_sub(1)));
        if let Some(adaptive) = &self.adaptive {
            if adaptive.waiting.load(Ordering::SeqCst) > 0 {
                self.admit_waiting(adaptive, Instant::now());
            }
        }
    }

    /// Admits waiting requests, oldest first, while there are places; in a
    /// standing queue, sheds those that waited longer than the target.
    #[cold]
    fn admit_waiting(&self, adaptive: &Adaptive, now: Instant) {
        let mut queue = adaptive
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(front) = queue.front() {
            let waited = now.saturating_duration_since(front.enqueued);
            if queue.codel.standing(now) && waited > queue.codel.target {
                queue.pop(false, now);
                self.count_shed(Criticality::Critical);
                self.metrics.shed.add(1);
                continue;
            }
            if self.try_acquire(Criticality::Critical).is_err() {
                break;
            }
            queue.pop(true, now);
        }
        adaptive.waiting.store(queue.len() as u32, Ordering::SeqCst);
    }

    /// A waiting request's time is up: shed, unless it was admitted
    /// meanwhile.
    #[cold]
    pub(crate) fn give_up(&self, waiter: &Arc<Waiter>, now: Instant) -> Fate {
        let Some(adaptive) = &self.adaptive else {
            return Fate::Shed;
        };
        let fate = {
            let mut queue = adaptive
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let fate = queue.give_up(waiter, now);
            adaptive.waiting.store(queue.len() as u32, Ordering::SeqCst);
            fate
        };
        if fate == Fate::Shed {
            self.count_shed(Criticality::Critical);
        }
        fate
    }

    /// A waiting request's caller left: out of the queue, and its place
    /// back if it had been given one.
    #[cold]
    pub(crate) fn leave(&self, waiter: &Arc<Waiter>) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let fate = {
            let mut queue = adaptive
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let fate = waiter.fate();
            if fate == Fate::Waiting {
                queue.remove(waiter, Instant::now());
                adaptive.waiting.store(queue.len() as u32, Ordering::SeqCst);
            }
            fate
        };
        if fate == Fate::Admitted {
            self.release();
        }
    }

    /// Records what a completed request tells the algorithm, and closes the
    /// window if it is over. The request's place must be released first.
    pub(crate) fn observe(&self, observation: Observation, started: Instant, now: Instant) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let at = match observation {
            Observation::Latency => {
                let rtt = saturating_nanos(now.saturating_duration_since(started));
                adaptive.rtt_sum.fetch_add(rtt, Ordering::Relaxed);
                adaptive.samples.fetch_add(1, Ordering::Relaxed);
                // The window opens with the first request measured in it:
                // the time since a quiet server was built is no window.
                let admitted = saturating_nanos(started.saturating_duration_since(adaptive.origin));
                if adaptive.window_start.load(Ordering::Relaxed) == u64::MAX {
                    adaptive.window_start.fetch_min(admitted, Ordering::Relaxed);
                }
                let since = adaptive.fresh_since.load(Ordering::Relaxed);
                if since != u64::MAX && admitted >= since {
                    adaptive.fresh_sum.fetch_add(rtt, Ordering::Relaxed);
                    adaptive.fresh_samples.fetch_add(1, Ordering::Relaxed);
                }
                // Now, from the two spans already measured: one clock
                // subtraction fewer.
                admitted.saturating_add(rtt)
            }
            Observation::Ignored => return,
        };
        if at >= adaptive.window_end.load(Ordering::Relaxed) {
            self.close_window(adaptive, at, now);
        }
    }

    /// Feeds the window to the algorithm, once: whoever finds the lock taken
    /// leaves it to the holder.
    #[cold]
    fn close_window(&self, adaptive: &Adaptive, at: u64, now: Instant) {
        let Ok(mut algorithm) = adaptive.algorithm.try_lock() else {
            return;
        };
        if at < adaptive.window_end.load(Ordering::Relaxed) {
            // Someone closed it while we reached for the lock.
            return;
        }
        let samples = adaptive.samples.load(Ordering::Relaxed);
        if samples < adaptive.window.samples {
            // Too few to judge by: the window runs on.
            return;
        }
        // A completion racing with these swaps lands in one window or the
        // next; either is fine.
        let samples = adaptive.samples.swap(0, Ordering::Relaxed);
        let rtt_sum = adaptive.rtt_sum.swap(0, Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let max_in_flight = adaptive.max_in_flight.swap(in_flight, Ordering::Relaxed);
        // The window's time runs from the first admission measured in it
        // (a quiet server's idle time before that is no window), but from
        // no earlier than one mean latency before the last window closed.
        // In a steady state the two are the same time; after a stall they
        // are not: the stall's late completions, admitted a second or more
        // ago, would stretch the window over the stall, read the rate
        // after it as a tenth of what it is, and the limit set from that
        // rate would refuse the callers the stall kept waiting.
        let mean_rtt = rtt_sum / u64::from(samples.max(1));
        let started = adaptive.window_start.swap(u64::MAX, Ordering::Relaxed).max(
            adaptive
                .last_close
                .swap(at, Ordering::Relaxed)
                .saturating_sub(mean_rtt),
        );
        let fresh_samples = adaptive.fresh_samples.load(Ordering::Relaxed);
        let fresh_sum = adaptive.fresh_sum.load(Ordering::Relaxed);

        let sample = Sample {
            rtt: (samples > 0).then(|| Duration::from_nanos(rtt_sum / u64::from(samples))),
            fresh_rtt: (fresh_samples > 0)
                .then(|| Duration::from_nanos(fresh_sum / u64::from(fresh_samples))),
            fresh_samples,
            samples,
            // A window that ran long for want of samples (a quiet server)
            // counts at most the longest window: a rate read too low
            // would size the limit too small.
            elapsed: Duration::from_nanos(at.saturating_sub(started.min(at)))
                .min(adaptive.window.max),
            max_in_flight,
            in_flight,
        };
        let before = algorithm.limit();
        let reason = algorithm.update(sample, now, adaptive.rng.next_f64());
        let after = algorithm.limit();
        let no_load = algorithm.no_load();
        let checking = algorithm.is_checking_decrease();
        drop(algorithm);
        adaptive
            .rate
            .store(sample.rate().to_bits(), Ordering::Relaxed);
        // A decrease starts its check: from now on, what is admitted under
        // the new limit is measured apart.
        if !checking {
            adaptive.fresh_since.store(u64::MAX, Ordering::Relaxed);
        } else if reason == Reason::Queue && after < before {
            adaptive.fresh_samples.store(0, Ordering::Relaxed);
            adaptive.fresh_sum.store(0, Ordering::Relaxed);
            adaptive.fresh_since.store(at, Ordering::Relaxed);
        }
        if after != before {
            self.limit.store(after, Ordering::SeqCst);
            tracing::debug!(
                target: "tower_steady::load_shed",
                from = before,
                to = after,
                reason = reason.as_str(),
                rtt_us = sample.rtt.map_or(0, |d| d.as_micros() as u64),
                no_load_us = no_load.map_or(0, |d| d.as_micros() as u64),
                max_in_flight,
                "concurrency limit changed"
            );
            self.metrics.limit.set(f64::from(after));
            if after > before && adaptive.waiting.load(Ordering::SeqCst) > 0 {
                self.admit_waiting(adaptive, now);
            }
        } else if reason == Reason::ProbeDone || reason == Reason::Rebaseline {
            tracing::debug!(
                target: "tower_steady::load_shed",
                limit = after,
                reason = reason.as_str(),
                no_load_us = no_load.map_or(0, |d| d.as_micros() as u64),
                "unloaded latency measured"
            );
        }
        let no_load = no_load.unwrap_or(adaptive.window.min);
        let length = (no_load * 2).clamp(adaptive.window.min, adaptive.window.max);
        adaptive.window_end.store(
            at.saturating_add(saturating_nanos(length)),
            Ordering::Relaxed,
        );
    }
}

/// The limit for sheddable requests: a share of the whole, at least one.
fn sheddable(limit: u32, ratio: f64) -> u32 {
    ((f64::from(limit) * ratio) as u32).clamp(1, limit.max(1))
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
    fn either_criticality_is_admitted_alike_below_the_sheddable_share() {
        let limiter = Limiter::fixed(4, 0.5, Duration::from_secs(1));
        assert!(limiter.try_acquire_either());
        assert!(limiter.try_acquire_either());
        // At the share: only a request known to be critical gets in.
        assert!(!limiter.try_acquire_either());
        assert!(limiter.try_acquire(Criticality::Sheddable).is_err());
        assert!(limiter.try_acquire(Criticality::Critical).is_ok());
        assert_eq!(limiter.in_flight(), 3);
    }

    #[test]
    fn admits_up_to_the_limit_and_counts_rejections() {
        let limiter = Limiter::fixed(2, 0.5, Duration::from_secs(1));
        assert!(limiter.try_acquire(Criticality::Sheddable).is_ok());
        let shed = limiter.try_acquire(Criticality::Sheddable).unwrap_err();
        assert_eq!((shed.in_flight, shed.limit), (1, 1));
        assert!(limiter.try_acquire(Criticality::Critical).is_ok());
        assert!(limiter.try_acquire(Criticality::Critical).is_err());
        assert_eq!(
            limiter.rejected(),
            (0, 0),
            "the caller counts what it sheds"
        );
        limiter.release();
        limiter.release();
        assert_eq!(limiter.in_flight(), 0);
    }
}
