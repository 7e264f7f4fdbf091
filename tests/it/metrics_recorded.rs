//! Every layer emits the metrics documented in `tower_steady::observability`,
//! with the documented labels, seen through `metrics-util`'s debugging
//! recorder (installed for the test's thread only). Paused time throughout.
#![cfg(feature = "metrics")]

use crate::common;

use std::convert::Infallible;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::CompositeKey;
use tokio::time::advance;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_steady::circuit_breaker::CircuitBreakerLayer;
use tower_steady::deadline::DeadlineLayer;
use tower_steady::fallback::FallbackLayer;
use tower_steady::http::ErrorResponseLayer;
use tower_steady::load_shed::AdaptiveLimitLayer;
use tower_steady::retry::{Backoff, RetryLayer};
use tower_steady::timeout::TimeoutLayer;

use common::{scripted, site, stale_copy_stored};

type Taken = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// What the recorder holds now. Taking it resets the recorder (counters to
/// zero, gauges to zero, histograms emptied): each `take` sees what
/// happened since the one before.
fn take(snap: &Snapshotter) -> Taken {
    snap.snapshot().into_vec()
}

/// The value of every series of `name` whose labels include `labels`.
fn values<'a>(taken: &'a Taken, name: &str, labels: &[(&str, &str)]) -> Vec<&'a DebugValue> {
    taken
        .iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(.., value)| value)
        .collect()
}

fn counter(snap: &Taken, name: &str, labels: &[(&str, &str)]) -> u64 {
    values(snap, name, labels)
        .into_iter()
        .map(|v| match v {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn gauge(snap: &Taken, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    values(snap, name, labels)
        .into_iter()
        .find_map(|v| match v {
            DebugValue::Gauge(g) => Some(g.into_inner()),
            _ => None,
        })
}

macro_rules! recording {
    () => {{
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        (recorder, snapshotter)
    }};
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeouts_and_deadlines_are_counted() {
    let (recorder, rec) = recording!();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let hang = service_fn(|_: Request<Empty<Bytes>>| {
        std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    });

    let svc = TimeoutLayer::new(Duration::from_millis(10)).layer(hang);
    assert!(svc.oneshot(site()).await.is_err());
    let snap = take(&rec);
    assert_eq!(counter(&snap, "tower_steady_timeouts_total", &[]), 1);

    let deadline = DeadlineLayer::server().build().unwrap();
    let expired = Request::get("/")
        .header("x-request-timeout-ms", "0")
        .body(Empty::new())
        .unwrap();
    assert!(deadline.layer(hang).oneshot(expired).await.is_err());
    assert!(deadline.layer(hang).oneshot(site()).await.is_err());
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_deadline_exceeded_total",
            &[("when", "arrival")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "tower_steady_deadline_exceeded_total",
            &[("when", "in_flight")]
        ),
        1
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retries_outcomes_durations_and_the_budget_are_counted() {
    let (recorder, rec) = recording!();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let retry = RetryLayer::builder()
        .backoff(Backoff::none())
        .record_durations(true)
        .build()
        .unwrap();
    let response = retry
        .layer(scripted(&[503, 502]))
        .oneshot(site())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_retries_total",
            &[("kind", "unavailable")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "tower_steady_retries_total",
            &[("kind", "bad_gateway")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "tower_steady_requests_total",
            &[("outcome", "success")]
        ),
        1
    );
    let durations = values(
        &snap,
        "tower_steady_request_duration_seconds",
        &[("outcome", "success")],
    );
    assert!(
        matches!(&durations[..], [DebugValue::Histogram(v)] if v.len() == 1),
        "{durations:?}"
    );
    // One attempt time per attempt, by its own outcome.
    for outcome in ["unavailable", "bad_gateway", "success"] {
        let attempts = values(
            &snap,
            "tower_steady_attempt_duration_seconds",
            &[("outcome", outcome)],
        );
        assert!(
            matches!(&attempts[..], [DebugValue::Histogram(v)] if v.len() == 1),
            "{outcome}: {attempts:?}"
        );
    }

    common::retry_refused_by_the_budget().await;
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_retry_budget_exhausted_total",
            &[("for", "retry")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "tower_steady_requests_total",
            &[("outcome", "unavailable")]
        ),
        1
    );
    // Durations are recorded only when asked for: the series (seen earlier)
    // has no new value.
    let durations = values(&snap, "tower_steady_request_duration_seconds", &[]);
    assert!(
        durations
            .iter()
            .all(|v| matches!(v, DebugValue::Histogram(h) if h.is_empty())),
        "{durations:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn breaker_transitions_state_and_rejections_are_reported_by_name() {
    let (recorder, rec) = recording!();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let layer = CircuitBreakerLayer::builder()
        .name("payments")
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(scripted(&[]));
    handle.force_open();
    assert!(ServiceExt::<Request<Empty<Bytes>>>::ready(&mut svc)
        .await
        .unwrap()
        .call(site())
        .await
        .is_err());
    let breaker = [("breaker", "payments")];
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_breaker_transitions_total",
            &[("breaker", "payments"), ("to", "forced_open")]
        ),
        1
    );
    assert_eq!(
        gauge(&snap, "tower_steady_breaker_state", &breaker),
        Some(3.0)
    );
    assert_eq!(
        counter(&snap, "tower_steady_breaker_rejected_total", &breaker),
        1
    );
    handle.force_closed();
    let snap = take(&rec);
    assert_eq!(
        gauge(&snap, "tower_steady_breaker_state", &breaker),
        Some(4.0)
    );

    // Opened by failures: 20 calls, all 503.
    let (_, mut svc) = common::breaker_over_503s("search");
    common::fail_twenty(&mut svc).await;
    let search = [("breaker", "search")];
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_breaker_transitions_total",
            &[("breaker", "search"), ("to", "open")]
        ),
        1
    );
    assert_eq!(
        gauge(&snap, "tower_steady_breaker_state", &search),
        Some(2.0)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shed_requests_and_the_adaptive_limit_are_reported() {
    let (recorder, rec) = recording!();
    let _guard = metrics::set_default_local_recorder(&recorder);
    common::shed_one().await;
    let slow = common::slow();
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_shed_total",
            &[("layer", "adaptive_limit")]
        ),
        1
    );

    // In flight: set on admission and on completion (taking a snapshot
    // zeroes gauges, so a 1 after one of two completed was set then).
    let mut two = AdaptiveLimitLayer::builder()
        .fixed(2)
        .build()
        .unwrap()
        .layer(slow);
    let a = two.ready().await.unwrap().call(site());
    let b = two.ready().await.unwrap().call(site());
    assert_eq!(gauge(&take(&rec), "tower_steady_in_flight", &[]), Some(2.0));
    a.await.unwrap();
    assert_eq!(gauge(&take(&rec), "tower_steady_in_flight", &[]), Some(1.0));
    b.await.unwrap();

    // 16 clients in a closed loop against an unloaded service: the limit
    // grows from its initial 20, and each change is reported.
    let adaptive = AdaptiveLimitLayer::new().layer(slow);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let mut svc = adaptive.clone();
            async move {
                for _ in 0..200 {
                    let _ = svc.ready().await.unwrap().call(site()).await;
                }
            }
        })
        .collect();
    futures_join(clients).await;
    let snap = take(&rec);
    let limit =
        gauge(&snap, "tower_steady_concurrency_limit", &[]).expect("the limit was reported");
    assert!(limit > 20.0, "{limit}");
}

