use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;

use super::breaker::{Breaker, Settings, MAX_PROBES};
use super::{BreakerHandle, CircuitBreaker};
use crate::classify::HttpClassifier;
use crate::rng::Rng;
use crate::ConfigError;

/// Wraps services in one shared [`CircuitBreaker`]. See the
/// [module docs](super).
///
/// The breaker's state is created with the layer: every service the layer
/// makes, and every clone of those, feeds and obeys the same breaker. Build
/// one layer per upstream.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = HttpClassifier> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A breaker with the default settings (see [`CircuitBreakerBuilder`]).
    pub fn new() -> Self {
        Self {
            breaker: Arc::new(Breaker::new(
                "default".into(),
                Settings::default(),
                Rng::from_entropy(),
                Instant::now(),
            )),
            classifier: HttpClassifier::new(),
        }
    }

    /// A builder to configure the breaker.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new()
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A handle on the breaker: its state and counts, and manual control.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.breaker.clone())
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}

/// Builds a [`CircuitBreakerLayer`], checking its configuration.
///
/// Each setting's default is given in its documentation; together: open on at least 50% failures over the last 10 s (in
/// 1 s buckets) once there were at least 20 calls; stay open 5 s, doubling on
/// each reopening up to 60 s, shortened by up to 10% at random; close after
/// 3 successful probes.
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get the layer"]
pub struct CircuitBreakerBuilder<C = HttpClassifier> {
    name: String,
    settings: Settings,
    window: Duration,
    seed: Option<u64>,
    classifier: C,
}

impl CircuitBreakerBuilder {
    fn new() -> Self {
        Self {
            name: "default".to_owned(),
            settings: Settings::default(),
            window: Duration::from_secs(10),
            seed: None,
            classifier: HttpClassifier::new(),
        }
    }
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// The breaker's name in logs (the `breaker` field of its events) and
    /// metrics (the `breaker` label). Default `"default"`; name it after
    /// the upstream it guards. An empty name, or one longer than 64 bytes
    /// or with characters other than ASCII letters, digits, `-`, `_`, `.`
    /// and `:`, is a [`ConfigError`] at [`build`](Self::build): it becomes
    /// a label value, which must stay short and plain.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Opens the breaker when at least this fraction of the calls in the
    /// window failed. Default `0.5`; must be in `(0, 1]`.
    pub fn failure_ratio(mut self, ratio: f64) -> Self {
        self.settings.failure_ratio = ratio;
        self
    }

