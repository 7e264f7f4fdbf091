//! The breaker's state machine against a reference model.
//!
//! The model is written for obviousness, not speed: it keeps every recorded
//! outcome in a list with its tick and recounts the window from the list
//! each time. Both are driven with the same random sequence of calls,
//! outcomes, cancellations, manual overrides and clock advances, and must
//! agree on every admission, every retry-after hint, every state and every
//! count of the window.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::breaker::{Breaker, Permit, PermitKind, Settings};
use super::State;
use crate::rng::Rng;
use crate::time::saturating_nanos;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Closed,
    Probe,
    Bypass,
}

#[derive(Clone, Copy, Debug)]
struct ModelPermit {
    generation: u64,
    kind: Kind,
    start: Instant,
}

#[derive(Debug)]
struct Model {
    settings: Settings,
    start: Instant,
    state: State,
    generation: u64,
    // (tick, failure, slow) of every outcome recorded while closed.
    outcomes: Vec<(u64, bool, bool)>,
    open_until: u64,
    trips: u32,
    admitted: u32,
    successes: u32,
    consecutive: u32,
}

impl Model {
    fn new(settings: Settings, start: Instant) -> Self {
        Self {
            settings,
            start,
            state: State::Closed,
            generation: 0,
            outcomes: Vec::new(),
            open_until: 0,
            trips: 0,
            admitted: 0,
            successes: 0,
            consecutive: 0,
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        saturating_nanos(now - self.start)
    }

    fn tick(&self, now: Instant) -> u64 {
        self.nanos(now) / saturating_nanos(self.settings.bucket)
    }

    fn window(&self, now: Instant) -> (u64, u64, u64) {
        self.last(now, u64::from(self.settings.buckets))
    }

    fn last(&self, now: Instant, n: u64) -> (u64, u64, u64) {
        let now = self.tick(now);
        let recent = self.outcomes.iter().filter(|(t, _, _)| now - t < n);
        recent.fold((0, 0, 0), |(c, f, s), (_, failure, slow)| {
            (c + 1, f + u64::from(*failure), s + u64::from(*slow))
        })
    }

    fn acquire(&mut self, now: Instant) -> Result<ModelPermit, Duration> {
        let permit = |generation, kind| ModelPermit {
            generation,
            kind,
            start: now,
        };
        match self.state {
            State::Closed => Ok(permit(self.generation, Kind::Closed)),
            State::ForcedClosed => Ok(permit(self.generation, Kind::Bypass)),
            State::ForcedOpen => Err(self.settings.open_duration),
            State::Open if self.nanos(now) < self.open_until => {
                Err(Duration::from_nanos(self.open_until - self.nanos(now)))
            }
            State::Open => {
                self.state = State::HalfOpen;
                self.generation += 1;
                self.admitted = 1;
                self.successes = 0;
                Ok(permit(self.generation, Kind::Probe))
            }
            State::HalfOpen if self.admitted < self.settings.probes => {
                self.admitted += 1;
                Ok(permit(self.generation, Kind::Probe))
            }
            State::HalfOpen => Err(Duration::from_secs(1)),
        }
    }

    fn complete(&mut self, permit: ModelPermit, failure: bool, now: Instant) {
        let slow = self
            .settings
            .slow_calls
            .is_some_and(|(threshold, _)| now - permit.start >= threshold);
        if permit.generation != self.generation {
            return;
        }
        match (permit.kind, self.state) {
            (Kind::Closed, State::Closed) => {
                self.outcomes.push((self.tick(now), failure, slow));
                let mut open = false;
                if let Some(limit) = self.settings.consecutive_failures {
                    self.consecutive = if failure { self.consecutive + 1 } else { 0 };
                    open = self.consecutive >= limit;
                }
                if !open && (failure || slow) {
                    let (calls, failures, slows) = self.window(now);
                    let calls_f = calls as f64;
                    open = calls >= u64::from(self.settings.minimum_calls)
                        && (failures as f64 >= self.settings.failure_ratio * calls_f
                            || self
                                .settings
                                .slow_calls
                                .is_some_and(|(_, ratio)| slows as f64 >= ratio * calls_f));
                }
                let k = self.settings.recent_buckets;
                if !open && failure && k < self.settings.buckets {
                    let (calls, failures, _) = self.last(now, u64::from(k));
                    open = calls >= u64::from(self.settings.minimum_calls)
                        && failures as f64 >= self.settings.failure_ratio * calls as f64;
                }
                if open {
                    self.open(now);
                }
            }
            (Kind::Probe, State::HalfOpen) => {
                if failure || slow {
                    self.open(now);
                } else {
                    self.successes += 1;
                    if self.successes == self.settings.probes {
                        self.force(State::Closed);
                    }
                }
            }
            _ => {}
        }
    }

    fn release(&mut self, permit: ModelPermit) {
        if permit.kind == Kind::Probe
            && self.state == State::HalfOpen
            && permit.generation == self.generation
            && self.admitted > 0
        {
            self.admitted -= 1;
        }
    }

    fn open(&mut self, now: Instant) {
        self.trips += 1;
        let mut duration = self.settings.open_duration;
        for _ in 1..self.trips {
            duration = (duration * 2).min(self.settings.max_open_duration);
        }
        self.open_until = self.nanos(now) + saturating_nanos(duration);
        self.state = State::Open;
        self.generation += 1;
        self.consecutive = 0;
    }

    fn force(&mut self, state: State) {
        self.state = state;
        self.generation += 1;
        if state == State::Closed {
            self.outcomes.clear();
            self.trips = 0;
            self.consecutive = 0;
        }
    }

    fn open_remaining(&self, now: Instant) -> Option<Duration> {
        (self.state == State::Open)
            .then(|| Duration::from_nanos(self.open_until.saturating_sub(self.nanos(now))))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Call,
    Complete { index: usize, failure: bool },
    Cancel { index: usize },
    ForceOpen,
    ForceClosed,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..1_500).prop_map(Op::Advance),
        8 => Just(Op::Call),
        8 => (any::<usize>(), any::<bool>())
            .prop_map(|(index, failure)| Op::Complete { index, failure }),
        2 => any::<usize>().prop_map(|index| Op::Cancel { index }),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::ForceClosed), Just(Op::Reset)],
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![Just(0.25), Just(0.5), Just(1.0)],
        1u32..=6,
        prop_oneof![
            Just((10u32, Duration::from_secs(1))),
            Just((4, Duration::from_millis(250)))
        ],
        proptest::option::of(1u32..=4),
        proptest::option::of((100u64..=800).prop_map(Duration::from_millis)),
        1u64..=5,
        1u32..=3,
        1u32..=3,
    )
        .prop_map(
            |(ratio, minimum_calls, (buckets, bucket), consecutive, slow, open, probes, recent)| {
                Settings {
                    failure_ratio: ratio,
                    minimum_calls,
                    buckets,
                    bucket,
                    consecutive_failures: consecutive,
                    recent_buckets: recent,
                    unreachable_open_duration: Duration::from_secs(open),
                    slow_calls: slow.map(|threshold| (threshold, 0.5)),
                    open_duration: Duration::from_secs(open),
                    max_open_duration: Duration::from_secs(open * 4),
                    jitter: 0.0,
                    probes,
                    too_many_requests_is_failure: false,
                }
            },
        )
}

