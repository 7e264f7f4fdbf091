//! Per-call cost of `tower_steady::timeout::TimeoutLayer` beside tower's
//! `Timeout`, in the same run, around an inner service whose response is
//! ready at once and around one whose response is pending once.
//!
//! Run: `cargo bench --bench timeout`

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{Request, Response};
use tower::{Layer, Service};

const TIMEOUT: Duration = Duration::from_secs(30);

/// An inner service answering at once, or after returning `Pending` once
/// (the shape of a response that needs one trip through the runtime).
#[derive(Clone, Copy)]
struct Inner {
    pending_once: bool,
}

struct Answer {
    pending: bool,
}

impl Future for Answer {
    type Output = Result<Response<()>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pending {
            self.pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(Response::new(())))
    }
}

impl Service<Request<()>> for Inner {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Answer {
        Answer {
            pending: self.pending_once,
        }
    }
}

async fn one_call<S>(mut svc: S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let res = svc.call(Request::new(())).await;
    std::hint::black_box(res.unwrap());
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();

    for (name, pending_once) in [("ready", false), ("pending_once", true)] {
        let mut group = c.benchmark_group(format!("timeout/{name}"));
        let inner = Inner { pending_once };

        group.bench_function(BenchmarkId::from_parameter("no_timeout"), |b| {
            b.to_async(&rt).iter(|| one_call(inner));
        });

        let tower = tower::timeout::TimeoutLayer::new(TIMEOUT).layer(inner);
        group.bench_function(BenchmarkId::from_parameter("tower"), |b| {
            b.to_async(&rt).iter(|| one_call(tower.clone()));
        });

        let steady = tower_steady::timeout::TimeoutLayer::new(TIMEOUT).layer(inner);
        group.bench_function(BenchmarkId::from_parameter("tower_steady"), |b| {
            b.to_async(&rt).iter(|| one_call(steady.clone()));
        });

        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
