//! Helpers shared by the benchmarks: an inner service that costs as little
//! as possible, and the loops that call a service through its layers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;

pub mod stacks;

/// An inner service answering `200 OK` at once, or after returning
/// `Pending` once and waking itself (the shape of a response that needs one
/// trip through the runtime).
#[derive(Clone, Copy, Debug)]
pub struct Inner {
    pub pending_once: bool,
}

/// The response future of [`Inner`] (`Response<()>`) and [`HttpInner`]
/// (`Response<NoBody>`).
#[derive(Debug)]
pub struct Answer<T = ()> {
    pending: bool,
    body: std::marker::PhantomData<fn() -> T>,
}

impl<T> Answer<T> {
    fn new(pending: bool) -> Self {
        Self {
            pending,
            body: std::marker::PhantomData,
        }
    }
}

impl<T: Default> Future for Answer<T> {
    type Output = Result<Response<T>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pending {
            self.pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(Response::new(T::default())))
    }
}

/// [`Inner`] with a response body that is an [`http_body::Body`], for the
/// layers that wrap the response body (error responses).
#[derive(Clone, Copy, Debug)]
pub struct HttpInner {
    pub pending_once: bool,
}

impl<B> Service<Request<B>> for HttpInner {
    type Response = Response<NoBody>;
    type Error = Infallible;
    type Future = Answer<NoBody>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Answer<NoBody> {
        Answer::new(self.pending_once)
    }
}

impl<B> Service<Request<B>> for Inner {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Answer {
        Answer::new(self.pending_once)
    }
}

/// Calls answered with anything but `200 OK` (an error, a `503` from a
/// shed request) since the last [`take_not_ok`]: a refusal is faster than
/// a call, so a benchmark that sheds must say so.
static NOT_OK: AtomicU64 = AtomicU64::new(0);

/// The calls answered with anything but `200 OK` since the last call, and
/// a line saying how many for `name` (printed beside criterion's figures).
pub fn take_not_ok(name: &str) -> u64 {
    let n = NOT_OK.swap(0, Ordering::Relaxed);
    println!("{name}: {n} calls answered other than 200 OK");
    n
}

/// The request each benchmark call sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `Request::default()`: `GET /`, no headers, no extensions (no map
    /// allocated), the cheapest request there is.
    Empty,
    /// A request as a reverse proxy gets it from hyper and passes it on:
    /// a path and query, 8 headers (`host`, `user-agent`, `accept`,
    /// `accept-encoding`, `accept-language`, `x-request-id`,
    /// `x-forwarded-for`, `traceparent`) and one extension (the peer's
    /// address, as axum's `ConnectInfo`). Made anew for every call from a
    /// template, its header map the way hyper makes a parsed request's
    /// (room reserved for the headers read, then each appended: 2
    /// allocations; the extension 2 more), the same for every stack:
    /// `none` shows what making it costs.
    Proxied,
}

impl Shape {
    /// Both, in the order the benchmarks report them.
    pub const ALL: [Shape; 2] = [Shape::Empty, Shape::Proxied];

    /// The shape's name in a benchmark group's name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Empty => "empty",
            Shape::Proxied => "proxied",
        }
    }

    /// A request of this shape with an empty body.
    pub fn request<B: Default>(self) -> Request<B> {
        match self {
            Shape::Empty => Request::default(),
            Shape::Proxied => {
                let (uri, headers) = proxied_template();
                let mut request = Request::new(B::default());
                *request.uri_mut() = uri.clone();
                // As hyper builds a parsed request's map: room reserved for
                // the headers it read (`reserve(8)`: 12 entries), filled in
                // order. A clone of the template would have room for
                // exactly 8, and the first header a layer adds would
                // reallocate it, which no request from hyper pays.
                let map = request.headers_mut();
                map.reserve(headers.len());
                for (name, value) in headers {
                    map.append(name.clone(), value.clone());
                }
                request
                    .extensions_mut()
                    .insert(Peer(std::net::SocketAddr::from(([192, 0, 2, 7], 52_114))));
                request
            }
        }
    }
}

