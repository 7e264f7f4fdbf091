//! Behaviour of `ChaosLayer`, under paused time.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_steady::chaos::{error::Injected, ChaosLayer, Fault};
use tower_steady::classify::{Classify, FailureKind, HttpClassifier, RetrySafety};
use tower_steady::timeout::{error::Elapsed, TimeoutLayer};
use tower_steady::BoxError;

fn ok_service(
) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(|_req: Request<()>| async { Ok(Response::new(String::from("ok"))) })
}

/// What one call came to, in a form two runs can be compared by.
#[derive(Debug, PartialEq, Eq, Clone, Copy, Hash)]
enum Seen {
    Ok,
    Status(u16),
    Refused,
    Reset,
}

async fn call_once<S>(svc: &mut S) -> Seen
where
    S: Service<Request<()>, Response = Response<String>, Error = BoxError>,
{
    match svc.ready().await.unwrap().call(Request::new(())).await {
        Ok(res) if res.status() == StatusCode::OK => Seen::Ok,
        Ok(res) => Seen::Status(res.status().as_u16()),
        Err(err) => match err.downcast_ref::<io::Error>().map(io::Error::kind) {
            Some(io::ErrorKind::ConnectionRefused) => Seen::Refused,
            Some(io::ErrorKind::ConnectionReset) => Seen::Reset,
            other => panic!("unexpected error {other:?}: {err}"),
        },
    }
}

fn mixed(seed: u64) -> ChaosLayer {
    ChaosLayer::builder()
        .seed(seed)
        .fault(Fault::Status(StatusCode::BAD_GATEWAY), 0.3)
        .fault(Fault::ConnectionRefused, 0.1)
        .fault(Fault::ConnectionReset, 0.1)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_same_seed_injects_the_same_faults() {
    let mut a = mixed(42).layer(ok_service());
    let mut b = mixed(42).layer(ok_service());
    let mut c = mixed(43).layer(ok_service());
    let mut same_as_other_seed = true;
    for _ in 0..200 {
        let (x, y, z) = (
            call_once(&mut a).await,
            call_once(&mut b).await,
            call_once(&mut c).await,
        );
        assert_eq!(x, y);
        same_as_other_seed &= x == z;
    }
    assert!(
        !same_as_other_seed,
        "another seed should give another sequence"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_fault_happens_at_its_own_rate_and_clones_share_the_draws() {
    let layer = mixed(7);
    let svc = layer.layer(ok_service());
    let mut counts = std::collections::HashMap::new();
    for i in 0..10_000 {
        // Alternate between clones and services: they share one generator.
        let mut s = if i % 2 == 0 {
            svc.clone()
        } else {
            layer.layer(ok_service())
        };
        *counts.entry(call_once(&mut s).await).or_insert(0) += 1;
    }
    let near = |seen: Seen, expected: i32| {
        let got = counts.get(&seen).copied().unwrap_or(0);
        assert!(
            (got - expected).abs() < 250,
            "{seen:?}: {got}, expected about {expected}"
        );
    };
    near(Seen::Status(502), 3000);
    near(Seen::Refused, 1000);
    near(Seen::Reset, 1000);
    near(Seen::Ok, 5000);
}

/// The error a service answers with when `fault` is injected into every call.
async fn injected_error(fault: Fault) -> BoxError {
    let chaos = ChaosLayer::builder().fault(fault, 1.0).build().unwrap();
    chaos
        .layer(ok_service())
        .oneshot(Request::new(()))
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn injected_faults_are_classified_like_real_ones() {
    let err = injected_error(Fault::ConnectionRefused).await;
    let outcome = HttpClassifier::new().classify_error(&*err);
    assert_eq!(outcome.kind(), Some(FailureKind::Connect));
    assert_eq!(outcome.safety(), Some(RetrySafety::NotSent));
    let io = err.downcast_ref::<io::Error>().unwrap();
    assert!(io.get_ref().unwrap().is::<Injected>());
    assert_eq!(err.to_string(), "injected fault: connection refused");

    let err = injected_error(Fault::ConnectionReset).await;
    let outcome = HttpClassifier::new().classify_error(&*err);
    assert_eq!(outcome.kind(), Some(FailureKind::Reset));
    assert_eq!(outcome.safety(), Some(RetrySafety::MaybeSent));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_injected_status_does_not_call_the_service() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<String>>();
    let chaos = ChaosLayer::builder()
        .fault(Fault::Status(StatusCode::SERVICE_UNAVAILABLE), 1.0)
        .build()
        .unwrap();
    handle.allow(1);
    let res = chaos.layer(mock).oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.body(), "");
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hang_never_completes_until_a_timeout_ends_it() {
    let chaos = ChaosLayer::builder()
        .fault(Fault::Hang, 1.0)
        .build()
        .unwrap();
    let svc = TimeoutLayer::new(Duration::from_secs(3600)).layer(chaos.layer(ok_service()));
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fixed_latency_delays_the_answer_by_exactly_that() {
    let chaos = ChaosLayer::builder()
        .latency(1.0, Duration::from_millis(250))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = chaos
        .layer(ok_service())
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ranged_latency_stays_in_its_range_and_spreads_over_it() {
    let (min, max) = (Duration::from_millis(10), Duration::from_millis(110));
    let chaos = ChaosLayer::builder()
        .seed(3)
        .latency_between(0.5, min, max)
        .build()
        .unwrap();
    let svc = chaos.layer(ok_service());
    let (mut delayed, mut low_half) = (0, 0);
    for _ in 0..1000 {
        let start = Instant::now();
        svc.clone().oneshot(Request::new(())).await.unwrap();
        let took = start.elapsed();
        if took > Duration::ZERO {
            delayed += 1;
            assert!(took >= min && took <= max, "{took:?}");
            low_half += usize::from(took < Duration::from_millis(60));
        }
    }
    assert!((400..600).contains(&delayed), "{delayed}");
    assert!(
        low_half * 10 > delayed * 4 && low_half * 10 < delayed * 6,
        "{low_half} of {delayed}"
    );
}

#[test]
fn invalid_configuration_names_the_field() {
    let field = |b: tower_steady::chaos::ChaosBuilder| b.build().unwrap_err().field();
    assert_eq!(
        field(ChaosLayer::builder().fault(Fault::Hang, 1.5)),
        "chaos.rate"
    );
    assert_eq!(
        field(ChaosLayer::builder().fault(Fault::Hang, -0.1)),
        "chaos.rate"
    );
    assert_eq!(
        field(ChaosLayer::builder().fault(Fault::Hang, f64::NAN)),
        "chaos.rate"
    );
    assert_eq!(
        field(
            ChaosLayer::builder()
                .fault(Fault::Hang, 0.6)
                .fault(Fault::ConnectionReset, 0.6)
        ),
        "chaos.rate"
    );
    assert_eq!(
        field(ChaosLayer::builder().latency(2.0, Duration::ZERO)),
        "chaos.rate"
    );
    assert_eq!(
        field(ChaosLayer::builder().latency_between(
            0.5,
            Duration::from_secs(2),
            Duration::from_secs(1)
        )),
        "chaos.latency"
    );
    assert_eq!(
        field(ChaosLayer::builder().fault(Fault::Status(StatusCode::OK), 0.1)),
        "chaos.status"
    );
    // Rates that add up to 1 in decimal are accepted.
    ChaosLayer::builder()
        .fault(Fault::Hang, 0.1)
        .fault(Fault::ConnectionReset, 0.2)
        .fault(Fault::ConnectionRefused, 0.7)
        .build()
        .unwrap();
}
