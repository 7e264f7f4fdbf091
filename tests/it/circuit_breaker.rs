//! Behaviour of `CircuitBreakerLayer`, under paused time.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use tokio::time::{advance, Instant};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_steady::circuit_breaker::{
    BreakerSnapshot, CircuitBreakerBuilder, CircuitBreakerLayer, CircuitOpen, State,
};
use tower_steady::classify::{Classify, FailureKind, HttpClassifier, RetrySafety};
use tower_steady::deadline::{error::DeadlineExceeded, Deadline, DeadlineLayer};
use tower_steady::http::ErrorResponseLayer;
use tower_steady::BoxError;

/// The body of a breaker's response over an upstream answering `()`.
type Counted =
    tower_steady::circuit_breaker::BreakerBody<(), tower_steady::classify::HttpClassifier>;

/// An upstream whose status and latency the test sets, and which counts the
/// calls that reach it.
#[derive(Clone, Default)]
struct Upstream {
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU16>,
    calls: Arc<AtomicUsize>,
}

impl Upstream {
    fn new() -> Self {
        let upstream = Self::default();
        upstream.answer(StatusCode::OK);
        upstream
    }

    fn answer(&self, status: StatusCode) {
        self.status.store(status.as_u16(), Ordering::SeqCst);
    }

    fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u16, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<()>, Infallible>> + Send,
    > + Clone {
        let this = self.clone();
        service_fn(move |_req: Request<()>| {
            this.calls.fetch_add(1, Ordering::SeqCst);
            let status = StatusCode::from_u16(this.status.load(Ordering::SeqCst)).unwrap();
            let delay = Duration::from_millis(u64::from(this.delay_ms.load(Ordering::SeqCst)));
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mut response = Response::new(());
                *response.status_mut() = status;
                Ok(response)
            }
        })
    }
}

/// Exact times: no jitter.
fn builder() -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder().jitter(0.0)
}

async fn call<S>(svc: &S) -> Result<StatusCode, BoxError>
where
    S: Service<Request<()>, Response = Response<Counted>, Error = BoxError> + Clone,
{
    svc.clone()
        .oneshot(Request::new(()))
        .await
        .map(|r| r.status())
}

async fn calls<S>(svc: &S, n: usize)
where
    S: Service<Request<()>, Response = Response<Counted>, Error = BoxError> + Clone,
{
    for _ in 0..n {
        call(svc).await.expect("admitted");
    }
}

/// A breaker from `builder` with `minimum_calls(failures)`, around an
/// upstream answering 502, opened by that many calls.
async fn opened(
    builder: CircuitBreakerBuilder,
    failures: u32,
) -> (
    Upstream,
    CircuitBreakerLayer,
    impl Service<
            Request<()>,
            Response = Response<Counted>,
            Error = BoxError,
            Future = impl Future<Output = Result<Response<Counted>, BoxError>> + Send,
        > + Clone
        + Send
        + 'static,
) {
    let upstream = Upstream::new();
    upstream.answer(StatusCode::BAD_GATEWAY);
    let layer = builder.minimum_calls(failures).build().unwrap();
    let svc = layer.layer(upstream.service());
    calls(&svc, failures as usize).await;
    assert_eq!(layer.handle().state(), State::Open);
    (upstream, layer, svc)
}

fn open_error(result: Result<StatusCode, BoxError>) -> CircuitOpen {
    let err = result.expect_err("turned away");
    *err.downcast_ref::<CircuitOpen>()
        .unwrap_or_else(|| panic!("not CircuitOpen: {err}"))
}

