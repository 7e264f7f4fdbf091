use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;

use super::hedge::{HedgeDelay, Latencies};
use super::{Backoff, Budget, Hedge, Retry};
use crate::classify::HttpClassifier;
use crate::observability::RetryMetrics;
use crate::rng::Rng;
use crate::ConfigError;

const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const MAX_MAX_ATTEMPTS: u32 = 10;
const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// What every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared<C> {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_retry_after: Duration,
    pub(crate) replay_limit: usize,
    pub(crate) budget: Budget,
    pub(crate) hedge: Option<HedgeDelay>,
    pub(crate) latencies: Option<Arc<Latencies>>,
    pub(crate) classifier: C,
    pub(crate) rng: Rng,
    /// Record `tower_steady_request_duration_seconds` (`metrics` feature).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) durations: bool,
    /// Its series, labelled with its name.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) metrics: RetryMetrics,
}

/// Retries failed requests within a [`Budget`]. See the
/// [module docs](super).
///
/// The budget, the random generator and the latency histogram of
/// percentile hedging are created with the layer: every service it makes,
/// and every clone, shares them.
#[derive(Debug, Clone)]
pub struct RetryLayer<C = HttpClassifier> {
    shared: Arc<Shared<C>>,
}

impl RetryLayer {
    /// A retry layer with the defaults (see [`RetryBuilder`]).
    pub fn new() -> Self {
        RetryBuilder::new()
            .build()
            .expect("the default retry settings are valid")
    }

    /// A builder to configure the layer.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::new()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> RetryLayer<C> {
    /// A handle to read the budget and the hedge delay.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            budget: self.shared.budget.clone(),
            latencies: self.shared.latencies.clone(),
            hedge: self.shared.hedge,
        }
    }

    /// The layer's budget.
    pub fn budget(&self) -> &Budget {
        &self.shared.budget
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.shared.clone())
    }
}

/// Builds a [`RetryLayer`], checking its configuration.
///
/// The defaults: at most 3 attempts, a budget of 20% of
/// requests over 10 s plus 10 retries per second, full-jitter backoff from
/// 25 ms to 250 ms, `Retry-After` honoured up to 10 s and only when it fits
/// the deadline, request bodies kept up to 64 KiB, no hedging.
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get the layer"]
pub struct RetryBuilder<C = HttpClassifier> {
    max_attempts: u32,
    backoff: Backoff,
    max_retry_after: Duration,
    replay_limit: usize,
    budget: Option<Budget>,
    hedge: Option<Hedge>,
    seed: Option<u64>,
    durations: bool,
    name: String,
    classifier: C,
}

impl RetryBuilder {
    fn new() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            budget: None,
            hedge: None,
            seed: None,
            durations: false,
            name: "upstream".to_owned(),
            classifier: HttpClassifier::new(),
        }
    }
}

impl Default for RetryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> RetryBuilder<C> {
    /// The layer's name: the `retry` label of its metrics
    /// (`tower_steady_requests_total`, `tower_steady_retries_total`, the
    /// budget's refusals, ...), so that the client stacks of two upstreams
    /// export two series. Default `"upstream"`; name it after the upstream,
    /// as its breaker. 1 to 64 ASCII letters, digits, `-`, `_`, `.` or `:`,
    /// or [`build`](Self::build) fails with `retry.name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Attempts per request, the first one included (a hedge is an attempt
    /// too). Default 3; must be between 1 and 10.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The wait before each retry. Default [`Backoff::default`] (25 ms base,
    /// 250 ms cap, full jitter); the base must not be above the cap.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest `Retry-After` honoured: a failure asking for a longer
    /// wait is returned as it is. Default 10 s. Whatever this is, a wait
    /// never goes past the request's [`Deadline`](crate::deadline::Deadline).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The most request body bytes kept for replay. A request with a longer
    /// body is sent once and not retried. Default 64 KiB.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// The budget retries and hedges draw from. Default
    /// [`Budget::default`], one per layer; pass a clone of one budget to
    /// several layers to make them share it.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Hedge slow idempotent requests. Off by default.
    pub fn hedge(mut self, hedge: Hedge) -> Self {
        self.hedge = Some(hedge);
        self
    }

