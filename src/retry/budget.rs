//! The retry budget.
//!
//! # Why a budget and not a number of retries per request?
//!
//! "Retry each request up to 3 times" is safe while failures are rare and
//! disastrous when they are not: when an upstream starts failing every
//! request, every caller triples its load on it at the worst moment, and the
//! callers of those callers do the same. A retry storm turns a brief outage
//! into a long one. A budget bounds retries by the traffic instead: retries
//! may add at most a fixed fraction to the load, whatever the failure rate.
//! When most requests fail, most are not retried, and the upstream sees at
//! most `1 + ratio` times its normal load.
//!
//! This is Finagle's `RetryBudget` (and linkerd's): every request deposits
//! `ratio` of a retry into a sliding window, every retry withdraws one, and a
//! reserve of `min_per_second × window` retries lets services with little
//! traffic retry too.
//!
//! # Exact ratios
//!
//! Tokens are kept as integers: a ratio is turned into the fraction `p / q`
//! nearest to it with `q` at most 10 000 (by continued fractions), each
//! request deposits `p`, each retry withdraws `q`. Ratios like `0.2`, `0.3`
//! or `1/3` are therefore exact: 10 requests at `0.3` allow exactly 3
//! retries. (tower's `TpsBudget` withdraws `1 / ratio` truncated to an
//! integer, so `0.3` behaves like `1/3`.)
//!
//! # The window
//!
//! The window is a ring of 10 buckets, each a tenth of the window wide;
//! what happened in the oldest bucket leaves the balance as time moves past
//! it. The balance itself is one atomic integer: a request is one
//! `fetch_add`, a retry one compare-and-swap that never takes the balance
//! below zero, so concurrent retries can never overdraw it. Once per bucket
//! width, the first caller to notice that time moved on closes the bucket
//! under a mutex it only *tries* to take (a caller that finds it taken goes
//! on: its deposit is counted in the bucket being closed, which only makes
//! the budget stricter). A retry that finds the bucket stale waits for the
//! close, so a withdrawal is never counted in a bucket older than it is.
//!
//! The guarantee: for every window of 10 buckets, retries × `q` ≤ reserve +
//! requests × `p`, i.e. retries ≤ `ratio` × requests + `min_per_second` ×
//! window.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use tokio::time::Instant;

use crate::ConfigError;

/// Buckets in the window.
const BUCKETS: usize = 10;
/// The largest denominator of the fraction a ratio is turned into.
const MAX_DENOMINATOR: u64 = 10_000;
/// The largest ratio accepted (10 retries per request, as tower's 1000%).
const MAX_RATIO: f64 = 10.0;

const DEFAULT_RATIO: f64 = 0.2;
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
const DEFAULT_MIN_PER_SECOND: u32 = 10;

/// A retry budget: retries are allowed up to a ratio of requests over a
/// sliding window, plus a floor. See the [module docs](self).
///
/// `Budget::default()` is Finagle's: 20% of requests over 10 s, plus 10
/// retries per second. A budget is cheap to clone and every clone is the
/// same budget; give one to several [`RetryLayer`](super::RetryLayer)s to
/// make them share it.
///
/// ```
/// use std::time::Duration;
/// use tower_steady::retry::Budget;
///
/// # fn main() -> Result<(), tower_steady::ConfigError> {
/// // 30% of requests, no floor: exact, 10 requests allow 3 retries.
/// let budget = Budget::builder().ratio(0.3).min_per_second(0).build()?;
/// # let _rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
/// # let _guard = _rt.enter();
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw() && budget.withdraw() && budget.withdraw());
/// assert!(!budget.withdraw());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    /// Units a request deposits (`p`).
    deposit: i64,
    /// Units a retry withdraws (`q`).
    withdraw: i64,
    bucket_nanos: u64,
    start: Instant,
    /// reserve + everything deposited minus everything withdrawn in the
    /// window.
    balance: AtomicI64,
    /// The tick of the bucket now filling (a copy of `ring.tick`, read
    /// without the lock).
    head: AtomicU64,
    /// Nanoseconds from `start` to the end of the bucket now filling, so
    /// that a deposit compares instead of dividing.
    head_end: AtomicU64,
    ring: Mutex<Ring>,
    ratio: f64,
    window: Duration,
    min_per_second: u32,
}

