use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;

use super::delay::{DelayLimit, Settings};
use super::limiter::{Limiter, WindowSettings};
use super::queue::Codel;
use super::{AdaptiveLimit, LimitHandle};
use crate::classify::HttpClassifier;
use crate::rng::Rng;
use crate::ConfigError;

/// Wraps services in one shared concurrency limit that sheds what is over
/// it. See the [module docs](crate::load_shed).
///
/// The limit is created with the layer: every service the layer makes, and
/// every clone of those, counts against the same limit. Build it once for
/// the server (or for each group of routes with alike latencies).
#[derive(Debug, Clone)]
pub struct AdaptiveLimitLayer<C = HttpClassifier> {
    limiter: Arc<Limiter>,
    classifier: C,
}

impl AdaptiveLimitLayer {
    /// An adaptive limit with the default settings (see
    /// [`AdaptiveLimitBuilder`]).
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default settings are valid")
    }

    /// A builder to configure the limit.
    pub fn builder() -> AdaptiveLimitBuilder {
        AdaptiveLimitBuilder::new()
    }
}

impl Default for AdaptiveLimitLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> AdaptiveLimitLayer<C> {
    /// A handle on the limit: its value, the requests in flight, the
    /// rejections.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle::new(self.limiter.clone())
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit::new(inner, self.limiter.clone(), self.classifier.clone())
    }
}

/// Builds an [`AdaptiveLimitLayer`], checking its configuration.
///
/// Each default is given with its setting, and the
/// [module docs](crate::load_shed#the-adaptive-limit) say where they come
/// from.
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get the layer"]
pub struct AdaptiveLimitBuilder<C = HttpClassifier> {
    settings: Settings,
    /// `None`: the limit starts at its maximum.
    initial: Option<u32>,
    interval: Duration,
    window: WindowSettings,
    fixed: Option<u32>,
    sheddable_ratio: f64,
    retry_after: Duration,
    seed: Option<u64>,
    name: String,
    classifier: C,
}

impl AdaptiveLimitBuilder {
    fn new() -> Self {
        Self {
            settings: Settings::default(),
            initial: None,
            interval: Duration::from_millis(100),
            window: WindowSettings::default(),
            fixed: None,
            sheddable_ratio: 0.8,
            retry_after: Duration::from_secs(1),
            seed: None,
            name: "server".to_owned(),
            classifier: HttpClassifier::new(),
        }
    }
}

impl Default for AdaptiveLimitBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> AdaptiveLimitBuilder<C> {
    /// The limit's name: the `limit` label of its metrics
    /// (`tower_steady_concurrency_limit`, `tower_steady_in_flight`,
    /// `tower_steady_shed_total`), so that two limits in one process export
    /// two series. Default `"server"`. 1 to 64 ASCII letters, digits, `-`,
    /// `_`, `.` or `:`, or [`build`](Self::build) fails with
    /// `load_shed.name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A fixed limit instead of an adaptive one: at most `limit` requests in
    /// flight, the rest shed at once. Tower's `ConcurrencyLimit` makes the
    /// rest wait instead. Must be at least 1. The adaptive settings are
    /// ignored.
    pub fn fixed(mut self, limit: u32) -> Self {
        self.fixed = Some(limit);
        self
    }