/// The extension a proxied request carries (a stand-in for axum's
/// `ConnectInfo<SocketAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

fn proxied_template() -> &'static (http::Uri, http::HeaderMap) {
    static TEMPLATE: std::sync::OnceLock<(http::Uri, http::HeaderMap)> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("host", "shop.example.com"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            (
                "accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            ),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "en-GB,en;q=0.7"),
            ("x-request-id", "4f1c9b2e-7d3a-4e8f-9a61-2b5c0d8e7f13"),
            ("x-forwarded-for", "198.51.100.23"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ] {
            headers.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        let uri = http::Uri::from_static("/api/v1/items/42?page=2&sort=price");
        (uri, headers)
    })
}

/// One request of `shape` (with an empty body of type `B`) through
/// `poll_ready`, `call` and the response future. A failure or a status
/// other than 200 is counted (see [`take_not_ok`]).
pub async fn one_call<S, B, RB>(svc: &mut S, shape: Shape)
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Debug,
    B: Default,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let res = svc.call(shape.request()).await;
    match &res {
        Ok(response) if response.status() == http::StatusCode::OK => {}
        _ => {
            NOT_OK.fetch_add(1, Ordering::Relaxed);
        }
    }
    std::hint::black_box(res.ok());
}

/// `iters` calls in a row on one service, by one task: the time they took.
pub async fn single_task<S, B, RB>(mut svc: S, iters: u64, shape: Shape) -> Duration
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Debug,
    B: Default,
{
    let start = Instant::now();
    for _ in 0..iters {
        one_call::<S, B, RB>(&mut svc, shape).await;
    }
    start.elapsed()
}

/// About `iters` calls shared out between `tasks` tasks, each calling its
/// own clone of `svc`, on a multi-thread runtime: the wall time they took,
/// scaled to exactly `iters` calls.
pub async fn contended<S, B, RB>(svc: S, tasks: u64, iters: u64, shape: Shape) -> Duration
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    B: Default + Send + 'static,
{
    let per_task = iters.div_ceil(tasks).max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    one_call::<S, B, RB>(&mut svc, shape).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let elapsed = start.elapsed();
    elapsed.mul_f64(iters as f64 / (per_task * tasks) as f64)
}

/// A request body with nothing in it, the body of a plain `GET`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBody;

impl http_body::Body for NoBody {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }
}

/// The runtime of the `single` benchmarks: current-thread, with time.
pub fn single_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The runtime of the `contended` benchmarks: two worker threads, as many
/// as the development machine has cores.
pub fn contended_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Benchmarks `svc` as `name` in `group`, one task calling it in a loop on
/// `rt` (a current-thread runtime) with [`Shape::Empty`] requests.
pub fn bench_single<S, B, RB>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
) where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: std::fmt::Debug,
    B: Default,
{
    bench_single_with(group, rt, name, svc, Shape::Empty);
}

/// [`bench_single`] with requests of `shape`.
pub fn bench_single_with<S, B, RB>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
    shape: Shape,
) where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: std::fmt::Debug,
    B: Default,
{
    group.bench_function(criterion::BenchmarkId::from_parameter(name), |b| {
        b.to_async(rt)
            .iter_custom(|iters| single_task::<S, B, RB>(svc.clone(), iters, shape));
    });
    take_not_ok(name);
}

/// Benchmarks `svc` as `name` in `group`, `tasks` tasks sharing it on `rt`
/// (a multi-thread runtime) with [`Shape::Empty`] requests; see
/// [`contended`].
pub fn bench_contended<S, B, RB>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
    tasks: u64,
) where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    B: Default + Send + 'static,
{
    bench_contended_with(group, rt, name, svc, tasks, Shape::Empty);
}

/// [`bench_contended`] with requests of `shape`.
pub fn bench_contended_with<S, B, RB>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
    tasks: u64,
    shape: Shape,
) where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    B: Default + Send + 'static,
{
    group.bench_function(criterion::BenchmarkId::from_parameter(name), |b| {
        b.to_async(rt)
            .iter_custom(|iters| contended::<S, B, RB>(svc.clone(), tasks, iters, shape));
    });
    take_not_ok(name);
}
