//! Request-path cost of `tower_steady::fallback` beside
//! `tower-resilience-fallback`, in the same run. The inner service answers
//! a 1 KiB page (`Cache-Control: max-age=60`), or `502` with an empty body
//! in the `failing` groups; each request is a `GET` with five headers (a
//! browser's), and each response body is read to its end, which is when a
//! copy is stored.
//!
//! `succeeding` (the price every request pays while the upstream is fine):
//! * `no_layer`: the inner service alone.
//! * `tower_resilience_fallback`: its `FallbackLayer::value_fn` with a
//!   `handle_response` predicate on 5xx.
//! * `fallback`: our `FallbackLayer`.
//! * `stale_if_error_hot`: `StaleIfErrorLayer::new()` on one URL, so the
//!   copy is stored once per second (the refresh interval) and the other
//!   requests take the one-atomic-load path.
//! * `stale_if_error_store`: the same with `refresh(ZERO)`: every response
//!   is copied and stored (a headers copy, the body copy, the lock).
//! * `stale_if_error_post`: a `POST` (never stored): the cost for requests
//!   the layer does not touch.
//! * `stale_if_error_no_store`: a `GET` of a page answered with
//!   `Cache-Control: no-store`, so never stored.
//!
//! `failing` (every answer a 502):
//! * `no_layer`, `tower_resilience_fallback` (its value), `fallback` (our
//!   fixed response), `stale_if_error_hit` (a stored copy served: the lock,
//!   the lookup, a copy of the stored headers), `stale_if_error_miss` (no
//!   copy: the lock and a lookup, then the 502 passes on).
//!
//! One task on a current-thread runtime.
//!
//! Run: `cargo bench -p tower-steady-benches --bench fallback`

use std::convert::Infallible;
use std::future::{poll_fn, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use tokio::time::Instant;
use tower::{Layer, Service};
use tower_resilience_fallback::FallbackLayer as TrFallbackLayer;
use tower_steady::fallback::{FallbackLayer, StaleIfErrorLayer};
use tower_steady_benches::single_runtime;

/// A body of one chunk; `Clone` so that tower-resilience can hold a copy.
#[derive(Clone, Debug, Default)]
struct Page(Option<Bytes>);

impl Body for Page {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

static PAGE: [u8; 1024] = [b'x'; 1024];

#[derive(Clone, Copy, Debug)]
struct Origin {
    failing: bool,
    cache_control: &'static str,
}

impl Service<Request<()>> for Origin {
    type Response = Response<Page>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Page>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let response = if self.failing {
            let mut r = Response::new(Page(None));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        } else {
            let mut r = Response::new(Page(Some(Bytes::from_static(&PAGE))));
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static(self.cache_control),
            );
            r
        };
        std::future::ready(Ok(response))
    }
}

fn request(method: &Method) -> Request<()> {
    Request::builder()
        .method(method)
        .uri("http://shop.test/products?page=2")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0",
        )
        .header("accept", "text/html,application/xhtml+xml")
        .header("accept-encoding", "gzip, deflate, br")
        .header("accept-language", "en-GB,en;q=0.5")
        .header("cookie", "session=5f2b9c1e")
        .body(())
        .unwrap()
}

/// `iters` requests, each response's body read to its end.
async fn run<S, B>(mut svc: S, method: Method, iters: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let response = svc.call(request(&method)).await.unwrap();
        let mut body = response.into_body();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            std::hint::black_box(frame.unwrap());
        }
    }
    start.elapsed()
}

fn bench_one<S, B>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    method: Method,
    svc: S,
) where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.to_async(rt)
            .iter_custom(|iters| run(svc.clone(), method.clone(), iters));
    });
}

fn tower_resilience(
    inner: Origin,
) -> impl Service<Request<()>, Response = Response<Page>, Error = impl std::fmt::Debug> + Clone {
    TrFallbackLayer::<Request<()>, Response<Page>, Infallible>::builder()
        .value_fn(|| {
            let mut r = Response::new(Page(Some(Bytes::from_static(b"back soon"))));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        })
        .handle_response(|r: &Response<Page>| r.status().is_server_error())
        .build()
        .layer(inner)
}

fn ours(inner: Origin) -> tower_steady::fallback::Fallback<Origin> {
    let page = Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .body(Bytes::from_static(b"back soon"))
        .unwrap();
    FallbackLayer::builder(page).build().unwrap().layer(inner)
}

fn bench(c: &mut Criterion) {
    let rt = single_runtime();
    let up = Origin {
        failing: false,
        cache_control: "max-age=60",
    };
    let down = Origin {
        failing: true,
        ..up
    };
    let no_store = Origin {
        cache_control: "no-store",
        ..up
    };

    let mut group = c.benchmark_group("fallback/succeeding");
    bench_one(&mut group, &rt, "no_layer", Method::GET, up);
    bench_one(
        &mut group,
        &rt,
        "tower_resilience_fallback",
        Method::GET,
        tower_resilience(up),
    );
    bench_one(&mut group, &rt, "fallback", Method::GET, ours(up));
    bench_one(
        &mut group,
        &rt,
        "stale_if_error_hot",
        Method::GET,
        StaleIfErrorLayer::new().layer(up),
    );
    let store_every = StaleIfErrorLayer::builder()
        .refresh(Duration::ZERO)
        .build()
        .unwrap();
    bench_one(
        &mut group,
        &rt,
        "stale_if_error_store",
        Method::GET,
        store_every.layer(up),
    );
    bench_one(
        &mut group,
        &rt,
        "stale_if_error_post",
        Method::POST,
        StaleIfErrorLayer::new().layer(up),
    );
    bench_one(
        &mut group,
        &rt,
        "stale_if_error_no_store",
        Method::GET,
        StaleIfErrorLayer::new().layer(no_store),
    );
    group.finish();

    let mut group = c.benchmark_group("fallback/failing");
    bench_one(&mut group, &rt, "no_layer", Method::GET, down);
    bench_one(
        &mut group,
        &rt,
        "tower_resilience_fallback",
        Method::GET,
        tower_resilience(down),
    );
    bench_one(&mut group, &rt, "fallback", Method::GET, ours(down));
    // A copy stored by one good response, then served on every failure.
    let hit = StaleIfErrorLayer::new();
    rt.block_on(run(hit.layer(up), Method::GET, 1));
    assert_eq!(hit.handle().stats().entries, 1);
    bench_one(
        &mut group,
        &rt,
        "stale_if_error_hit",
        Method::GET,
        hit.layer(down),
    );
    bench_one(
        &mut group,
        &rt,
        "stale_if_error_miss",
        Method::GET,
        StaleIfErrorLayer::new().layer(down),
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
