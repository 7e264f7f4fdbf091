//! One endpoint's health: the atomics that every request reads and
//! updates (state, requests in flight, the latency estimate, the outcome
//! counts), and what an outcome means for it ([`Verdict`]). The decisions
//! that need the whole set (eject, probe, re-admit) are the registry's, in
//! `health.rs`; they change these fields under its lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::ewma::PeakEwma;
use super::health::Config;
use crate::classify::{FailureKind, Outcome};

pub(super) const HEALTHY: u8 = 0;
pub(super) const SLOW_START: u8 = 1;
pub(super) const EJECTED: u8 = 2;
pub(super) const PROBING: u8 = 3;

/// What an outcome means for an endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    /// The endpoint answered, badly (500, 429, a malformed response): it
    /// counts against its success rate but ends a run of gateway failures.
    Failure,
    /// The endpoint did not answer properly: 502, 503, 504, resets,
    /// timeouts. These are Envoy's "gateway failures" (its local-origin
    /// errors count as 503s).
    GatewayFailure,
    /// The endpoint could not be reached at all (connection refused,
    /// unreachable): a gateway failure that says the process is not there,
    /// as while it restarts. It is probed back soon.
    Unreachable,
    /// Says nothing of the endpoint: a local rejection, the caller's
    /// deadline, an error nobody recognises.
    Ignore,
}

impl Verdict {
    pub(crate) fn of(outcome: Outcome) -> Self {
        match outcome.kind() {
            None => Verdict::Success,
            Some(kind) if kind.is_gateway_status() => Verdict::GatewayFailure,
            Some(FailureKind::Connect) => Verdict::Unreachable,
            Some(FailureKind::Reset | FailureKind::Timeout) => Verdict::GatewayFailure,
            Some(
                FailureKind::ServerError | FailureKind::TooManyRequests | FailureKind::Protocol,
            ) => Verdict::Failure,
            Some(_) => Verdict::Ignore,
        }
    }
}

/// One endpoint's health, shared by the request path, the registry and the
/// health checker.
#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) addr: SocketAddr,
    pub(super) state: AtomicU8,
    /// Set by failing active checks, cleared by passing ones; independent
    /// of the passive state, as in Envoy.
    pub(super) check_down: AtomicBool,
    /// Set when the endpoint leaves the set: its checker stops.
    pub(crate) removed: AtomicBool,
    pub(super) in_flight: AtomicU32,
    pub(super) ewma: PeakEwma,
    pub(super) consecutive: AtomicU32,
    /// Nanoseconds since the epoch: the end of the ejection (while ejected),
    /// or the start of the slow start (after a re-admission).
    pub(super) until: AtomicU64,
    pub(super) since: AtomicU64,
    /// The ejection multiplier (n in 30 s × n), and ejections in all.
    pub(super) multiplier: AtomicU32,
    /// Whether the last failure of the current run (or the last failed
    /// probe) was an unreachable endpoint: its ejection is the short one.
    pub(super) unreachable: AtomicBool,
    pub(super) ejections: AtomicU32,
    /// Outcomes in the current success-rate interval ([`Outcomes`]), and
    /// the last interval's, for the handle.
    pub(super) outcomes: AtomicU64,
    pub(super) last_requests: AtomicU32,
    pub(super) last_successes: AtomicU32,
    /// Active checks passed and failed in a row.
    pub(super) passes: AtomicU32,
    pub(super) fails: AtomicU32,
}

/// Requests and successes in one word, the requests in the high 32 bits:
/// an answer is counted with one atomic add ([`Outcomes::one`]), and an
/// interval's counts are taken with one swap, both of the same moment.
/// Each holds up to 2^32 − 1 answers in one interval (an interval is
/// seconds long: four billion answers from one endpoint in it are out of
/// reach); more successes than that would carry into the requests.
pub(super) struct Outcomes;

impl Outcomes {
    /// The word that counts one request, a success or not.
    pub(super) const fn one(success: bool) -> u64 {
        (1 << 32) | success as u64
    }

    /// `(requests, successes)` of a word.
    pub(super) const fn read(word: u64) -> (u32, u32) {
        ((word >> 32) as u32, word as u32)
    }
}

impl Health {
    pub(super) fn new(addr: SocketAddr, state: u8, now: u64) -> Self {
        Self {
            addr,
            state: AtomicU8::new(state),
            check_down: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            ewma: PeakEwma::new(millis(now)),
            consecutive: AtomicU32::new(0),
            until: AtomicU64::new(0),
            since: AtomicU64::new(now),
            multiplier: AtomicU32::new(0),
            unreachable: AtomicBool::new(false),
            ejections: AtomicU32::new(0),
            outcomes: AtomicU64::new(0),
            last_requests: AtomicU32::new(0),
            last_successes: AtomicU32::new(0),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
        }
    }

    pub(super) fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Whether the endpoint takes its share of requests (fully or ramping
    /// up).
    pub(crate) fn is_healthy(&self) -> bool {
        matches!(self.state(), HEALTHY | SLOW_START) && !self.check_down.load(Ordering::Relaxed)
    }

    pub(super) fn is_passively_ejected(&self) -> bool {
        matches!(self.state(), EJECTED | PROBING)
    }

    /// Its share of requests during slow start, in `(0, 1]`: Envoy's
    /// `max(min_weight, elapsed / window)` (aggression 1).
    pub(crate) fn weight(&self, now: u64, config: &Config) -> f64 {
        if self.state() != SLOW_START || config.slow_start.is_zero() {
            return 1.0;
        }
        let elapsed = now.saturating_sub(self.since.load(Ordering::Relaxed));
        let ramp = elapsed as f64 / config.slow_start.as_nanos() as f64;
        ramp.clamp(config.slow_start_min_weight, 1.0)
    }

    /// Peak-EWMA cost: the latency estimate times the requests in flight
    /// plus one.
    pub(crate) fn cost(&self, now: u64, config: &Config) -> f64 {
        let pending = self.in_flight.load(Ordering::Relaxed);
        self.ewma
            .cost(pending, millis(now), config.decay, config.default_rtt)
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) fn millis(nanos: u64) -> u32 {
    (nanos / 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_count_requests_and_successes_in_one_word() {
        let word = AtomicU64::new(0);
        for success in [true, false, true, true] {
            word.fetch_add(Outcomes::one(success), Ordering::Relaxed);
        }
        assert_eq!(Outcomes::read(word.swap(0, Ordering::Relaxed)), (4, 3));
        assert_eq!(Outcomes::read(word.load(Ordering::Relaxed)), (0, 0));
        let most = (u64::from(u32::MAX) << 32) | u64::from(u32::MAX);
        assert_eq!(Outcomes::read(most), (u32::MAX, u32::MAX));
    }
}