fn kind_of(permit: &Permit) -> Kind {
    match permit.kind() {
        PermitKind::Closed => Kind::Closed,
        PermitKind::Probe => Kind::Probe,
        PermitKind::Bypass => Kind::Bypass,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_agrees_with_the_model(settings in settings(), ops in proptest::collection::vec(op(), 1..300)) {
        let start = Instant::now();
        let breaker = Breaker::new("model".into(), settings.clone(), Rng::from_seed(1), start);
        let mut model = Model::new(settings, start);
        let mut now = start;
        let mut pending: Vec<(Permit, ModelPermit)> = Vec::new();

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Advance(ms) => now += Duration::from_millis(ms),
                Op::Call => match (breaker.acquire(|| now), model.acquire(now)) {
                    (Ok(real), Ok(expected)) => {
                        prop_assert_eq!(kind_of(&real), expected.kind, "step {}", step);
                        pending.push((real, expected));
                    }
                    (Err(real), Err(expected)) => prop_assert_eq!(real, expected, "step {}", step),
                    (real, expected) => prop_assert!(
                        false,
                        "step {}: breaker {:?}, model {:?}",
                        step,
                        real.map(|p| kind_of(&p)),
                        expected.map(|p| p.kind)
                    ),
                },
                Op::Complete { index, failure } if !pending.is_empty() => {
                    let (real, expected) = pending.swap_remove(index % pending.len());
                    breaker.complete(&real, failure, false, now);
                    model.complete(expected, failure, now);
                }
                Op::Cancel { index } if !pending.is_empty() => {
                    let (real, expected) = pending.swap_remove(index % pending.len());
                    breaker.release(&real);
                    model.release(expected);
                }
                Op::Complete { .. } | Op::Cancel { .. } => {}
                Op::ForceOpen => {
                    breaker.force_open();
                    model.force(State::ForcedOpen);
                }
                Op::ForceClosed => {
                    breaker.force_closed();
                    model.force(State::ForcedClosed);
                }
                Op::Reset => {
                    breaker.reset();
                    model.force(State::Closed);
                }
            }
            prop_assert_eq!(breaker.state(), model.state, "step {}", step);
            let counts = breaker.counts(now);
            prop_assert_eq!(
                (counts.calls, counts.failures, counts.slow),
                model.window(now),
                "step {}",
                step
            );
            prop_assert_eq!(breaker.consecutive_failures(), model.consecutive, "step {}", step);
            prop_assert_eq!(breaker.open_remaining(now), model.open_remaining(now), "step {}", step);
        }
    }
}