/// Runs futures to completion on this task (no spawning: the recorder is
/// the thread's).
async fn futures_join<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ejections_readmissions_and_healthy_endpoints_are_reported() {
    let (recorder, rec) = recording!();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (broken, mut svc) = common::one_broken_of_three();
    for _ in 0..100 {
        let _ = svc.ready().await.unwrap().call(site()).await;
    }
    let consecutive = [("reason", "consecutive_failures")];
    let snap = take(&rec);
    assert_eq!(
        counter(&snap, "tower_steady_upstream_ejections_total", &consecutive),
        1
    );
    assert_eq!(
        gauge(&snap, "tower_steady_upstream_healthy_endpoints", &[]),
        Some(2.0)
    );
    assert_eq!(
        gauge(&snap, "tower_steady_upstream_endpoints", &[]),
        Some(3.0)
    );

    broken.store(false, Ordering::Relaxed);
    advance(Duration::from_secs(31)).await;
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(site()).await;
    }
    let snap = take(&rec);
    assert_eq!(
        counter(&snap, "tower_steady_upstream_readmissions_total", &[]),
        1
    );
    assert_eq!(
        gauge(&snap, "tower_steady_upstream_healthy_endpoints", &[]),
        Some(3.0)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stale_copies_fallbacks_and_error_responses_are_counted() {
    let (recorder, rec) = recording!();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let stale = stale_copy_stored().await;
    assert_eq!(
        stale.oneshot(site()).await.unwrap().status(),
        StatusCode::OK
    );
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_stale_served_total",
            &[("kind", "bad_gateway")]
        ),
        1
    );

    let refused = service_fn(|_: Request<Empty<Bytes>>| async {
        Err::<Response<Full<Bytes>>, BoxError>(
            io::Error::from(io::ErrorKind::ConnectionRefused).into(),
        )
    });
    let page = Response::builder().status(503).body("later").unwrap();
    let fallback = FallbackLayer::builder(page).build().unwrap().layer(refused);
    assert_eq!(
        fallback.oneshot(site()).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_fallback_served_total",
            &[("kind", "connect")]
        ),
        1
    );

    let answered = ErrorResponseLayer::new()
        .layer(refused)
        .oneshot(site())
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::SERVICE_UNAVAILABLE);
    let rewritten = ErrorResponseLayer::new()
        .layer(scripted(&[502]))
        .oneshot(site())
        .await
        .unwrap();
    assert_eq!(rewritten.status(), StatusCode::SERVICE_UNAVAILABLE);
    let snap = take(&rec);
    assert_eq!(
        counter(
            &snap,
            "tower_steady_error_responses_total",
            &[("status", "503"), ("kind", "connect")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            "tower_steady_error_responses_total",
            &[("status", "503"), ("kind", "bad_gateway")]
        ),
        1
    );
}

