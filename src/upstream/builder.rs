use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::oneshot;
use tower::discover::{Change, Discover};

use super::check::{Check, HealthCheck};
use super::health::{Config, Registry, TARGET};
use super::{Shared, Upstreams};
use crate::classify::HttpClassifier;
use crate::rng::Rng;
use crate::{BoxError, ConfigError};

/// Configures [`Upstreams`]: outlier detection, slow start, the latency
/// estimate, active health checks. Every default is documented on its
/// setter, with where it comes from.
#[derive(Debug, Clone)]
pub struct UpstreamsBuilder<C = HttpClassifier, K = ()> {
    config: Config,
    seed: Option<u64>,
    classifier: C,
    check: Option<HealthCheck<K>>,
}

impl UpstreamsBuilder {
    pub(crate) fn new() -> Self {
        Self {
            config: Config {
                consecutive_failures: 5,
                interval: Duration::from_secs(10),
                base_ejection: Duration::from_secs(30),
                unreachable_ejection: Duration::from_secs(1),
                max_ejection: Duration::from_secs(300),
                ejection_jitter: 0.1,
                max_ejected_ratio: 0.1,
                panic_threshold: 0.5,
                success_rate_min_requests: 100,
                success_rate_min_endpoints: 5,
                success_rate_stdev_factor: 1.9,
                slow_start: Duration::from_secs(30),
                slow_start_min_weight: 0.1,
                default_rtt: Duration::from_millis(30),
                decay: Duration::from_secs(10),
                checks: None,
                name: "upstreams".to_owned(),
            },
            seed: None,
            classifier: HttpClassifier::new(),
            check: None,
        }
    }
}

