//! The limit algorithm: the admission limit follows the queueing delay the
//! service shows, in absolute terms.
//!
//! A pure state machine: it is fed one [`Sample`] per window and the time,
//! and answers the new limit. The service feeds it under a lock taken once
//! per window, never per request.
//!
//! The idea is CoDel's (Nichols and Jacobson, "Controlling Queue Delay",
//! 2012): a queue is a problem only when the delay it adds has *stayed*
//! above a small absolute target; a latency that is higher than the
//! quietest one seen, by less than that, is the service working (a busy
//! CPU, a cache miss), not a queue to act on. Here the delay is read off
//! the service's latency, `rtt − no_load`, and the limit is set from the
//! rate the service delivers (Little's law, as BBR sizes its window from
//! the bottleneck rate and the minimum round trip: Cardwell et al., "BBR:
//! Congestion-Based Congestion Control", 2016):
//!
//! | the window saw | the limit |
//! |---|---|
//! | a delay above the threshold, in the second window in a row (or the first, when the limit is full, or when what is in flight would take 100 ms to clear and is more than was ever in flight the window before) | down to `rate × (no_load + threshold)`: as many as the service completes in the latency allowed |
//! | a delay above the threshold, the window before had none, the limit open | holds: a queue must stand for a whole window before it is acted on |
//! | a delay below half the threshold, the limit full | up to `2 × rate × (no_load + threshold)`: doubles while there is no queue |
//! | a delay below the threshold, the limit full | + 1 |
//! | fewer requests than the limit | holds: it is not what bounds the service |
//!
//! where `threshold = max(target, (tolerance − 1) × no_load)`: 5 ms, or half
//! the unloaded latency for a service slower than 10 ms.
//!
//! Three checks keep it from limiting a service that is not queueing:
//!
//! * **A queue must stand.** While the limit is open (more places than the
//!   window ever had in flight), one window with a delay (at least 100 ms
//!   of requests) is not acted on; the next must show one too. A process
//!   that stalls for a moment (a virtual machine's CPU taken away, a
//!   page-in, a profiler) leaves one window of late completions whose
//!   rate is no measure of the service: lowering the limit from it would
//!   refuse requests after the stall, when the queue it made has already
//!   drained. CoDel acts only on a delay that has stayed above its target
//!   for an interval for the same reason. A limit that binds is already
//!   holding a queue back, and acts on the first window that shows one;
//!   so does a backlog in flight that alone would take 100 ms to clear at
//!   the window's rate and is larger than the most in flight the window
//!   before (an overload's, which grows; a stall of a closed-loop load
//!   leaves no more in flight than before it, its connections, however
//!   long the stall: the rate of a window that spans one is a handful of
//!   completions over the stall's length, at which any number in flight
//!   would read as seconds of backlog).
//! * **A decrease must buy a lower latency.** Once ten requests admitted
//!   under the lowered limit have completed (the ones admitted before are
//!   still behind the queue they made), their latency is compared with the
//!   one that brought the limit down. If it did not fall by a tenth, the
//!   latency is the service's own (it became slower for good, or a
//!   dependency did): it becomes the unloaded latency and the limit goes
//!   back up to where it was.
//! * **The unloaded latency is re-measured while the limit binds.** It can
//!   only go down by observation; every probe interval, if the limit is
//!   full, the limit drops to half of `rate × no_load` for two windows: the
//!   first drains the queue, the second measures the latency with none,
//!   and that becomes the unloaded latency, higher or lower. A limit that
//!   is not full is never probed, so a service that is not being limited
//!   pays nothing.

use std::time::Duration;

use tokio::time::Instant;

/// What one window of completed requests looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// The mean latency of the requests that completed in the window, if
    /// any did.
    pub(crate) rtt: Option<Duration>,
    /// While a decrease is checked: the mean latency of the requests
    /// admitted since the decrease that completed so far, and how many.
    pub(crate) fresh_rtt: Option<Duration>,
    pub(crate) fresh_samples: u32,
    /// How many did.
    pub(crate) samples: u32,
    /// How long the window lasted.
    pub(crate) elapsed: Duration,
    /// The most requests in flight at once during the window.
    pub(crate) max_in_flight: u32,
    /// The requests in flight when the window closed.
    pub(crate) in_flight: u32,
}

