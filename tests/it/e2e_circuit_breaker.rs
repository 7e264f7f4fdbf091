//! End to end on loopback: a client calls a gateway (axum, proxying with a
//! hyper-util client behind `ErrorResponseLayer` and `CircuitBreakerLayer`),
//! which calls an upstream (axum). Everything is real HTTP on `127.0.0.1:0`.
//!
//! When the upstream starts failing every request, the breaker opens within
//! its window and the client gets `503` + `Retry-After` without the upstream
//! being called; when the upstream recovers, traffic returns within one open
//! period.
//!
//! The gateway runs under paused time (see `common::PausedServer`). Its
//! `/_advance/{secs}` route sleeps, which under paused time moves the
//! gateway's clock forward at once: the open period passes without the test
//! waiting on the wall clock.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::{http::StatusCode, routing::get, Router};
use common::{bounded, client, read, PausedServer};
use http::{header, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_steady::circuit_breaker::{BreakerHandle, CircuitBreakerLayer, State};
use tower_steady::http::ErrorResponseLayer;

#[derive(Clone, Default)]
struct Upstream {
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    fn app(&self) -> Router {
        let this = self.clone();
        Router::new().route(
            "/",
            get(move || {
                let this = this.clone();
                async move {
                    this.hits.fetch_add(1, Ordering::SeqCst);
                    if this.failing.load(Ordering::SeqCst) {
                        (StatusCode::INTERNAL_SERVER_ERROR, "broken")
                    } else {
                        (StatusCode::OK, "fine")
                    }
                }
            }),
        )
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn gateway(upstream: SocketAddr, breaker: CircuitBreakerLayer) -> Router {
    let http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Body>();
    let stack = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(breaker)
        .service(http);
    Router::new()
        .route(
            "/_advance/{secs}",
            get(|Path(secs): Path<u64>| async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                "advanced"
            }),
        )
        .fallback(move |req: Request<Body>| {
            let stack = stack.clone();
            async move {
                let (mut parts, body) = req.into_parts();
                parts.uri = format!("http://{upstream}{}", parts.uri.path())
                    .parse()
                    .unwrap();
                let response = match stack.oneshot(Request::from_parts(parts, body)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                response.map(Body::new)
            }
        })
}

async fn fetch(server: &PausedServer, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let req = common::get(&server.url(path));
    read(client().request(req).await.unwrap()).await
}

fn retry_after_secs(headers: &http::HeaderMap) -> u64 {
    headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

struct Setup {
    upstream: Upstream,
    _upstream_server: PausedServer,
    gateway: PausedServer,
    handle: BreakerHandle,
}

fn setup() -> Setup {
    let upstream = Upstream::default();
    let upstream_server = PausedServer::start(upstream.app());
    // The defaults: 50% of at least 20 calls over 10 s, open 5 s (minus up
    // to 10% jitter), three probes.
    let breaker = CircuitBreakerLayer::builder()
        .name("upstream")
        .build()
        .unwrap();
    let handle = breaker.handle();
    let gateway = PausedServer::start(gateway(upstream_server.addr, breaker));
    Setup {
        upstream,
        _upstream_server: upstream_server,
        gateway,
        handle,
    }
}

#[tokio::test]
async fn a_failing_upstream_is_cut_off_and_comes_back_within_one_open_period() {
    bounded(async {
        let s = setup();
        for _ in 0..5 {
            let (status, _, body) = fetch(&s.gateway, "/").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
        }

        // The upstream starts failing every request. With 5 successes in the
        // window, the 15th failure makes 20 calls, 75% failed: open.
        s.upstream.failing.store(true, Ordering::SeqCst);
        for _ in 0..15 {
            let (status, _, _) = fetch(&s.gateway, "/").await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(s.handle.state(), State::Open);
        assert_eq!(s.upstream.hits(), 20);

        // Now the gateway answers for the upstream, honestly, without
        // calling it.
        for _ in 0..10 {
            let (status, headers, _) = fetch(&s.gateway, "/").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            let retry_after = retry_after_secs(&headers);
            assert!((1..=5).contains(&retry_after), "{retry_after}");
        }
        assert_eq!(s.upstream.hits(), 20);

        // The upstream recovers. One open period later (at most 5 s), the
        // next calls are probes, and three successful ones close the breaker.
        s.upstream.failing.store(false, Ordering::SeqCst);
        let (status, _, _) = fetch(&s.gateway, "/_advance/5").await;
        assert_eq!(status, StatusCode::OK);
        for _ in 0..3 {
            let (status, _, body) = fetch(&s.gateway, "/").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
        }
        assert_eq!(s.handle.state(), State::Closed);
        assert_eq!(s.upstream.hits(), 23);
    })
    .await;
}

#[tokio::test]
async fn an_upstream_that_is_still_down_keeps_the_breaker_open() {
    bounded(async {
        let s = setup();
        s.upstream.failing.store(true, Ordering::SeqCst);
        for _ in 0..20 {
            fetch(&s.gateway, "/").await;
        }
        assert_eq!(s.handle.state(), State::Open);

        // One probe goes through, fails, and the breaker reopens for twice
        // as long: the upstream sees one request per open period, not a
        // stream of them.
        fetch(&s.gateway, "/_advance/5").await;
        let (status, _, _) = fetch(&s.gateway, "/").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(s.upstream.hits(), 21);
        let (status, headers, _) = fetch(&s.gateway, "/").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = retry_after_secs(&headers);
        assert!((9..=10).contains(&retry_after), "{retry_after}");
        assert_eq!(s.upstream.hits(), 21);
    })
    .await;
}