    /// The ratios are judged only once the window holds at least this many
    /// calls, so that two failures out of three calls do not open the
    /// breaker. Default `20`; must be at least 1.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.settings.minimum_calls = calls;
        self
    }

    /// How far back the window looks. Default 10 s; must be a whole number
    /// of [buckets](Self::bucket), at most 1000 of them.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The window's granularity: outcomes leave the window one bucket at a
    /// time. Default 1 s; must be at least 1 ms.
    pub fn bucket(mut self, bucket: Duration) -> Self {
        self.settings.bucket = bucket;
        self
    }

    /// Also opens the breaker after this many failures in a row, whatever
    /// the window says (and however few calls it holds). Off by default.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.settings.consecutive_failures = Some(failures);
        self
    }

    /// Also opens the breaker when at least `ratio` of the calls in the
    /// window took `threshold` or longer, even if they succeeded: an
    /// upstream that answers in 20 s instead of 20 ms is down for its
    /// callers. A slow half-open probe counts as a failed one. Off by
    /// default; `threshold` must be greater than zero and `ratio` in `(0, 1]`.
    pub fn slow_calls(mut self, threshold: Duration, ratio: f64) -> Self {
        self.settings.slow_calls = Some((threshold, ratio));
        self
    }

    /// The failure ratio over this many of the most recent buckets (the
    /// current one included), with at least
    /// [`minimum_calls`](Self::minimum_calls) calls, also opens the
    /// breaker: after a long healthy spell the whole window holds thousands
    /// of successes, and an outage would take seconds to reach the ratio
    /// there. Default `1` (the current bucket, 1 s wide): an outage opens
    /// the breaker within about a second. Must be at least 1; as many as
    /// the window has turns it off.
    pub fn recent_buckets(mut self, buckets: u32) -> Self {
        self.settings.recent_buckets = buckets;
        self
    }

    /// How long the breaker stays open the first time when the failure that
    /// opened it was a refused connection (an upstream restarting): probing
    /// it again costs a connection attempt, so it is probed back soon, and
    /// as soon again for the first five open periods in a row (about the
    /// time a restart takes): the upstream is back within about this long
    /// of its restart. A longer outage backs off as any other, from the
    /// [open duration](Self::open_duration), doubling. Default 1 s; never
    /// more than the open duration; must be greater than zero.
    pub fn unreachable_open_duration(mut self, duration: Duration) -> Self {
        self.settings.unreachable_open_duration = duration;
        self
    }

    /// How long the breaker stays open the first time. Default 5 s; must be
    /// greater than zero.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.settings.open_duration = duration;
        self
    }

    /// The open duration doubles each time probing fails, up to this.
    /// Default 60 s; must be at least the [open duration](Self::open_duration).
    pub fn max_open_duration(mut self, duration: Duration) -> Self {
        self.settings.max_open_duration = duration;
        self
    }

    /// Shortens each open period by a random fraction of itself, up to
    /// `jitter`, so that many gateways that opened together do not probe
    /// together. Default `0.1`; must be in `[0, 1)`. Set 0 for exact times.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.settings.jitter = jitter;
        self
    }

    /// How many probes a half-open breaker lets through; all must succeed
    /// for it to close, and any failure opens it again. Default 3; must be
    /// between 1 and 1000.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.settings.probes = probes;
        self
    }

    /// Whether `429 Too Many Requests` counts as a failure. Default `false`:
    /// an upstream that answers 429 is up and is pacing this caller, and
    /// opening the breaker would turn its rate limit into an outage.
    pub fn too_many_requests_is_failure(mut self, yes: bool) -> Self {
        self.settings.too_many_requests_is_failure = yes;
        self
    }

    /// Seeds the jitter, for runs that repeat exactly.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Decides what is a failure with `classifier` instead of
    /// [`HttpClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            name: self.name,
            settings: self.settings,
            window: self.window,
            seed: self.seed,
            classifier,
        }
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        if !crate::observability::is_plain_name(&self.name) {
            return Err(ConfigError::new(
                "circuit_breaker.name",
                "must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
            ));
        }
        let mut s = self.settings;
        if !(s.failure_ratio > 0.0 && s.failure_ratio <= 1.0) {
            return Err(ConfigError::new(
                "circuit_breaker.failure_ratio",
                "must be greater than 0 and at most 1",
            ));
        }
        if s.minimum_calls == 0 {
            return Err(ConfigError::new(
                "circuit_breaker.minimum_calls",
                "must be at least 1",
            ));
        }
        if s.bucket < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "circuit_breaker.bucket",
                "must be at least 1ms",
            ));
        }
        let buckets = self.window.as_nanos() / s.bucket.as_nanos();
        if self.window.as_nanos() % s.bucket.as_nanos() != 0 || !(1..=1000).contains(&buckets) {
            return Err(ConfigError::new(
                "circuit_breaker.window",
                "must be a whole number of buckets, from 1 to 1000 of them",
            ));
        }
        s.buckets = buckets as u32;
        if s.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "circuit_breaker.consecutive_failures",
                "must be at least 1",
            ));
        }
        if let Some((threshold, ratio)) = s.slow_calls {
            if threshold.is_zero() {
                return Err(ConfigError::new(
                    "circuit_breaker.slow_call_threshold",
                    "must be greater than zero",
                ));
            }
            if !(ratio > 0.0 && ratio <= 1.0) {
                return Err(ConfigError::new(
                    "circuit_breaker.slow_call_ratio",
                    "must be greater than 0 and at most 1",
                ));
            }
        }
        if s.open_duration.is_zero() {
            return Err(ConfigError::new(
                "circuit_breaker.open_duration",
                "must be greater than zero",
            ));
        }
        if s.unreachable_open_duration.is_zero() {
            return Err(ConfigError::new(
                "circuit_breaker.unreachable_open_duration",
                "must be greater than zero",
            ));
        }
        if s.recent_buckets == 0 {
            return Err(ConfigError::new(
                "circuit_breaker.recent_buckets",
                "must be at least 1",
            ));
        }
        if s.max_open_duration < s.open_duration {
            return Err(ConfigError::new(
                "circuit_breaker.max_open_duration",
                "must be at least open_duration",
            ));
        }
        if !(0.0..1.0).contains(&s.jitter) {
            return Err(ConfigError::new(
                "circuit_breaker.jitter",
                "must be at least 0 and below 1",
            ));
        }
        if !(1..=MAX_PROBES).contains(&s.probes) {
            return Err(ConfigError::new(
                "circuit_breaker.half_open_probes",
                "must be from 1 to 1000",
            ));
        }
        let rng = self.seed.map_or_else(Rng::from_entropy, Rng::from_seed);
        let breaker = Breaker::new(self.name.into(), s, rng, Instant::now());
        Ok(CircuitBreakerLayer {
            breaker: Arc::new(breaker),
            classifier: self.classifier,
        })
    }
}
