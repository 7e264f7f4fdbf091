//! How long to wait before a retry.

use std::time::Duration;

const DEFAULT_BASE: Duration = Duration::from_millis(25);
const DEFAULT_CAP: Duration = Duration::from_millis(250);

/// The wait before each retry: exponential with "full jitter".
///
/// Before retry `n` (the first retry is `n = 1`), the wait is drawn
/// uniformly from `[0, min(cap, base × 2^(n-1)))`. Drawing the whole wait at
/// random, rather than adding a little noise to a fixed one, spreads the
/// retries of many clients that failed at the same moment so that they do
/// not come back at the same moment either (Brooker, "Exponential Backoff
/// And Jitter", AWS Architecture Blog, 2015).
///
/// The default is Envoy's: 25 ms base, 250 ms cap.
///
/// ```
/// use std::time::Duration;
/// use tower_steady::retry::Backoff;
///
/// let backoff = Backoff::default();
/// assert_eq!(backoff.ceiling(1), Duration::from_millis(25));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(5), Duration::from_millis(250)); // capped
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Full-jitter exponential backoff from `base`, never above `cap`.
    /// [`RetryBuilder::build`](super::RetryBuilder::build)
    /// checks that `base <= cap`.
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// No wait at all between attempts.
    pub const fn none() -> Self {
        Self {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        }
    }

    /// The first retry's ceiling.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The largest wait.
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// The longest wait before retry `retry` (1 for the first retry): the
    /// wait is drawn from `[0, ceiling)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base
            .checked_mul(1 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The wait before retry `retry`, given a uniform draw `unit` in
    /// `[0, 1)`.
    pub(crate) fn delay(&self, retry: u32, unit: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }
}

impl Default for Backoff {
    /// 25 ms base, 250 ms cap (Envoy).
    fn default() -> Self {
        Self::exponential(DEFAULT_BASE, DEFAULT_CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff::default();
        let ms = |n| b.ceiling(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5), ms(40)],
            [25, 50, 100, 200, 250, 250]
        );
        assert_eq!(Backoff::none().ceiling(3), Duration::ZERO);
        let huge = Backoff::exponential(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(huge.ceiling(10), Duration::MAX);
    }

    #[test]
    fn delays_stay_below_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay(2, 0.0), Duration::ZERO);
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(25));
        assert!(b.delay(2, 0.999_999) < Duration::from_millis(50));
    }
}
