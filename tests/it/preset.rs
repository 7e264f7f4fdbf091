//! `Resilience::client()` and `Resilience::server()`: the parts in the
//! documented order with the documented defaults, each tunable and each
//! removable, usable with `ServiceBuilder`, axum's `Router::layer` and
//! around a hyper-util client. Paused time, except the one test that talks
//! to a real server.
#![cfg(feature = "preset")]

use crate::common;

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_steady::circuit_breaker::{CircuitBreakerLayer, State};
use tower_steady::classify::{Classify, FailureKind, HttpClassifier, Outcome, RetrySafety};
use tower_steady::deadline::{Deadline, DeadlineLayer};
use tower_steady::load_shed::AdaptiveLimitLayer;
use tower_steady::retry::{Backoff, ReplayBody, RetryLayer};
use tower_steady::Resilience;

use common::{scripted, status};

fn request() -> Request<Empty<Bytes>> {
    Request::get("http://site.test/page")
        .body(Empty::new())
        .unwrap()
}

/// Compiles only for a service that never fails: every failure became a
/// response.
fn never_fails<S: Service<Request<Empty<Bytes>>, Error = Infallible>>(_: &S) {}

type Answer = fn(usize) -> Result<Response<Full<Bytes>>, BoxError>;

/// An inner service answering call `n` with `answer(n)`, and the count of
/// its calls.
fn counting(answer: Answer) -> (Arc<AtomicUsize>, Counting) {
    let calls = Arc::new(AtomicUsize::new(0));
    (calls.clone(), Counting { calls, answer })
}

#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicUsize>,
    answer: Answer,
}

impl Service<Request<ReplayBody<Empty<Bytes>>>> for Counting {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<ReplayBody<Empty<Bytes>>>) -> Self::Future {
        std::future::ready((self.answer)(self.calls.fetch_add(1, Ordering::Relaxed)))
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_client_defaults_retry_a_gateway_failure_and_never_fail() {
    let layer = Resilience::client().build().unwrap();
    let svc = layer.layer(scripted(&[502, 503]));
    never_fails(&svc);
    let response = svc.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let handles = layer.handles();
    assert_eq!(handles.breaker.as_ref().unwrap().name(), "upstream");
    assert!(handles.retry.is_some() && handles.throttle.is_some());
    assert!(handles.stale_if_error.is_some() && handles.limit.is_none());
    // Two retries were taken from the budget's reserve of 100.
    let snapshot = handles.snapshot();
    assert_eq!(snapshot.retry.unwrap().retries_available, 98);
    assert_eq!(snapshot.breaker.unwrap().calls, 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failure_nothing_could_answer_is_an_honest_503() {
    let layer = Resilience::client().build().unwrap();
    let (calls, refused) =
        counting(|_| Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()));
    let response = layer.layer(refused).oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(http::header::RETRY_AFTER));
    assert_eq!(calls.load(Ordering::Relaxed), 3, "three attempts");

    // An upstream's own 502, every time: rewritten, never passed on.
    let svc = Resilience::client()
        .build()
        .unwrap()
        .layer(scripted(&[502; 3]));
    let response = svc.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_breaker_sits_below_retry_its_refusals_are_not_retried() {
    let layer = Resilience::client().build().unwrap();
    let (calls, inner) = counting(|_| Ok(status(200)));
    let svc = layer.layer(inner);
    let breaker = layer.handles().breaker.clone().unwrap();
    breaker.force_open();
    let response = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(http::header::RETRY_AFTER));
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    let retry = layer.handles().retry.as_ref().unwrap().snapshot();
    assert_eq!(retry.retries_available, 100, "no retry was spent on it");
    breaker.reset();
    let response = svc.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Runs `work` on a thread of its own, in a current-thread runtime with
/// paused time (as a proxy with a runtime per core runs each worker).
fn on_a_runtime_of_its_own<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(work)
    })
    .join()
    .unwrap()
}