impl Sample {
    /// Completions per second.
    pub(crate) fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            f64::from(self.samples) / secs
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub(crate) initial: u32,
    pub(crate) min: u32,
    pub(crate) max: u32,
    /// The delay above the unloaded latency that counts as a queue, at
    /// least.
    pub(crate) target: Duration,
    /// How many times the unloaded latency a window may take before its
    /// excess counts as a queue, for services slower than `target` allows.
    pub(crate) tolerance: f64,
    pub(crate) probe_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            initial: 1000,
            min: 1,
            max: 1000,
            target: Duration::from_millis(5),
            tolerance: 1.5,
            probe_interval: Duration::from_secs(30),
        }
    }
}

/// Why the limit moved, or did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No request completed: nothing to judge by.
    NoSamples,
    /// The window's latency is the lowest seen: it becomes the unloaded
    /// latency.
    NewMinimum,
    /// A delay well under the threshold with the limit full: grow fast.
    NoQueue,
    /// A delay under the threshold with the limit full: grow by one.
    ShortQueue,
    /// The limit is not full: it is not what bounds the service.
    AppLimited,
    /// A delay above the threshold for the second window in a row: down to
    /// what the service delivers.
    Queue,
    /// A delay above the threshold after a window without: the next window
    /// decides.
    QueueSeen,
    /// The requests admitted before a decrease are still completing.
    Settling,
    /// A decrease did not lower the latency: the latency is the service's
    /// own; the limit goes back.
    Rebaseline,
    /// A probe begins: the queue drains for a window.
    ProbeDrain,
    /// The drain window is over: the next window measures.
    ProbeMeasure,
    /// The probe measured a new unloaded latency.
    ProbeDone,
}

impl Reason {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Reason::NoSamples => "no_samples",
            Reason::NewMinimum => "new_minimum",
            Reason::NoQueue => "no_queue",
            Reason::ShortQueue => "short_queue",
            Reason::AppLimited => "app_limited",
            Reason::Queue => "queue",
            Reason::QueueSeen => "queue_seen",
            Reason::Settling => "settling",
            Reason::Rebaseline => "rebaseline",
            Reason::ProbeDrain => "probe_drain",
            Reason::ProbeMeasure => "probe_measure",
            Reason::ProbeDone => "probe_done",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Normal operation; the next probe is due at this time.
    Steady { next_probe: Instant },
    /// The limit came down for a queue; until enough requests admitted
    /// under the new limit have completed, it is not judged again.
    Settling {
        rtt_before: Duration,
        limit_before: u32,
        next_probe: Instant,
    },
    /// The first window of a probe: the queue drains.
    Draining { limit_before: u32 },
    /// The second: its latency is the unloaded one.
    Measuring { limit_before: u32 },
}

/// The limit algorithm's state.
#[derive(Debug)]
pub(crate) struct DelayLimit {
    settings: Settings,
    limit: u32,
    /// The lowest window latency seen since the last probe.
    no_load: Option<Duration>,
    phase: Phase,
    /// Whether the last window judged showed a queue.
    queue_seen: bool,
    /// The most requests in flight at once in the last window with
    /// completions: what a backlog must exceed to count as growing.
    peak_before: u32,
}

impl DelayLimit {
    pub(crate) fn new(settings: Settings, now: Instant, jitter: f64) -> Self {
        Self {
            limit: settings.initial,
            no_load: None,
            phase: Phase::Steady {
                next_probe: now + probe_delay(settings.probe_interval, jitter),
            },
            settings,
            queue_seen: false,
            peak_before: 0,
        }
    }

