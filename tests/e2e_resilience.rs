//! End to end on loopback: `Resilience::client()` around a hyper-util
//! client (through `Upstreams` where there are replicas) in front of real
//! axum servers on `127.0.0.1:0`. The scenarios of the presets' issue;
//! each prints its counts, and asserts on counts and statuses only.
//!
//! The servers run under paused time (`PausedServer`). The client runs in
//! real time: its deadline and backoff timers would otherwise be advanced
//! while it waits on a socket. Each test is bounded and stops by itself.
#![cfg(feature = "preset")]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceExt};
use tower_steady::retry::ReplayBody;
use tower_steady::upstream::{SetAuthority, Upstreams};
use tower_steady::{BoxError, Resilience};

use common::{bounded, PausedServer};

/// A replica that answers 502 to every `every`-th request it gets (never,
/// with 0), 200 otherwise, and counts them.
fn replica(every: usize, calls: Arc<AtomicUsize>) -> PausedServer {
    let app = Router::new().route(
        "/",
        get(move || {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                if every != 0 && n % every == 0 {
                    (StatusCode::BAD_GATEWAY, "bad gateway")
                } else {
                    (StatusCode::OK, "hello")
                }
            }
        }),
    );
    PausedServer::start(app)
}

fn hyper_client(
) -> Client<hyper_util::client::legacy::connect::HttpConnector, ReplayBody<Empty<Bytes>>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `total` requests for `/`, `concurrency` at a time, and counts the
/// statuses the caller sees.
async fn drive<S>(service: S, total: usize, concurrency: usize) -> BTreeMap<u16, usize>
where
    S: Service<
            Request<Empty<Bytes>>,
            Response = http::Response<
                tower_steady::http::ResponseBody<
                    tower_steady::fallback::StaleIfErrorBody<hyper::body::Incoming>,
                >,
            >,
        > + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError> + std::fmt::Debug,
    S::Future: Send,
{
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (service, sent) = (service.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            while sent.fetch_add(1, Ordering::Relaxed) < total {
                let request = Request::get("http://upstream/").body(Empty::new()).unwrap();
                let response = service.clone().oneshot(request).await.unwrap();
                *seen.entry(response.status().as_u16()).or_insert(0) += 1;
                response.into_body().collect().await.unwrap();
            }
            seen
        }));
    }
    let mut seen = BTreeMap::new();
    for worker in workers {
        for (status, n) in worker.await.unwrap() {
            *seen.entry(status).or_insert(0) += n;
        }
    }
    seen
}

/// Scenario 1: 5% of the upstream's responses are 502 (one in twenty, on
/// each of three replicas). No 502 reaches the client, and the retries
/// stay within the budget (20% of requests plus a reserve of 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_of_502s_never_reach_the_client() {
    const REQUESTS: usize = 600;
    let calls = Arc::new(AtomicUsize::new(0));
    let servers: Vec<PausedServer> = (0..3).map(|_| replica(20, calls.clone())).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let hyper = hyper_client();
    let upstreams = Upstreams::builder()
        .build(addrs, move |addr| SetAuthority::new(addr, hyper.clone()))
        .unwrap();
    let layer = Resilience::client().build().unwrap();
    let client = tower::Layer::layer(&layer, upstreams);

    let seen = bounded(drive(client, REQUESTS, 8)).await;
    let calls = calls.load(Ordering::Relaxed);
    let retries = calls - REQUESTS;
    println!("statuses {seen:?}; upstream calls {calls}, retries {retries}");
    assert_eq!(seen.get(&502), None, "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), REQUESTS);
    // A 502 on each of three replicas in a row is the only way a request
    // fails; when it does, the client sees 503.
    assert!(
        seen.get(&200).copied().unwrap_or(0) >= REQUESTS - 3,
        "{seen:?}"
    );
    assert!(
        retries >= REQUESTS / 25,
        "5% of attempts fail and are retried: {retries}"
    );
    assert!(
        retries <= REQUESTS / 5 + 100,
        "within the budget: {retries}"
    );
}

/// Scenario 6: the upstream answers 502 to everything. The client never
/// sees a 502 (503 + Retry-After instead), and once the breaker opens the
/// upstream stops being called for every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_always_answers_502_is_never_propagated() {
    const REQUESTS: usize = 200;
    let calls = Arc::new(AtomicUsize::new(0));
    let server = replica(1, calls.clone());
    let layer = Resilience::client()
        .without_stale_if_error()
        .build()
        .unwrap();
    let breaker = layer.handles().breaker.clone().unwrap();
    let client = tower::Layer::layer(&layer, SetAuthority::new(server.addr, hyper_client()));
    let mut seen = BTreeMap::new();
    let mut retry_after = 0;
    for _ in 0..REQUESTS {
        let request = Request::get("http://upstream/").body(Empty::new()).unwrap();
        let response = bounded(client.clone().oneshot(request)).await.unwrap();
        *seen.entry(response.status().as_u16()).or_insert(0) += 1;
        retry_after += usize::from(response.headers().contains_key(http::header::RETRY_AFTER));
    }
    let calls = calls.load(Ordering::Relaxed);
    println!(
        "statuses {seen:?}; upstream calls {calls}; breaker {:?}",
        breaker.state()
    );
    assert_eq!(seen, BTreeMap::from([(503, REQUESTS)]));
    assert_eq!(retry_after, REQUESTS, "every 503 says when to come back");
    // Three attempts each until the breaker has seen 20 calls, then fast
    // failures: far fewer calls than 3 per request.
    assert!(
        calls < REQUESTS,
        "{calls} upstream calls for {REQUESTS} requests"
    );
}
