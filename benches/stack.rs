//! Whole stacks, as users compose them, beside the peers' in the same run.
//!
//! Client stacks, around an inner service answering `200 OK` at once
//! (`ready`) or after one `Pending` (`pending_once`), every call a success
//! (the path every request takes while nothing fails):
//!
//! * `tower_steady_client`: `Resilience::client()` with its defaults:
//!   a 15 s deadline (the preset's bound on the whole request, in the
//!   place of tower's timeout), retry with budget, circuit breaker and
//!   throttle (stale-if-error and error responses off: the peers have
//!   neither);
//! * `tower_steady_client_attempt_timeout`: the same with a 30 s attempt
//!   timeout below the retry as well (a second timer for a request that is
//!   not answered at once; the attempt timeout is off by default);
//! * `tower_builtin`: tower's `Timeout` (30 s), `Retry` with a `TpsBudget`
//!   (10 s, 10/s, 20%) and a policy retrying 5xx and errors, `LoadShed`
//!   and `ConcurrencyLimit` (1024), which does less (no breaker, no
//!   deadline, no throttle);
//! * `tower_resilience`: tower-resilience 0.14's time limiter (30 s),
//!   retry (3 attempts, exponential backoff, token-bucket budget),
//!   circuit breaker (time window of 10 s, 20 calls, 50%) and bulkhead
//!   (1024 calls).
//!
//! Server stacks, around the same inner service with a body:
//!
//! * `tower_steady_server`: `Resilience::server()`: error responses, the
//!   deadline, the adaptive limit, a 30 s handler timeout;
//! * `tower_builtin`: tower's `LoadShed`, `ConcurrencyLimit` (1024) and
//!   `Timeout` (30 s).
//!
//! And `tower_steady_like_tower`: tower-steady's `TimeoutLayer`,
//! `RetryLayer` (its default budget, the same 10 s, 10/s, 20%) and a fixed
//! `AdaptiveLimitLayer` of 1024, doing what tower's stack does, for the
//! like-for-like comparison.
//!
//! `single`: one task on a current-thread runtime. `contended`: 64 tasks
//! sharing clones on a multi-thread runtime with 2 workers.
//!
//! Every group runs with two requests: `Request::default()` (`GET /`, no
//! headers, no extensions: `stack/client/ready/single`) and a request as a
//! proxy passes it on, 8 headers and an extension
//! (`stack/client/ready/single/proxied`; see `Shape::Proxied`). Every
//! call answered other than `200 OK` is counted and printed.
//!
//! Run: `cargo bench -p tower-steady-benches --bench stack`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use tower::{Layer, Service};
use tower_resilience_bulkhead::BulkheadLayer;
use tower_resilience_circuitbreaker::{CircuitBreakerLayer, SlidingWindowType};
use tower_resilience_retry::RetryBudgetBuilder;
use tower_resilience_timelimiter::TimeLimiterLayer;
use tower_steady::Resilience;
use tower_steady_benches::stacks::{like_tower, tower_client, tower_server, TIMEOUT};
use tower_steady_benches::{
    bench_contended, bench_contended_with, bench_single, bench_single_with, contended_runtime,
    single_runtime, HttpInner, Inner, NoBody, Shape,
};

const TASKS: u64 = 64;

fn resilience_client(
    inner: Inner,
) -> impl Service<Request<NoBody>, Response = Response<()>, Error: std::fmt::Debug, Future: Send>
       + Clone
       + Send
       + 'static {
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent_calls(1024)
        .build()
        .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .sliding_window_type(SlidingWindowType::TimeBased)
        .sliding_window_duration(Duration::from_secs(10))
        .minimum_number_of_calls(20)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap();
    let below = breaker.layer(bulkhead.layer(inner));
    let budget = RetryBudgetBuilder::new()
        .token_bucket()
        .tokens_per_second(10.0)
        .max_tokens(100)
        .build()
        .unwrap();
    let retry = tower_resilience_retry::RetryLayer::<Request<NoBody>, Response<()>, _>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(25))
        .budget(budget)
        .build();
    let limiter = TimeLimiterLayer::builder()
        .timeout_duration(TIMEOUT)
        .build();
    limiter.layer(retry.layer(below))
}

