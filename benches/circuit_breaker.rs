//! Closed-path cost of `tower_steady::circuit_breaker::CircuitBreakerLayer`
//! beside tower-resilience's circuit breaker, in the same run: a breaker
//! that stays closed around an inner service that answers `200 OK` at once.
//!
//! * `single`: one task calls one service in a loop, on a current-thread
//!   runtime.
//! * `contended`: 64 tasks, each with its own clone of one service (so one
//!   shared breaker), on a multi-thread runtime with 2 workers. The time per
//!   call is wall time divided by calls, with both workers busy.
//!
//! Both breakers are configured alike: a time-based window of 10 s, at
//! least 20 calls, 50% failures (`tower_resilience`). tower-resilience is
//! also measured with its default window, the last 100 calls
//! (`tower_resilience_count`), which is cheaper for it.
//!
//! Run: `cargo bench -p tower-steady-benches --bench circuit_breaker`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tower::Layer;
use tower_resilience_circuitbreaker::SlidingWindowType;
use tower_steady_benches::{
    bench_contended, bench_single, contended_runtime, single_runtime, Inner,
};

const TASKS: u64 = 64;

fn steady() -> tower_steady::circuit_breaker::CircuitBreakerLayer {
    tower_steady::circuit_breaker::CircuitBreakerLayer::builder()
        .window(Duration::from_secs(10))
        .minimum_calls(20)
        .failure_ratio(0.5)
        .build()
        .unwrap()
}

/// tower-resilience's default window: the last 100 calls.
fn resilience_count() -> tower_resilience_circuitbreaker::CircuitBreakerLayer {
    tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .minimum_number_of_calls(20)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap()
}

fn resilience() -> tower_resilience_circuitbreaker::CircuitBreakerLayer {
    tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_type(SlidingWindowType::TimeBased)
        .sliding_window_duration(Duration::from_secs(10))
        .minimum_number_of_calls(20)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let inner = Inner {
        pending_once: false,
    };

    let single = single_runtime();
    let mut group = c.benchmark_group("circuit_breaker/single");
    bench_single::<_, (), _>(&mut group, &single, "no_breaker", inner);
    let svc = resilience_count().layer(inner);
    bench_single::<_, (), _>(&mut group, &single, "tower_resilience_count", svc);
    let svc = resilience().layer(inner);
    bench_single::<_, (), _>(&mut group, &single, "tower_resilience", svc);
    bench_single::<_, (), _>(&mut group, &single, "tower_steady", steady().layer(inner));
    group.finish();

    let multi = contended_runtime();
    let mut group = c.benchmark_group("circuit_breaker/contended");
    bench_contended::<_, (), _>(&mut group, &multi, "no_breaker", inner, TASKS);
    let svc = resilience_count().layer(inner);
    bench_contended::<_, (), _>(&mut group, &multi, "tower_resilience_count", svc, TASKS);
    let svc = resilience().layer(inner);
    bench_contended::<_, (), _>(&mut group, &multi, "tower_resilience", svc, TASKS);
    let svc = steady().layer(inner);
    bench_contended::<_, (), _>(&mut group, &multi, "tower_steady", svc, TASKS);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
