//! The breaker's state machine, shared by every service a layer makes.
//!
//! It takes `now` as an argument so that it can be driven step by step in
//! plain tests; the service reads `tokio::time::Instant::now()`.
//!
//! # The state word
//!
//! Everything a request needs to be admitted is in one atomic word:
//!
//! ```text
//! generation (32 bits) | probe successes (14) | probes admitted (14) | unused (1) | state (3)
//! ```
//!
//! The generation grows by one on every transition. A permit remembers the
//! generation it was given in, so an outcome that arrives after the breaker
//! moved on (a call admitted while closed that fails after the breaker
//! opened, a probe of an earlier half-open period) is recognised and ignored,
//! and a half-open probe slot is freed only in the period it was taken in.
//! Admitting a call while closed is one atomic load; admitting a probe is
//! one compare-and-swap. Transitions take a short lock, so that they are
//! decided one at a time, and publish the new state with one store or
//! compare-and-swap.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::window::{Counts, Window};
use super::State;
use crate::rng::Rng;
use crate::time::saturating_nanos;

const STATE_MASK: u64 = 0b111;
const ADMITTED_SHIFT: u32 = 4;
const SUCCESSES_SHIFT: u32 = 18;
const PROBE_MASK: u64 = (1 << 14) - 1;
const GEN_SHIFT: u32 = 32;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;

/// The most half-open probes the builder accepts (the word has 14 bits).
pub(crate) const MAX_PROBES: u32 = 1_000;

/// The retry-after hint of a call turned away while every half-open probe
/// slot is taken: the probes will have decided by then, one way or the other,
/// in the common case.
pub(crate) const PROBING_RETRY_AFTER: Duration = Duration::from_secs(1);

fn pack(state: u64, generation: u32) -> u64 {
    (u64::from(generation) << GEN_SHIFT) | state
}

fn state_of(word: u64) -> u64 {
    word & STATE_MASK
}

fn generation_of(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32
}

fn admitted_of(word: u64) -> u32 {
    ((word >> ADMITTED_SHIFT) & PROBE_MASK) as u32
}

fn successes_of(word: u64) -> u32 {
    ((word >> SUCCESSES_SHIFT) & PROBE_MASK) as u32
}

/// How many open periods in a row opened by refused connections are the
/// short one; later ones start over from the open duration, doubling.
const UNREACHABLE_TRIPS: u32 = 5;

/// The breaker's configuration, checked by the builder.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) failure_ratio: f64,
    pub(crate) minimum_calls: u32,
    pub(crate) buckets: u32,
    pub(crate) bucket: Duration,
    pub(crate) consecutive_failures: Option<u32>,
    /// The most recent buckets whose failure ratio alone also opens the
    /// breaker: an outage after a long healthy spell, which the whole
    /// window would take seconds to see.
    pub(crate) recent_buckets: u32,
    pub(crate) slow_calls: Option<(Duration, f64)>,
    pub(crate) open_duration: Duration,
    /// The first open period when the failure that opened it was a refused
    /// connection (probing it again is cheap).
    pub(crate) unreachable_open_duration: Duration,
    pub(crate) max_open_duration: Duration,
    pub(crate) jitter: f64,
    pub(crate) probes: u32,
    pub(crate) too_many_requests_is_failure: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            minimum_calls: 20,
            buckets: 10,
            bucket: Duration::from_secs(1),
            consecutive_failures: None,
            recent_buckets: 1,
            slow_calls: None,
            open_duration: Duration::from_secs(5),
            unreachable_open_duration: Duration::from_secs(1),
            max_open_duration: Duration::from_secs(60),
            jitter: 0.1,
            probes: 3,
            too_many_requests_is_failure: false,
        }
    }
}

