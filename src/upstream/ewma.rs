//! Peak-EWMA latency, lock-free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A peak-EWMA latency estimate (Finagle's `PeakEwma`, tower's
/// `load::PeakEwma`): a latency above the estimate replaces it at once; one
/// below it pulls the estimate down by `1 − e^(−elapsed/decay)`, `elapsed`
/// being the time since the last update. Read, the estimate decays towards
/// zero the same way, so an endpoint that has not answered for a while is
/// tried again.
///
/// An endpoint starts unmeasured (an estimate of zero). As in Finagle, an
/// unmeasured endpoint costs nothing while it has no request in flight, so
/// it gets one at once, and costs the default latency per request while it
/// has some: it is measured by its first answer rather than kept out by a
/// guess. (tower starts from the default instead; against endpoints
/// answering in 1 ms, a new one at 30 ms would wait half a minute of decay
/// for its first request.)
///
/// The estimate (an `f32` of microseconds) and the time of its last update
/// (milliseconds since the registry's epoch, wrapping after 49 days: an
/// endpoint idle for that long decays by a wrong amount once) share one
/// `AtomicU64`, so an update is one compare-and-swap and never tears.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    packed: AtomicU64,
}

fn pack(estimate_us: f32, at_ms: u32) -> u64 {
    (u64::from(estimate_us.to_bits()) << 32) | u64::from(at_ms)
}

fn unpack(packed: u64) -> (f32, u32) {
    (f32::from_bits((packed >> 32) as u32), packed as u32)
}

/// `e^(−elapsed/decay)`. No time elapsed (the usual case for a busy
/// endpoint: every answer in the same millisecond as the one before) is
/// exactly 1, without a division and a call to `exp`.
fn decay_factor(elapsed_ms: u32, decay: Duration) -> f64 {
    if elapsed_ms == 0 {
        return 1.0;
    }
    (-f64::from(elapsed_ms) / (decay.as_secs_f64() * 1e3)).exp()
}

impl PeakEwma {
    pub(crate) fn new(now_ms: u32) -> Self {
        Self {
            packed: AtomicU64::new(pack(0.0, now_ms)),
        }
    }

    /// Records a latency of `rtt` observed at `now_ms`.
    pub(crate) fn observe(&self, rtt: Duration, now_ms: u32, decay: Duration) {
        let rtt_us = rtt.as_secs_f64() * 1e6;
        let mut current = self.packed.load(Ordering::Relaxed);
        loop {
            let (estimate, at) = unpack(current);
            let estimate = f64::from(estimate);
            let next = if rtt_us > estimate {
                rtt_us
            } else {
                let w = decay_factor(now_ms.wrapping_sub(at), decay);
                estimate * w + rtt_us * (1.0 - w)
            };
            let new = pack(next as f32, now_ms);
            match self.packed.compare_exchange_weak(
                current,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The estimate at `now_ms`, in microseconds; zero when unmeasured.
    pub(crate) fn estimate_us(&self, now_ms: u32, decay: Duration) -> f64 {
        let (estimate, at) = unpack(self.packed.load(Ordering::Relaxed));
        f64::from(estimate) * decay_factor(now_ms.wrapping_sub(at), decay)
    }

    /// The peak-EWMA cost of sending one more request: the estimate times
    /// the requests in flight plus one (see the type's docs for an
    /// unmeasured endpoint).
    pub(crate) fn cost(
        &self,
        pending: u32,
        now_ms: u32,
        decay: Duration,
        default: Duration,
    ) -> f64 {
        let estimate = match self.estimate_us(now_ms, decay) {
            e if e > 0.0 => e,
            _ if pending == 0 => return 0.0,
            _ => default.as_secs_f64() * 1e6,
        };
        estimate * f64::from(pending + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);

    fn measured(rtt: Duration, at: u32) -> PeakEwma {
        let ewma = PeakEwma::new(at);
        ewma.observe(rtt, at, DECAY);
        ewma
    }

    #[test]
    fn an_unmeasured_endpoint_is_free_until_it_has_a_request_in_flight() {
        let ewma = PeakEwma::new(0);
        let default = Duration::from_millis(30);
        assert_eq!(ewma.cost(0, 0, DECAY, default), 0.0);
        assert_eq!(ewma.cost(1, 0, DECAY, default), 60_000.0);
        ewma.observe(Duration::from_millis(2), 5, DECAY);
        assert!((ewma.cost(1, 5, DECAY, default) - 4_000.0).abs() < 1.0);
    }

    #[test]
    fn a_slower_answer_replaces_the_estimate_at_once() {
        let ewma = measured(Duration::from_millis(30), 0);
        ewma.observe(Duration::from_millis(500), 0, DECAY);
        assert!((ewma.estimate_us(0, DECAY) - 500_000.0).abs() < 1.0);
    }

    #[test]
    fn a_faster_answer_pulls_it_down_by_the_time_since_the_last_one() {
        let ewma = measured(Duration::from_millis(100), 0);
        // One decay period later, a 0 ms answer leaves e^-1 of the estimate.
        ewma.observe(Duration::ZERO, 10_000, DECAY);
        let expected = 100_000.0 * (-1.0f64).exp();
        assert!((ewma.estimate_us(10_000, DECAY) - expected).abs() < 1.0);
        // An answer in the same millisecond does not move it at all.
        let before = ewma.estimate_us(10_000, DECAY);
        ewma.observe(Duration::ZERO, 10_000, DECAY);
        assert_eq!(ewma.estimate_us(10_000, DECAY), before);
        assert!((before - expected).abs() < 1.0);
        // One a millisecond later barely moves it.
        ewma.observe(Duration::ZERO, 10_001, DECAY);
        assert!((ewma.estimate_us(10_001, DECAY) - expected).abs() < 10.0);
    }

    #[test]
    fn an_idle_estimate_decays_when_read() {
        let ewma = measured(Duration::from_millis(100), 0);
        assert!((ewma.estimate_us(0, DECAY) - 100_000.0).abs() < 1.0);
        let later = ewma.estimate_us(20_000, DECAY);
        assert!((later - 100_000.0 * (-2.0f64).exp()).abs() < 1.0, "{later}");
    }

    #[test]
    fn the_clock_may_wrap() {
        let ewma = measured(Duration::from_millis(100), u32::MAX - 5_000);
        // 10 s later, across the wrap.
        let at = (u32::MAX - 5_000).wrapping_add(10_000);
        let read = ewma.estimate_us(at, DECAY);
        assert!((read - 100_000.0 * (-1.0f64).exp()).abs() < 1.0, "{read}");
    }
}
