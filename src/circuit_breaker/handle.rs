use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::Breaker;
use super::State;

/// A handle on a circuit breaker, from
/// [`CircuitBreakerLayer::handle`](super::CircuitBreakerLayer::handle): read
/// its state and counts, or take it over by hand.
///
/// Cheap to clone; every clone controls the same breaker.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    breaker: Arc<Breaker>,
}

/// A breaker's state and counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The state.
    pub state: State,
    /// Calls in the window. Outcomes are recorded only while closed; after
    /// the breaker opens, the calls that opened it stay here until they
    /// leave the window, and closing after probes empties it.
    pub calls: u64,
    /// Of those, the failures.
    pub failures: u64,
    /// Of those, the slow calls (when slow calls are tracked).
    pub slow_calls: u64,
    /// Failures in a row (when consecutive failures are tracked).
    pub consecutive_failures: u32,
    /// While open: the time until a probe is let through.
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "open_remaining_ms",
            serialize_with = "crate::serde_util::opt_millis"
        )
    )]
    pub open_remaining: Option<Duration>,
}

impl BreakerHandle {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        Self { breaker }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.breaker.name()
    }

    /// The current state. An open breaker whose open period is over says
    /// [`State::Open`] until the next call comes and becomes the first probe.
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// The state and the window's counts now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let counts = self.breaker.counts(now);
        BreakerSnapshot {
            state: self.breaker.state(),
            calls: counts.calls,
            failures: counts.failures,
            slow_calls: counts.slow,
            consecutive_failures: self.breaker.consecutive_failures(),
            open_remaining: self.breaker.open_remaining(now),
        }
    }

    /// Opens the breaker until [`force_closed`](Self::force_closed) or
    /// [`reset`](Self::reset): every call is turned away, no probe is let
    /// through. For taking an upstream out by hand.
    pub fn force_open(&self) {
        self.breaker.force_open();
    }

    /// Closes the breaker until [`force_open`](Self::force_open) or
    /// [`reset`](Self::reset): every call goes through and none is
    /// recorded, so it cannot open.
    pub fn force_closed(&self) {
        self.breaker.force_closed();
    }

    /// Back to closed, with an empty window and the open duration back to
    /// its base: the breaker as it was built.
    pub fn reset(&self) {
        self.breaker.reset();
    }
}
