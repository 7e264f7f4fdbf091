//! The limit algorithm: TCP Vegas applied to request concurrency, as in
//! Netflix's `concurrency-limits` (`VegasLimit`), with a drain probe to
//! re-measure the unloaded latency (as BBR's `ProbeRTT` does) and a latency
//! tolerance below which nothing counts as a queue (as its `Gradient2Limit`
//! has).
//!
//! A pure state machine: it is fed one [`Sample`] per window and the time,
//! and answers the new admission limit. The service feeds it under a lock
//! taken once per window, never per request.

use std::time::Duration;

use tokio::time::Instant;

/// What one window of completed requests looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// The mean latency of the requests that completed in the window, if
    /// any did (a window may hold only timeouts).
    pub(crate) rtt: Option<Duration>,
    /// The most requests in flight at once during the window.
    pub(crate) max_in_flight: u32,
    /// Whether a request timed out in the window.
    pub(crate) dropped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub(crate) initial: u32,
    pub(crate) min: u32,
    pub(crate) max: u32,
    pub(crate) smoothing: f64,
    pub(crate) probe_interval: Duration,
    /// How many times the unloaded latency a window may take before its
    /// excess counts as a queue.
    pub(crate) tolerance: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 1,
            max: 1000,
            smoothing: 1.0,
            probe_interval: Duration::from_secs(30),
            tolerance: 1.5,
        }
    }
}

/// Why the limit moved, or did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No queue: grow fast (by beta).
    NoQueue,
    /// A short queue: grow by one step.
    ShortQueue,
    /// The queue is within the target band: hold.
    Steady,
    /// The queue is too long: shrink by one step.
    LongQueue,
    /// A request timed out: shrink by one step.
    Dropped,
    /// Fewer than half the limit were in flight: the limit is not what
    /// bounds the service, so it must not grow on this evidence.
    AppLimited,
    /// The window's latency is the lowest seen: it becomes the unloaded
    /// latency.
    NewMinimum,
    /// A drain probe begins: half the limit for two windows.
    ProbeDrain,
    /// The drain window is over: the next window measures.
    ProbeMeasure,
    /// The probe measured a new unloaded latency.
    ProbeDone,
}

impl Reason {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Reason::NoQueue => "no_queue",
            Reason::ShortQueue => "short_queue",
            Reason::Steady => "steady",
            Reason::LongQueue => "long_queue",
            Reason::Dropped => "dropped",
            Reason::AppLimited => "app_limited",
            Reason::NewMinimum => "new_minimum",
            Reason::ProbeDrain => "probe_drain",
            Reason::ProbeMeasure => "probe_measure",
            Reason::ProbeDone => "probe_done",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Normal operation; the next probe is due at this time.
    Idle { next: Instant },
    /// The first window at half the limit: requests admitted before it
    /// (with the longer queue) complete during it, so it is not measured.
    Draining,
    /// The second window at half the limit: its latency is the unloaded one.
    Measuring,
}

/// The limit algorithm's state.
#[derive(Debug)]
pub(crate) struct Vegas {
    settings: Settings,
    /// The estimated limit, kept fractional so that smoothing works.
    estimate: f64,
    /// The lowest window latency seen since the last probe.
    no_load: Option<Duration>,
    probe: Probe,
}

impl Vegas {
    pub(crate) fn new(settings: Settings, now: Instant, jitter: f64) -> Self {
        Self {
            estimate: f64::from(settings.initial),
            no_load: None,
            probe: Probe::Idle {
                next: now + probe_delay(settings.probe_interval, jitter),
            },
            settings,
        }
    }

    /// The limit requests are admitted against: the estimate, or half of it
    /// while a probe drains the queue.
    pub(crate) fn limit(&self) -> u32 {
        let limit = self.estimate as u32;
        match self.probe {
            Probe::Idle { .. } => limit,
            Probe::Draining | Probe::Measuring => (limit / 2).max(self.settings.min),
        }
    }

    /// The estimated limit, before any probe halves it.
    #[cfg(test)]
    pub(crate) fn estimate(&self) -> f64 {
        self.estimate
    }

    /// The latency the algorithm takes for "no queue".
    pub(crate) fn no_load(&self) -> Option<Duration> {
        self.no_load
    }

