//! Behaviour of `TimeoutLayer`, under paused time.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_steady::timeout::{error::Elapsed, TimeoutLayer};

fn request() -> Request<()> {
    Request::new(())
}

async fn respond_after(delay: Duration) -> Result<Response<()>, Infallible> {
    tokio::time::sleep(delay).await;
    Ok(Response::new(()))
}

/// With no tokio runtime at all, creating a timer would panic ("there is no
/// reactor running"): a response that is ready at its first poll must get
/// through without one.
#[test]
fn a_ready_response_needs_no_timer() {
    let mut svc =
        TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(|_req: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(())))
        }));
    let mut fut = task::spawn(svc.call(request()));
    assert_ready_ok!(fut.poll());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_response_fails_with_elapsed_exactly_at_the_timeout() {
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(|_req: Request<()>| {
        respond_after(Duration::from_secs(10))
    }));
    let start = Instant::now();
    let err = svc.oneshot(request()).await.unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(err.to_string(), "request timed out");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_response_within_the_timeout_passes() {
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(|_req: Request<()>| {
        respond_after(Duration::from_millis(999))
    }));
    svc.oneshot(request()).await.unwrap();
}

/// The inner future is polled before the timer: a response that is ready in
/// the same instant the timer fires is returned, not thrown away.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_response_wins_a_tie_with_the_timer() {
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(|_req: Request<()>| {
        respond_after(Duration::from_secs(1))
    }));
    svc.oneshot(request()).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_clock_starts_at_call_not_at_first_poll() {
    let mut svc =
        TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(|_req: Request<()>| {
            respond_after(Duration::from_millis(600))
        }));
    let fut = svc.call(request());
    tokio::time::advance(Duration::from_millis(500)).await;
    let err = fut.await.unwrap_err();
    assert!(err.is::<Elapsed>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let svc =
        TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(|_req: Request<()>| async {
            Err::<Response<()>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        }));
    let err = svc.oneshot(request()).await.unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_zero_timeout_passes_only_ready_responses() {
    let ready = TimeoutLayer::new(Duration::ZERO).layer(service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    }));
    ready.oneshot(request()).await.unwrap();

    let pending = TimeoutLayer::new(Duration::ZERO).layer(service_fn(|_req: Request<()>| {
        respond_after(Duration::from_nanos(1))
    }));
    assert!(pending
        .oneshot(request())
        .await
        .unwrap_err()
        .is::<Elapsed>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_enormous_timeout_never_fires_and_never_panics() {
    let svc = TimeoutLayer::new(Duration::MAX).layer(service_fn(|_req: Request<()>| {
        respond_after(Duration::from_secs(86_400))
    }));
    svc.oneshot(request()).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiting_for_readiness_is_not_timed() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
    let mut svc = TimeoutLayer::new(Duration::from_secs(1)).layer(mock);
    handle.allow(0);
    let mut ready = task::spawn(futures_ready(&mut svc));
    assert_pending!(ready.poll());
    // Paused time: five seconds pass at once.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_pending!(ready.poll());
    handle.allow(1);
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
}

async fn futures_ready<S: Service<Request<()>>>(svc: &mut S) -> Result<(), S::Error> {
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await
}

#[test]
fn the_checked_constructor_refuses_a_zero_timeout() {
    use tower_steady::timeout::TimeoutLayer;
    let err = TimeoutLayer::try_new(std::time::Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "timeout.timeout");
    let layer = TimeoutLayer::try_new(std::time::Duration::from_millis(1)).unwrap();
    assert_eq!(layer.timeout(), std::time::Duration::from_millis(1));
}