    /// Seeds the random generator of the backoff jitter, for reproducible
    /// tests. By default it is seeded from the operating system.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Decides which failures are retried. Default [`HttpClassifier`].
    pub fn classifier<D>(self, classifier: D) -> RetryBuilder<D> {
        RetryBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            max_retry_after: self.max_retry_after,
            replay_limit: self.replay_limit,
            budget: self.budget,
            hedge: self.hedge,
            seed: self.seed,
            durations: self.durations,
            name: self.name,
            classifier,
        }
    }

    /// With the `metrics` feature, also records each request's whole time
    /// (retries and backoff included) in
    /// `tower_steady_request_duration_seconds`, and each attempt's in
    /// `tower_steady_attempt_duration_seconds`, both by outcome. Off by
    /// default: it costs clock reads per request (about 60 ns on the
    /// benchmark machine, a third of the layer's own cost), and the HTTP
    /// metrics of most services already time their requests. Without the
    /// feature it does nothing.
    pub fn record_durations(mut self, record: bool) -> Self {
        self.durations = record;
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<RetryLayer<C>, ConfigError> {
        if !crate::observability::is_plain_name(&self.name) {
            return Err(ConfigError::new(
                "retry.name",
                "must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
            ));
        }
        if !(1..=MAX_MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "retry.max_attempts",
                "must be between 1 and 10",
            ));
        }
        if self.backoff.base() > self.backoff.cap() {
            return Err(ConfigError::new(
                "retry.backoff",
                "the base must not be above the cap",
            ));
        }
        if let Some(hedge) = &self.hedge {
            hedge.validate()?;
        }
        let hedge = self.hedge.map(|h| h.delay());
        let latencies = match hedge {
            Some(HedgeDelay::Percentile(p)) => Some(Arc::new(Latencies::new(p, Instant::now()))),
            _ => None,
        };
        let rng = match self.seed {
            Some(seed) => Rng::from_seed(seed),
            None => Rng::from_entropy(),
        };
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                max_attempts: self.max_attempts,
                backoff: self.backoff,
                max_retry_after: self.max_retry_after,
                replay_limit: self.replay_limit,
                budget: self.budget.unwrap_or_default(),
                hedge,
                latencies,
                classifier: self.classifier,
                rng,
                durations: self.durations,
                metrics: RetryMetrics::new(&self.name),
            }),
        })
    }
}

/// Reads a retry layer's budget and hedge delay; from
/// [`RetryLayer::handle`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RetryHandle {
    budget: Budget,
    latencies: Option<Arc<Latencies>>,
    hedge: Option<HedgeDelay>,
}

impl RetryHandle {
    /// The layer's budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// What the layer would do now.
    pub fn snapshot(&self) -> RetrySnapshot {
        let now = Instant::now();
        let hedge_delay = match self.hedge {
            None => None,
            Some(HedgeDelay::Fixed(delay)) => Some(delay),
            Some(HedgeDelay::Percentile(_)) => self.latencies.as_ref().and_then(|l| l.delay(now)),
        };
        RetrySnapshot {
            retries_available: self.budget.available_at(now),
            hedge_delay,
        }
    }
}

/// A retry layer's state at one moment; from [`RetryHandle::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RetrySnapshot {
    /// Retries the budget would allow now.
    pub retries_available: u64,
    /// After how long a request would be hedged now; `None` when hedging is
    /// off or, for a percentile, not known yet.
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "hedge_delay_ms",
            serialize_with = "crate::serde_util::opt_millis"
        )
    )]
    pub hedge_delay: Option<Duration>,
}
