//! Request-path cost of `tower_steady::load_shed` beside tower's `LoadShed`
//! over `ConcurrencyLimit`, in the same run, around an inner service that
//! answers `200 OK` at once. Every limit is far above the load, so nothing
//! is shed: this is the price every admitted request pays.
//!
//! * `tower_load_shed_concurrency_limit`: `LoadShed` + `ConcurrencyLimit`
//!   (1000), tower's way to reject over a fixed limit.
//! * `fixed`: `AdaptiveLimitLayer::builder().fixed(1000)`.
//! * `adaptive`: `AdaptiveLimitLayer::new()` (Vegas, measuring every
//!   request's latency).
//! * `throttle`: `ThrottleLayer::new()`, the client-side throttle.
//!
//! `single`: one task, current-thread runtime. `contended`: 64 tasks, each
//! with its own clone of one service (one shared limit), 2 worker threads.
//!
//! Run: `cargo bench -p tower-steady-benches --bench load_shed`

use criterion::{criterion_group, criterion_main, Criterion};
use tower::{Layer, ServiceBuilder};
use tower_steady::load_shed::{AdaptiveLimitLayer, ThrottleLayer};
use tower_steady_benches::{
    bench_contended, bench_single, contended_runtime, single_runtime, Inner,
};

const TASKS: u64 = 64;
const LIMIT: usize = 1000;

fn bench(c: &mut Criterion) {
    let inner = Inner {
        pending_once: false,
    };
    let tower_stack = || {
        ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(LIMIT)
            .service(inner)
    };
    let fixed = || {
        AdaptiveLimitLayer::builder()
            .fixed(LIMIT as u32)
            .build()
            .unwrap()
            .layer(inner)
    };
    let adaptive = || AdaptiveLimitLayer::new().layer(inner);
    let throttle = || ThrottleLayer::new().layer(inner);

    let single = single_runtime();
    let mut group = c.benchmark_group("load_shed/single");
    bench_single::<_, (), _>(&mut group, &single, "no_limit", inner);
    let name = "tower_load_shed_concurrency_limit";
    bench_single::<_, (), _>(&mut group, &single, name, tower_stack());
    bench_single::<_, (), _>(&mut group, &single, "fixed", fixed());
    bench_single::<_, (), _>(&mut group, &single, "adaptive", adaptive());
    bench_single::<_, (), _>(&mut group, &single, "throttle", throttle());
    group.finish();

    let multi = contended_runtime();
    let mut group = c.benchmark_group("load_shed/contended");
    bench_contended::<_, (), _>(&mut group, &multi, "no_limit", inner, TASKS);
    let name = "tower_load_shed_concurrency_limit";
    bench_contended::<_, (), _>(&mut group, &multi, name, tower_stack(), TASKS);
    bench_contended::<_, (), _>(&mut group, &multi, "fixed", fixed(), TASKS);
    bench_contended::<_, (), _>(&mut group, &multi, "adaptive", adaptive(), TASKS);
    bench_contended::<_, (), _>(&mut group, &multi, "throttle", throttle(), TASKS);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