fn snapshot(layer: &CircuitBreakerLayer) -> BreakerSnapshot {
    layer.handle().snapshot()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn opens_after_half_of_twenty_calls_fail() {
    let upstream = Upstream::new();
    let layer = builder().build().unwrap();
    let svc = layer.layer(upstream.service());
    for i in 0..20 {
        let failing = i % 2 == 1;
        upstream.answer(if failing {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::OK
        });
        call(&svc).await.unwrap();
        let expected = if i == 19 { State::Open } else { State::Closed };
        assert_eq!(layer.handle().state(), expected, "after call {i}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stays_closed_below_the_minimum_number_of_calls() {
    let upstream = Upstream::new();
    upstream.answer(StatusCode::SERVICE_UNAVAILABLE);
    let layer = builder().build().unwrap();
    let svc = layer.layer(upstream.service());
    calls(&svc, 19).await;
    let snap = snapshot(&layer);
    assert_eq!(snap.state, State::Closed);
    assert_eq!((snap.calls, snap.failures), (19, 19));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stays_closed_while_fewer_than_half_fail() {
    let upstream = Upstream::new();
    let layer = builder().build().unwrap();
    let svc = layer.layer(upstream.service());
    for i in 0..100 {
        upstream.answer(if i % 3 == 0 {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::OK
        });
        call(&svc).await.unwrap();
        advance(Duration::from_millis(100)).await;
    }
    assert_eq!(layer.handle().state(), State::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_open_breaker_answers_at_once_without_calling_the_upstream() {
    let (upstream, layer, svc) = opened(builder(), 5).await;

    advance(Duration::from_secs(2)).await;
    let started = Instant::now();
    let open = open_error(call(&svc).await);
    assert_eq!(Instant::now(), started, "answered without waiting");
    assert_eq!(open.retry_after(), Duration::from_secs(3));
    assert_eq!(upstream.calls(), 5);
    let left = snapshot(&layer).open_remaining.unwrap();
    assert!(
        Duration::from_secs(3) - Duration::from_millis(10) <= left
            && left <= Duration::from_secs(3),
        "{left:?}"
    );

    let outcome = HttpClassifier::new().classify_error(&open);
    assert_eq!(outcome.kind(), Some(FailureKind::Rejected));
    assert_eq!(outcome.safety(), Some(RetrySafety::NotSent));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn error_response_layer_answers_503_with_the_time_until_the_next_probe() {
    let upstream = Upstream::new();
    upstream.answer(StatusCode::INTERNAL_SERVER_ERROR);
    let layer = builder().minimum_calls(3).build().unwrap();
    let svc = ErrorResponseLayer::new().layer(layer.layer(upstream.service()));
    for _ in 0..3 {
        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    advance(Duration::from_millis(1_500)).await;
    let res = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // 3.5 s left, rounded up to whole seconds.
    assert_eq!(res.headers()[header::RETRY_AFTER], "4");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn after_the_open_period_probes_go_through_and_close_it() {
    let (upstream, layer, svc) = opened(builder(), 5).await;

    upstream.answer(StatusCode::OK);
    advance(Duration::from_secs(5)).await;
    assert_eq!(call(&svc).await.unwrap(), StatusCode::OK);
    assert_eq!(layer.handle().state(), State::HalfOpen);
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::HalfOpen);
    call(&svc).await.unwrap();
    // Three probes succeeded.
    let snap = snapshot(&layer);
    assert_eq!(snap.state, State::Closed);
    // The window starts again from nothing: the five failures are gone.
    assert_eq!((snap.calls, snap.failures), (0, 0));
    assert_eq!(upstream.calls(), 8);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn half_open_admits_only_the_configured_number_of_probes() {
    let (upstream, layer, svc) = opened(builder().half_open_probes(2), 2).await;

    upstream.answer(StatusCode::OK);
    upstream.delay(Duration::from_secs(1));
    advance(Duration::from_secs(5)).await;
    let first = tokio::spawn(call_owned(svc.clone()));
    let second = tokio::spawn(call_owned(svc.clone()));
    tokio::task::yield_now().await;
    // Both probes are in flight: the third call is turned away.
    let open = open_error(call(&svc).await);
    assert_eq!(open.retry_after(), Duration::from_secs(1));
    assert_eq!(layer.handle().state(), State::HalfOpen);

    assert_eq!(first.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(second.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(layer.handle().state(), State::Closed);
    assert_eq!(upstream.calls(), 4);
}

async fn call_owned<S>(svc: S) -> Result<StatusCode, BoxError>
where
    S: Service<Request<()>, Response = Response<Counted>, Error = BoxError> + Clone,
{
    call(&svc).await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() {
    let (upstream, layer, svc) = opened(builder(), 1).await;

    for expected in [10, 20, 40, 60, 60] {
        // The open period ends; the probe fails.
        advance(snapshot(&layer).open_remaining.unwrap()).await;
        assert_eq!(call(&svc).await.unwrap(), StatusCode::BAD_GATEWAY);
        let snap = snapshot(&layer);
        assert_eq!(snap.state, State::Open);
        assert_eq!(snap.open_remaining, Some(Duration::from_secs(expected)));
    }

    // The upstream recovers: probes close the breaker, and the next opening
    // is back to the base duration.
    upstream.answer(StatusCode::OK);
    advance(Duration::from_secs(60)).await;
    calls(&svc, 3).await;
    assert_eq!(layer.handle().state(), State::Closed);
    upstream.answer(StatusCode::BAD_GATEWAY);
    call(&svc).await.unwrap();
    let left = snapshot(&layer).open_remaining.unwrap();
    assert!(
        Duration::from_secs(5) - Duration::from_millis(10) <= left
            && left <= Duration::from_secs(5),
        "{left:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn jittered_open_periods_are_never_longer_than_the_doubled_duration() {
    let jittered = CircuitBreakerLayer::builder().jitter(0.5).seed(7);
    let (_upstream, layer, svc) = opened(jittered, 1).await;
    let mut seen = Vec::new();
    for full in [5, 10, 20, 40, 60, 60, 60] {
        let remaining = snapshot(&layer).open_remaining.unwrap();
        let full = Duration::from_secs(full);
        assert!(remaining <= full && remaining >= full / 2, "{remaining:?}");
        seen.push(remaining);
        advance(remaining).await;
        call(&svc).await.unwrap();
    }
    // The jitter really draws: not every period is the full one.
    assert!(seen.iter().any(|d| d.subsec_nanos() != 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn consecutive_failures_open_it_before_the_minimum_is_reached() {
    let upstream = Upstream::new();
    let layer = builder().consecutive_failures(3).build().unwrap();
    let svc = layer.layer(upstream.service());
    upstream.answer(StatusCode::BAD_GATEWAY);
    calls(&svc, 2).await;
    upstream.answer(StatusCode::OK);
    call(&svc).await.unwrap();
    // The run was broken by a success.
    upstream.answer(StatusCode::BAD_GATEWAY);
    calls(&svc, 2).await;
    assert_eq!(snapshot(&layer).consecutive_failures, 2);
    assert_eq!(layer.handle().state(), State::Closed);
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn slow_successes_open_it_when_the_slow_call_ratio_is_reached() {
    let upstream = Upstream::new();
    let layer = builder()
        .minimum_calls(4)
        .slow_calls(Duration::from_secs(1), 0.5)
        .build()
        .unwrap();
    let svc = layer.layer(upstream.service());
    calls(&svc, 2).await;
    upstream.delay(Duration::from_millis(1_500));
    call(&svc).await.unwrap();
    assert_eq!(layer.handle().state(), State::Closed);
    call(&svc).await.unwrap();
    let snap = snapshot(&layer);
    assert_eq!(snap.state, State::Open);
    assert_eq!(snap.failures, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn client_errors_and_429_are_not_failures_unless_configured() {
    for (status, counts) in [
        (StatusCode::NOT_FOUND, false),
        (StatusCode::BAD_REQUEST, false),
        (StatusCode::TOO_MANY_REQUESTS, false),
        (StatusCode::SERVICE_UNAVAILABLE, true),
    ] {
        let upstream = Upstream::new();
        upstream.answer(status);
        let layer = builder().minimum_calls(3).build().unwrap();
        calls(&layer.layer(upstream.service()), 3).await;
        assert_eq!(
            snapshot(&layer).failures,
            if counts { 3 } else { 0 },
            "{status}"
        );
        let expected = if counts { State::Open } else { State::Closed };
        assert_eq!(layer.handle().state(), expected, "{status}");
    }

    let upstream = Upstream::new();
    upstream.answer(StatusCode::TOO_MANY_REQUESTS);
    let layer = builder()
        .minimum_calls(3)
        .too_many_requests_is_failure(true)
        .build()
        .unwrap();
    calls(&layer.layer(upstream.service()), 3).await;
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn errors_are_failures_but_a_deadline_spent_before_sending_is_not() {
    let upstream = Upstream::new();
    let layer = builder().minimum_calls(2).build().unwrap();
    // Requests that arrive with their deadline already spent.
    let expired = ServiceBuilder::new()
        .layer(layer.clone())
        .map_request(|mut req: Request<()>| {
            req.extensions_mut().insert(Deadline::after(Duration::ZERO));
            req
        })
        .layer(DeadlineLayer::default())
        .service(upstream.service());
    for _ in 0..2 {
        let err = call(&expired).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>(), "{err}");
    }
    assert_eq!(upstream.calls(), 0);
    let snap = snapshot(&layer);
    assert_eq!((snap.calls, snap.failures), (2, 0));

    let refused = layer.layer(service_fn(|_req: Request<()>| async {
        Err::<Response<()>, BoxError>(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        )
    }));
    call(&refused).await.unwrap_err();
    call(&refused).await.unwrap_err();
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cancelled_call_counts_neither_way() {
    let upstream = Upstream::new();
    upstream.answer(StatusCode::BAD_GATEWAY);
    upstream.delay(Duration::from_secs(10));
    let layer = builder().minimum_calls(1).build().unwrap();
    let svc = layer.layer(upstream.service());
    // The caller gives up after 1 s.
    let gave_up = tokio::time::timeout(Duration::from_secs(1), call(&svc)).await;
    assert!(gave_up.is_err());
    let snap = snapshot(&layer);
    assert_eq!((snap.state, snap.calls), (State::Closed, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cancelled_probe_gives_its_slot_to_the_next_call() {
    let (upstream, layer, svc) = opened(builder().half_open_probes(1), 1).await;

    advance(Duration::from_secs(5)).await;
    upstream.answer(StatusCode::OK);
    upstream.delay(Duration::from_secs(10));
    let gave_up = tokio::time::timeout(Duration::from_secs(1), call(&svc)).await;
    assert!(gave_up.is_err());
    assert_eq!(layer.handle().state(), State::HalfOpen);

    // The slot is free: the next call is the probe, and it closes the breaker.
    upstream.delay(Duration::ZERO);
    assert_eq!(call(&svc).await.unwrap(), StatusCode::OK);
    assert_eq!(layer.handle().state(), State::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_clone_and_every_service_of_a_layer_share_one_breaker() {
    let a = Upstream::new();
    let b = Upstream::new();
    a.answer(StatusCode::BAD_GATEWAY);
    let layer = builder().minimum_calls(4).build().unwrap();
    let svc_a = layer.layer(a.service());
    let svc_b = layer.clone().layer(b.service());
    calls(&svc_a.clone(), 2).await;
    calls(&svc_a, 2).await;
    assert_eq!(layer.handle().state(), State::Open);
    open_error(call(&svc_b).await);
    assert_eq!(b.calls(), 0);
    assert_eq!(svc_b.handle().state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_handle_forces_open_forces_closed_and_resets() {
    let upstream = Upstream::new();
    let layer = builder()
        .minimum_calls(1)
        .name("inventory")
        .build()
        .unwrap();
    let handle = layer.handle();
    assert_eq!(handle.name(), "inventory");
    let svc = layer.layer(upstream.service());

    handle.force_open();
    assert_eq!(handle.state(), State::ForcedOpen);
    // It stays open however long it waits: no probe.
    advance(Duration::from_secs(3_600)).await;
    let open = open_error(call(&svc).await);
    assert_eq!(open.retry_after(), Duration::from_secs(5));
    assert_eq!(upstream.calls(), 0);

    handle.force_closed();
    upstream.answer(StatusCode::BAD_GATEWAY);
    calls(&svc, 10).await;
    let snap = handle.snapshot();
    assert_eq!((snap.state, snap.calls), (State::ForcedClosed, 0));

    handle.reset();
    assert_eq!(handle.state(), State::Closed);
    call(&svc).await.unwrap();
    assert_eq!(handle.state(), State::Open);
}

#[test]
fn bad_configuration_is_an_error_naming_the_field() {
    let cases: Vec<(CircuitBreakerBuilder, &str)> = vec![
        (
            builder().failure_ratio(0.0),
            "circuit_breaker.failure_ratio",
        ),
        (
            builder().failure_ratio(1.5),
            "circuit_breaker.failure_ratio",
        ),
        (
            builder().failure_ratio(f64::NAN),
            "circuit_breaker.failure_ratio",
        ),
        (builder().minimum_calls(0), "circuit_breaker.minimum_calls"),
        (builder().bucket(Duration::ZERO), "circuit_breaker.bucket"),
        (
            builder().window(Duration::from_millis(1_500)),
            "circuit_breaker.window",
        ),
        (builder().window(Duration::ZERO), "circuit_breaker.window"),
        (
            builder()
                .bucket(Duration::from_millis(1))
                .window(Duration::from_secs(2)),
            "circuit_breaker.window",
        ),
        (
            builder().consecutive_failures(0),
            "circuit_breaker.consecutive_failures",
        ),
        (
            builder().slow_calls(Duration::ZERO, 0.5),
            "circuit_breaker.slow_call_threshold",
        ),
        (
            builder().slow_calls(Duration::from_secs(1), 0.0),
            "circuit_breaker.slow_call_ratio",
        ),
        (
            builder().open_duration(Duration::ZERO),
            "circuit_breaker.open_duration",
        ),
        (
            builder().max_open_duration(Duration::from_secs(1)),
            "circuit_breaker.max_open_duration",
        ),
        (builder().jitter(1.0), "circuit_breaker.jitter"),
        (builder().jitter(-0.1), "circuit_breaker.jitter"),
        (
            builder().half_open_probes(0),
            "circuit_breaker.half_open_probes",
        ),
        (
            builder().half_open_probes(1_001),
            "circuit_breaker.half_open_probes",
        ),
    ];
    for (builder, field) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.field(), field);
    }
    // Edges that are fine.
    builder()
        .window(Duration::from_millis(500))
        .bucket(Duration::from_millis(500))
        .failure_ratio(1.0)
        .half_open_probes(1_000)
        .build()
        .unwrap();
}

/// The client stack puts the breaker above the throttle: the throttle's
/// own refusals (`Overloaded`, never sent) are no evidence against the
/// upstream, so they are neither failures nor successes for the breaker,
/// which stays closed however many there are; an upstream's own failures
/// still count.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_throttles_local_refusals_do_not_count_against_the_upstream() {
    let layer = CircuitBreakerLayer::new();
    let refusing = service_fn(|_: Request<()>| async {
        Err::<Response<()>, BoxError>(Box::new(tower_steady::load_shed::Overloaded::new(
            Duration::from_secs(1),
        )))
    });
    let svc = layer.layer(refusing);
    for _ in 0..100 {
        let error = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(error.is::<tower_steady::load_shed::Overloaded>());
    }
    let seen = snapshot(&layer);
    assert_eq!(
        (seen.state, seen.calls, seen.failures),
        (State::Closed, 0, 0)
    );

    let failing = service_fn(|_: Request<()>| async {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, BoxError>(response)
    });
    let svc = layer.layer(failing);
    for _ in 0..30 {
        let _ = svc.clone().oneshot(Request::new(())).await;
    }
    assert_eq!(snapshot(&layer).state, State::Open);
}

/// An upstream at 2 000 requests a second: healthy, refusing connections,
/// or answering 503, as the test says.
fn paced_upstream() -> (
    Arc<AtomicU16>,
    impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone,
) {
    let mode = Arc::new(AtomicU16::new(200));
    let svc = {
        let mode = mode.clone();
        service_fn(move |_: Request<()>| {
            let mode = mode.load(Ordering::Relaxed);
            async move {
                match mode {
                    0 => Err::<Response<()>, BoxError>(Box::new(std::io::Error::from(
                        std::io::ErrorKind::ConnectionRefused,
                    ))),
                    status => {
                        let mut response = Response::new(());
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok(response)
                    }
                }
            }
        })
    };
    (mode, svc)
}

/// Calls `svc` every 0.5 ms until `until` returns true or `limit` passes;
/// returns the time it took.
async fn until_state<S>(
    svc: &S,
    layer: &CircuitBreakerLayer,
    state: State,
    limit: Duration,
) -> Duration
where
    S: Service<Request<()>, Response = Response<Counted>, Error = BoxError> + Clone,
{
    let start = Instant::now();
    while snapshot(layer).state != state {
        assert!(start.elapsed() < limit, "not {state:?} after {limit:?}");
        let _ = svc.clone().oneshot(Request::new(())).await;
        advance(Duration::from_micros(500)).await;
    }
    start.elapsed()
}

/// After 9 s of healthy traffic the 10 s window holds 18 000 successes: the
/// outage reaches half of it only seconds later. The most recent bucket
/// alone sees it within about a second.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_outage_after_a_long_healthy_spell_opens_it_within_about_a_second() {
    let layer = CircuitBreakerLayer::builder().jitter(0.0).build().unwrap();
    let (mode, svc) = paced_upstream();
    let svc = layer.layer(svc);
    // Mid-bucket, so the current bucket holds half a second of successes.
    let healthy = Instant::now() + Duration::from_millis(9_500);
    while Instant::now() < healthy {
        svc.clone().oneshot(Request::new(())).await.unwrap();
        advance(Duration::from_micros(500)).await;
    }
    mode.store(503, Ordering::Relaxed);
    let took = until_state(&svc, &layer, State::Open, Duration::from_secs(3)).await;
    println!("opened {took:?} into the outage");
    assert!(took <= Duration::from_millis(1_000), "{took:?}");

    // With the whole window alone it takes seconds.
    let slow = CircuitBreakerLayer::builder()
        .jitter(0.0)
        .recent_buckets(10)
        .build()
        .unwrap();
    let (mode, inner) = paced_upstream();
    let svc = slow.layer(inner);
    let healthy = Instant::now() + Duration::from_millis(9_500);
    while Instant::now() < healthy {
        svc.clone().oneshot(Request::new(())).await.unwrap();
        advance(Duration::from_micros(500)).await;
    }
    mode.store(503, Ordering::Relaxed);
    let took = until_state(&svc, &slow, State::Open, Duration::from_secs(20)).await;
    assert!(took > Duration::from_secs(3), "{took:?}");
}

/// An upstream that refuses connections (restarting) opens the breaker for
/// 1 s, not 5: once it is back, the probes close the breaker within about
/// a second of the restart. One that answers 503 keeps the 5 s.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refusing_upstream_is_probed_back_within_a_second() {
    let layer = CircuitBreakerLayer::builder().jitter(0.0).build().unwrap();
    let (mode, svc) = paced_upstream();
    let svc = layer.layer(svc);
    mode.store(0, Ordering::Relaxed);
    until_state(&svc, &layer, State::Open, Duration::from_secs(1)).await;
    let left = snapshot(&layer).open_remaining.unwrap();
    assert!(
        Duration::from_secs(1) - Duration::from_millis(10) <= left
            && left <= Duration::from_secs(1),
        "{left:?}"
    );
    // Back 0.3 s later: closed within a second of that.
    advance(Duration::from_millis(300)).await;
    mode.store(200, Ordering::Relaxed);
    let took = until_state(&svc, &layer, State::Closed, Duration::from_secs(2)).await;
    assert!(took <= Duration::from_secs(1), "{took:?}");

    let layer = CircuitBreakerLayer::builder().jitter(0.0).build().unwrap();
    let (mode, svc) = paced_upstream();
    let svc = layer.layer(svc);
    mode.store(503, Ordering::Relaxed);
    until_state(&svc, &layer, State::Open, Duration::from_secs(1)).await;
    let left = snapshot(&layer).open_remaining.unwrap();
    assert!(
        Duration::from_secs(5) - Duration::from_millis(10) <= left
            && left <= Duration::from_secs(5),
        "{left:?}"
    );
}