#[test]
fn every_metric_is_described() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tower_steady::observability::describe_metrics();
        // Descriptions show up with the first value of each metric.
        metrics::counter!("tower_steady_timeouts_total").increment(1);
        metrics::histogram!("tower_steady_request_duration_seconds").record(0.5);
    });
    let described: Vec<_> = snap
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, unit, description, _)| {
            (key.key().name().to_owned(), unit, description.is_some())
        })
        .collect();
    assert!(described.iter().all(|(_, _, has)| *has), "{described:?}");
    assert!(described.iter().any(|(name, unit, _)| name
        == "tower_steady_request_duration_seconds"
        && *unit == Some(metrics::Unit::Seconds)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn two_limits_and_two_sets_in_one_process_export_distinct_series_from_build_time() {
    use tower_steady::load_shed::ThrottleLayer;
    use tower_steady::upstream::Upstreams;

    let (recorder, rec) = recording!();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let limit = |name: &str, fixed: u32| {
        AdaptiveLimitLayer::builder()
            .name(name)
            .fixed(fixed)
            .build()
            .unwrap()
    };
    let (api, admin) = (limit("api", 3), limit("admin", 7));
    let set = |name: &str, n: u16| {
        let addrs: Vec<std::net::SocketAddr> =
            (1..=n).map(|p| ([127, 0, 0, 1], p).into()).collect();
        Upstreams::builder()
            .name(name)
            .build(addrs, |_| common::slow())
            .unwrap()
    };
    let (users, orders) = (set("users", 2), set("orders", 5));
    let _throttles = (
        ThrottleLayer::builder().name("users").build().unwrap(),
        ThrottleLayer::builder().name("orders").build().unwrap(),
    );
    let breaker = CircuitBreakerLayer::builder()
        .name("users")
        .build()
        .unwrap();
    let retries = (
        RetryLayer::builder().name("users").build().unwrap(),
        RetryLayer::builder().name("orders").build().unwrap(),
    );
    let _stores = (
        tower_steady::fallback::StaleIfErrorLayer::builder()
            .name("users")
            .build()
            .unwrap(),
        tower_steady::fallback::StaleIfErrorLayer::builder()
            .name("orders")
            .build()
            .unwrap(),
    );

    // Built, nothing sent: every series is there, the gauges with their
    // values and the counters at zero.
    let snap = take(&rec);
    let limit_of = |name| gauge(&snap, "tower_steady_concurrency_limit", &[("limit", name)]);
    assert_eq!((limit_of("api"), limit_of("admin")), (Some(3.0), Some(7.0)));
    for name in ["api", "admin"] {
        assert_eq!(
            gauge(&snap, "tower_steady_in_flight", &[("limit", name)]),
            Some(0.0)
        );
        assert_eq!(
            values(&snap, "tower_steady_shed_total", &[("limit", name)]).len(),
            1
        );
    }
    let endpoints = |name| {
        gauge(
            &snap,
            "tower_steady_upstream_endpoints",
            &[("upstreams", name)],
        )
    };
    assert_eq!(
        (endpoints("users"), endpoints("orders")),
        (Some(2.0), Some(5.0))
    );
    for reason in [
        "consecutive_failures",
        "unreachable",
        "success_rate",
        "probe_failed",
        "health_check",
    ] {
        let labels = [("upstreams", "orders"), ("reason", reason)];
        assert_eq!(
            values(&snap, "tower_steady_upstream_ejections_total", &labels).len(),
            1,
            "{reason}"
        );
    }
    for name in ["users", "orders"] {
        let labels = [("layer", "throttle"), ("throttle", name)];
        assert_eq!(values(&snap, "tower_steady_shed_total", &labels).len(), 1);
    }
    assert_eq!(
        values(
            &snap,
            "tower_steady_breaker_rejected_total",
            &[("breaker", "users")]
        )
        .len(),
        1
    );

    for name in ["users", "orders"] {
        let retry = [("retry", name)];
        assert_eq!(
            values(&snap, "tower_steady_requests_total", &retry).len(),
            14,
            "every outcome of {name}"
        );
        assert_eq!(
            values(&snap, "tower_steady_retry_budget_exhausted_total", &retry).len(),
            2
        );
        assert_eq!(
            values(&snap, "tower_steady_stale_served_total", &[("store", name)]).len(),
            13
        );
    }

    // A request through one retry layer counts in its own series only.
    let users_svc = retries.0.layer(scripted(&[]));
    users_svc.oneshot(site()).await.unwrap();
    let snap = take(&rec);
    let ok = |name| {
        counter(
            &snap,
            "tower_steady_requests_total",
            &[("retry", name), ("outcome", "success")],
        )
    };
    assert_eq!((ok("users"), ok("orders")), (1, 0));

    // In flight on one limit moves its own series only.
    let mut svc = api.layer(common::slow());
    let call = svc.ready().await.unwrap().call(site());
    let snap = take(&rec);
    assert_eq!(
        gauge(&snap, "tower_steady_in_flight", &[("limit", "api")]),
        Some(1.0)
    );
    assert_eq!(
        gauge(&snap, "tower_steady_in_flight", &[("limit", "admin")]),
        Some(0.0),
        "the other limit's series stays at zero"
    );
    call.await.unwrap();
    drop((admin, users, orders, breaker, retries.1));
}

#[test]
fn a_name_that_cannot_be_a_label_is_refused() {
    use tower_steady::load_shed::ThrottleLayer;
    use tower_steady::upstream::Upstreams;

    let err = AdaptiveLimitLayer::builder()
        .name("my api")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "load_shed.name");
    let err = ThrottleLayer::builder().name("").build().unwrap_err();
    assert_eq!(err.field(), "throttle.name");
    let err = RetryLayer::builder().name("a/b").build().unwrap_err();
    assert_eq!(err.field(), "retry.name");
    let err = tower_steady::fallback::StaleIfErrorLayer::builder()
        .name("é")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "stale_if_error.name");
    let err = Upstreams::builder()
        .name("x".repeat(65))
        .build(Vec::new(), |_| common::slow())
        .err()
        .expect("refused");
    assert_eq!(err.field(), "upstream.name");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_metric_exists_and_is_described_once_its_layer_is_built() {
    use tower_steady::fallback::StaleIfErrorLayer;
    use tower_steady::load_shed::ThrottleLayer;
    use tower_steady::upstream::Upstreams;

    let (recorder, rec) = recording!();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // Every layer built (and the stateless ones made into services), no
    // request sent, no `describe_metrics` call.
    let _layers = (
        TimeoutLayer::new(Duration::from_secs(1)).layer(scripted(&[])),
        DeadlineLayer::server().build().unwrap(),
        RetryLayer::builder()
            .record_durations(true)
            .build()
            .unwrap(),
        CircuitBreakerLayer::builder().build().unwrap(),
        AdaptiveLimitLayer::new(),
        ThrottleLayer::new(),
        StaleIfErrorLayer::new(),
        FallbackLayer::builder(Response::new("sorry"))
            .build()
            .unwrap(),
        ErrorResponseLayer::new().layer(scripted(&[])),
        Upstreams::builder()
            .build(Vec::new(), |_| common::slow())
            .unwrap(),
    );
    let taken = take(&rec);
    let documented = include_str!("../../src/observability.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `tower_steady_"))
        .map(|rest| format!("tower_steady_{}", &rest[..rest.find('`').unwrap()]))
        .collect::<Vec<_>>();
    assert_eq!(documented.len(), 21, "{documented:?}");
    for name in &documented {
        let series: Vec<_> = taken
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .collect();
        // Histograms appear with their first value; the rest from build.
        if name.ends_with("_seconds") {
            continue;
        }
        assert!(!series.is_empty(), "{name} has no series before any event");
        assert!(
            series
                .iter()
                .all(|(_, _, description, _)| description.is_some()),
            "{name} is not described"
        );
    }
}