fn exact() -> Settings {
    Settings {
        jitter: 0.0,
        ..Settings::default()
    }
}

#[test]
fn the_window_forgets_failures_older_than_its_length() {
    let start = Instant::now();
    let breaker = Breaker::new("t".into(), exact(), Rng::from_seed(1), start);
    let call = |at: Duration, failure: bool| {
        let now = start + at;
        let permit = breaker.acquire(|| now).expect("closed");
        breaker.complete(&permit, failure, false, now);
    };
    // 19 failures in the first second: one short of the minimum.
    for _ in 0..19 {
        call(Duration::ZERO, true);
    }
    assert_eq!(breaker.state(), State::Closed);
    // Ten seconds later they have left the window. A breaker that counted
    // since its last transition would see 20 calls, 20 failures, and open.
    call(Duration::from_secs(10), true);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.counts(start + Duration::from_secs(10)).calls, 1);
    // While they are still in it, the 20th call opens the breaker.
    let fresh = Breaker::new("t".into(), exact(), Rng::from_seed(1), start);
    for _ in 0..19 {
        let p = fresh.acquire(|| start).unwrap();
        fresh.complete(&p, true, false, start);
    }
    let late = start + Duration::from_millis(9_999);
    let p = fresh.acquire(|| late).unwrap();
    fresh.complete(&p, true, false, late);
    assert_eq!(fresh.state(), State::Open);
}

#[test]
fn open_duration_doubles_up_to_the_cap_and_jitter_only_shortens_it() {
    let settings = Settings {
        jitter: 0.25,
        ..Settings::default()
    };
    let breaker = Breaker::new("t".into(), settings, Rng::from_seed(3), Instant::now());
    for (trips, full) in [
        (1, 5),
        (2, 10),
        (3, 20),
        (4, 40),
        (5, 60),
        (6, 60),
        (40, 60),
    ] {
        let full = Duration::from_secs(full);
        for _ in 0..100 {
            let d = breaker.open_duration(trips);
            assert!(d <= full && d >= full.mul_f64(0.75), "trip {trips}: {d:?}");
        }
    }
}
