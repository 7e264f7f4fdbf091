//! Active health checks.

use std::fmt;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response};
use tokio::time::{sleep_until, timeout, Instant};
use tower_service::Service;

use super::endpoint::Health;
use super::health::{CheckSettings, TARGET};
use super::Shared;
use crate::{BoxError, ConfigError};

/// Active health checks: a periodic probe of every endpoint, independent
/// of traffic. See [`UpstreamsBuilder::health_check`].
///
/// Defaults (HAProxy's `inter 2s rise 2 fall 3`, with Envoy's 1 s
/// timeout): a check every 2 s, each given 1 s; 3 failures in a row take
/// the endpoint out, 2 passes in a row bring it back (in slow start).
/// Endpoints start presumed healthy, so a set whose checks are slow to
/// start does not begin with an outage. Passing checks also end a passive
/// ejection early, as Envoy does by default.
///
/// Checks of one endpoint are spread over the interval at random, so the
/// endpoints of a set are not all checked at the same moment.
///
/// [`UpstreamsBuilder::health_check`]: super::UpstreamsBuilder::health_check
#[derive(Clone)]
pub struct HealthCheck<K> {
    pub(crate) kind: K,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
}

impl<K> fmt::Debug for HealthCheck<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthCheck")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("rise", &self.rise)
            .field("fall", &self.fall)
            .finish_non_exhaustive()
    }
}

impl<B> HealthCheck<HttpGet<B>> {
    /// Checks with `GET <path>` sent through each endpoint's own service
    /// (the one the maker made for it): a `2xx` answer passes, anything
    /// else (another status, an error, no answer within the timeout)
    /// fails. The request body is `B::default()`; `B` is usually inferred
    /// from the endpoint service.
    pub fn http_get(path: impl Into<String>) -> Self {
        Self::with(HttpGet {
            path: path.into(),
            _body: PhantomData,
        })
    }
}

impl<T> HealthCheck<ServiceCheck<T>> {
    /// Checks by calling `service` with the endpoint's address: `Ok`
    /// passes, an error fails.
    pub fn service(service: T) -> Self {
        Self::with(ServiceCheck { service })
    }
}

impl<K> HealthCheck<K> {
    fn with(kind: K) -> Self {
        Self {
            kind,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }

    /// Time between two checks of one endpoint (default 2 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Time a check may take before it fails (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Passes in a row that bring a checked-out endpoint back (default 2).
    pub fn rise(mut self, rise: u32) -> Self {
        self.rise = rise;
        self
    }

    /// Failures in a row that take an endpoint out (default 3).
    pub fn fall(mut self, fall: u32) -> Self {
        self.fall = fall;
        self
    }

    pub(crate) fn settings(&self) -> Result<CheckSettings, ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::new(
                "health_check.interval",
                "must be greater than zero",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "health_check.timeout",
                "must be greater than zero",
            ));
        }
        if self.rise == 0 {
            return Err(ConfigError::new("health_check.rise", "must be at least 1"));
        }
        if self.fall == 0 {
            return Err(ConfigError::new("health_check.fall", "must be at least 1"));
        }
        Ok(CheckSettings {
            interval: self.interval,
            timeout: self.timeout,
            rise: self.rise,
            fall: self.fall,
        })
    }
}

/// The check of [`HealthCheck::http_get`].
pub struct HttpGet<B> {
    path: String,
    _body: PhantomData<fn() -> B>,
}

impl<B> Clone for HttpGet<B> {
    fn clone(&self) -> Self {
        Self {
            path: self.path.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> fmt::Debug for HttpGet<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpGet").field("path", &self.path).finish()
    }
}

/// The check of [`HealthCheck::service`].
#[derive(Clone, Debug)]
pub struct ServiceCheck<T> {
    service: T,
}

/// A kind of health check that can check endpoints served by `S`.
///
/// Implemented for [`HttpGet`] (when `S` takes `http::Request<B>` with a
/// `B: Default` body), for [`ServiceCheck`], and for `()` (no checks).
/// Sealed: the kinds are this crate's.
pub trait Check<S>: sealed::Sealed<S> {}

impl<S, K: sealed::Sealed<S>> Check<S> for K {}

pub(crate) mod sealed {
    use super::*;

    /// A check, with the types erased. Its future is boxed: checks run on
    /// a cold path (a task of their own, every few seconds per endpoint),
    /// never on a request's.
    pub(crate) type CheckFn<S> = Arc<
        dyn Fn(SocketAddr, S) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
            + Send
            + Sync,
    >;

    pub trait Sealed<S> {
        fn erase(self) -> Result<Option<CheckFn<S>>, ConfigError>;
    }
}

use sealed::CheckFn;

impl<S> sealed::Sealed<S> for () {
    fn erase(self) -> Result<Option<CheckFn<S>>, ConfigError> {
        Ok(None)
    }
}

impl<S, B, RB> sealed::Sealed<S> for HttpGet<B>
where
    S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Default + Send + 'static,
{
    fn erase(self) -> Result<Option<CheckFn<S>>, ConfigError> {
        let path = PathAndQuery::try_from(self.path.as_str())
            .ok()
            .filter(|p| p.as_str().starts_with('/'))
            .ok_or(ConfigError::new(
                "health_check.path",
                "must be an absolute path, such as /healthz",
            ))?;
        Ok(Some(Arc::new(move |addr, mut service: S| {
            let uri = format!("http://{addr}{path}");
            // Boxed: a cold path, one health check per endpoint and
            // interval on the checker's task, never on a request's path.
            Box::pin(async move {
                let request = Request::get(uri).body(B::default())?;
                poll_fn(|cx| service.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                let response = service.call(request).await.map_err(Into::into)?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("health check answered {}", response.status()).into())
                }
            })
        })))
    }
}

impl<S, T> sealed::Sealed<S> for ServiceCheck<T>
where
    T: Service<SocketAddr> + Clone + Send + Sync + 'static,
    T::Future: Send,
    T::Error: Into<BoxError>,
{
    fn erase(self) -> Result<Option<CheckFn<S>>, ConfigError> {
        let service = self.service;
        Ok(Some(Arc::new(move |addr, _| {
            let mut service = service.clone();
            // Boxed: a cold path, as above.
            Box::pin(async move {
                poll_fn(|cx| service.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                service.call(addr).await.map(drop).map_err(Into::into)
            })
        })))
    }
}

/// Checks one endpoint until it leaves the set or the upstreams are
/// dropped.
pub(crate) async fn run<S: Clone>(
    shared: Weak<Shared<S>>,
    health: Arc<Health>,
    service: S,
    check: CheckFn<S>,
    settings: CheckSettings,
    first: Instant,
) {
    let mut next = first;
    loop {
        sleep_until(next).await;
        next += settings.interval;
        if health.removed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let passed = match timeout(settings.timeout, check(health.addr, service.clone())).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::debug!(
                    target: TARGET,
                    endpoint = %health.addr,
                    error = %crate::error::Chain(&*error),
                    "health check failed"
                );
                false
            }
            Err(_) => {
                tracing::debug!(
                    target: TARGET,
                    endpoint = %health.addr,
                    timeout_ms = settings.timeout.as_millis() as u64,
                    "health check timed out"
                );
                false
            }
        };
        let now = Instant::now();
        shared.registry.check_result(&health, passed, now);
        // A check that ran past the next one's time: start again from now.
        if next < now {
            next = now + settings.interval;
        }
    }
}