    /// The limit requests are admitted against.
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// Whether a decrease waits for its check: the caller then measures the
    /// requests admitted from now on apart ([`Sample::fresh_rtt`]).
    pub(crate) fn is_checking_decrease(&self) -> bool {
        matches!(self.phase, Phase::Settling { .. })
    }

    /// The most the limit can be.
    pub(crate) fn max_limit(&self) -> u32 {
        self.settings.max
    }

    /// The latency the algorithm takes for "no queue".
    pub(crate) fn no_load(&self) -> Option<Duration> {
        self.no_load
    }

    /// The delay above `no_load` that counts as a queue.
    fn threshold(&self, no_load: Duration) -> Duration {
        let relative = no_load.mul_f64(self.settings.tolerance - 1.0);
        self.settings.target.max(relative)
    }

    fn clamp(&self, limit: f64) -> u32 {
        let limit = limit.ceil();
        if limit >= f64::from(self.settings.max) {
            self.settings.max
        } else {
            (limit as u32).max(self.settings.min)
        }
    }

    /// Feeds one window. `jitter`, in `[0, 1)`, spreads the next probe
    /// over the second half of the probe interval.
    pub(crate) fn update(&mut self, sample: Sample, now: Instant, jitter: f64) -> Reason {
        let Some(rtt) = sample.rtt.filter(|_| sample.samples > 0) else {
            return Reason::NoSamples;
        };
        let next_probe = || now + probe_delay(self.settings.probe_interval, jitter);
        let peak_before = std::mem::replace(&mut self.peak_before, sample.max_in_flight);
        match self.phase {
            // Draining => Measuring
            Phase::Draining { limit_before } => {
                self.phase = Phase::Measuring { limit_before };
                return Reason::ProbeMeasure;
            }
            // Measuring => Steady, with the measured latency as the
            // unloaded one, even if it is higher: the service may really
            // have become slower.
            Phase::Measuring { limit_before } => {
                self.no_load = Some(rtt);
                self.limit = limit_before;
                self.phase = Phase::Steady {
                    next_probe: next_probe(),
                };
                return Reason::ProbeDone;
            }
            // Settling => Settling, until enough of the requests admitted
            // under the new limit have completed: the ones admitted before
            // are still completing, behind the queue they made.
            Phase::Settling { .. } if sample.fresh_samples < FRESH_SAMPLES.min(self.limit) => {
                return Reason::Settling;
            }
            // Settling => Steady: the decrease bought a lower latency, or
            // the latency is the service's own and the limit goes back.
            Phase::Settling {
                rtt_before,
                limit_before,
                next_probe,
            } => {
                self.phase = Phase::Steady { next_probe };
                let fresh = sample.fresh_rtt.unwrap_or(rtt);
                if fresh.as_secs_f64() >= 0.9 * rtt_before.as_secs_f64() {
                    self.no_load = Some(fresh);
                    self.limit = limit_before.max(self.limit);
                    return Reason::Rebaseline;
                }
            }
            // Steady => Draining, when a probe is due and the limit binds.
            Phase::Steady { next_probe: due } if now >= due => {
                if sample.max_in_flight >= self.limit {
                    if let Some(no_load) = self.no_load {
                        let drained = self.clamp(sample.rate() * no_load.as_secs_f64() / 2.0);
                        if drained < self.limit {
                            self.phase = Phase::Draining {
                                limit_before: self.limit,
                            };
                            self.limit = drained;
                            return Reason::ProbeDrain;
                        }
                    }
                }
                // Nothing to probe: the limit is not what bounds the
                // service.
                self.phase = Phase::Steady {
                    next_probe: next_probe(),
                };
            }
            Phase::Steady { .. } => {}
        }

        // The lowest latency seen becomes the unloaded one.
        let new_minimum = self.no_load.is_none_or(|no_load| rtt < no_load);
        if new_minimum {
            self.no_load = Some(rtt);
        }
        let no_load = self.no_load.unwrap_or(rtt);
        let threshold = self.threshold(no_load);
        // What the requests in flight now will take at the rate the service
        // delivers (Little's law): a queue that is still growing shows here
        // before its requests complete. In a steady state it is the
        // window's own latency.
        let ahead = match sample.rate() {
            rate if rate > 0.0 => {
                Duration::from_secs_f64((f64::from(sample.in_flight) / rate).min(60.0))
            }
            _ => Duration::ZERO,
        };
        let allowed = (no_load + threshold).as_secs_f64();
        // The window's own latency shows a standing queue; what is in flight
        // shows one still growing, but an instant's count is noisy (a burst
        // of connections, a server warming up), so only a backlog of twice
        // the latency allowed counts, and only it in the window that sets
        // the unloaded latency.
        let growing = ahead.as_secs_f64() > 2.0 * allowed;
        let queued = growing || (!new_minimum && rtt.saturating_sub(no_load) > threshold);
        let latency = if growing { rtt.max(ahead) } else { rtt };
        let delay = latency.saturating_sub(no_load);
        // A limit that is open (more places than were ever taken in the
        // window) acts on a queue only once it has stood two windows; one
        // that binds already controls a queue and acts at once.
        // So does a backlog that alone would take a tenth of a second to
        // clear and is larger than anything in flight the window before:
        // an overload's backlog keeps growing, while a stall of a
        // closed-loop load leaves at most its connections in flight, as
        // many as before it. The rate of a window that spans a stall is a
        // handful of completions over the stall's length, at which any
        // number in flight looks like seconds of backlog; the count itself
        // says whether it grew.
        let seen_before = std::mem::replace(&mut self.queue_seen, queued);
        let binding = sample.max_in_flight >= self.limit;
        let severe = growing && ahead >= SEVERE_BACKLOG && sample.in_flight > peak_before;
        if queued && !seen_before && !binding && !severe {
            return Reason::QueueSeen;
        }
        if queued {
            // Steady => Settling: as many as the service completes in the
            // latency allowed, never more than now.
            let limit = self.clamp(sample.rate() * allowed).min(self.limit);
            if limit < self.limit {
                let next_probe = match self.phase {
                    Phase::Steady { next_probe } => next_probe,
                    _ => next_probe(),
                };
                self.phase = Phase::Settling {
                    rtt_before: latency,
                    limit_before: self.limit,
                    next_probe,
                };
                self.limit = limit;
            }
            return Reason::Queue;
        }
        if new_minimum {
            return Reason::NewMinimum;
        }
        if sample.max_in_flight < self.limit {
            return Reason::AppLimited;
        }
        if delay * 2 <= threshold {
            let doubled = self.clamp(2.0 * sample.rate() * allowed);
            self.limit = doubled.max(self.clamp(f64::from(self.limit) + 1.0));
            Reason::NoQueue
        } else {
            self.limit = self.clamp(f64::from(self.limit) + 1.0);
            Reason::ShortQueue
        }
    }
}