struct Ring {
    tick: u64,
    /// The balance when the bucket now filling was opened: reserve plus
    /// the nets of the closed buckets still in the window.
    base: i64,
    /// The net (deposits − withdrawals) of each closed bucket, by tick
    /// modulo `BUCKETS`.
    nets: [i64; BUCKETS],
}

impl Budget {
    /// The default budget (Finagle's): 20% of requests over 10 s plus 10 retries per
    /// second.
    pub fn new() -> Self {
        BudgetBuilder::new()
            .build()
            .expect("the default budget is valid")
    }

    /// A builder to configure a budget.
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder::new()
    }

    /// Records a request. The retry layer calls this once per request (not
    /// per attempt).
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Takes one retry from the budget; `false` if there is none left.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    /// How many retries the budget would allow now.
    pub fn available(&self) -> u64 {
        self.available_at(Instant::now())
    }

    /// The ratio of requests that may be retried.
    pub fn ratio(&self) -> f64 {
        self.inner.ratio
    }

    /// The sliding window.
    pub fn window(&self) -> Duration {
        self.inner.window
    }

    /// The floor, in retries per second.
    pub fn min_per_second(&self) -> u32 {
        self.inner.min_per_second
    }

    /// The fraction `(p, q)` the ratio was turned into: a request deposits
    /// `p`, a retry withdraws `q`.
    #[cfg(test)]
    pub(crate) fn fraction(&self) -> (i64, i64) {
        (self.inner.deposit, self.inner.withdraw)
    }

    pub(crate) fn deposit_at(&self, now: Instant) {
        let inner = &*self.inner;
        if inner.elapsed(now) >= inner.head_end.load(Ordering::Acquire) {
            let tick = inner.tick(now);
            // Someone else closing the bucket is fine: this deposit lands in
            // the bucket being closed, which makes the budget stricter.
            match inner.ring.try_lock() {
                Ok(ring) => inner.rotate(ring, tick),
                Err(TryLockError::Poisoned(poisoned)) => inner.rotate(poisoned.into_inner(), tick),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        if inner.deposit != 0 {
            inner.balance.fetch_add(inner.deposit, Ordering::AcqRel);
        }
    }

    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        self.take(now).is_some()
    }

    /// Withdraws one retry; `Some(tick)` of the bucket it was taken in.
    pub(crate) fn take(&self, now: Instant) -> Option<u64> {
        let inner = &*self.inner;
        let tick = inner.catch_up(now);
        let mut balance = inner.balance.load(Ordering::Acquire);
        loop {
            if balance < inner.withdraw {
                return None;
            }
            match inner.balance.compare_exchange_weak(
                balance,
                balance - inner.withdraw,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(tick),
                Err(actual) => balance = actual,
            }
        }
    }

    /// Gives back a retry taken in bucket `tick` and never sent (its
    /// request was dropped during the backoff). Only while that bucket is
    /// still the one filling: once it is closed, the retry is left counted,
    /// which errs on the strict side.
    pub(crate) fn give_back(&self, tick: u64) {
        let inner = &*self.inner;
        let ring = inner.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.tick == tick {
            // Rotations hold the lock, so the bucket cannot close under us.
            inner.balance.fetch_add(inner.withdraw, Ordering::AcqRel);
        }
    }

    pub(crate) fn available_at(&self, now: Instant) -> u64 {
        let inner = &*self.inner;
        inner.catch_up(now);
        let balance = inner.balance.load(Ordering::Acquire);
        if balance <= 0 {
            0
        } else {
            (balance / inner.withdraw) as u64
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("ratio", &self.inner.ratio)
            .field("window", &self.inner.window)
            .field("min_per_second", &self.inner.min_per_second)
            .field("balance", &self.inner.balance.load(Ordering::Relaxed))
            .finish()
    }
}

impl Inner {
    /// Nanoseconds since the budget was made (enough for 584 years).
    fn elapsed(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_nanos() as u64
    }

    fn tick(&self, now: Instant) -> u64 {
        self.elapsed(now) / self.bucket_nanos
    }

    /// Closes every bucket older than `now`'s, waiting for the lock: a
    /// withdrawal or a reading must see the window as of now.
    fn catch_up(&self, now: Instant) -> u64 {
        let tick = self.tick(now);
        let head = self.head.load(Ordering::Acquire);
        if tick > head {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            self.rotate(ring, tick);
        }
        tick.max(head)
    }

    /// Closes the bucket now filling and every bucket that leaves the
    /// window by `tick`.
    fn rotate(&self, mut ring: MutexGuard<'_, Ring>, tick: u64) {
        let head = ring.tick;
        if tick <= head {
            return;
        }
        let n = BUCKETS as u64;
        // Closed buckets still in the window hold ticks head-n+1 ..= head-1;
        // the window after this call holds ticks tick-n+1 ..= tick.
        let mut expired = 0i64;
        for t in head.saturating_sub(n - 1)..head {
            if t + n <= tick {
                let slot = (t % n) as usize;
                expired += ring.nets[slot];
                ring.nets[slot] = 0;
            }
        }
        // Everything that reached the balance before this subtraction
        // belongs to the bucket being closed.
        let before = self.balance.fetch_sub(expired, Ordering::AcqRel);
        let head_net = before - ring.base;
        let head_slot = (head % n) as usize;
        if head + n <= tick {
            // The bucket being closed is already out of the window.
            self.balance.fetch_sub(head_net, Ordering::AcqRel);
            ring.nets[head_slot] = 0;
            ring.base = before - expired - head_net;
        } else {
            ring.nets[head_slot] = head_net;
            ring.base = before - expired;
        }
        ring.tick = tick;
        self.head.store(tick, Ordering::Release);
        self.head_end.store(
            (tick + 1).saturating_mul(self.bucket_nanos),
            Ordering::Release,
        );
    }
}

/// Builds a [`Budget`], checking its configuration.
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get the budget"]
pub struct BudgetBuilder {
    ratio: f64,
    window: Duration,
    min_per_second: u32,
}

impl BudgetBuilder {
    fn new() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            window: DEFAULT_WINDOW,
            min_per_second: DEFAULT_MIN_PER_SECOND,
        }
    }

    /// Retries allowed per request, over the window. Default `0.2`
    /// (Finagle); must be in `[0, 10]`. Exact for any fraction with a
    /// denominator up to 10 000.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// The sliding window over which requests and retries are counted.
    /// Default 10 s; must be between 10 ms and 1 hour.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Retries allowed per second whatever the traffic, so that a service
    /// with few requests can still retry. Default 10 (Finagle). The reserve
    /// is `min_per_second × window`, available at any time within the
    /// window.
    pub fn min_per_second(mut self, retries: u32) -> Self {
        self.min_per_second = retries;
        self
    }

    /// Checks the configuration and builds the budget.
    pub fn build(self) -> Result<Budget, ConfigError> {
        if !(0.0..=MAX_RATIO).contains(&self.ratio) {
            return Err(ConfigError::new(
                "retry.budget.ratio",
                "must be between 0 and 10",
            ));
        }
        if self.window < Duration::from_millis(10) || self.window > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "retry.budget.window",
                "must be between 10 ms and 1 hour",
            ));
        }
        let (p, q) = fraction(self.ratio, MAX_DENOMINATOR);
        let window_nanos = self.window.as_nanos();
        // min_per_second × window, in units of q; at most 2^32 × 3600 × 10^4.
        let reserve =
            (u128::from(self.min_per_second) * window_nanos * u128::from(q) / 1_000_000_000) as i64;
        let bucket_nanos = (window_nanos / BUCKETS as u128) as u64;
        Ok(Budget {
            inner: Arc::new(Inner {
                deposit: p as i64,
                withdraw: q as i64,
                bucket_nanos,
                start: Instant::now(),
                balance: AtomicI64::new(reserve),
                head: AtomicU64::new(0),
                head_end: AtomicU64::new(bucket_nanos),
                ring: Mutex::new(Ring {
                    tick: 0,
                    base: reserve,
                    nets: [0; BUCKETS],
                }),
                ratio: self.ratio,
                window: self.window,
                min_per_second: self.min_per_second,
            }),
        })
    }
}

