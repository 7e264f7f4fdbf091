//! A hyper-util client with `Resilience::client()` calling a flaky upstream.
//!
//! ```text
//! cargo run --example client
//! ```
//!
//! The upstream, an axum app on loopback, answers one request in five with
//! `502` and one in seven with `503` + `Retry-After: 0`. The same 200
//! requests are sent by a bare hyper-util client and by the same client
//! inside `Resilience::client()`; the example prints what each saw.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Layer, ServiceExt};
use tower_steady::retry::ReplayBody;
use tower_steady::Resilience;

const REQUESTS: usize = 200;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("usage: client\n\nSends {REQUESTS} requests to a flaky in-process upstream, bare and with Resilience::client(), and prints the statuses each saw.");
        return Ok(());
    }
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let upstream = Router::new().route(
        "/",
        get(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move {
                if n % 5 == 4 {
                    (
                        StatusCode::BAD_GATEWAY,
                        [("retry-after", "0")],
                        "bad gateway",
                    )
                } else if n % 7 == 6 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "0")],
                        "busy",
                    )
                } else {
                    (StatusCode::OK, [("cache-control", "no-store")], "hello")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, upstream).await });

    // Bare: whatever the upstream says reaches the caller.
    let bare = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut seen = BTreeMap::new();
    for _ in 0..REQUESTS {
        let request = Request::get(url.as_str()).body(Empty::new())?;
        let response = bare.request(request).await?;
        *seen.entry(response.status().as_u16()).or_insert(0) += 1;
        response.into_body().collect().await?;
    }
    let bare_calls = calls.swap(0, Ordering::Relaxed);
    report("bare hyper-util client", &seen, bare_calls);

    // Resilient: the same client inside the preset. The retry layer hands
    // it a body it can send again.
    let hyper = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let layer = Resilience::client().build()?;
    let client = layer.layer(hyper);
    let mut seen = BTreeMap::new();
    for _ in 0..REQUESTS {
        let request = Request::get(url.as_str()).body(Empty::new())?;
        let response = client.clone().oneshot(request).await?;
        *seen.entry(response.status().as_u16()).or_insert(0) += 1;
        response.into_body().collect().await?;
    }
    report(
        "with Resilience::client()",
        &seen,
        calls.load(Ordering::Relaxed),
    );
    let snapshot = layer.handles().snapshot();
    if let (Some(retry), Some(breaker)) = (snapshot.retry, snapshot.breaker) {
        println!(
            "  retry budget left: {}, breaker: {:?}",
            retry.retries_available, breaker.state
        );
    }
    Ok(())
}

fn report(name: &str, seen: &BTreeMap<u16, u32>, upstream_calls: u64) {
    let statuses: Vec<String> = seen.iter().map(|(s, n)| format!("{n} × {s}")).collect();
    println!(
        "{name}: {} (upstream called {upstream_calls} times)",
        statuses.join(", ")
    );
}
