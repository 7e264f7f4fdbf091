//! Per-call cost of `tower_steady::timeout::TimeoutLayer` beside tower's
//! `Timeout`, in the same run, around an inner service whose response is
//! ready at once and around one whose response is pending once.
//!
//! Run: `cargo bench -p tower-steady-benches --bench timeout`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tower::Layer;
use tower_steady_benches::{single_runtime, single_task, Inner, Shape};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bench(c: &mut Criterion) {
    let rt = single_runtime();

    for (name, pending_once) in [("ready", false), ("pending_once", true)] {
        let mut group = c.benchmark_group(format!("timeout/{name}"));
        let inner = Inner { pending_once };

        group.bench_function(BenchmarkId::from_parameter("no_timeout"), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| single_task::<_, (), _>(inner, iters, Shape::Empty));
        });

        let tower = tower::timeout::TimeoutLayer::new(TIMEOUT).layer(inner);
        group.bench_function(BenchmarkId::from_parameter("tower"), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| single_task::<_, (), _>(tower.clone(), iters, Shape::Empty));
        });

        let steady = tower_steady::timeout::TimeoutLayer::new(TIMEOUT).layer(inner);
        group.bench_function(BenchmarkId::from_parameter("tower_steady"), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| single_task::<_, (), _>(steady.clone(), iters, Shape::Empty));
        });

        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