    /// The limit to start from, before any window has been measured.
    /// Default: [`max_limit`](Self::max_limit), so a server that has just
    /// started takes a burst; the limit comes down only once a queue shows.
    /// Must be between [`min_limit`](Self::min_limit) and
    /// [`max_limit`](Self::max_limit).
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.initial = Some(limit);
        self
    }

    /// The limit never goes below this. Default `1`; must be at least 1.
    pub fn min_limit(mut self, limit: u32) -> Self {
        self.settings.min = limit;
        self
    }

    /// The limit never goes above this, and at most this many requests
    /// wait for a place. Default `1000`; must be at least
    /// [`min_limit`](Self::min_limit).
    pub fn max_limit(mut self, limit: u32) -> Self {
        self.settings.max = limit;
        self
    }

    /// The queueing delay that counts: a window whose latency is more than
    /// this above the unloaded latency shows a queue in the service, and a
    /// request that waited longer than this for a place, every one for an
    /// [`interval`](Self::interval), shows a standing queue in front of it.
    /// Default 5 ms (CoDel's target); must be greater than zero. For a
    /// service slower than 10 ms, the [`tolerance`](Self::tolerance) allows
    /// more.
    pub fn target(mut self, target: Duration) -> Self {
        self.settings.target = target;
        self
    }

    /// How long waits must stay above the [`target`](Self::target) before
    /// requests are shed, and how long a request may wait for a place
    /// until then. Default 100 ms (CoDel's interval); must be at least the
    /// target.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How often, while the limit is full, it drops to half of what the
    /// service completes in its unloaded latency for two windows, to
    /// re-measure that latency; each interval is shortened by up to half at
    /// random. A limit that is not full is never probed. Default 30 s; must
    /// be greater than zero.
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.settings.probe_interval = interval;
        self
    }

    /// How many times the unloaded latency a window may take before the
    /// excess counts as a queue, when that is more than the
    /// [`target`](Self::target): with the default `1.5`, a service whose
    /// unloaded latency is 100 ms may reach 150 ms. Must be at least `1.0`
    /// and finite; `1.0` leaves the target alone. See the
    /// [module docs](crate::load_shed#the-adaptive-limit).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.settings.tolerance = tolerance;
        self
    }

    /// The shortest window. Default 100 ms; must be greater than zero.
    pub fn min_window(mut self, window: Duration) -> Self {
        self.window.min = window;
        self
    }

    /// The longest window (unless it still lacks
    /// [`window_samples`](Self::window_samples)). Default 1 s; must be at
    /// least [`min_window`](Self::min_window).
    pub fn max_window(mut self, window: Duration) -> Self {
        self.window.max = window;
        self
    }

    /// A window closes only once this many requests completed in it (or
    /// one timed out). Default `10`; must be at least 1.
    pub fn window_samples(mut self, samples: u32) -> Self {
        self.window.samples = samples;
        self
    }

    /// The share of the limit [sheddable](crate::load_shed::Criticality)
    /// requests may fill (always at least one request). Default `0.8`;
    /// must be in `(0, 1]`.
    pub fn sheddable_ratio(mut self, ratio: f64) -> Self {
        self.sheddable_ratio = ratio;
        self
    }

    /// The retry-after hint of a shed request, and so the `Retry-After` of
    /// its `503`. Default 1 s.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Seeds the random numbers (the probe jitter), for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The classifier deciding which outcomes are latencies, timeouts or
    /// neither. Default [`HttpClassifier`].
    pub fn classifier<D>(self, classifier: D) -> AdaptiveLimitBuilder<D> {
        AdaptiveLimitBuilder {
            settings: self.settings,
            initial: self.initial,
            interval: self.interval,
            window: self.window,
            fixed: self.fixed,
            sheddable_ratio: self.sheddable_ratio,
            retry_after: self.retry_after,
            seed: self.seed,
            name: self.name,
            classifier,
        }
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field, e.g.
    /// `load_shed.min_limit`.
    pub fn build(self) -> Result<AdaptiveLimitLayer<C>, ConfigError> {
        if !crate::observability::is_plain_name(&self.name) {
            return Err(ConfigError::new(
                "load_shed.name",
                "must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
            ));
        }
        let ratio = self.sheddable_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(ConfigError::new(
                "load_shed.sheddable_ratio",
                "must be in (0, 1]",
            ));
        }
        let limiter = match self.fixed {
            Some(0) => return Err(ConfigError::new("load_shed.fixed", "must be at least 1")),
            Some(limit) => Limiter::fixed(limit, ratio, self.retry_after),
            None => {
                let mut settings = self.settings;
                settings.initial = self.initial.unwrap_or(settings.max);
                validate(&settings, self.interval, &self.window)?;
                let rng = match self.seed {
                    Some(seed) => Rng::from_seed(seed),
                    None => Rng::from_entropy(),
                };
                let now = Instant::now();
                let algorithm = DelayLimit::new(settings, now, rng.next_f64());
                let codel = Codel::new(settings.target, self.interval);
                Limiter::adaptive(
                    algorithm,
                    self.window,
                    codel,
                    ratio,
                    self.retry_after,
                    rng,
                    now,
                )
            }
        };
        Ok(AdaptiveLimitLayer {
            limiter: Arc::new(limiter.named(&self.name)),
            classifier: self.classifier,
        })
    }
}

fn validate(
    settings: &Settings,
    interval: Duration,
    window: &WindowSettings,
) -> Result<(), ConfigError> {
    if settings.min == 0 {
        return Err(ConfigError::new(
            "load_shed.min_limit",
            "must be at least 1",
        ));
    }
    if settings.max < settings.min {
        return Err(ConfigError::new(
            "load_shed.max_limit",
            "must be at least min_limit",
        ));
    }
    if settings.initial < settings.min || settings.initial > settings.max {
        return Err(ConfigError::new(
            "load_shed.initial_limit",
            "must be between min_limit and max_limit",
        ));
    }
    if settings.target.is_zero() {
        return Err(ConfigError::new(
            "load_shed.target",
            "must be greater than zero",
        ));
    }
    if interval < settings.target {
        return Err(ConfigError::new(
            "load_shed.interval",
            "must be at least the target",
        ));
    }
    if !(settings.tolerance >= 1.0 && settings.tolerance.is_finite()) {
        return Err(ConfigError::new(
            "load_shed.tolerance",
            "must be at least 1.0 and finite",
        ));
    }
    if settings.probe_interval.is_zero() {
        return Err(ConfigError::new(
            "load_shed.probe_interval",
            "must be greater than zero",
        ));
    }
    if window.min.is_zero() {
        return Err(ConfigError::new(
            "load_shed.min_window",
            "must be greater than zero",
        ));
    }
    if window.max < window.min {
        return Err(ConfigError::new(
            "load_shed.max_window",
            "must be at least min_window",
        ));
    }
    if window.samples == 0 {
        return Err(ConfigError::new(
            "load_shed.window_samples",
            "must be at least 1",
        ));
    }
    Ok(())
}