impl Default for BudgetBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The fraction `p / q` nearest to `x` with `q <= max_den`, from the
/// convergents of `x`'s continued fraction. `x` is in `[0, MAX_RATIO]`.
pub(crate) fn fraction(x: f64, max_den: u64) -> (u64, u64) {
    let (mut p0, mut p1) = (0u64, 1u64);
    let (mut q0, mut q1) = (1u64, 0u64);
    let mut v = x;
    loop {
        let a = v.floor();
        let a_int = a as u64;
        let p2 = a_int * p1 + p0;
        let q2 = a_int * q1 + q0;
        if q2 > max_den {
            break;
        }
        (p0, p1) = (p1, p2);
        (q0, q1) = (q1, q2);
        let rest = v - a;
        // What is left is rounding noise of the float: the fraction is
        // exact.
        if rest < 1e-9 {
            break;
        }
        v = 1.0 / rest;
    }
    (p1, q1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(ratio: f64, min_per_second: u32) -> Budget {
        Budget::builder()
            .ratio(ratio)
            .min_per_second(min_per_second)
            .build()
            .unwrap()
    }

    #[test]
    fn fractions_are_the_nearest_with_small_denominators() {
        assert_eq!(fraction(0.2, MAX_DENOMINATOR), (1, 5));
        assert_eq!(fraction(0.3, MAX_DENOMINATOR), (3, 10));
        assert_eq!(fraction(1.0 / 3.0, MAX_DENOMINATOR), (1, 3));
        assert_eq!(fraction(0.0, MAX_DENOMINATOR), (0, 1));
        assert_eq!(fraction(1.0, MAX_DENOMINATOR), (1, 1));
        assert_eq!(fraction(2.5, MAX_DENOMINATOR), (5, 2));
        assert_eq!(fraction(10.0, MAX_DENOMINATOR), (10, 1));
        assert_eq!(fraction(0.0001, MAX_DENOMINATOR), (1, 10_000));
        let (p, q) = fraction(std::f64::consts::PI / 10.0, MAX_DENOMINATOR);
        assert!(q <= MAX_DENOMINATOR);
        assert!((p as f64 / q as f64 - std::f64::consts::PI / 10.0).abs() < 1e-7);
    }

    #[test]
    fn fractional_ratios_are_exact() {
        for (ratio, requests, retries) in [
            (0.3, 10, 3),
            (0.3, 100, 30),
            (0.2, 9, 1),
            (0.2, 10, 2),
            (0.25, 7, 1),
            (0.25, 8, 2),
            (1.0 / 3.0, 3, 1),
            (1.0 / 3.0, 8, 2),
            (1.0 / 3.0, 9, 3),
            (0.7, 10, 7),
            (1.5, 4, 6),
        ] {
            let b = budget(ratio, 0);
            let now = Instant::now();
            for _ in 0..requests {
                b.deposit_at(now);
            }
            let mut allowed = 0;
            while b.withdraw_at(now) {
                allowed += 1;
            }
            assert_eq!(allowed, retries, "ratio {ratio}, {requests} requests");
        }
    }

    #[test]
    fn the_floor_allows_retries_without_requests() {
        // 10 per second over 10 s: a reserve of 100.
        let b = budget(0.2, 10);
        let now = Instant::now();
        assert_eq!(b.available_at(now), 100);
        let mut allowed = 0;
        while b.withdraw_at(now) {
            allowed += 1;
        }
        assert_eq!(allowed, 100);
    }

    #[test]
    fn deposits_leave_the_window_and_so_do_withdrawals() {
        let b = budget(0.5, 0);
        let t0 = Instant::now();
        for _ in 0..10 {
            b.deposit_at(t0);
        }
        assert_eq!(b.available_at(t0), 5);
        assert!(b.withdraw_at(t0 + Duration::from_secs(3)));
        assert_eq!(b.available_at(t0 + Duration::from_secs(3)), 4);
        // 9.9 s: the deposits of t0 are still in the window.
        assert_eq!(b.available_at(t0 + Duration::from_millis(9_900)), 4);
        // 10 s: they left; the withdrawal at 3 s is still in: the balance
        // is below zero until it leaves too.
        assert_eq!(b.available_at(t0 + Duration::from_secs(10)), 0);
        assert!(!b.withdraw_at(t0 + Duration::from_secs(10)));
        for _ in 0..2 {
            b.deposit_at(t0 + Duration::from_secs(12));
        }
        assert_eq!(b.available_at(t0 + Duration::from_secs(12)), 0);
        // 13 s: the withdrawal left; the two deposits at 12 s allow one.
        assert_eq!(b.available_at(t0 + Duration::from_secs(13)), 1);
        // After a long idle period everything has left.
        assert_eq!(b.available_at(t0 + Duration::from_secs(1_000)), 0);
    }

    #[test]
    fn a_zero_ratio_and_no_floor_never_retries() {
        let b = budget(0.0, 0);
        let now = Instant::now();
        for _ in 0..1_000 {
            b.deposit_at(now);
        }
        assert!(!b.withdraw_at(now));
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let err = Budget::builder().ratio(-0.1).build().unwrap_err();
        assert_eq!(err.field(), "retry.budget.ratio");
        let err = Budget::builder().ratio(f64::NAN).build().unwrap_err();
        assert_eq!(err.field(), "retry.budget.ratio");
        let err = Budget::builder().ratio(11.0).build().unwrap_err();
        assert_eq!(err.field(), "retry.budget.ratio");
        let err = Budget::builder()
            .window(Duration::from_millis(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "retry.budget.window");
    }

    #[test]
    fn clones_share_one_budget() {
        let a = budget(1.0, 0);
        let b = a.clone();
        let now = Instant::now();
        a.deposit_at(now);
        assert!(b.withdraw_at(now));
        assert!(!a.withdraw_at(now));
    }

    #[test]
    fn concurrent_retries_never_overdraw_the_balance() {
        // 30%: 4 threads × 1 000 requests allow exactly 1 200 retries, plus
        // the floor's 10 × 10 s = 100, however the threads interleave.
        let b = budget(0.3, 10);
        let now = Instant::now();
        let granted: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let b = &b;
                    scope.spawn(move || {
                        let mut granted = 0u64;
                        for _ in 0..1_000 {
                            b.deposit_at(now);
                            // Ask for more than the ratio allows.
                            for _ in 0..2 {
                                granted += u64::from(b.withdraw_at(now));
                            }
                        }
                        granted
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        let mut rest = 0;
        while b.withdraw_at(now) {
            rest += 1;
        }
        assert_eq!(granted + rest, 1_300);
    }

    /// One step of an arrival pattern: time moves on by `gap_ms`, then
    /// `requests` arrive and `retries` retries are asked for.
    #[derive(Debug, Clone)]
    struct Step {
        gap_ms: u64,
        requests: u32,
        retries: u32,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            (0u64..3_000, 0u32..20, 0u32..20).prop_map(|(gap_ms, requests, retries)| Step {
                gap_ms,
                requests,
                retries,
            }),
            1..120,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whenever a retry is granted, the retries in the window ending
        /// then (ten buckets) do not exceed ratio × requests in it + the
        /// floor's reserve, counted exactly in units.
        ///
        /// (A window that ends later can hold a retry whose requests have
        /// left it: the retry was granted on those requests while they were
        /// in the window. That is what a sliding budget means, in Finagle
        /// and in tower alike.)
        #[test]
        fn retries_in_any_window_stay_within_the_budget(
            steps in steps(),
            ratio_index in 0usize..6,
            min_per_second in 0u32..3,
        ) {
            let ratio = [0.0, 0.1, 0.2, 0.3, 1.0 / 3.0, 1.5][ratio_index];
            let b = Budget::builder()
                .ratio(ratio)
                .min_per_second(min_per_second)
                .window(Duration::from_secs(10))
                .build()
                .unwrap();
            let (p, q) = b.fraction();
            let reserve = i64::from(min_per_second) * 10 * q;
            let start = b.inner.start;
            let mut now = start;
            // (tick, requests, granted retries) per step.
            let mut log: Vec<(u64, i64, i64)> = Vec::new();
            for step in &steps {
                now += Duration::from_millis(step.gap_ms);
                let tick = b.inner.tick(now);
                for _ in 0..step.requests {
                    b.deposit_at(now);
                }
                let mut granted = 0;
                for _ in 0..step.retries {
                    if b.withdraw_at(now) {
                        granted += 1;
                    }
                }
                log.push((tick, i64::from(step.requests), granted));
                if granted == 0 {
                    continue;
                }
                // The window of ten buckets ending at this tick.
                let (mut requests, mut retries) = (0i64, 0i64);
                for &(t, req, ret) in &log {
                    if t + 10 > tick {
                        requests += req;
                        retries += ret;
                    }
                }
                prop_assert!(
                    retries * q <= reserve + requests * p,
                    "{} retries for {} requests at tick {}", retries, requests, tick
                );
            }
        }

        /// With no floor and all requests up front, the budget grants
        /// exactly floor(ratio × requests) retries.
        #[test]
        fn grants_exactly_the_ratio_of_requests(requests in 0u32..2_000, tenths in 0u32..=30) {
            let ratio = f64::from(tenths) / 10.0;
            let b = budget(ratio, 0);
            let now = Instant::now();
            for _ in 0..requests {
                b.deposit_at(now);
            }
            let mut granted = 0u32;
            while b.withdraw_at(now) {
                granted += 1;
            }
            prop_assert_eq!(granted, requests * tenths / 10);
        }
    }
}
