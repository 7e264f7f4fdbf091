//! gRPC through the layers, without a gRPC library: requests with
//! `content-type: application/grpc` and trailers-only answers
//! (`grpc-status` in the response headers), as tonic and every gRPC server
//! and proxy send a failed call. Paused time, but for the one test that
//! reads an answer over the wire.
#![cfg(feature = "preset")]

use crate::common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use tower::{service_fn, BoxError, Layer, ServiceExt};
use tower_steady::circuit_breaker::{CircuitBreakerLayer, State};
use tower_steady::classify::grpc::code;
use tower_steady::classify::{Classify, FailureKind, HttpClassifier, Outcome, RetrySafety};
use tower_steady::deadline::DeadlineLayer;
use tower_steady::http::ErrorResponseLayer;
use tower_steady::retry::{Backoff, ReplayBody, RetryLayer};
use tower_steady::Resilience;

fn grpc_call() -> Request<Empty<Bytes>> {
    Request::post("http://svc.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::new())
        .unwrap()
}

/// A trailers-only answer with `code` (and a pushback if given).
fn trailers_only(code: u32, pushback: Option<&'static str>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Some(ms) = pushback {
        headers.insert("grpc-retry-pushback-ms", HeaderValue::from_static(ms));
    }
    response
}

fn ok() -> Response<Full<Bytes>> {
    trailers_only(code::OK, None)
}

#[test]
fn trailers_only_statuses_are_classified() {
    let c = HttpClassifier::new();
    let outcome = |code| c.classify_response(&trailers_only(code, None));
    assert_eq!(
        outcome(code::UNAVAILABLE),
        Outcome::failure(FailureKind::Unavailable, RetrySafety::NotSent)
    );
    assert_eq!(
        outcome(code::RESOURCE_EXHAUSTED),
        Outcome::failure(FailureKind::TooManyRequests, RetrySafety::MaybeSent)
    );
    assert_eq!(
        outcome(code::DEADLINE_EXCEEDED),
        Outcome::failure(FailureKind::GatewayTimeout, RetrySafety::MaybeSent)
    );
    assert_eq!(
        outcome(code::INTERNAL),
        Outcome::failure(FailureKind::ServerError, RetrySafety::MaybeSent)
    );
    assert_eq!(outcome(code::OK), Outcome::Success);
    // NOT_FOUND (5): the server answered the call.
    assert_eq!(outcome(5), Outcome::Success);
    // Configurable, as gRFC A6's retryable codes.
    let wider =
        HttpClassifier::new().grpc_retryable(&[code::UNAVAILABLE, code::RESOURCE_EXHAUSTED]);
    assert_eq!(
        wider.classify_response(&trailers_only(code::RESOURCE_EXHAUSTED, None)),
        Outcome::failure(FailureKind::TooManyRequests, RetrySafety::NotSent)
    );
}

