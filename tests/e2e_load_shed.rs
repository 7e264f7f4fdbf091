//! End to end on loopback: a real axum server with a fixed capacity (its
//! work holds one of `CAPACITY` semaphore permits for 50 ms) is hit by a
//! burst of three times its capacity, once behind `Resilience::server()`
//! (error responses, deadline, adaptive limit) and once bare. The fourth
//! scenario of the presets' issue (the others are in `e2e_resilience.rs`).
//!
//! The burst is lined up, not timed: every handler waits at a gate until
//! the whole burst has arrived (the admitted requests in the handler, the
//! shed ones answered), then the gate opens and the work starts together.
//! The server runs under paused time (see `common::PausedServer`), so the
//! 50 ms of work and the queueing behind the semaphore are virtual time,
//! the same on any machine (a handler holds the clock while it waits at
//! the gate, so the deadline's timer cannot fire while the burst is still
//! on its way); each response reports in `x-latency-ms` how
//! long it took from the gate to the end of its work. The test prints both
//! sides and asserts only on statuses, headers and counts.

#![cfg(feature = "preset")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::{routing, Router};
use common::{bounded, client, get, hold_clock, read, PausedServer};
use http::StatusCode;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_steady::load_shed::{AdaptiveLimitLayer, LimitHandle};
use tower_steady::Resilience;

const CAPACITY: usize = 16;
const BURST: usize = 3 * CAPACITY;

#[derive(Clone)]
struct Work {
    capacity: Arc<Semaphore>,
    arrivals: Arc<watch::Sender<usize>>,
    gate: watch::Receiver<bool>,
}

async fn work(State(work): State<Work>) -> ([(&'static str, String); 1], &'static str) {
    work.arrivals.send_modify(|n| *n += 1);
    let mut gate = work.gate.clone();
    let hold = hold_clock();
    gate.wait_for(|open| *open).await.unwrap();
    drop(hold);
    let start = Instant::now();
    let _permit = work.capacity.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let latency = start.elapsed().as_millis().to_string();
    ([("x-latency-ms", latency)], "done")
}

struct Server {
    server: PausedServer,
    arrivals: watch::Receiver<usize>,
    open: watch::Sender<bool>,
    handle: Option<LimitHandle>,
}

fn start(limit: Option<tower_steady::load_shed::AdaptiveLimitBuilder>) -> Server {
    let (arrivals_tx, arrivals) = watch::channel(0);
    let (open, gate) = watch::channel(false);
    let state = Work {
        capacity: Arc::new(Semaphore::new(CAPACITY)),
        arrivals: Arc::new(arrivals_tx),
        gate,
    };
    let app = Router::new()
        .route("/", routing::get(work))
        .with_state(state);
    let (app, handle) = match limit {
        Some(limit) => {
            let layer = Resilience::server().limit(limit).build().unwrap();
            let handle = layer.handles().limit.clone();
            (app.layer(layer), handle)
        }
        None => (app, None),
    };
    Server {
        server: PausedServer::start(app),
        arrivals,
        open,
        handle,
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    latency_ms: Option<u64>,
    body: String,
}

fn burst(server: &Server) -> JoinSet<Answer> {
    let client = client();
    let mut set = JoinSet::new();
    for _ in 0..BURST {
        let client = client.clone();
        let url = server.server.url("/");
        set.spawn(async move {
            let (status, headers, body) = read(client.request(get(&url)).await.unwrap()).await;
            let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
            Answer {
                status,
                retry_after: header("retry-after"),
                latency_ms: header("x-latency-ms").map(|v| v.parse().unwrap()),
                body,
            }
        });
    }
    set
}

fn summary(latencies: &mut [u64]) -> String {
    latencies.sort_unstable();
    if latencies.is_empty() {
        return "none".into();
    }
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    format!(
        "n = {}, p50 = {} ms, p90 = {} ms, max = {} ms",
        latencies.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    )
}

#[tokio::test]
async fn a_burst_of_three_times_capacity_is_shed_not_queued() {
    bounded(async {
        // Unloaded: one request alone.
        let alone = start(None);
        alone.open.send(true).unwrap();
        let (_, headers, _) = read(client().request(get(&alone.server.url("/"))).await.unwrap()).await;
        println!("unloaded: {} ms", headers["x-latency-ms"].to_str().unwrap());

        // With the limit, starting at the capacity.
        let limit = AdaptiveLimitLayer::builder().initial_limit(CAPACITY as u32);
        let mut with = start(Some(limit));
        let handle = with.handle.clone().unwrap();
        let mut set = burst(&with);
        // Before the gate opens only the shed requests can be answered.
        let mut answers = Vec::new();
        for _ in 0..BURST - CAPACITY {
            answers.push(set.join_next().await.unwrap().unwrap());
        }
        with.arrivals.wait_for(|n| *n == CAPACITY).await.unwrap();
        assert_eq!(handle.in_flight() as usize, CAPACITY);
        for answer in &answers {
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
            assert_eq!(answer.retry_after.as_deref(), Some("1"));
        }
        with.open.send(true).unwrap();
        while let Some(answer) = set.join_next().await {
            let answer = answer.unwrap();
            assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "done"));
            answers.push(answer);
        }
        let mut accepted: Vec<u64> = answers.iter().filter_map(|a| a.latency_ms).collect();
        assert_eq!(accepted.len(), CAPACITY);
        assert_eq!(handle.snapshot().rejected as usize, BURST - CAPACITY);
        assert_eq!(handle.in_flight(), 0);
        println!(
            "with Resilience::server(): {} answered 200 ({}), {} answered 503 with Retry-After: 1 before any work started",
            CAPACITY,
            summary(&mut accepted),
            BURST - CAPACITY
        );

        // Without it, everything queues behind the semaphore.
        let mut without = start(None);
        let mut set = burst(&without);
        without.arrivals.wait_for(|n| *n == BURST).await.unwrap();
        without.open.send(true).unwrap();
        let mut latencies = Vec::new();
        while let Some(answer) = set.join_next().await {
            let answer = answer.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            latencies.push(answer.latency_ms.unwrap());
        }
        assert_eq!(latencies.len(), BURST);
        println!("without: {BURST} answered 200 ({})", summary(&mut latencies));
    })
    .await;
}