    /// Feeds one window. `jitter`, in `[0, 1)`, spreads the next probe
    /// over the second half of the probe interval so that replicas started
    /// together do not probe together.
    pub(crate) fn update(&mut self, sample: Sample, now: Instant, jitter: f64) -> Reason {
        match self.probe {
            // Draining => Measuring
            Probe::Draining => {
                self.probe = Probe::Measuring;
                return Reason::ProbeMeasure;
            }
            // Measuring => Idle, with the measured latency as the unloaded
            // one, even if it is higher than the old one: the service may
            // really have become slower, and a stale low latency would make
            // every later window look queued.
            Probe::Measuring => {
                if let Some(rtt) = sample.rtt {
                    self.no_load = Some(rtt);
                }
                self.probe = Probe::Idle {
                    next: now + probe_delay(self.settings.probe_interval, jitter),
                };
                return Reason::ProbeDone;
            }
            // Idle => Draining, once the probe is due.
            Probe::Idle { next } if now >= next => {
                self.probe = Probe::Draining;
                return Reason::ProbeDrain;
            }
            Probe::Idle { .. } => {}
        }

        let limit = self.estimate;
        let step = log10_step(limit);
        let (target, reason) = if sample.dropped {
            (limit - step, Reason::Dropped)
        } else {
            let Some(rtt) = sample.rtt else {
                return Reason::Steady;
            };
            let no_load = match self.no_load {
                Some(no_load) if rtt >= no_load => no_load,
                _ => {
                    self.no_load = Some(rtt);
                    return Reason::NewMinimum;
                }
            };
            match self.grow_or_shrink(rtt, no_load, sample.max_in_flight) {
                Ok(change) => change,
                Err(hold) => return hold,
            }
        };
        let target = target.clamp(f64::from(self.settings.min), f64::from(self.settings.max));
        let smoothing = self.settings.smoothing;
        self.estimate = (1.0 - smoothing) * limit + smoothing * target;
        reason
    }

    /// Vegas's rule: the new limit and why, or why it holds.
    fn grow_or_shrink(
        &self,
        rtt: Duration,
        no_load: Duration,
        max_in_flight: u32,
    ) -> Result<(f64, Reason), Reason> {
        let limit = self.estimate;
        let step = log10_step(limit);
        // Vegas's estimate of the queue: of `limit` requests in flight, the
        // share of the latency above the unloaded one is time spent waiting;
        // here, above the unloaded one times the tolerance.
        let tolerated = no_load.as_secs_f64() * self.settings.tolerance;
        let queue = (limit * (1.0 - tolerated / rtt.as_secs_f64()))
            .ceil()
            .max(0.0);
        let (alpha, beta, threshold) = (3.0 * step, 6.0 * step, step);
        if f64::from(max_in_flight) * 2.0 < limit {
            Err(Reason::AppLimited)
        } else if queue <= threshold {
            Ok((limit + beta, Reason::NoQueue))
        } else if queue < alpha {
            Ok((limit + step, Reason::ShortQueue))
        } else if queue > beta {
            Ok((limit - step, Reason::LongQueue))
        } else {
            Err(Reason::Steady)
        }
    }
}

/// Netflix's `Log10RootFunction`: the whole part of `log10(limit)`, at
/// least 1. The limit moves by this much per step; alpha and beta, the
/// bounds of the queue Vegas aims for, are 3 and 6 times it.
fn log10_step(limit: f64) -> f64 {
    limit.log10().floor().max(1.0)
}