/// Why the breaker opened, for the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    FailureRatio,
    RecentFailureRatio,
    SlowCallRatio,
    ConsecutiveFailures,
    ProbeFailed,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::FailureRatio => "failure_ratio",
            Reason::RecentFailureRatio => "recent_failure_ratio",
            Reason::SlowCallRatio => "slow_call_ratio",
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::ProbeFailed => "probe_failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PermitKind {
    /// Admitted while closed: its outcome goes to the window.
    Closed,
    /// A half-open probe: its outcome decides the next state.
    Probe,
    /// Admitted while forced closed: its outcome is not recorded.
    Bypass,
}

/// What a call was admitted as. Holding one is how the service knows what
/// to do with the call's outcome, or with its cancellation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Permit {
    generation: u32,
    kind: PermitKind,
    // The time of admission, read only when slow calls are tracked.
    start: Option<Instant>,
}

impl Permit {
    pub(crate) fn kind(&self) -> PermitKind {
        self.kind
    }
}

#[derive(Debug)]
struct Cold {
    // Openings since the breaker last closed after probing (or was reset):
    // the open duration doubles with each.
    trips: u32,
}

// Aligned so that the `Arc` counts, which every call changes, sit on other
// cache lines than the state every call reads.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Breaker {
    // Shared, so that a metric label is a reference count, not a copy.
    name: Arc<str>,
    settings: Settings,
    start: Instant,
    word: AtomicU64,
    // When the current open period ends, in nanoseconds since `start`.
    // Written before the state word that makes it current.
    open_until: AtomicU64,
    consecutive: AtomicU32,
    /// Whether the last failure recorded was a refused connection: the
    /// next open period is the short one.
    unreachable: AtomicBool,
    window: Window,
    cold: Mutex<Cold>,
    rng: Rng,
}

impl Breaker {
    pub(crate) fn new(name: Arc<str>, settings: Settings, rng: Rng, start: Instant) -> Self {
        // One stripe of counts per core, so that calls completing on
        // different cores do not write the same cache line.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let window = Window::new(settings.buckets, settings.bucket, cores);
        // The state gauge exists from the start, not from the first change.
        crate::observability::emit::breaker_built(&name);
        Self {
            name,
            settings,
            start,
            word: AtomicU64::new(pack(CLOSED, 0)),
            open_until: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            unreachable: AtomicBool::new(false),
            window,
            cold: Mutex::new(Cold { trips: 0 }),
            rng,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    fn since_start(&self, now: Instant) -> u64 {
        saturating_nanos(now.saturating_duration_since(self.start))
    }

    fn tick(&self, now: Instant) -> u64 {
        self.window.tick(now.saturating_duration_since(self.start))
    }

    fn lock(&self) -> MutexGuard<'_, Cold> {
        // A panic while holding this lock leaves `Cold` consistent (it is
        // one counter), so a poisoned lock is used as it is.
        self.cold
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a call, or says how long until the breaker will admit one.
    ///
    /// `now` is read only when needed: never for a closed breaker that does
    /// not track slow calls.
    pub(crate) fn acquire(&self, now: impl Fn() -> Instant) -> Result<Permit, Duration> {
        let track_slow = self.settings.slow_calls.is_some();
        loop {
            let word = self.word.load(Ordering::Acquire);
            let generation = generation_of(word);
            match State::from_bits(state_of(word)) {
                State::Closed => {
                    return Ok(Permit {
                        generation,
                        kind: PermitKind::Closed,
                        start: track_slow.then(&now),
                    })
                }
                State::ForcedClosed => {
                    return Ok(Permit {
                        generation,
                        kind: PermitKind::Bypass,
                        start: None,
                    })
                }
                State::ForcedOpen => return Err(self.settings.open_duration),
                State::Open => {
                    let now = now();
                    let until = self.open_until.load(Ordering::Acquire);
                    let elapsed = self.since_start(now);
                    if elapsed < until {
                        return Err(Duration::from_nanos(until - elapsed));
                    }
                    // Open => HalfOpen: the open period is over. This call
                    // is the first probe.
                    let _cold = self.lock();
                    let next = pack(HALF_OPEN, generation.wrapping_add(1)) | (1 << ADMITTED_SHIFT);
                    if self
                        .word
                        .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        tracing::info!(
                            target: "tower_steady::circuit_breaker",
                            breaker = %self.name,
                            "circuit half-open: probing the upstream"
                        );
                        crate::observability::emit::breaker_transition(&self.name, "half_open", 1);
                        return Ok(Permit {
                            generation: generation.wrapping_add(1),
                            kind: PermitKind::Probe,
                            start: track_slow.then_some(now),
                        });
                    }
                    // Someone else moved it on: look again.
                }
                State::HalfOpen => {
                    if admitted_of(word) >= self.settings.probes {
                        return Err(PROBING_RETRY_AFTER);
                    }
                    // HalfOpen => HalfOpen: one more probe slot taken.
                    let next = word + (1 << ADMITTED_SHIFT);
                    if self
                        .word
                        .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Ok(Permit {
                            generation,
                            kind: PermitKind::Probe,
                            start: track_slow.then(&now),
                        });
                    }
                }
            }
        }
    }

