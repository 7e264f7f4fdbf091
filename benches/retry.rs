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
//! `clone_request`, as ours does), classify the response. Each group runs
//! twice: with `Request::default()` (`retry/single`), and with a request
//! as a proxy passes it on, 8 headers and an extension
//! (`retry/single/proxied`; see `Shape::Proxied`), whose head both layers
//! must copy.
//!
//! Run: `cargo bench -p tower-steady-benches --bench retry`

use criterion::{criterion_group, criterion_main, Criterion};
use tower::Layer;
use tower_steady_benches::stacks::tower_retry;
use tower_steady_benches::{
    bench_contended_with, bench_single_with, contended_runtime, single_runtime, Inner, NoBody,
    Shape,
};

const TASKS: u64 = 64;

fn steady() -> tower_steady::retry::RetryLayer {
    tower_steady::retry::RetryLayer::new()
}

fn bench(c: &mut Criterion) {
    let inner = Inner {
        pending_once: false,
    };

    let single = single_runtime();
    let multi = contended_runtime();
    for shape in Shape::ALL {
        // The empty request's groups keep their names; the proxied
        // request's end in `/proxied`.
        let suffix = match shape {
            Shape::Empty => String::new(),
            Shape::Proxied => format!("/{}", shape.name()),
        };
        let mut group = c.benchmark_group(format!("retry/single{suffix}"));
        bench_single_with::<_, NoBody, _>(&mut group, &single, "no_retry", inner, shape);
        let svc = tower_retry().layer(inner);
        bench_single_with::<_, NoBody, _>(&mut group, &single, "tower", svc, shape);
        let svc = steady().layer(inner);
        bench_single_with::<_, NoBody, _>(&mut group, &single, "tower_steady", svc, shape);
        group.finish();

        let mut group = c.benchmark_group(format!("retry/contended{suffix}"));
        let svc = inner;
        bench_contended_with::<_, NoBody, _>(&mut group, &multi, "no_retry", svc, TASKS, shape);
        let svc = tower_retry().layer(inner);
        bench_contended_with::<_, NoBody, _>(&mut group, &multi, "tower", svc, TASKS, shape);
        let svc = steady().layer(inner);
        let name = "tower_steady";
        bench_contended_with::<_, NoBody, _>(&mut group, &multi, name, svc, TASKS, shape);
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
