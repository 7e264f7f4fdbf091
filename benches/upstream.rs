//! Request-path cost of `tower_steady::upstream::Upstreams` beside tower's
//! `Balance` with `PeakEwma`, in the same run: both choose one of 10
//! endpoints by power of two choices over a peak-EWMA load, each endpoint
//! an inner service answering `200 OK` at once. Every endpoint is healthy:
//! this is the price of the balancing decision and its bookkeeping.
//!
//! * `one_endpoint`: the inner service alone, no balancer.
//! * `tower_balance_peak_ewma`: `Balance::new(PeakEwmaDiscover::new::<Request<()>>(
//!   ServiceList of 10, 30 ms, 10 s, CompleteOnResponse))`. `Balance` is
//!   not `Clone`; the contended run shares it through `Buffer` (1024), the
//!   way tower shares it.
//! * `upstreams`: `Upstreams::builder().build(10 addresses, ...)` with its
//!   defaults (outlier detection on, no active checks); clones share it.
//!
//! `single`: one task, current-thread runtime. `contended`: 64 tasks, 2
//! worker threads. `scaling`: `upstreams` alone, one task, with 1, 10, 100
//! and 1000 endpoints.
//!
//! Run: `cargo bench -p tower-steady-benches --bench upstream`

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Request;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower_steady::upstream::Upstreams;
use tower_steady_benches::{
    bench_contended, bench_single, contended_runtime, single_runtime, single_task, Inner, Shape,
};

const TASKS: u64 = 64;
const ENDPOINTS: u16 = 10;

fn bench(c: &mut Criterion) {
    let inner = Inner {
        pending_once: false,
    };
    let addrs = || (0..ENDPOINTS).map(|n| SocketAddr::from(([10, 0, 0, 1], 8000 + n)));
    let tower_balance = || {
        let list = ServiceList::new::<Request<()>>(vec![inner; usize::from(ENDPOINTS)]);
        let discover = PeakEwmaDiscover::new::<Request<()>>(
            list,
            Duration::from_millis(30),
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        );
        Balance::<_, Request<()>>::new(discover)
    };
    let upstreams = || {
        Upstreams::builder()
            .seed(1)
            .build(addrs(), |_| inner)
            .unwrap()
    };

    let rt = single_runtime();
    let mut group = c.benchmark_group("upstream/single");
    bench_single::<_, (), _>(&mut group, &rt, "one_endpoint", inner);
    // `Balance` is not `Clone`: a new one for each batch of calls.
    group.bench_function(
        BenchmarkId::from_parameter("tower_balance_peak_ewma"),
        |b| {
            b.to_async(&rt)
                .iter_custom(|iters| single_task::<_, (), _>(tower_balance(), iters, Shape::Empty));
        },
    );
    bench_single::<_, (), _>(&mut group, &rt, "upstreams", upstreams());
    group.finish();

    let multi = contended_runtime();
    let mut group = c.benchmark_group("upstream/contended");
    bench_contended::<_, (), _>(&mut group, &multi, "one_endpoint", inner, TASKS);
    let buffered = multi.block_on(async { Buffer::new(tower_balance(), 1024) });
    let name = "tower_balance_peak_ewma";
    bench_contended::<_, (), _>(&mut group, &multi, name, buffered, TASKS);
    bench_contended::<_, (), _>(&mut group, &multi, "upstreams", upstreams(), TASKS);
    group.finish();

    // Scaling: the same call with 1, 10, 100 and 1000 endpoints (the pick
    // draws two of them; nothing on the request path walks the set).
    let mut group = c.benchmark_group("upstream/scaling");
    for endpoints in [1u32, 10, 100, 1000] {
        let addrs = (0..endpoints).map(|n| {
            let [_, _, hi, lo] = n.to_be_bytes();
            SocketAddr::from(([10, 1, hi, lo], 8000))
        });
        let svc = Upstreams::builder()
            .seed(1)
            .build(addrs, |_| inner)
            .unwrap();
        bench_single::<_, (), _>(&mut group, &rt, &endpoints.to_string(), svc);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
