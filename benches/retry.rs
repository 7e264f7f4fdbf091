//! Success-path cost of `tower_steady::retry::RetryLayer` beside tower's
//! `Retry` with a `TpsBudget`, in the same run: every request succeeds at
//! once, so what is measured is what a retry layer costs when it has
//! nothing to retry.
//!
//! * `single`: one task calls one service in a loop, on a current-thread
//!   runtime.
//! * `contended`: 64 tasks, each with its own clone of one service (so one
//!   shared budget), on a multi-thread runtime with 2 workers. The time per
//!   call is wall time divided by calls, with both workers busy.
//!
//! Both layers do the same work a retry layer must: record the request in a
//! budget of 20% over 10 s with a floor of 10 per second, keep a copy of the
//! request to send again (tower's policy clones the head in
//! `clone_request`, as ours does), classify the response. The request is
//! `Request::default()` with an empty body.
//!
//! Run: `cargo bench -p tower-steady-benches --bench retry`

use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer as TowerRetryLayer};
use tower::Layer;
use tower_steady_benches::{
    bench_contended, bench_single, contended_runtime, single_runtime, Inner, NoBody,
};

const TASKS: u64 = 64;

fn steady() -> tower_steady::retry::RetryLayer {
    tower_steady::retry::RetryLayer::new()
}

/// tower's documented way to retry HTTP requests within a budget.
#[derive(Clone)]
struct TowerPolicy {
    budget: Arc<TpsBudget>,
    attempts: u32,
}

impl<E> Policy<Request<NoBody>, Response<()>, E> for TowerPolicy {
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

fn tower_retry() -> TowerRetryLayer<TowerPolicy> {
    TowerRetryLayer::new(TowerPolicy {
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
        attempts: 0,
    })
}

fn bench(c: &mut Criterion) {
    let inner = Inner {
        pending_once: false,
    };

    let single = single_runtime();
    let mut group = c.benchmark_group("retry/single");
    bench_single::<_, NoBody, _>(&mut group, &single, "no_retry", inner);
    bench_single::<_, NoBody, _>(&mut group, &single, "tower", tower_retry().layer(inner));
    bench_single::<_, NoBody, _>(&mut group, &single, "tower_steady", steady().layer(inner));
    group.finish();

    let multi = contended_runtime();
    let mut group = c.benchmark_group("retry/contended");
    bench_contended::<_, NoBody, _>(&mut group, &multi, "no_retry", inner, TASKS);
    let svc = tower_retry().layer(inner);
    bench_contended::<_, NoBody, _>(&mut group, &multi, "tower", svc, TASKS);
    let svc = steady().layer(inner);
    bench_contended::<_, NoBody, _>(&mut group, &multi, "tower_steady", svc, TASKS);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