impl<C, K> UpstreamsBuilder<C, K> {
    /// The set's name: the `upstreams` label of its metrics
    /// (`tower_steady_upstream_endpoints`,
    /// `tower_steady_upstream_healthy_endpoints`, the ejections and
    /// re-admissions), so that two sets in one process export two series.
    /// Default `"upstreams"`; name it after the service the set reaches.
    /// 1 to 64 ASCII letters, digits, `-`, `_`, `.` or `:`, or `build`
    /// fails with `upstream.name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Gateway failures in a row (502, 503, 504, connect failures, resets,
    /// timeouts) that eject an endpoint. Default 5 (Envoy's
    /// `consecutive_gateway_failure`). Any other answer ends the run. The
    /// last endpoint taking requests is ejected this way only when its
    /// connections are refused (see the module docs, "The last one").
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = n;
        self
    }

    /// The success-rate interval, also the time a healthy endpoint needs to
    /// take one off its ejection multiplier. Default 10 s (Envoy's
    /// `interval`).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self
    }

    /// The first ejection's length; the n-th lasts n times as long.
    /// Default 30 s (Envoy's `base_ejection_time`).
    pub fn base_ejection(mut self, duration: Duration) -> Self {
        self.config.base_ejection = duration;
        self
    }

    /// The first ejection's length for an endpoint ejected because it could
    /// not be reached (its last failure a refused connection, as while it
    /// restarts): it is probed back this soon, and the n-th such ejection in
    /// a row lasts n times as long. Default 1 s, so a restart costs seconds,
    /// not a minute; an endpoint that answers badly gets
    /// [`base_ejection`](Self::base_ejection).
    pub fn unreachable_ejection(mut self, duration: Duration) -> Self {
        self.config.unreachable_ejection = duration;
        self
    }

    /// The longest ejection. Default 300 s (Envoy's `max_ejection_time`).
    pub fn max_ejection(mut self, duration: Duration) -> Self {
        self.config.max_ejection = duration;
        self
    }

    /// Each ejection is shortened by a random part of itself, up to this
    /// ratio, so endpoints ejected together are not probed together.
    /// Default 0.1; 0 for exact times in tests.
    pub fn ejection_jitter(mut self, ratio: f64) -> Self {
        self.config.ejection_jitter = ratio;
        self
    }

    /// The largest part of the set ejected at once; at least one endpoint
    /// may always be ejected. Default 0.1 (Envoy's `max_ejection_percent`
    /// of 10).
    pub fn max_ejected_ratio(mut self, ratio: f64) -> Self {
        self.config.max_ejected_ratio = ratio;
        self
    }

    /// Below this healthy part of the set, balance over every endpoint
    /// (panic mode). Default 0.5 (Envoy's `healthy_panic_threshold` of 50%).
    pub fn panic_threshold(mut self, ratio: f64) -> Self {
        self.config.panic_threshold = ratio;
        self
    }

    /// Success-rate outliers: the requests an endpoint needs in one
    /// interval to be compared (default 100, Envoy's
    /// `success_rate_request_volume`), the endpoints with that many needed
    /// for a comparison (default 5, `success_rate_minimum_hosts`), and how
    /// many standard deviations below the mean is an outlier (default 1.9,
    /// `success_rate_stdev_factor` of 1900).
    pub fn success_rate(
        mut self,
        min_requests: u32,
        min_endpoints: usize,
        stdev_factor: f64,
    ) -> Self {
        self.config.success_rate_min_requests = min_requests;
        self.config.success_rate_min_endpoints = min_endpoints;
        self.config.success_rate_stdev_factor = stdev_factor;
        self
    }

    /// How long a re-admitted or newly added endpoint takes to ramp up to a
    /// full share of requests; zero turns slow start off. Default 30 s
    /// (Envoy's `slow_start_window` is unset by default; 30 s is its
    /// documented example).
    pub fn slow_start(mut self, window: Duration) -> Self {
        self.config.slow_start = window;
        self
    }

    /// The share an endpoint starts its slow start with. Default 0.1
    /// (Envoy's `min_weight_percent` of 10).
    pub fn slow_start_min_weight(mut self, weight: f64) -> Self {
        self.config.slow_start_min_weight = weight;
        self
    }

    /// The latency assumed for an endpoint not measured yet while it has
    /// requests in flight, and the time over which the estimate forgets.
    /// Defaults 30 ms and 10 s (linkerd's `EWMA_DEFAULT_RTT` and
    /// `EWMA_DECAY`).
    pub fn peak_ewma(mut self, default_rtt: Duration, decay: Duration) -> Self {
        self.config.default_rtt = default_rtt;
        self.config.decay = decay;
        self
    }

    /// Seeds the random draws (power of two choices, slow start, jitter),
    /// so a test can replay them. Default: seeded from the OS.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How outcomes are classified. Default [`HttpClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> UpstreamsBuilder<C2, K> {
        UpstreamsBuilder {
            config: self.config,
            seed: self.seed,
            classifier,
            check: self.check,
        }
    }

    /// Turns on active health checks (off by default).
    pub fn health_check<K2>(self, check: HealthCheck<K2>) -> UpstreamsBuilder<C, K2> {
        UpstreamsBuilder {
            config: self.config,
            seed: self.seed,
            classifier: self.classifier,
            check: Some(check),
        }
    }

    fn validate(&self) -> Result<Config, ConfigError> {
        let c = &self.config;
        let ratio = |value: f64, field| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::new(field, "must be between 0 and 1"))
            }
        };
        if !crate::observability::is_plain_name(&c.name) {
            return Err(ConfigError::new(
                "upstream.name",
                "must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
            ));
        }
        if c.consecutive_failures == 0 {
            return Err(ConfigError::new(
                "upstream.consecutive_failures",
                "must be at least 1",
            ));
        }
        for (value, field) in [
            (c.interval, "upstream.interval"),
            (c.base_ejection, "upstream.base_ejection"),
            (c.unreachable_ejection, "upstream.unreachable_ejection"),
            (c.default_rtt, "upstream.default_rtt"),
            (c.decay, "upstream.decay"),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
        }
        if c.max_ejection < c.base_ejection.max(c.unreachable_ejection) {
            return Err(ConfigError::new(
                "upstream.max_ejection",
                "must be at least base_ejection",
            ));
        }
        ratio(c.ejection_jitter, "upstream.ejection_jitter")?;
        ratio(c.max_ejected_ratio, "upstream.max_ejected_ratio")?;
        ratio(c.panic_threshold, "upstream.panic_threshold")?;
        if !(c.success_rate_stdev_factor >= 0.0 && c.success_rate_stdev_factor.is_finite()) {
            return Err(ConfigError::new(
                "upstream.success_rate_stdev_factor",
                "must be a finite number, zero or more",
            ));
        }
        if !(c.slow_start_min_weight > 0.0 && c.slow_start_min_weight <= 1.0) {
            return Err(ConfigError::new(
                "upstream.slow_start_min_weight",
                "must be greater than 0 and at most 1",
            ));
        }
        let mut config = c.clone();
        config.checks = self.check.as_ref().map(HealthCheck::settings).transpose()?;
        Ok(config)
    }

    fn shared<S>(
        self,
        closed: Option<oneshot::Sender<()>>,
    ) -> Result<(Arc<Shared<S>>, C), ConfigError>
    where
        S: Clone + Send + Sync + 'static,
        K: Check<S>,
    {
        let config = self.validate()?;
        let check = match self.check {
            Some(check) => check.kind.erase()?.zip(config.checks),
            None => None,
        };
        let rng = self.seed.map_or_else(Rng::from_entropy, Rng::from_seed);
        let registry = Registry::new(config, rng);
        Ok((
            Arc::new(Shared::new(registry, check, closed)),
            self.classifier,
        ))
    }

    /// Balances over a fixed set: one service per address, made by `make`
    /// (typically a hyper-util client wrapped in [`SetAuthority`]).
    ///
    /// # Panics
    ///
    /// With health checks turned on, when called outside a tokio runtime
    /// (the checks run on tasks of their own), as tower's `Buffer::new`.
    ///
    /// [`SetAuthority`]: super::SetAuthority
    pub fn build<S, I, F>(self, addrs: I, mut make: F) -> Result<Upstreams<S, C>, ConfigError>
    where
        I: IntoIterator<Item = SocketAddr>,
        F: FnMut(SocketAddr) -> S,
        S: Clone + Send + Sync + 'static,
        K: Check<S>,
    {
        let (shared, classifier) = self.shared(None)?;
        for addr in addrs {
            shared.apply(Change::Insert(addr, make(addr)), false);
        }
        Ok(Upstreams::from_shared(shared, classifier))
    }

    /// Balances over a set that changes: a [`Discover`] of services keyed
    /// by address, such as [`Dns`](super::Dns) or
    /// `tower::discover::ServiceList`.
    ///
    /// Changes already available are applied before this returns (those
    /// endpoints start healthy); later ones are applied by a task of their
    /// own, which stops when the discovery ends or fails (the set then
    /// stays as it was) or when the last clone of the `Upstreams` is
    /// dropped. A removed endpoint takes no new requests; those in flight
    /// finish on it. An added one starts in slow start.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, as tower's `Buffer::new`.
    pub fn build_discover<D>(self, discover: D) -> Result<Upstreams<D::Service, C>, ConfigError>
    where
        D: Discover<Key = SocketAddr> + Send + 'static,
        D::Service: Clone + Send + Sync + 'static,
        D::Error: Into<BoxError>,
        K: Check<D::Service>,
    {
        let (closed, on_close) = oneshot::channel();
        let (shared, classifier) = self.shared(Some(closed))?;
        // Boxed once, for the discovery task: a cold path.
        let mut discover = Box::pin(discover);
        // Take what is ready now, without waiting.
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(Ok(change))) = discover.as_mut().poll_discover(&mut cx) {
            shared.apply(change, false);
        }
        tokio::spawn(drive(discover, Arc::downgrade(&shared), on_close));
        Ok(Upstreams::from_shared(shared, classifier))
    }
}

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

async fn drive<D>(
    mut discover: Pin<Box<D>>,
    shared: Weak<Shared<D::Service>>,
    mut closed: oneshot::Receiver<()>,
) where
    D: Discover<Key = SocketAddr>,
    D::Service: Clone + Send + Sync + 'static,
    D::Error: Into<BoxError>,
{
    loop {
        let next = std::future::poll_fn(|cx| {
            if Pin::new(&mut closed).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            discover.as_mut().poll_discover(cx).map(Some)
        })
        .await;
        match next {
            // Every clone is gone.
            None => return,
            Some(None) => {
                tracing::debug!(target: TARGET, "discovery ended; the set stays as it is");
                return;
            }
            Some(Some(Err(error))) => {
                let error: BoxError = error.into();
                tracing::error!(
                    target: TARGET,
                    error = %crate::error::Chain(&*error),
                    "discovery failed; the set stays as it is"
                );
                return;
            }
            Some(Some(Ok(change))) => match shared.upgrade() {
                Some(shared) => shared.apply(change, true),
                None => return,
            },
        }
    }
}
