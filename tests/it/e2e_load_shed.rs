//! End to end on loopback: a real axum server with a fixed capacity (its
//! work holds one of `CAPACITY` semaphore permits for 50 ms) is hit by a
//! burst of three times its capacity, once behind `Resilience::server()`
//! (error responses, deadline, adaptive limit) and once bare. A burst is
//! not a standing queue: the limit starts open and sheds nothing, and the
//! burst is served as the bare server serves it. (A sustained overload is
//! shed: `load_shed.rs` in paused time, `benches/scenarios.sh` with real
//! processes.)
//!
//! The burst is lined up, not timed: every handler waits at a gate until
//! the whole burst has arrived, then the gate opens and the work starts
//! together. The server runs under paused time (see
//! `common::PausedServer`), so the 50 ms of work and the queueing behind
//! the semaphore are virtual time, the same on any machine (a handler holds
//! the clock while it waits at the gate, so the deadline's timer cannot
//! fire while the burst is still on its way); each response reports in
//! `x-latency-ms` how long it took from the gate to the end of its work.
//! The test prints both sides and asserts only on statuses and counts.

#![cfg(feature = "preset")]

use crate::common;

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

/// Sends the burst to `server`, opens the gate once every request reached
/// the handler, and answers each request's latency from the gate.
async fn served_burst(server: &mut Server) -> Vec<u64> {
    let mut set = burst(server);
    server.arrivals.wait_for(|n| *n == BURST).await.unwrap();
    server.open.send(true).unwrap();
    let mut latencies = Vec::new();
    while let Some(answer) = set.join_next().await {
        let answer = answer.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "done"),
            "{answer:?}"
        );
        assert_eq!(answer.retry_after, None);
        latencies.push(answer.latency_ms.unwrap());
    }
    assert_eq!(latencies.len(), BURST);
    latencies
}

#[tokio::test]
async fn a_burst_of_three_times_capacity_is_served_not_shed() {
    bounded(async {
        // Unloaded: one request alone.
        let alone = start(None);
        alone.open.send(true).unwrap();
        let (_, headers, _) =
            read(client().request(get(&alone.server.url("/"))).await.unwrap()).await;
        println!("unloaded: {} ms", headers["x-latency-ms"].to_str().unwrap());

        // With the preset's limit: it starts open, and a burst is not a
        // standing queue.
        let mut with = start(Some(AdaptiveLimitLayer::builder()));
        let handle = with.handle.clone().unwrap();
        let mut latencies = served_burst(&mut with).await;
        let snapshot = handle.snapshot();
        assert_eq!(
            (snapshot.rejected, snapshot.in_flight, snapshot.waiting),
            (0, 0, 0)
        );
        println!(
            "with Resilience::server(): {BURST} answered 200 ({})",
            summary(&mut latencies)
        );

        // Without it: the same.
        let mut without = start(None);
        let mut latencies = served_burst(&mut without).await;
        println!(
            "without: {BURST} answered 200 ({})",
            summary(&mut latencies)
        );
    })
    .await;
}