    /// Records the outcome of an admitted call. `failure` is whether the
    /// outcome counts as a failure for this breaker; `unreachable`, whether
    /// it was a refused connection.
    pub(crate) fn complete(&self, permit: &Permit, failure: bool, unreachable: bool, now: Instant) {
        if failure {
            self.unreachable.store(unreachable, Ordering::Relaxed);
        }
        let slow = match (permit.start, self.settings.slow_calls) {
            (Some(start), Some((threshold, _))) => {
                now.saturating_duration_since(start) >= threshold
            }
            _ => false,
        };
        match permit.kind {
            PermitKind::Bypass => {}
            PermitKind::Closed => self.closed_outcome(permit.generation, failure, slow, now),
            PermitKind::Probe => self.probe_outcome(permit.generation, failure || slow, now),
        }
    }

    /// Forgets an admitted call that will never complete (its future was
    /// dropped): it counts neither way, and a probe frees its slot.
    pub(crate) fn release(&self, permit: &Permit) {
        if permit.kind != PermitKind::Probe {
            return;
        }
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if state_of(word) != HALF_OPEN
                || generation_of(word) != permit.generation
                || admitted_of(word) == 0
            {
                // The probing period it belonged to is over.
                return;
            }
            // HalfOpen => HalfOpen: the slot is free for another probe.
            let next = word - (1 << ADMITTED_SHIFT);
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }

    fn closed_outcome(&self, generation: u32, failure: bool, slow: bool, now: Instant) {
        let word = self.word.load(Ordering::Acquire);
        if word != pack(CLOSED, generation) {
            // The breaker opened (or was forced) since this call was
            // admitted: its closed period, and its window, are over.
            return;
        }
        let tick = self.tick(now);
        let track_slow = self.settings.slow_calls.map(|_| slow);
        self.window.record(tick, failure, track_slow);

        let mut reason = None;
        if let Some(limit) = self.settings.consecutive_failures {
            if failure {
                let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if run >= limit {
                    reason = Some(Reason::ConsecutiveFailures);
                }
            } else if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
        }
        // The ratios are looked at only when this call made them worse, so a
        // success never opens the breaker and the success path never sums
        // the window.
        if reason.is_none() && (failure || slow) {
            reason = self.ratio_exceeded(self.window.sum(tick));
        }
        // The most recent buckets alone: after a long healthy spell the
        // whole window holds thousands of successes, and an outage would
        // take seconds to reach the ratio there.
        if reason.is_none() && failure && self.settings.recent_buckets < self.settings.buckets {
            let recent = self
                .window
                .sum_last(tick, u64::from(self.settings.recent_buckets));
            if recent.calls >= u64::from(self.settings.minimum_calls)
                && recent.failures as f64 >= self.settings.failure_ratio * recent.calls as f64
            {
                reason = Some(Reason::RecentFailureRatio);
            }
        }
        if let Some(reason) = reason {
            let mut cold = self.lock();
            // Closed => Open: the upstream is failing.
            self.open(&mut cold, word, reason, now);
        }
    }

