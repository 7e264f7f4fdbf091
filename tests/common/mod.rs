//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

/// A server on `127.0.0.1:0`, run on its own thread by a current-thread
/// runtime with **paused time**: its timers (timeouts, deadlines, injected
/// latency) fire as soon as the server has nothing else to do, so a test
/// that waits for a 10 s timeout takes no time and cannot flake on a slow
/// machine. The server stops when the value is dropped.
pub struct PausedServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PausedServer {
    pub fn start(app: Router) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_on(std_listener, app)
    }

    /// Serves `app` on a listener the test bound itself (to reuse a port).
    /// Dropping the server closes the listener and every connection.
    pub fn start_on(std_listener: std::net::TcpListener, app: Router) -> Self {
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                tokio::select! {
                    res = axum::serve(listener, app) => res.unwrap(),
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for PausedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub type TestClient = Client<HttpConnector, Empty<Bytes>>;

/// A plain hyper-util client, no pooling surprises: one connection per
/// request is not needed, but idle connections must not outlive the test.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

pub fn get(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url).body(Empty::new()).unwrap()
}

/// Status, headers and body of a response, read to the end.
pub async fn read(
    res: http::Response<hyper::body::Incoming>,
) -> (http::StatusCode, http::HeaderMap, String) {
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// A bound that stops a test that would otherwise hang on a bug. It asserts
/// nothing about speed: a healthy run finishes in milliseconds.
pub async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(60), fut)
        .await
        .expect("test did not finish within its bound")
}

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
}

pub fn scripted(script: &'static [u16]) -> Scripted {
    Scripted {
        script,
        n: Default::default(),
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
        std::future::ready(Ok(status(self.script.get(i).copied().unwrap_or(200))))
    }
}

/// `GET http://site.test/`, for services called without a network.
pub fn site() -> http::Request<Empty<Bytes>> {
    get("http://site.test/")
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