fn bench(c: &mut Criterion) {
    let single = single_runtime();
    let multi = contended_runtime();
    let client = || {
        Resilience::client()
            .without_stale_if_error()
            .without_error_response()
    };
    let steady_client = client().build().unwrap();
    let steady_client_timeout = client().attempt_timeout(TIMEOUT).build().unwrap();
    let steady_server = Resilience::server().timeout(TIMEOUT).build().unwrap();

    for request in Shape::ALL {
        // The empty request's groups keep their names: `stack/client/ready/single`;
        // the proxied request's end in `/proxied`.
        let suffix = match request {
            Shape::Empty => String::new(),
            Shape::Proxied => format!("/{}", request.name()),
        };
        let empty = request == Shape::Empty;
        for pending_once in [false, true] {
            let shape = if pending_once {
                "pending_once"
            } else {
                "ready"
            };
            let inner = Inner { pending_once };
            let http_inner = HttpInner { pending_once };

            let mut group = c.benchmark_group(format!("stack/client/{shape}/single{suffix}"));
            let svc = tower_client(inner);
            bench_single_with::<_, NoBody, _>(&mut group, &single, "none", inner, request);
            bench_single_with::<_, NoBody, _>(&mut group, &single, "tower_builtin", svc, request);
            let svc = like_tower(inner);
            let name = "tower_steady_like_tower";
            bench_single_with::<_, NoBody, _>(&mut group, &single, name, svc, request);
            let svc = steady_client.layer(inner);
            let name = "tower_steady_client";
            bench_single_with::<_, NoBody, _>(&mut group, &single, name, svc, request);
            let svc = steady_client_timeout.layer(inner);
            let name = "tower_steady_client_attempt_timeout";
            bench_single_with::<_, NoBody, _>(&mut group, &single, name, svc, request);
            if empty {
                let svc = single.block_on(async { resilience_client(inner) });
                bench_single::<_, NoBody, _>(&mut group, &single, "tower_resilience", svc);
            }
            // Where the client stack's time goes: the same stack less one part.
            if empty && !pending_once {
                let part = |name: &str| format!("tower_steady_client_without_{name}");
                let svc = client().without_deadline().build().unwrap().layer(inner);
                bench_single::<_, NoBody, _>(&mut group, &single, &part("deadline"), svc);
                let svc = client().without_retry().build().unwrap().layer(inner);
                bench_single::<_, NoBody, _>(&mut group, &single, &part("retry"), svc);
                let svc = client()
                    .without_circuit_breaker()
                    .build()
                    .unwrap()
                    .layer(inner);
                bench_single::<_, NoBody, _>(&mut group, &single, &part("breaker"), svc);
                let svc = client().without_throttle().build().unwrap().layer(inner);
                bench_single::<_, NoBody, _>(&mut group, &single, &part("throttle"), svc);
            }
            group.finish();

            let mut group = c.benchmark_group(format!("stack/client/{shape}/contended{suffix}"));
            bench_contended_with::<_, NoBody, _>(&mut group, &multi, "none", inner, TASKS, request);
            bench_contended_with::<_, NoBody, _>(
                &mut group,
                &multi,
                "tower_builtin",
                tower_client(inner),
                TASKS,
                request,
            );
            bench_contended_with::<_, NoBody, _>(
                &mut group,
                &multi,
                "tower_steady_like_tower",
                like_tower(inner),
                TASKS,
                request,
            );
            bench_contended_with::<_, NoBody, _>(
                &mut group,
                &multi,
                "tower_steady_client",
                steady_client.layer(inner),
                TASKS,
                request,
            );
            bench_contended_with::<_, NoBody, _>(
                &mut group,
                &multi,
                "tower_steady_client_attempt_timeout",
                steady_client_timeout.layer(inner),
                TASKS,
                request,
            );
            if empty {
                let svc = multi.block_on(async { resilience_client(inner) });
                bench_contended::<_, NoBody, _>(&mut group, &multi, "tower_resilience", svc, TASKS);
            }
            group.finish();

            let mut group = c.benchmark_group(format!("stack/server/{shape}/single{suffix}"));
            bench_single_with::<_, NoBody, _>(&mut group, &single, "none", http_inner, request);
            let svc = tower_server(http_inner);
            bench_single_with::<_, NoBody, _>(&mut group, &single, "tower_builtin", svc, request);
            let svc = steady_server.layer(http_inner);
            bench_single_with::<_, NoBody, _>(
                &mut group,
                &single,
                "tower_steady_server",
                svc,
                request,
            );
            group.finish();

            let mut group = c.benchmark_group(format!("stack/server/{shape}/contended{suffix}"));
            let svc = http_inner;
            bench_contended_with::<_, NoBody, _>(&mut group, &multi, "none", svc, TASKS, request);
            let svc = tower_server(http_inner);
            bench_contended_with::<_, NoBody, _>(
                &mut group,
                &multi,
                "tower_builtin",
                svc,
                TASKS,
                request,
            );
            let svc = steady_server.layer(http_inner);
            bench_contended_with::<_, NoBody, _>(
                &mut group,
                &multi,
                "tower_steady_server",
                svc,
                TASKS,
                request,
            );
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
