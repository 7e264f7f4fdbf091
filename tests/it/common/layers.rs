//! Per-layer helpers: scripted inner services and the small scenarios
//! several test files share (a stored stale copy, a breaker opened, a
//! retry refused, a request shed).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::get;

/// A `tower::discover::Discover` fed by the test through a channel:
/// standing in for a service registry or DNS answers.
#[cfg(feature = "upstream")]
pub struct Feed<S>(
    pub tokio::sync::mpsc::UnboundedReceiver<tower::discover::Change<SocketAddr, S>>,
);

#[cfg(feature = "upstream")]
impl<S> futures_core::Stream for Feed<S> {
    type Item = Result<tower::discover::Change<SocketAddr, S>, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// A response with `code` and an empty body.
pub fn status(code: u16) -> http::Response<http_body_util::Full<Bytes>> {
    let mut r = http::Response::new(http_body_util::Full::default());
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
    r
}

/// An inner service answering the statuses in `script` in turn, then 200,
/// whatever the request's body type.
#[derive(Clone)]
pub struct Scripted {
    script: &'static [u16],
    n: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    cacheable: bool,
}

pub fn scripted(script: &'static [u16]) -> Scripted {
    Scripted {
        script,
        n: Default::default(),
        cacheable: false,
    }
}

impl Scripted {
    /// Its 200s say they may be stored (`Cache-Control: max-age=0`).
    pub fn cacheable(mut self) -> Self {
        self.cacheable = true;
        self
    }
}

impl<B> tower::Service<http::Request<B>> for Scripted {
    type Response = http::Response<http_body_util::Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        let i = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut response = status(self.script.get(i).copied().unwrap_or(200));
        if self.cacheable && response.status() == http::StatusCode::OK {
            response
                .headers_mut()
                .insert("cache-control", http::HeaderValue::from_static("max-age=0"));
        }
        std::future::ready(Ok(response))
    }
}

/// `GET http://site.test/`, for services called without a network.
pub fn site() -> http::Request<Empty<Bytes>> {
    get("http://site.test/")
}

/// A stale-if-error service whose upstream answered `site()` with `200`
/// (read to the end, so stored) and answers `502` next: the next `site()`
/// is served the stored copy.
#[cfg(feature = "fallback")]
pub async fn stale_copy_stored() -> tower_steady::fallback::StaleIfError<Scripted> {
    use tower::{Layer, ServiceExt};
    let stale =
        tower_steady::fallback::StaleIfErrorLayer::new().layer(scripted(&[200, 502]).cacheable());
    let stored = stale.clone().oneshot(site()).await.unwrap();
    stored.into_body().collect().await.unwrap();
    stale
}

/// A replica answering 502 while `broken` is set, if it is the bad one;
/// 200 otherwise.
#[cfg(feature = "upstream")]
#[derive(Clone)]
pub struct Replica {
    failing: bool,
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(feature = "upstream")]
impl tower::Service<http::Request<Empty<Bytes>>> for Replica {
    type Response = http::Response<http_body_util::Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Empty<Bytes>>) -> Self::Future {
        let broken = self.broken.load(std::sync::atomic::Ordering::Relaxed);
        std::future::ready(Ok(status(if self.failing && broken { 502 } else { 200 })))
    }
}

/// Three replicas on `127.0.0.1:1..=3` (never dialled) of which the first
/// answers 502 while the flag is set (it starts set); no ejection jitter,
/// no slow start, seeded.
#[cfg(feature = "upstream")]
pub fn one_broken_of_three() -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tower_steady::upstream::Upstreams<Replica>,
) {
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let addrs: Vec<SocketAddr> = (1..=3).map(|p| ([127, 0, 0, 1], p).into()).collect();
    let bad = addrs[0];
    let flag = broken.clone();
    let upstreams = tower_steady::upstream::Upstreams::builder()
        .ejection_jitter(0.0)
        .slow_start(std::time::Duration::ZERO)
        .seed(7)
        .build(addrs, move |addr| Replica {
            failing: addr == bad,
            broken: flag.clone(),
        })
        .unwrap();
    (broken, upstreams)
}

/// A circuit breaker named `name` over a service answering 503 twenty
/// times, then 200; with its handle. [`fail_twenty`] opens it.
#[cfg(feature = "circuit-breaker")]
pub fn breaker_over_503s(
    name: &str,
) -> (
    tower_steady::circuit_breaker::BreakerHandle,
    tower_steady::circuit_breaker::CircuitBreaker<Scripted, tower_steady::classify::HttpClassifier>,
) {
    use tower::Layer;
    let layer = tower_steady::circuit_breaker::CircuitBreakerLayer::builder()
        .name(name)
        .build()
        .unwrap();
    (layer.handle(), layer.layer(scripted(&[503; 20])))
}

/// Sends the twenty calls that open a breaker from [`breaker_over_503s`]
/// (its defaults: at least 20 calls, half of them failures).
#[cfg(feature = "circuit-breaker")]
pub async fn fail_twenty(
    svc: &mut tower_steady::circuit_breaker::CircuitBreaker<
        Scripted,
        tower_steady::classify::HttpClassifier,
    >,
) {
    use tower::{Service, ServiceExt};
    for _ in 0..20 {
        let ready = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut *svc).await;
        ready.unwrap().call(site()).await.unwrap();
    }
}

/// One request through a retry layer whose budget holds nothing, to a
/// service answering 503: the retry is refused by the budget, and the 503
/// is what comes back (checked here).
#[cfg(feature = "retry")]
pub async fn retry_refused_by_the_budget() {
    use tower::{Layer, ServiceExt};
    let none = tower_steady::retry::Budget::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap();
    let stingy = tower_steady::retry::RetryLayer::builder()
        .budget(none)
        .build()
        .unwrap();
    let response = stingy
        .layer(scripted(&[503]))
        .oneshot(site())
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
}

/// A service answering 200 after 5 ms of (the runtime's) time.
pub fn slow() -> impl tower::Service<
    http::Request<Empty<Bytes>>,
    Response = http::Response<http_body_util::Full<Bytes>>,
    Error = std::convert::Infallible,
    Future: Send,
> + Copy
       + Send
       + 'static {
    tower::service_fn(|_: http::Request<Empty<Bytes>>| async {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        Ok::<_, std::convert::Infallible>(status(200))
    })
}

/// Sheds one request: a fixed limit of 1 around a service that takes 5 ms,
/// a second call while the first is in flight (refused, checked here),
/// then the first completes. Needs a paused (or real) tokio runtime.
#[cfg(feature = "load-shed")]
pub async fn shed_one() {
    use tower::{Layer, Service, ServiceExt};
    let mut fixed = tower_steady::load_shed::AdaptiveLimitLayer::builder()
        .fixed(1)
        .build()
        .unwrap()
        .layer(slow());
    let first = fixed.ready().await.unwrap().call(site());
    assert!(fixed.ready().await.unwrap().call(site()).await.is_err());
    first.await.unwrap();
}