/// A backlog that takes this long to clear at the service's rate is acted
/// on in its first window, open limit or not.
const SEVERE_BACKLOG: Duration = Duration::from_millis(100);

/// How many requests admitted under a lowered limit must complete before
/// the decrease is judged (fewer if the limit is lower).
const FRESH_SAMPLES: u32 = 10;

/// Between half the interval and the whole of it.
fn probe_delay(interval: Duration, jitter: f64) -> Duration {
    interval.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limit(initial: u32) -> (DelayLimit, Instant) {
        let now = Instant::now();
        let settings = Settings {
            initial,
            ..Settings::default()
        };
        (DelayLimit::new(settings, now, 0.0), now)
    }

    /// A window of `elapsed` in which `samples` requests completed with a
    /// mean latency of `rtt`, at most `max_in_flight` at once, and as many
    /// in flight at its end as complete in one latency.
    fn window(rtt: Duration, samples: u32, elapsed: Duration, max_in_flight: u32) -> Sample {
        Sample {
            rtt: Some(rtt),
            fresh_rtt: Some(rtt),
            fresh_samples: samples,
            samples,
            elapsed,
            max_in_flight,
            // A steady state: as many in flight as complete in one latency.
            in_flight: (f64::from(samples) / elapsed.as_secs_f64() * rtt.as_secs_f64()) as u32,
        }
    }

    #[test]
    fn a_busy_fast_service_is_never_limited() {
        // 0.2 ms unloaded; a saturated CPU makes windows up to 25 times
        // slower, all under the 5 ms target.
        let (mut l, now) = limit(1000);
        assert_eq!(
            l.update(window(MS / 5, 2000, MS * 100, 32), now, 0.0),
            Reason::NewMinimum
        );
        for (i, rtt_us) in [300, 900, 2_500, 4_900, 1_200].into_iter().enumerate() {
            let at = now + MS * 100 * (i as u32 + 1);
            let w = window(Duration::from_micros(rtt_us), 1000, MS * 100, 32);
            assert_eq!(l.update(w, at, 0.0), Reason::AppLimited);
        }
        assert_eq!(l.limit(), 1000);
    }

    #[test]
    fn a_standing_delay_brings_the_limit_to_what_the_service_delivers() {
        // 20 ms unloaded; 400 completions a second; 300 ms latency.
        let (mut l, now) = limit(1000);
        l.update(window(MS * 20, 40, MS * 100, 10), now, 0.0);
        let reason = l.update(window(MS * 300, 40, MS * 100, 120), now + MS * 100, 0.0);
        assert_eq!(reason, Reason::Queue);
        // 400/s × (20 ms + 10 ms allowed) = 12.
        assert_eq!(l.limit(), 12);
    }

    #[test]
    fn a_queue_stands_two_windows_before_an_open_limit_acts() {
        // 20 ms unloaded, 40 ms now (10 ms allowed above it), 16 in flight
        // at 400 a second (40 ms of backlog, no more): a queue, but one
        // window of it could be a stall.
        let (mut l, now) = limit(1000);
        l.update(window(MS * 20, 40, MS * 100, 10), now, 0.0);
        let w = window(MS * 40, 40, MS * 100, 16);
        assert_eq!(l.update(w, now + MS * 100, 0.0), Reason::QueueSeen);
        assert_eq!(l.limit(), 1000);
        assert_eq!(l.update(w, now + MS * 200, 0.0), Reason::Queue);
        // 400/s × (20 ms + 10 ms allowed) = 12.
        assert_eq!(l.limit(), 12);
    }

    #[test]
    fn a_stall_is_not_a_queue() {
        // 0.2 ms unloaded, 32 connections; the process stalls for 150 ms:
        // one window of late completions, at a rate that says nothing of
        // the service, then the queue it made is gone.
        let (mut l, now) = limit(1000);
        l.update(window(MS / 5, 2000, MS * 100, 32), now, 0.0);
        let mut stalled = window(MS * 150, 300, MS * 250, 32);
        stalled.in_flight = 32;
        assert_eq!(l.update(stalled, now + MS * 350, 0.0), Reason::QueueSeen);
        assert_eq!(l.limit(), 1000);
        let after = window(MS / 4, 2000, MS * 100, 32);
        assert_eq!(l.update(after, now + MS * 450, 0.0), Reason::AppLimited);
        assert_eq!(l.limit(), 1000);
        // And again later: each stall alone, never two windows in a row.
        assert_eq!(l.update(stalled, now + MS * 700, 0.0), Reason::QueueSeen);
        assert_eq!(l.update(after, now + MS * 800, 0.0), Reason::AppLimited);
        assert_eq!(l.limit(), 1000);
    }

    #[test]
    fn a_long_stall_is_not_a_backlog() {
        // 0.2 ms unloaded, 32 connections, 20 000 completions a second;
        // then nothing completes for 1.5 s (the process, or the upstream
        // it waits on, stalled): the window that spans the stall closes
        // with a handful of completions over 1.6 s, a rate of 7 a second,
        // at which the 32 requests in flight would take 4.6 s. They are
        // the connections' 32, as before the stall, not a backlog that
        // grows: nothing to act on in one window.
        let (mut l, now) = limit(1000);
        l.update(window(MS / 5, 2000, MS * 100, 32), now, 0.0);
        let mut stalled = window(MS * 137, 11, MS * 1600, 32);
        stalled.in_flight = 32;
        assert_eq!(l.update(stalled, now + MS * 1700, 0.0), Reason::QueueSeen);
        assert_eq!(l.limit(), 1000);
        let after = window(MS / 4, 2000, MS * 100, 32);
        assert_eq!(l.update(after, now + MS * 1800, 0.0), Reason::AppLimited);
        assert_eq!(l.limit(), 1000);

        // When the stall's other completions fall in the next window, its
        // mean latency (23 ms) shows a queue a second time, and the limit
        // comes down to what the service delivers at its real rate, 20 000
        // a second × 5.2 ms: room for every connection still.
        let (mut l, now) = limit(1000);
        l.update(window(MS / 5, 2000, MS * 100, 32), now, 0.0);
        assert_eq!(l.update(stalled, now + MS * 1700, 0.0), Reason::QueueSeen);
        let mut tail = window(Duration::from_micros(23_100), 2031, MS * 100, 32);
        tail.in_flight = 32;
        assert_eq!(l.update(tail, now + MS * 1800, 0.0), Reason::Queue);
        assert_eq!(l.limit(), 106);
    }

    #[test]
    fn a_queue_still_growing_shows_in_what_is_in_flight() {
        // The window's requests took 40 ms, but 200 are in flight at 400
        // a second: the ones now in flight will take half a second.
        let (mut l, now) = limit(1000);
        l.update(window(MS * 40, 40, MS * 100, 10), now, 0.0);
        let mut w = window(MS * 41, 40, MS * 100, 200);
        w.in_flight = 200;
        assert_eq!(l.update(w, now + MS * 100, 0.0), Reason::Queue);
        // 400/s × (40 ms + 20 ms allowed).
        assert_eq!(l.limit(), 24);
        // The very first window too, when the queue is large: twice the
        // latency allowed.
        let (mut l, now) = limit(1000);
        let mut w = window(MS * 40, 40, MS * 100, 200);
        w.in_flight = 200;
        assert_eq!(l.update(w, now, 0.0), Reason::Queue);
        let (mut l, now) = limit(1000);
        let mut w = window(MS * 3, 20, MS * 10, 22);
        w.in_flight = 22;
        assert_eq!(
            l.update(w, now, 0.0),
            Reason::NewMinimum,
            "11 ms ahead: warming up"
        );
    }

    #[test]
    fn a_delay_under_the_threshold_is_not_a_queue() {
        // 20 ms unloaded: up to 30 ms is allowed (half of it, above 5 ms).
        let (mut l, now) = limit(50);
        l.update(window(MS * 20, 40, MS * 100, 50), now, 0.0);
        let reason = l.update(window(MS * 29, 40, MS * 100, 50), now + MS * 100, 0.0);
        assert_eq!(reason, Reason::ShortQueue);
        assert_eq!(l.limit(), 51);
    }

    #[test]
    fn with_no_delay_a_full_limit_doubles_with_the_rate() {
        let (mut l, now) = limit(10);
        l.update(window(MS * 20, 50, MS * 100, 10), now, 0.0);
        let reason = l.update(window(MS * 21, 50, MS * 100, 10), now + MS * 100, 0.0);
        assert_eq!(reason, Reason::NoQueue);
        // 500/s × 30 ms × 2 = 30.
        assert_eq!(l.limit(), 30);
    }

    #[test]
    fn a_decrease_that_does_not_lower_the_latency_is_undone() {
        let (mut l, now) = limit(100);
        l.update(window(MS * 20, 100, MS * 100, 50), now, 0.0);
        // The service became slower for good: 60 ms whatever the load.
        let at = now + MS * 100;
        assert_eq!(
            l.update(window(MS * 60, 30, MS * 100, 100), at, 0.0),
            Reason::Queue
        );
        let lowered = l.limit();
        assert!(lowered < 100, "{lowered}");
        // Settling until ten requests admitted under the lower limit
        // complete; the window's own latency (the ones admitted before)
        // does not count.
        let at = at + MS * 100;
        let mut w = window(MS * 90, 20, MS * 100, lowered);
        w.fresh_samples = 3;
        assert_eq!(l.update(w, at, 0.0), Reason::Settling);
        let at = at + MS * 100;
        let mut w = window(MS * 10, 20, MS * 100, lowered);
        (w.fresh_rtt, w.fresh_samples) = (Some(MS * 60), 10);
        assert_eq!(l.update(w, at, 0.0), Reason::Rebaseline);
        assert_eq!(l.limit(), 100);
        assert_eq!(l.no_load(), Some(MS * 60));
    }

    #[test]
    fn a_decrease_that_lowers_the_latency_stays() {
        let (mut l, now) = limit(1000);
        l.update(window(MS * 20, 40, MS * 100, 10), now, 0.0);
        let at = now + MS * 100;
        l.update(window(MS * 300, 40, MS * 100, 120), at, 0.0);
        assert_eq!(l.limit(), 12);
        // 120 in flight at 400/s: 300 ms to complete them.
        let at = at + MS * 400;
        let reason = l.update(window(MS * 27, 40, MS * 100, 12), at, 0.0);
        assert_eq!(reason, Reason::ShortQueue);
        assert_eq!(l.limit(), 13);
    }

    #[test]
    fn a_binding_limit_is_probed_and_an_open_one_is_not() {
        let (mut l, now) = limit(1000);
        l.update(window(MS * 20, 40, MS * 100, 10), now, 0.0);
        // Open: the probe is due (30 s) but the limit does not bind.
        let at = now + Duration::from_secs(31);
        assert_eq!(
            l.update(window(MS * 20, 40, MS * 100, 10), at, 0.0),
            Reason::AppLimited
        );
        assert_eq!(l.limit(), 1000);
        // Bound by a queue, then the probe is due again.
        let at = at + MS * 100;
        l.update(window(MS * 300, 40, MS * 100, 120), at, 0.0);
        let at = at + MS * 500;
        l.update(window(MS * 22, 40, MS * 100, 12), at, 0.0);
        let bound = l.limit();
        let at = at + Duration::from_secs(31);
        assert_eq!(
            l.update(window(MS * 28, 400, Duration::from_secs(1), bound), at, 0.0),
            Reason::ProbeDrain
        );
        // Half of 400/s × 20 ms.
        assert_eq!(l.limit(), 4);
        let at = at + MS * 100;
        assert_eq!(
            l.update(window(MS * 25, 40, MS * 100, 4), at, 0.0),
            Reason::ProbeMeasure
        );
        let at = at + MS * 100;
        assert_eq!(
            l.update(window(MS * 21, 40, MS * 100, 4), at, 0.0),
            Reason::ProbeDone
        );
        assert_eq!((l.limit(), l.no_load()), (bound, Some(MS * 21)));
    }

    #[test]
    fn the_limit_stays_within_its_bounds() {
        let now = Instant::now();
        let settings = Settings {
            initial: 50,
            min: 5,
            max: 60,
            ..Settings::default()
        };
        let mut l = DelayLimit::new(settings, now, 0.0);
        l.update(window(MS * 20, 10, MS * 100, 50), now, 0.0);
        l.update(window(MS * 900, 1, MS * 100, 50), now + MS * 100, 0.0);
        assert_eq!(l.limit(), 5);
        let mut l = DelayLimit::new(settings, now, 0.0);
        l.update(window(MS * 20, 10, MS * 100, 50), now, 0.0);
        l.update(window(MS * 20, 5000, MS * 100, 50), now + MS * 100, 0.0);
        assert_eq!(l.limit(), 60);
    }
}