    fn ratio_exceeded(&self, counts: Counts) -> Option<Reason> {
        if counts.calls < u64::from(self.settings.minimum_calls) {
            return None;
        }
        let calls = counts.calls as f64;
        if counts.failures as f64 >= self.settings.failure_ratio * calls {
            return Some(Reason::FailureRatio);
        }
        if let Some((_, ratio)) = self.settings.slow_calls {
            if counts.slow as f64 >= ratio * calls {
                return Some(Reason::SlowCallRatio);
            }
        }
        None
    }

    fn probe_outcome(&self, generation: u32, failed: bool, now: Instant) {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if state_of(word) != HALF_OPEN || generation_of(word) != generation {
                return;
            }
            if failed {
                let mut cold = self.lock();
                // HalfOpen => Open: a probe failed, the upstream is not back.
                self.open(&mut cold, word, Reason::ProbeFailed, now);
                return;
            }
            if successes_of(word) + 1 < self.settings.probes {
                // HalfOpen => HalfOpen: one more probe succeeded.
                let next = word + (1 << SUCCESSES_SHIFT);
                match self.word.compare_exchange_weak(
                    word,
                    next,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(current) => word = current,
                }
                continue;
            }
            // HalfOpen => Closed: every probe succeeded.
            let mut cold = self.lock();
            if self.close(&mut cold, word) {
                return;
            }
            word = self.word.load(Ordering::Acquire);
        }
    }

    /// Opens the breaker if it is still in the state and generation of
    /// `from`. Called with the lock held.
    fn open(&self, cold: &mut Cold, from: u64, reason: Reason, now: Instant) {
        let counts = self.window.sum(self.tick(now));
        let trips = cold.trips.saturating_add(1);
        let duration = self.open_duration(trips);
        let until = self
            .since_start(now)
            .saturating_add(saturating_nanos(duration));
        let next = pack(OPEN, generation_of(from).wrapping_add(1));
        if !self.transition(from, next, || {
            self.open_until.store(until, Ordering::Release)
        }) {
            return;
        }
        cold.trips = trips;
        self.consecutive.store(0, Ordering::Relaxed);
        tracing::warn!(
            target: "tower_steady::circuit_breaker",
            breaker = %self.name,
            reason = reason.as_str(),
            calls = counts.calls,
            failures = counts.failures,
            slow_calls = counts.slow,
            open_for_ms = duration.as_millis() as u64,
            "circuit opened: failing fast"
        );
        crate::observability::emit::breaker_transition(&self.name, "open", 2);
    }

    /// Closes the breaker after a successful probing period, if it is still
    /// in the state and generation of `from`. Called with the lock held.
    fn close(&self, cold: &mut Cold, from: u64) -> bool {
        let next = pack(CLOSED, generation_of(from).wrapping_add(1));
        // The window still holds the failures that opened the breaker; a
        // new closed period starts from nothing.
        if !self.transition(from, next, || self.window.clear()) {
            return false;
        }
        cold.trips = 0;
        self.consecutive.store(0, Ordering::Relaxed);
        tracing::info!(
            target: "tower_steady::circuit_breaker",
            breaker = %self.name,
            "circuit closed: the upstream is back"
        );
        crate::observability::emit::breaker_transition(&self.name, "closed", 0);
        true
    }

    /// Moves from `from` (state and generation; probe counts may differ) to
    /// `to`, running `before` first. Returns whether it did.
    fn transition(&self, from: u64, to: u64, before: impl FnOnce()) -> bool {
        let mut word = self.word.load(Ordering::Acquire);
        let mut before = Some(before);
        loop {
            if state_of(word) != state_of(from) || generation_of(word) != generation_of(from) {
                return false;
            }
            if let Some(before) = before.take() {
                before();
            }
            match self
                .word
                .compare_exchange(word, to, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(current) => word = current,
            }
        }
    }

    /// How long the breaker stays open on its `trips`-th opening in a row:
    /// the base duration, doubled for each earlier opening, capped, and
    /// shortened by up to `jitter` of itself so that gateways that opened
    /// together do not probe together.
    pub(super) fn open_duration(&self, trips: u32) -> Duration {
        let s = &self.settings;
        let doublings = trips.saturating_sub(1).min(31);
        // A refused connection is cheap to try again: for the first few
        // open periods (about the time a restart takes) the upstream is
        // probed back soon, so that it is back within about that long of
        // its restart; an outage longer than that backs off as any other,
        // so that a long one is not probed every second (and the probes'
        // refusals do not fill a throttle below).
        let unreachable = self.unreachable.load(Ordering::Relaxed);
        let full = if unreachable && trips <= UNREACHABLE_TRIPS {
            s.unreachable_open_duration.min(s.open_duration)
        } else {
            let doublings = if unreachable {
                trips.saturating_sub(UNREACHABLE_TRIPS + 1).min(31)
            } else {
                doublings
            };
            s.open_duration
                .saturating_mul(1 << doublings)
                .min(s.max_open_duration)
        };
        if s.jitter == 0.0 {
            return full;
        }
        full.mul_f64(1.0 - s.jitter * self.rng.next_f64())
    }

    /// Moves to `state` whatever the current one, as an operator asked.
    fn force(&self, state: u64) {
        let mut cold = self.lock();
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let next = pack(state, generation_of(word).wrapping_add(1));
            if state == CLOSED {
                self.window.clear();
            }
            match self
                .word
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(current) => word = current,
            }
        }
        if state == CLOSED {
            cold.trips = 0;
            self.consecutive.store(0, Ordering::Relaxed);
        }
        tracing::info!(
            target: "tower_steady::circuit_breaker",
            breaker = %self.name,
            state = ?State::from_bits(state),
            "circuit state set by hand"
        );
        let (to, gauge) = match state {
            FORCED_OPEN => ("forced_open", 3),
            FORCED_CLOSED => ("forced_closed", 4),
            OPEN => ("open", 2),
            HALF_OPEN => ("half_open", 1),
            _ => ("closed", 0),
        };
        crate::observability::emit::breaker_transition(&self.name, to, gauge);
    }

    /// Any state => ForcedOpen.
    pub(crate) fn force_open(&self) {
        self.force(FORCED_OPEN);
    }

    /// Any state => ForcedClosed.
    pub(crate) fn force_closed(&self) {
        self.force(FORCED_CLOSED);
    }

    /// Any state => Closed, with an empty window and the open duration back
    /// to its base.
    pub(crate) fn reset(&self) {
        self.force(CLOSED);
    }

    pub(crate) fn state(&self) -> State {
        State::from_bits(state_of(self.word.load(Ordering::Acquire)))
    }

    pub(crate) fn counts(&self, now: Instant) -> Counts {
        self.window.sum(self.tick(now))
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// While open, the time until the breaker lets a probe through.
    pub(crate) fn open_remaining(&self, now: Instant) -> Option<Duration> {
        let word = self.word.load(Ordering::Acquire);
        if state_of(word) != OPEN {
            return None;
        }
        let until = self.open_until.load(Ordering::Acquire);
        Some(Duration::from_nanos(
            until.saturating_sub(self.since_start(now)),
        ))
    }
}

impl State {
    fn from_bits(bits: u64) -> State {
        match bits {
            CLOSED => State::Closed,
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            FORCED_OPEN => State::ForcedOpen,
            // FORCED_CLOSED: the word holds no other value.
            _ => State::ForcedClosed,
        }
    }
}
