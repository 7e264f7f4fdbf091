//! The stacks both `stack` (timed) and `examples/calls` (counted) build,
//! so that the two measure the same thing.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer as TowerRetryLayer};
use tower::{BoxError, Service, ServiceBuilder};
use tower_steady::load_shed::AdaptiveLimitLayer;
use tower_steady::retry::RetryLayer;
use tower_steady::timeout::TimeoutLayer;

use crate::{Inner, NoBody};

/// The timeout of every stack that has one.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// tower's retry policy as its docs suggest: retry 5xx and errors while
/// the budget allows, deposit on success.
#[derive(Clone)]
pub struct TowerPolicy {
    budget: Arc<TpsBudget>,
}

impl<B: Clone, T, E> Policy<Request<B>, Response<T>, E> for TowerPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<B>,
        result: &mut Result<Response<T>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) if !response.status().is_server_error() => {
                self.budget.deposit();
                None
            }
            _ => self.budget.withdraw().then(|| std::future::ready(())),
        }
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        Some(request.clone())
    }
}

/// tower's 4-layer client stack: `Timeout`, `Retry` with a `TpsBudget`,
/// `LoadShed`, `ConcurrencyLimit`.
pub fn tower_client<S>(
    inner: S,
) -> impl Service<Request<NoBody>, Response = Response<()>, Error = BoxError, Future: Send>
       + Clone
       + Send
       + 'static
where
    S: Service<Request<NoBody>, Response = Response<()>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let policy = TowerPolicy {
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
    };
    ServiceBuilder::new()
        .timeout(TIMEOUT)
        .retry(policy)
        .load_shed()
        .concurrency_limit(1024)
        .service(inner)
}

/// tower-steady's layers in tower's stack's places, doing what it does:
/// a 30 s timeout, retries with a budget (10 s, 10/s, 20%: the defaults),
/// and a fixed limit of 1024 in flight that refuses above it (tower's
/// `LoadShed` + `ConcurrencyLimit`).
pub fn like_tower(
    inner: Inner,
) -> impl Service<Request<NoBody>, Response = Response<()>, Error = BoxError, Future: Send>
       + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(TimeoutLayer::new(TIMEOUT))
        .layer(RetryLayer::new())
        .layer(AdaptiveLimitLayer::builder().fixed(1024).build().unwrap())
        .service(inner)
}

/// tower's server stack: `LoadShed`, `ConcurrencyLimit` (1024), `Timeout`.
pub fn tower_server<S>(
    inner: S,
) -> impl Service<Request<NoBody>, Response = S::Response, Error = BoxError, Future: Send>
       + Clone
       + Send
       + 'static
where
    S: Service<Request<NoBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1024)
        .timeout(TIMEOUT)
        .service(inner)
}

/// tower's documented way to retry HTTP requests within a budget.
#[derive(Clone)]
pub struct RetryPolicy {
    budget: Arc<TpsBudget>,
    attempts: u32,
}

impl<E> Policy<Request<NoBody>, Response<()>, E> for RetryPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<NoBody>,
        result: &mut Result<Response<()>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) if !response.status().is_server_error() => {
                self.budget.deposit();
                None
            }
            _ if self.attempts >= 2 => None,
            _ => {
                if self.budget.withdraw() {
                    self.attempts += 1;
                    Some(ready(()))
                } else {
                    None
                }
            }
        }
    }

    fn clone_request(&mut self, req: &Request<NoBody>) -> Option<Request<NoBody>> {
        let mut copy = Request::new(NoBody);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// tower's `Retry` with [`RetryPolicy`].
pub fn tower_retry() -> TowerRetryLayer<RetryPolicy> {
    TowerRetryLayer::new(RetryPolicy {
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
        attempts: 0,
    })
}
