use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;

use super::window::{Settings, Throttler, Window};
use super::{Throttle, ThrottleHandle};
use crate::classify::HttpClassifier;
use crate::rng::Rng;
use crate::ConfigError;

/// Wraps services in one shared adaptive throttle. See the
/// [module docs](crate::load_shed#adaptive-throttling).
///
/// The throttle's counts are created with the layer: every service it
/// makes, and every clone, counts into and obeys the same window. Build one
/// per upstream.
#[derive(Debug, Clone)]
pub struct ThrottleLayer<C = HttpClassifier> {
    throttler: Arc<Throttler>,
    classifier: C,
}

impl ThrottleLayer {
    /// A throttle with the default settings (see [`ThrottleBuilder`]).
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default settings are valid")
    }

    /// A builder to configure the throttle.
    pub fn builder() -> ThrottleBuilder {
        ThrottleBuilder::new()
    }
}

impl Default for ThrottleLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> ThrottleLayer<C> {
    /// A handle on the throttle: its counts and refusal probability.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle::new(self.throttler.clone())
    }
}

impl<S, C: Clone> Layer<S> for ThrottleLayer<C> {
    type Service = Throttle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::new(inner, self.throttler.clone(), self.classifier.clone())
    }
}

/// Builds a [`ThrottleLayer`], checking its configuration.
///
/// The defaults are the SRE book's: `K = 2` over 60 s (in 1 s buckets);
/// the cap of 0.9 and the floor of 60 requests are this crate's.
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get the layer"]
pub struct ThrottleBuilder<C = HttpClassifier> {
    settings: Settings,
    window: Duration,
    bucket: Duration,
    seed: Option<u64>,
    name: String,
    classifier: C,
}

impl ThrottleBuilder {
    fn new() -> Self {
        Self {
            settings: Settings::default(),
            window: Duration::from_secs(60),
            bucket: Duration::from_secs(1),
            seed: None,
            name: "upstream".to_owned(),
            classifier: HttpClassifier::new(),
        }
    }
}

impl Default for ThrottleBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> ThrottleBuilder<C> {
    /// The throttle's name: the `throttle` label of
    /// `tower_steady_shed_total{layer="throttle"}`, so that the throttles
    /// of two upstreams export two series. Default `"upstream"`; name it
    /// after the upstream, as its breaker. 1 to 64 ASCII letters, digits,
    /// `-`, `_`, `.` or `:`, or [`build`](Self::build) fails with
    /// `throttle.name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The multiplier `K`: the client sends up to `K` times what the
    /// upstream accepts. Lower is more aggressive. Default `2.0`; must be
    /// at least 1.
    pub fn k(mut self, k: f64) -> Self {
        self.settings.k = k;
        self
    }

    /// How far back the counts go. Default 60 s; must be a whole number of
    /// [buckets](Self::bucket), at most 1000 of them.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The window's granularity: counts leave it one bucket at a time.
    /// Default 1 s; must be at least 1 ms.
    pub fn bucket(mut self, bucket: Duration) -> Self {
        self.bucket = bucket;
        self
    }

    /// The highest refusal probability, so some requests always go out to
    /// find that the upstream recovered. Default `0.9`; must be in `(0, 1]`.
    pub fn max_probability(mut self, probability: f64) -> Self {
        self.settings.max_probability = probability;
        self
    }

    /// Below this many requests in the window the throttle refuses nothing.
    /// Default `60` (one a second over the default window).
    pub fn min_requests(mut self, requests: u64) -> Self {
        self.settings.min_requests = requests;
        self
    }

    /// The retry-after hint of a refused request. Default 1 s.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.settings.retry_after = retry_after;
        self
    }

    /// Seeds the random draws, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The classifier deciding which outcomes the upstream accepted.
    /// Default [`HttpClassifier`].
    pub fn classifier<D>(self, classifier: D) -> ThrottleBuilder<D> {
        ThrottleBuilder {
            settings: self.settings,
            window: self.window,
            bucket: self.bucket,
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
    /// `throttle.k`.
    pub fn build(self) -> Result<ThrottleLayer<C>, ConfigError> {
        if !crate::observability::is_plain_name(&self.name) {
            return Err(ConfigError::new(
                "throttle.name",
                "must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
            ));
        }
        let settings = self.settings;
        if !(settings.k >= 1.0 && settings.k.is_finite()) {
            return Err(ConfigError::new("throttle.k", "must be at least 1"));
        }
        let p = settings.max_probability;
        if !(p > 0.0 && p <= 1.0) {
            return Err(ConfigError::new(
                "throttle.max_probability",
                "must be in (0, 1]",
            ));
        }
        if self.bucket < Duration::from_millis(1) {
            return Err(ConfigError::new("throttle.bucket", "must be at least 1 ms"));
        }
        let bucket = self.bucket.as_nanos();
        let window = self.window.as_nanos();
        if window == 0 || window % bucket != 0 || window / bucket > 1000 {
            return Err(ConfigError::new(
                "throttle.window",
                "must be a whole number of buckets, at most 1000",
            ));
        }
        let rng = match self.seed {
            Some(seed) => Rng::from_seed(seed),
            None => Rng::from_entropy(),
        };
        let window = Window::new(self.bucket, (window / bucket) as usize, Instant::now());
        Ok(ThrottleLayer {
            throttler: Arc::new(Throttler::new(settings, window, rng, &self.name)),
            classifier: self.classifier,
        })
    }
}
