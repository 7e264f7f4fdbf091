//! Behaviour of `DeadlineLayer`, under paused time.

use std::convert::Infallible;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};
use tower_steady::classify::{Classify, FailureKind, HttpClassifier, RetrySafety};
use tower_steady::deadline::{error::DeadlineExceeded, Deadline, DeadlineLayer};

const SECOND: Duration = Duration::from_secs(1);

fn request_with(header: &str, value: &str) -> Request<()> {
    Request::get("/").header(header, value).body(()).unwrap()
}

/// A service that reports the deadline it saw and the timeout header it was
/// sent, after `delay`.
async fn echo(
    req: Request<()>,
    delay: Duration,
) -> Result<Response<(Option<Duration>, Option<HeaderValue>)>, Infallible> {
    let remaining = Deadline::of(&req).map(|d| d.remaining());
    let header = req.headers().get("x-request-timeout-ms").cloned();
    tokio::time::sleep(delay).await;
    Ok(Response::new((remaining, header)))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_default_budget_is_fifteen_seconds() {
    let svc = DeadlineLayer::default().layer(service_fn(|req| echo(req, Duration::from_secs(60))));
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
    assert!(exceeded.was_sent());
    let outcome = HttpClassifier::new().classify_error(&*err);
    assert_eq!(outcome.kind(), Some(FailureKind::DeadlineExceeded));
    assert_eq!(outcome.safety(), Some(RetrySafety::MaybeSent));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_services_see_the_remaining_budget() {
    let layer = DeadlineLayer::builder()
        .timeout(2 * SECOND)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|req| echo(req, Duration::ZERO)));
    let (remaining, header) = svc.oneshot(Request::new(())).await.unwrap().into_body();
    assert_eq!(remaining, Some(2 * SECOND));
    assert_eq!(header, None, "the default layer writes no header");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_callers_shorter_budget_wins_on_the_server() {
    let layer = DeadlineLayer::server().timeout(2 * SECOND).build().unwrap();
    let svc = layer.layer(service_fn(|req| echo(req, Duration::ZERO)));
    let remaining = |req| {
        let svc = svc.clone();
        async move { svc.oneshot(req).await.unwrap().into_body().0 }
    };

    let got = remaining(request_with("x-request-timeout-ms", "250")).await;
    assert_eq!(got, Some(Duration::from_millis(250)));
    let got = remaining(request_with("grpc-timeout", "100m")).await;
    assert_eq!(got, Some(Duration::from_millis(100)));

    // A caller cannot lengthen our budget.
    let got = remaining(request_with("x-request-timeout-ms", "600000")).await;
    assert_eq!(got, Some(2 * SECOND));

    // Malformed values are ignored.
    for bad in ["-5", "1.5", "soon", "99999999999999999999"] {
        let got = remaining(request_with("x-request-timeout-ms", bad)).await;
        assert_eq!(got, Some(2 * SECOND), "{bad}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_callers_budget_is_enforced() {
    let layer = DeadlineLayer::server()
        .timeout(10 * SECOND)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|req| echo(req, Duration::from_secs(60))));
    let start = Instant::now();
    let err = svc
        .oneshot(request_with("x-request-timeout-ms", "300"))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn headers_are_not_read_unless_asked() {
    let layer = DeadlineLayer::builder()
        .timeout(2 * SECOND)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|req| echo(req, Duration::ZERO)));
    let (remaining, _) = svc
        .oneshot(request_with("x-request-timeout-ms", "5"))
        .await
        .unwrap()
        .into_body();
    assert_eq!(remaining, Some(2 * SECOND));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_expired_request_is_answered_at_once_without_calling_the_service() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
    let layer = DeadlineLayer::server().build().unwrap();
    let svc = layer.layer(mock);
    handle.allow(1);

    let err = svc
        .oneshot(request_with("x-request-timeout-ms", "0"))
        .await
        .unwrap_err();
    let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
    assert!(!exceeded.was_sent());
    assert_eq!(
        HttpClassifier::new().classify_error(&*err).safety(),
        Some(RetrySafety::NotSent)
    );
    // The service was dropped by `oneshot`: had it been called, its request
    // would still be queued here.
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_client_writes_the_remaining_budget_minus_the_margin() {
    let layer = DeadlineLayer::client().timeout(5 * SECOND).build().unwrap();
    let svc = layer.layer(service_fn(|req| echo(req, Duration::ZERO)));
    let (_, header) = svc.oneshot(Request::new(())).await.unwrap().into_body();
    assert_eq!(header.unwrap(), "4990");

    let layer = DeadlineLayer::client()
        .timeout(5 * SECOND)
        .margin(Duration::from_millis(250))
        .header_name(http::HeaderName::from_static("x-budget"))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(Response::new(req.headers().get("x-budget").cloned()))
    }));
    assert_eq!(
        svc.oneshot(Request::new(()))
            .await
            .unwrap()
            .into_body()
            .unwrap(),
        "4750"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_earlier_deadline_already_on_the_request_is_kept_and_never_extended() {
    let layer = DeadlineLayer::client().timeout(5 * SECOND).build().unwrap();
    let svc = layer.layer(service_fn(|req| echo(req, Duration::ZERO)));

    let mut req = Request::new(());
    req.extensions_mut().insert(Deadline::after(SECOND));
    let (remaining, header) = svc.clone().oneshot(req).await.unwrap().into_body();
    assert_eq!(remaining, Some(SECOND));
    assert_eq!(header.unwrap(), "990");

    let mut req = Request::new(());
    req.extensions_mut().insert(Deadline::after(60 * SECOND));
    let (remaining, _) = svc.oneshot(req).await.unwrap().into_body();
    assert_eq!(remaining, Some(5 * SECOND));
}

/// A proxy: the server side reads the caller's budget, the handler copies
/// the deadline to its outgoing request, the client side writes it on.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deadline_travels_through_a_proxy() {
    let upstream_client = DeadlineLayer::client()
        .timeout(30 * SECOND)
        .build()
        .unwrap()
        .layer(service_fn(|req| echo(req, Duration::ZERO)));
    let proxy = DeadlineLayer::server()
        .timeout(10 * SECOND)
        .build()
        .unwrap()
        .layer(service_fn(move |incoming: Request<()>| {
            let client = upstream_client.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut outgoing = Request::new(());
                if let Some(deadline) = Deadline::of(&incoming) {
                    outgoing.extensions_mut().insert(deadline);
                }
                client.oneshot(outgoing).await
            }
        }));
    let res = proxy
        .oneshot(request_with("x-request-timeout-ms", "1000"))
        .await
        .unwrap();
    let (remaining, header) = res.into_body();
    assert_eq!(remaining, Some(Duration::from_millis(800)));
    assert_eq!(header.unwrap(), "790");
}

#[test]
fn invalid_configuration_names_the_field() {
    let err = DeadlineLayer::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "deadline.timeout");
    let err = DeadlineLayer::client()
        .timeout(SECOND)
        .margin(SECOND)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "deadline.margin");
    assert_eq!(
        err.to_string(),
        "invalid deadline.margin: must be less than the timeout"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_short_deadline_needs_no_margin_of_its_own() {
    // 5 ms, below the default 10 ms margin the user never set: the margin
    // shrinks to a tenth of the timeout instead of failing the build.
    let layer = DeadlineLayer::client()
        .timeout(Duration::from_millis(5))
        .build()
        .expect("a 5 ms deadline builds");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let svc = layer.layer(tower::service_fn(move |req: Request<()>| {
        *record.lock().unwrap() = req.headers().get("x-request-timeout-ms").cloned();
        async { Ok::<_, std::convert::Infallible>(http::Response::new(())) }
    }));
    svc.oneshot(Request::new(())).await.unwrap();
    // 5 ms less a 0.5 ms margin, written in whole milliseconds.
    let header = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the budget was written");
    assert_eq!(header, "4");
}