#[test]
fn one_preset_laid_over_services_on_two_runtimes_shares_its_state() {
    // A proxy with a runtime per core builds the presets once and lays
    // clones over each runtime's client: the failures one runtime sees open
    // the breaker for the other. Each runtime's paused clock starts from
    // the real time it was made, so the open period is an hour: however
    // long the machine takes between the two runtimes, the breaker is
    // still open for the second.
    let hour = Duration::from_secs(3_600);
    let breaker = CircuitBreakerLayer::builder()
        .open_duration(hour)
        .max_open_duration(hour);
    let layer = Resilience::client()
        .circuit_breaker(breaker)
        .build()
        .unwrap();
    let breaker = layer.handles().breaker.clone().unwrap();

    let failing = layer.clone();
    let (failed, answered) = on_a_runtime_of_its_own(async move {
        let (calls, inner) = counting(|_| Ok(status(502)));
        let svc = failing.layer(inner);
        let mut answered = Vec::new();
        for _ in 0..200 {
            answered.push(svc.clone().oneshot(request()).await.unwrap().status());
        }
        (calls.load(Ordering::Relaxed), answered)
    });
    assert!(answered
        .iter()
        .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(breaker.state(), State::Open);
    assert!(
        failed < 200 * 3,
        "the breaker refused some attempts: {failed}"
    );

    let healthy = layer.clone();
    let (calls, status_seen) = on_a_runtime_of_its_own(async move {
        let (calls, inner) = counting(|_| Ok(status(200)));
        let svc = healthy.layer(inner);
        let response = svc.oneshot(request()).await.unwrap();
        (calls.load(Ordering::Relaxed), response.status())
    });
    assert_eq!(status_seen, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        calls, 0,
        "the other runtime's breaker was open before it called"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stale_if_error_answers_only_what_retries_could_not() {
    let layer = Resilience::client().build().unwrap();
    // Stored at first, then three 502s: the retries are spent before the
    // stale copy is served.
    let (calls, inner) = counting(|n| {
        Ok(match n {
            0 => {
                let mut page = Response::new(Full::from("page"));
                page.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("max-age=5"),
                );
                page
            }
            _ => status(502),
        })
    });
    let svc = layer.layer(inner);
    let first = svc.clone().oneshot(request()).await.unwrap();
    first.into_body().collect().await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let stale = svc.oneshot(request()).await.unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.headers()["age"], "30");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        4,
        "1 stored, then 3 attempts"
    );
    let stats = layer.handles().stale_if_error.as_ref().unwrap().stats();
    assert_eq!(stats.stale_served, 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn attempt_timeout_bounds_each_attempt_within_the_deadline() {
    // The first attempt hangs; the second answers.
    let layer = Resilience::client()
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let inner = service_fn(move |_: Request<ReplayBody<Empty<Bytes>>>| {
        let n = seen.fetch_add(1, Ordering::Relaxed);
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(status(200))
        }
    });
    let started = tokio::time::Instant::now();
    let response = layer.layer(inner).oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    // Paused time: the elapsed time is exact, one timeout plus a backoff
    // of at most 25 ms.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed <= Duration::from_millis(1030),
        "{elapsed:?}"
    );

    // Without it, the hung attempt takes the whole 15 s deadline: 504.
    let inner = service_fn(|_: Request<ReplayBody<Empty<Bytes>>>| async {
        std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
    });
    let started = tokio::time::Instant::now();
    let response = Resilience::client()
        .build()
        .unwrap()
        .layer(inner)
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_secs(15));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_proxy_s_deadline_ends_hung_attempts_on_time() {
    // The proxy's shape: the server preset around the client preset, whose
    // attempts (1 s each) end sooner than the deadline (2.5 s) and make the
    // only timer while they run. Every attempt hangs: the deadline still
    // answers at 2.5 s exactly, between the attempts, not when a later
    // attempt's own timer happens to fire.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let hanging = service_fn(move |_: Request<ReplayBody<Empty<Bytes>>>| {
        seen.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    });
    let client = Resilience::client()
        .deadline(DeadlineLayer::client().timeout(Duration::from_millis(2500)))
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let server = Resilience::server()
        .deadline(DeadlineLayer::server().timeout(Duration::from_millis(2500)))
        .build()
        .unwrap();
    let proxy = ServiceBuilder::new()
        .layer(server)
        .layer(client)
        .service(hanging);
    let started = tokio::time::Instant::now();
    // Bounded: a deadline that never fires would leave nothing to wake.
    let response = common::bounded(proxy.oneshot(request())).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_millis(2500));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "three attempts, the last cut short"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_part_can_be_turned_off() {
    let layer = Resilience::client()
        .without_error_response()
        .without_deadline()
        .without_stale_if_error()
        .without_retry()
        .without_circuit_breaker()
        .without_throttle()
        .without_attempt_timeout()
        .build()
        .unwrap();
    let handles = layer.handles();
    assert!(handles.breaker.is_none() && handles.retry.is_none());
    assert!(handles.throttle.is_none() && handles.stale_if_error.is_none());
    // Nothing left: the request's own body type reaches the service, and
    // its 502 comes back as it is.
    let svc = layer.layer(scripted(&[502]));
    let _: &common::Scripted = &svc;
    let response = svc.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);

    // Without error responses, the failure is an error to downcast.
    let layer = Resilience::client()
        .without_error_response()
        .build()
        .unwrap();
    layer.handles().breaker.as_ref().unwrap().force_open();
    let svc = layer.layer(scripted(&[]));
    let error = svc.oneshot(request()).await.unwrap_err();
    assert!(
        error.is::<tower_steady::circuit_breaker::CircuitOpen>(),
        "{error}"
    );

    let server = Resilience::server()
        .without_error_response()
        .without_deadline()
        .without_limit()
        .build()
        .unwrap();
    assert!(server.handles().limit.is_none());
    let _: &common::Scripted = &server.layer(scripted(&[]));
}