/// An upstream answering call `n` with `answers[n]`, then OK; counts calls.
#[allow(clippy::type_complexity)]
fn scripted_grpc(
    answers: &'static [(u32, Option<&'static str>)],
) -> (
    Arc<AtomicUsize>,
    impl tower::Service<
            Request<ReplayBody<Empty<Bytes>>>,
            Response = Response<Full<Bytes>>,
            Error = BoxError,
            Future: Send,
        > + Clone,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_: Request<ReplayBody<Empty<Bytes>>>| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let answer = answers
            .get(n)
            .map_or_else(ok, |(code, pushback)| trailers_only(*code, *pushback));
        async move { Ok::<_, BoxError>(answer) }
    });
    (calls, svc)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unavailable_is_retried_though_every_call_is_a_post() {
    let (calls, upstream) = scripted_grpc(&[(code::UNAVAILABLE, None)]);
    let client = Resilience::client().build().unwrap().layer(upstream);
    let response = client.oneshot(grpc_call()).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_pushback_is_honoured_and_a_negative_one_stops_the_retry() {
    // 300 ms asked: the retry waits it out.
    let (calls, upstream) = scripted_grpc(&[(code::UNAVAILABLE, Some("300"))]);
    let retry = RetryLayer::builder()
        .backoff(Backoff::none())
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let response = retry.layer(upstream).oneshot(grpc_call()).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // -1: no retry at all; the answer is passed on.
    let (calls, upstream) = scripted_grpc(&[(code::UNAVAILABLE, Some("-1"))]);
    let retry = RetryLayer::builder()
        .backoff(Backoff::none())
        .build()
        .unwrap();
    let response = retry.layer(upstream).oneshot(grpc_call()).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn internal_and_resource_exhausted_are_not_retried_by_default() {
    for failure in [
        code::INTERNAL,
        code::RESOURCE_EXHAUSTED,
        code::DEADLINE_EXCEEDED,
    ] {
        let answers: &'static [(u32, Option<&'static str>)] =
            Box::leak(vec![(failure, None)].into_boxed_slice());
        let (calls, upstream) = scripted_grpc(answers);
        let retry = RetryLayer::builder()
            .backoff(Backoff::none())
            .build()
            .unwrap();
        let response = retry.layer(upstream).oneshot(grpc_call()).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], failure.to_string());
        assert_eq!(calls.load(Ordering::Relaxed), 1, "code {failure}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_breaker_opens_on_a_dead_grpc_upstream() {
    let layer = CircuitBreakerLayer::builder().name("grpc").build().unwrap();
    let handle = layer.handle();
    let dead = service_fn(|_: Request<Empty<Bytes>>| async {
        Ok::<_, BoxError>(trailers_only(code::UNAVAILABLE, None))
    });
    let svc = layer.layer(dead);
    for _ in 0..40 {
        let _ = svc.clone().oneshot(grpc_call()).await;
    }
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_client_deadline_writes_grpc_timeout_and_a_retry_refreshes_it() {
    let seen = Arc::new(Mutex::new(Vec::<HeaderMap>::new()));
    let record = seen.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = service_fn(move |request: Request<ReplayBody<Empty<Bytes>>>| {
        record.lock().unwrap().push(request.headers().clone());
        let first = calls.fetch_add(1, Ordering::Relaxed) == 0;
        async move {
            if first {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok::<_, BoxError>(trailers_only(code::UNAVAILABLE, None))
            } else {
                Ok(ok())
            }
        }
    });
    let client = tower::ServiceBuilder::new()
        .layer(
            DeadlineLayer::client()
                .timeout(Duration::from_secs(2))
                .margin(Duration::ZERO)
                .build()
                .unwrap(),
        )
        .layer(
            RetryLayer::builder()
                .backoff(Backoff::none())
                .build()
                .unwrap(),
        )
        .service(upstream);
    client.oneshot(grpc_call()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["grpc-timeout"], "2000m");
    assert_eq!(seen[0]["x-request-timeout-ms"], "2000");
    assert_eq!(seen[1]["grpc-timeout"], "1600m");
    assert_eq!(seen[1]["x-request-timeout-ms"], "1600");

    // Not on a request that is not gRPC.
    let plain = DeadlineLayer::client().build().unwrap().layer(service_fn(
        |request: Request<()>| async move {
            assert!(!request.headers().contains_key("grpc-timeout"));
            Ok::<_, BoxError>(Response::new(()))
        },
    ));
    plain.clone().oneshot(Request::new(())).await.unwrap();
    // Nor on a `GET` that says `application/grpc`: gRPC calls are `POST`s.
    let get = Request::get("http://svc.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    plain.oneshot(get).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn answers_to_grpc_calls_are_in_grpcs_terms() {
    // An open breaker: UNAVAILABLE with its pushback; an expired deadline:
    // DEADLINE_EXCEEDED; both trailers-only, HTTP 200, with Proxy-Status.
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    breaker.handle().force_open();
    let open = ErrorResponseLayer::new().layer(breaker.layer(service_fn(
        |_: Request<Empty<Bytes>>| async { Ok::<_, BoxError>(ok()) },
    )));
    let response = open.oneshot(grpc_call()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let h = response.headers();
    assert_eq!(h["content-type"], "application/grpc");
    assert_eq!(h["grpc-status"], "14");
    assert_eq!(h["grpc-message"], "service unavailable");
    assert!(
        h["grpc-retry-pushback-ms"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1000
    );
    assert!(h["proxy-status"].to_str().unwrap().contains("circuit open"));

    let expired = ErrorResponseLayer::new().layer(DeadlineLayer::server().build().unwrap().layer(
        service_fn(|_: Request<Empty<Bytes>>| async {
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(ok())
        }),
    ));
    let mut call = grpc_call();
    call.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("50m"));
    let response = expired.oneshot(call).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "4");
    assert!(!response.headers().contains_key("grpc-retry-pushback-ms"));

    // The same failure for an HTTP caller is still a 503.
    let plain = ErrorResponseLayer::new().layer(breaker.layer(service_fn(
        |_: Request<Empty<Bytes>>| async { Ok::<_, BoxError>(ok()) },
    )));
    let response = plain
        .clone()
        .oneshot(Request::get("http://svc.test/").body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    // And for a `GET` that says `application/grpc`: gRPC calls are all
    // `POST`s, so this is no gRPC call.
    let response = plain
        .oneshot(
            Request::get("http://svc.test/")
                .header("content-type", "application/grpc")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!response.headers().contains_key("grpc-status"));
}

#[tokio::test]
async fn a_shed_grpc_call_over_the_wire_is_unavailable_with_pushback() {
    use axum::routing::post;
    use axum::Router;
    use common::{bounded, PausedServer};

    // A server whose limit holds one call: the first never ends, the
    // second is shed. No deadline: under the server's paused clock the
    // first call's would pass at once, and free its place.
    let entered = Arc::new(tokio::sync::Notify::new());
    let signal = entered.clone();
    let app = Router::new()
        .route(
            "/pkg.Service/Method",
            post(move || {
                signal.notify_one();
                async {
                    std::future::pending::<()>().await;
                    "never"
                }
            }),
        )
        .layer(
            Resilience::server()
                .without_deadline()
                .limit(tower_steady::load_shed::AdaptiveLimitLayer::builder().fixed(1))
                .build()
                .unwrap(),
        );
    let server = PausedServer::start(app);
    let url = server.url("/pkg.Service/Method");
    let call = |url: String| {
        Request::post(url)
            .header("content-type", "application/grpc")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let first = url.clone();
    let holder = tokio::spawn(async move {
        let _ = common::client().request(call(first)).await;
    });
    bounded(entered.notified()).await;
    let response = bounded(common::client().request(call(url))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let h = response.headers();
    assert_eq!(h["grpc-status"], "14");
    assert_eq!(h["grpc-retry-pushback-ms"], "1000");
    assert!(h["proxy-status"].to_str().unwrap().contains("overloaded"));
    holder.abort();
}

/// A streamed gRPC body: one message, then trailers with `grpc-status`.
struct Trailed {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Trailed {
    fn ending_with(code: u32) -> Self {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(code));
        Self {
            message: Some(Bytes::from_static(b"\0\0\0\0\0")),
            trailers: Some(trailers),
        }
    }
}

impl http_body::Body for Trailed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = match self.message.take() {
            Some(message) => Some(http_body::Frame::data(message)),
            None => self.trailers.take().map(http_body::Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

/// A streamed answer whose status comes in its trailers.
fn streamed(code: u32) -> Response<Trailed> {
    let mut response = Response::new(Trailed::ending_with(code));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_status_in_the_trailers_reaches_the_breaker_when_the_body_ends() {
    use http_body_util::BodyExt;

    for (code, state) in [(code::UNAVAILABLE, State::Open), (code::OK, State::Closed)] {
        let layer = CircuitBreakerLayer::builder().build().unwrap();
        let handle = layer.handle();
        let svc = layer.layer(service_fn(move |_: Request<Empty<Bytes>>| async move {
            Ok::<_, BoxError>(streamed(code))
        }));
        let mut read = 0;
        for _ in 0..40 {
            // Once open, the breaker turns calls away.
            let Ok(response) = svc.clone().oneshot(grpc_call()).await else {
                break;
            };
            // The head alone says nothing: the call counts once its body
            // has been read to the end.
            let collected = response.into_body().collect().await.unwrap();
            assert_eq!(
                collected.trailers().unwrap()["grpc-status"],
                code.to_string()
            );
            read += 1;
        }
        assert_eq!(handle.state(), state, "code {code}");
        // Opened by its default rule (half of at least 20 calls), or never.
        assert_eq!(read, if state == State::Open { 20 } else { 40 });
    }
}

#[cfg(feature = "upstream")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_status_in_the_trailers_reaches_the_endpoints_health_when_the_body_ends() {
    use http_body_util::BodyExt;
    use tower_steady::upstream::{EndpointState, Upstreams};

    let addrs: Vec<std::net::SocketAddr> = (1..=3).map(|p| ([10, 0, 0, 1], p).into()).collect();
    let bad = addrs[0];
    let set = Upstreams::builder()
        .seed(11)
        .build(addrs, move |addr| {
            service_fn(move |_: Request<Empty<Bytes>>| async move {
                let code = if addr == bad {
                    code::UNAVAILABLE
                } else {
                    code::OK
                };
                Ok::<_, BoxError>(streamed(code))
            })
        })
        .unwrap();
    for _ in 0..60 {
        let response = set.clone().oneshot(grpc_call()).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    let handle = set.handle();
    assert_eq!(handle.endpoint(bad).unwrap().state, EndpointState::Ejected);
}
