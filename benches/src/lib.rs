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

/// One request (`Request::default()`: `GET /`, no headers, an empty body
/// of type `B`) through `poll_ready`, `call` and the response future. A
/// failure or a status other than 200 is counted (see [`take_not_ok`]).
pub async fn one_call<S, B, RB>(svc: &mut S)
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Debug,
    B: Default,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let res = svc.call(Request::default()).await;
    match &res {
        Ok(response) if response.status() == http::StatusCode::OK => {}
        _ => {
            NOT_OK.fetch_add(1, Ordering::Relaxed);
        }
    }
    std::hint::black_box(res.ok());
}

/// `iters` calls in a row on one service, by one task: the time they took.
pub async fn single_task<S, B, RB>(mut svc: S, iters: u64) -> Duration
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Debug,
    B: Default,
{
    let start = Instant::now();
    for _ in 0..iters {
        one_call::<S, B, RB>(&mut svc).await;
    }
    start.elapsed()
}

/// About `iters` calls shared out between `tasks` tasks, each calling its
/// own clone of `svc`, on a multi-thread runtime: the wall time they took,
/// scaled to exactly `iters` calls.
pub async fn contended<S, B, RB>(svc: S, tasks: u64, iters: u64) -> Duration
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
                    one_call::<S, B, RB>(&mut svc).await;
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
/// `rt` (a current-thread runtime).
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
    group.bench_function(criterion::BenchmarkId::from_parameter(name), |b| {
        b.to_async(rt)
            .iter_custom(|iters| single_task::<S, B, RB>(svc.clone(), iters));
    });
    take_not_ok(name);
}

/// Benchmarks `svc` as `name` in `group`, `tasks` tasks sharing it on `rt`
/// (a multi-thread runtime); see [`contended`].
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
    group.bench_function(criterion::BenchmarkId::from_parameter(name), |b| {
        b.to_async(rt)
            .iter_custom(|iters| contended::<S, B, RB>(svc.clone(), tasks, iters));
    });
    take_not_ok(name);
}