#[test]
fn an_invalid_setting_names_its_field() {
    let error = Resilience::client()
        .retry(RetryLayer::builder().max_attempts(0))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "retry.max_attempts");
    let error = Resilience::client()
        .circuit_breaker(CircuitBreakerLayer::builder().failure_ratio(1.5))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "circuit_breaker.failure_ratio");
    let error = Resilience::server()
        .deadline(DeadlineLayer::server().timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "deadline.timeout");
    let error = Resilience::server()
        .limit(AdaptiveLimitLayer::builder().fixed(0))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "load_shed.fixed");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_server_preset_on_an_axum_router() {
    let layer = Resilience::server()
        .limit(AdaptiveLimitLayer::builder().fixed(1))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let handles = layer.handles().clone();
    let app: Router = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "hello"
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>))
        .layer(layer);

    let get = |uri: &str| Request::get(uri).body(axum::body::Body::empty()).unwrap();
    let first = tokio::spawn(app.clone().oneshot(get("/")));
    tokio::task::yield_now().await;
    // The one slot is taken: shed at once with 503 + Retry-After.
    let shed = app.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()[http::header::RETRY_AFTER], "1");
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(handles.limit.as_ref().unwrap().snapshot().rejected, 1);

    // A caller with no time left: 504 before the handler runs.
    let expired = Request::get("/")
        .header("x-request-timeout-ms", "0")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(expired).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    // A handler that hangs: the 2 s handler timeout answers 504.
    let response = app.oneshot(get("/hang")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_client_preset_in_a_service_builder() {
    let svc = ServiceBuilder::new()
        .layer(
            Resilience::client()
                .retry(RetryLayer::builder().backoff(Backoff::none()))
                .build()
                .unwrap(),
        )
        .service(scripted(&[503]));
    let response = svc.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// What one attempt carried: its `Deadline`'s instant and its deadline
/// headers.
#[derive(Debug, Clone, PartialEq)]
struct Carried {
    deadline: Option<tokio::time::Instant>,
    millis: Option<String>,
    grpc: Option<String>,
}

/// An upstream answering `503` to its first call and `200` after,
/// keeping what each attempt carried.
#[derive(Clone, Default)]
struct Witness(Arc<std::sync::Mutex<Vec<Carried>>>);

impl Witness {
    fn carried(&self) -> Vec<Carried> {
        self.0.lock().unwrap().clone()
    }
}

impl<B> Service<Request<B>> for Witness {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let text = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let mut seen = self.0.lock().unwrap();
        seen.push(Carried {
            deadline: Deadline::of(&request).map(|d| d.instant()),
            millis: text("x-request-timeout-ms"),
            grpc: text("grpc-timeout"),
        });
        let status = if seen.len() == 1 { 503 } else { 200 };
        std::future::ready(Ok(Response::builder()
            .status(status)
            .body(Full::default())
            .unwrap()))
    }
}

/// `request` sent through `layer` over a fresh [`Witness`]: what each
/// attempt carried, and when the request was sent.
async fn through<L, B>(layer: L, request: Request<B>) -> (Vec<Carried>, tokio::time::Instant)
where
    L: Layer<Witness>,
    L::Service: Service<Request<B>>,
    <L::Service as Service<Request<B>>>::Error: std::fmt::Debug,
{
    let upstream = Witness::default();
    let start = tokio::time::Instant::now();
    let _ = layer
        .layer(upstream.clone())
        .oneshot(request)
        .await
        .unwrap();
    (upstream.carried(), start)
}

/// The client preset's deadline and retry between them give every attempt
/// the request's `Deadline` and what is left of its budget in the header:
/// with stale-if-error between them or not, with a deadline the request
/// brought (a proxy's) or not, for a gRPC call, and without the retry.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_attempt_carries_the_deadline_and_what_is_left_of_it() {
    // Backoff up to 100 ms (full jitter): the second attempt's header says
    // the first's budget less what the backoff took.
    let backoff = || {
        let up_to_100ms = Duration::from_millis(100);
        RetryLayer::builder().backoff(Backoff::exponential(up_to_100ms, up_to_100ms))
    };
    let check =
        |(carried, start): (Vec<Carried>, tokio::time::Instant), budget: u64, what: &str| {
            let millis = |carried: &Carried| {
                carried
                    .millis
                    .as_deref()
                    .map(|ms| ms.parse::<u64>().unwrap())
            };
            assert_eq!(
                carried.len(),
                2,
                "{what}: the first attempt answered 503, the second 200"
            );
            for attempt in &carried {
                let at = start + Duration::from_millis(budget);
                assert_eq!(attempt.deadline, Some(at), "{what}");
                assert_eq!(attempt.grpc, None, "{what}");
            }
            // Less the 10 ms margin.
            let first = budget - 10;
            assert_eq!(millis(&carried[0]), Some(first), "{what}");
            let second = millis(&carried[1]).unwrap();
            assert!((first - 100..=first).contains(&second), "{what}: {second}");
        };

    // The defaults (stale-if-error on), and without stale-if-error.
    let client = Resilience::client().retry(backoff());
    check(
        through(client.build().unwrap(), request()).await,
        15_000,
        "the defaults",
    );
    let client = Resilience::client()
        .retry(backoff())
        .without_stale_if_error();
    check(
        through(client.build().unwrap(), request()).await,
        15_000,
        "no stale-if-error",
    );

    // A request that brings an earlier deadline (a proxy's server stack
    // set it) keeps it; the header says what is left of it.
    let mut brought = request();
    brought
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let client = Resilience::client().retry(backoff()).build().unwrap();
    check(through(client, brought).await, 2_000, "a deadline brought");

    // A gRPC call (a `POST`, not retried) carries both headers.
    let grpc = Request::post("http://site.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (carried, start) = through(Resilience::client().build().unwrap(), grpc).await;
    let one = |grpc: Option<&str>| Carried {
        deadline: Some(start + Duration::from_secs(15)),
        millis: Some("14990".to_owned()),
        grpc: grpc.map(str::to_owned),
    };
    assert_eq!(carried, [one(Some("14990m"))]);

    // Without the retry the deadline layer writes both itself.
    let client = Resilience::client().without_retry().build().unwrap();
    let (carried, start) = through(client, request()).await;
    let one = Carried {
        deadline: Some(start + Duration::from_secs(15)),
        millis: Some("14990".to_owned()),
        grpc: None,
    };
    assert_eq!(carried, [one]);
}

/// Around a real hyper-util client, against a real server on loopback
/// whose first two answers are 502. Paused time: `common::Dialer` holds
/// the clock while the client waits on the socket, so the deadline cannot
/// fire early.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_client_preset_around_a_hyper_util_client() {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            let n = count.fetch_add(1, Ordering::Relaxed);
            async move {
                if n < 2 {
                    (StatusCode::BAD_GATEWAY, "upstream of the upstream failed")
                } else {
                    (StatusCode::OK, "hello")
                }
            }
        }),
    );
    let server = common::PausedServer::start(app);
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<ReplayBody<Empty<Bytes>>>();
    let calls = Arc::new(AtomicUsize::new(0));
    let client = Resilience::client()
        .build()
        .unwrap()
        .layer(common::Dialer::new(hyper, calls.clone()));
    let url = format!("http://{}/", server.addr);
    let response = common::bounded(client.oneshot(Request::get(url).body(Empty::new()).unwrap()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");
    assert_eq!(served.load(Ordering::Relaxed), 3);
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}

/// A reverse proxy as the presets compose it: `Resilience::server()` around
/// a handler that forwards through `Resilience::client()`. While every
/// upstream refuses connections, each request the stack can answer from a
/// stale copy is answered from it, at any concurrency: the stale copy is in
/// the client stack, and the server's limit learns nothing from those
/// answers (they are marked `Substituted`), nor from the retries' backoff
/// before them, so it never sheds what the stale copies can serve.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_proxy_serves_every_stale_copy_through_an_outage() {
    use std::sync::atomic::AtomicBool;

    let up = Arc::new(AtomicBool::new(true));
    let upstream = {
        let up = up.clone();
        service_fn(move |request: Request<ReplayBody<Empty<Bytes>>>| {
            let up = up.load(Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if !up {
                    let refused: BoxError =
                        Box::new(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
                    return Err(refused);
                }
                let mut page = Response::new(Full::from(format!("page {}", request.uri().path())));
                page.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("max-age=1"),
                );
                Ok::<_, BoxError>(page)
            }
        })
    };
    let forward = Resilience::client().build().unwrap().layer(upstream);
    let server = Resilience::server().build().unwrap();
    let limit = server.handles().limit.clone().unwrap();
    let proxy = server.layer(service_fn(move |request: Request<Empty<Bytes>>| {
        forward.clone().oneshot(request)
    }));
    let get = |n: usize| {
        Request::get(format!("http://site.test/p/{n}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    // Up: 50 pages stored.
    for n in 0..50 {
        let page = proxy.clone().oneshot(get(n)).await.unwrap();
        page.into_body().collect().await.unwrap();
    }
    up.store(false, Ordering::Relaxed);

    // Down: 64 callers, 2 000 requests (on this thread: the stack's
    // futures need not be `Send` for that).
    let (stale, total) = tokio::task::LocalSet::new()
        .run_until(async {
            let mut callers = tokio::task::JoinSet::new();
            for caller in 0..64 {
                let proxy = proxy.clone();
                callers.spawn_local(async move {
                    let mut statuses = Vec::new();
                    for i in 0..2_000 / 64 {
                        let n = (caller * 7 + i) % 50;
                        let response = proxy.clone().oneshot(get(n)).await.unwrap();
                        let stale = response.headers().contains_key("cache-status");
                        statuses.push((response.status(), stale));
                        response.into_body().collect().await.unwrap();
                    }
                    statuses
                });
            }
            let (mut stale, mut total) = (0, 0);
            while let Some(statuses) = callers.join_next().await {
                for (status, is_stale) in statuses.unwrap() {
                    total += 1;
                    assert_eq!(status, StatusCode::OK);
                    stale += usize::from(is_stale);
                }
            }
            (stale, total)
        })
        .await;
    assert_eq!(stale, total, "every answer was a stale copy");
    let snapshot = limit.snapshot();
    assert_eq!(
        (snapshot.rejected, snapshot.limit),
        (0, 1000),
        "{snapshot:?}"
    );
}

/// Counts a `404` as an unavailable upstream; everything else as the
/// default classifier does.
#[derive(Clone, Copy)]
struct NotFoundFails;

impl Classify for NotFoundFails {
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        if response.status() == StatusCode::NOT_FOUND {
            Outcome::failure(FailureKind::Unavailable, RetrySafety::MaybeSent)
        } else {
            HttpClassifier::new().classify_response(response)
        }
    }

    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Outcome {
        HttpClassifier::new().classify_error(error)
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_classifier_given_once_reaches_every_part() {
    // A 404 then a 200: only a retry layer that uses the given classifier
    // retries the 404, and only a breaker and a throttle that use it count
    // it as a failed call.
    let (calls, inner) = counting(|n| {
        let code = if n == 0 { 404 } else { 200 };
        Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::new()))
            .unwrap())
    });
    let layer = Resilience::client()
        .retry(RetryLayer::builder().backoff(Backoff::none()))
        .classifier(NotFoundFails)
        .build()
        .unwrap();
    let response = layer.layer(inner).oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::Relaxed), 2, "the 404 was retried");
    let snapshot = layer.handles().snapshot();
    assert_eq!(snapshot.breaker.unwrap().failures, 1);
    let throttle = snapshot.throttle.unwrap();
    assert_eq!((throttle.requests, throttle.accepts), (2, 1));

    // The server preset takes one the same way.
    let server = Resilience::server().classifier(NotFoundFails).build();
    assert!(server.is_ok());
}

#[test]
fn a_zero_timeout_or_a_bad_breaker_name_is_a_config_error() {
    let field = |r: Result<(), tower_steady::ConfigError>| r.unwrap_err().field();
    assert_eq!(
        field(
            Resilience::client()
                .attempt_timeout(Duration::ZERO)
                .build()
                .map(drop)
        ),
        "timeout.timeout"
    );
    assert_eq!(
        field(
            Resilience::server()
                .timeout(Duration::ZERO)
                .build()
                .map(drop)
        ),
        "timeout.timeout"
    );
    for name in ["", "two words", "x".repeat(65).as_str()] {
        let breaker = CircuitBreakerLayer::builder().name(name);
        assert_eq!(
            field(
                Resilience::client()
                    .circuit_breaker(breaker)
                    .build()
                    .map(drop)
            ),
            "circuit_breaker.name",
            "{name:?}"
        );
    }
    assert!(CircuitBreakerLayer::builder()
        .name("payments-eu:1")
        .build()
        .is_ok());
}