/// Between half the interval and the whole of it.
fn probe_delay(interval: Duration, jitter: f64) -> Duration {
    interval.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Vegas as published: no tolerance.
    fn vegas(initial: u32) -> (Vegas, Instant) {
        let now = Instant::now();
        let settings = Settings {
            initial,
            probe_interval: Duration::from_secs(3600),
            tolerance: 1.0,
            ..Settings::default()
        };
        (Vegas::new(settings, now, 0.0), now)
    }

    fn window(rtt_ms: u64, max_in_flight: u32) -> Sample {
        Sample {
            rtt: Some(MS * rtt_ms as u32),
            max_in_flight,
            dropped: false,
        }
    }

    #[test]
    fn the_first_window_sets_the_unloaded_latency() {
        let (mut v, now) = vegas(20);
        assert_eq!(v.update(window(10, 20), now, 0.0), Reason::NewMinimum);
        assert_eq!(v.no_load(), Some(MS * 10));
        assert_eq!(v.limit(), 20);
    }

    #[test]
    fn grows_by_beta_while_there_is_no_queue() {
        let (mut v, now) = vegas(20);
        v.update(window(10, 20), now, 0.0);
        assert_eq!(v.update(window(10, 20), now, 0.0), Reason::NoQueue);
        assert_eq!(v.limit(), 26);
    }

    #[test]
    fn shrinks_when_the_queue_is_longer_than_beta() {
        let (mut v, now) = vegas(20);
        v.update(window(10, 20), now, 0.0);
        // Twice the unloaded latency with 20 in flight: a queue of 10.
        assert_eq!(v.update(window(20, 20), now, 0.0), Reason::LongQueue);
        assert_eq!(v.limit(), 19);
    }

    #[test]
    fn holds_when_the_queue_is_between_alpha_and_beta() {
        let (mut v, now) = vegas(20);
        v.update(window(10, 20), now, 0.0);
        // 20 * (1 - 10/13) = 4.6, rounded up to 5: between 3 and 6.
        assert_eq!(v.update(window(13, 20), now, 0.0), Reason::Steady);
        assert_eq!(v.limit(), 20);
    }

    #[test]
    fn grows_by_one_step_on_a_short_queue() {
        let (mut v, now) = vegas(20);
        v.update(window(10, 20), now, 0.0);
        // 20 * (1 - 10/11) = 1.8 → 2: above the threshold, below alpha.
        assert_eq!(v.update(window(11, 20), now, 0.0), Reason::ShortQueue);
        assert_eq!(v.limit(), 21);
    }

    #[test]
    fn latency_within_the_tolerance_is_no_queue() {
        let (mut v, now) = vegas(20);
        v.settings.tolerance = 1.5;
        v.update(window(10, 20), now, 0.0);
        // 14 ms against 10 ms unloaded: a queue of 10 without a tolerance,
        // none within 1.5 times.
        assert_eq!(v.update(window(14, 20), now, 0.0), Reason::NoQueue);
        assert_eq!(v.limit(), 26);
        // 20 ms: 26 * (1 - 15/20) = 6.5 → 7, above beta.
        assert_eq!(v.update(window(20, 26), now, 0.0), Reason::LongQueue);
        assert_eq!(v.limit(), 25);
    }

    #[test]
    fn steps_are_the_whole_part_of_log10_of_the_limit() {
        assert_eq!(log10_step(5.0), 1.0);
        assert_eq!(log10_step(99.0), 1.0);
        assert_eq!(log10_step(100.0), 2.0);
        assert_eq!(log10_step(999.0), 2.0);
        assert_eq!(log10_step(1000.0), 3.0);
    }

    #[test]
    fn does_not_grow_while_app_limited() {
        let (mut v, now) = vegas(20);
        v.update(window(10, 20), now, 0.0);
        assert_eq!(v.update(window(10, 9), now, 0.0), Reason::AppLimited);
        assert_eq!(v.limit(), 20);
    }

    #[test]
    fn a_timeout_shrinks_the_limit_even_when_app_limited() {
        let (mut v, now) = vegas(20);
        v.update(window(10, 20), now, 0.0);
        let sample = Sample {
            dropped: true,
            ..window(10, 2)
        };
        assert_eq!(v.update(sample, now, 0.0), Reason::Dropped);
        assert_eq!(v.limit(), 19);
    }

    #[test]
    fn stays_within_min_and_max() {
        let now = Instant::now();
        let settings = Settings {
            initial: 5,
            min: 4,
            max: 8,
            tolerance: 1.0,
            ..Settings::default()
        };
        let mut v = Vegas::new(settings, now, 0.0);
        v.update(window(10, 8), now, 0.0);
        for _ in 0..10 {
            v.update(window(10, 8), now, 0.0);
        }
        assert_eq!(v.limit(), 8);
        let timed_out = Sample {
            dropped: true,
            ..window(100, 8)
        };
        for _ in 0..10 {
            v.update(timed_out, now, 0.0);
        }
        assert_eq!(v.limit(), 4);
    }

    #[test]
    fn smoothing_moves_part_of_the_way() {
        let now = Instant::now();
        let settings = Settings {
            initial: 20,
            smoothing: 0.5,
            tolerance: 1.0,
            ..Settings::default()
        };
        let mut v = Vegas::new(settings, now, 0.0);
        v.update(window(10, 20), now, 0.0);
        v.update(window(10, 20), now, 0.0);
        // Halfway from 20 to 26.
        assert_eq!(v.estimate(), 23.0);
    }

    #[test]
    fn a_probe_halves_the_limit_for_two_windows_then_remeasures() {
        let now = Instant::now();
        let settings = Settings {
            initial: 40,
            probe_interval: Duration::from_secs(10),
            tolerance: 1.0,
            ..Settings::default()
        };
        let mut v = Vegas::new(settings, now, 0.0);
        v.update(window(10, 40), now, 0.0);
        let later = now + Duration::from_secs(10);
        // Every window since was queued (20 ms); the probe is due.
        assert_eq!(v.update(window(20, 40), later, 0.0), Reason::ProbeDrain);
        assert_eq!(v.limit(), 20);
        assert_eq!(v.update(window(20, 20), later, 0.0), Reason::ProbeMeasure);
        assert_eq!(v.limit(), 20);
        // The service is really slower now: 15 ms with no queue.
        assert_eq!(v.update(window(15, 20), later, 0.0), Reason::ProbeDone);
        assert_eq!(v.no_load(), Some(MS * 15));
        assert_eq!(v.limit(), 40);
    }

    #[test]
    fn the_next_probe_is_jittered_into_the_second_half_of_the_interval() {
        let interval = Duration::from_secs(30);
        assert_eq!(probe_delay(interval, 0.0), interval);
        assert_eq!(probe_delay(interval, 0.5), Duration::from_millis(22_500));
        assert!(probe_delay(interval, 0.999_999) > Duration::from_secs(15));
    }
}
