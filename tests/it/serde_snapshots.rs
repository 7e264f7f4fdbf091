//! With the `serde` feature, every handle's snapshot serializes to the JSON
//! documented in `tower_steady::observability`: states as snake_case text,
//! durations as float milliseconds in `_ms` fields. Paused time throughout.
#![cfg(feature = "serde")]

use crate::common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_steady::fallback::StaleIfErrorLayer;
use tower_steady::load_shed::{AdaptiveLimitLayer, ThrottleLayer};
use tower_steady::retry::{Hedge, RetryLayer};
use tower_steady::upstream::Upstreams;

use common::{scripted, site, status};

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn breaker_snapshot() {
    let (handle, mut svc) = common::breaker_over_503s("search");
    assert_eq!(
        to_json(&handle.snapshot()),
        json!({
            "state": "closed",
            "calls": 0,
            "failures": 0,
            "slow_calls": 0,
            "consecutive_failures": 0,
            "open_remaining_ms": null,
        })
    );
    common::fail_twenty(&mut svc).await;
    let open = to_json(&handle.snapshot());
    assert_eq!(open["state"], "open");
    assert_eq!(open["failures"], 20);
    // The default open period is 5 s, shortened by up to its jitter.
    let remaining = open["open_remaining_ms"].as_f64().unwrap();
    assert!(remaining > 0.0 && remaining <= 5_000.0, "{remaining}");
    handle.force_closed();
    assert_eq!(to_json(&handle.state()), json!("forced_closed"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_snapshot() {
    let layer = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_micros(2500)))
        .build()
        .unwrap();
    assert_eq!(
        to_json(&layer.handle().snapshot()),
        // The default budget's reserve: 10 a second over a 10 s window.
        json!({ "retries_available": 100, "hedge_delay_ms": 2.5 })
    );
    let plain = RetryLayer::new();
    assert_eq!(
        to_json(&plain.handle().snapshot())["hedge_delay_ms"],
        Value::Null
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn load_shed_snapshots() {
    let slow = service_fn(|_: Request<Empty<Bytes>>| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, Infallible>(status(200))
    });
    let layer = AdaptiveLimitLayer::builder().fixed(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(slow);
    let first = svc.ready().await.unwrap().call(site());
    assert!(svc.ready().await.unwrap().call(site()).await.is_err());
    assert_eq!(
        to_json(&handle.snapshot()),
        json!({
            "limit": 1,
            "in_flight": 1,
            "waiting": 0,
            "rejected": 1,
            "rejected_sheddable": 0,
            "no_load_ms": null,
        })
    );
    first.await.unwrap();

    let layer = ThrottleLayer::new();
    let handle = layer.handle();
    let mut svc = layer.layer(scripted(&[429, 429]));
    for _ in 0..4 {
        let ready = ServiceExt::<Request<Empty<Bytes>>>::ready(&mut svc).await;
        let _ = ready.unwrap().call(site()).await;
    }
    assert_eq!(
        to_json(&handle.snapshot()),
        json!({ "requests": 4, "accepts": 2, "probability": 0.0, "rejected": 0 })
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn upstream_endpoint_snapshots() {
    let addrs: Vec<std::net::SocketAddr> = (1..=2).map(|p| ([127, 0, 0, 1], p).into()).collect();
    let svc = Upstreams::builder()
        .seed(7)
        .build(addrs, |_| {
            service_fn(|_: Request<Empty<Bytes>>| async { Ok::<_, Infallible>(status(200)) })
        })
        .unwrap();
    let snapshot = to_json(&svc.handle().snapshot());
    let first = &snapshot[0];
    assert_eq!(first["addr"], "127.0.0.1:1");
    assert_eq!(first["state"], "healthy");
    assert_eq!(first["in_flight"], 0);
    assert!(first["latency_ms"].is_f64(), "{first}");
    assert_eq!(first["success_rate"], Value::Null);
    assert_eq!(first["ejections"], 0);
    assert_eq!(first["ejected_for_ms"], Value::Null);
    assert_eq!(first["checks_failing"], false);
    assert_eq!(snapshot[1]["addr"], "127.0.0.1:2");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stale_if_error_stats() {
    let layer = StaleIfErrorLayer::new();
    let handle = layer.handle();
    let svc = layer.layer(scripted(&[200, 502]).cacheable());
    let body = svc.clone().oneshot(site()).await.unwrap().into_body();
    body.collect().await.unwrap();
    svc.oneshot(site()).await.unwrap();
    let stats = to_json(&handle.stats());
    assert_eq!(stats["entries"], 1);
    assert_eq!(stats["stored"], 1);
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["misses"], 0);
    assert_eq!(stats["stale_served"], 1);
    assert!(stats["bytes"].as_u64().unwrap() > 0, "{stats}");
}
