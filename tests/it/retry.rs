//! Behaviour of `RetryLayer`, under paused time.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::{advance, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_steady::circuit_breaker::CircuitOpen;
use tower_steady::deadline::{error::DeadlineExceeded, Deadline, DeadlineLayer};
use tower_steady::http::Retried;
use tower_steady::retry::{
    Attempt, Backoff, Budget, Endpoint, EndpointError, Hedge, ReplayBody, RetryLayer,
};
use tower_steady::BoxError;

type Body = Full<Bytes>;

/// What the upstream saw of one attempt.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    attempt: Attempt,
    body: Bytes,
    timeout_header: Option<String>,
    deadline: Option<Deadline>,
    other_header: bool,
}

/// An upstream scripted attempt by attempt: `answers[n]` is what attempt
/// `n` gets (the last one repeats).
#[derive(Clone)]
struct Script {
    answers: Arc<Vec<Answer>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Clone)]
enum Answer {
    Status(u16),
    StatusRetryAfter(u16, &'static str),
    Refused,
    Reset,
    Hang,
    After(Duration, u16),
    DeadlineExceeded,
    CircuitOpen,
    /// A 502 from, or a refusal on, a named endpoint.
    StatusFrom(u16, u16),
    RefusedOn(u16),
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

impl Script {
    fn new(answers: Vec<Answer>) -> Self {
        Self {
            answers: Arc::new(answers),
            seen: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<ReplayBody<Body>>,
        Response = Response<()>,
        Error = BoxError,
        Future = impl std::future::Future<Output = Result<Response<()>, BoxError>> + Send,
    > + Clone {
        let this = self.clone();
        service_fn(move |req: Request<ReplayBody<Body>>| {
            let this = this.clone();
            async move {
                let at = Instant::now();
                let attempt = Attempt::of_or_first(&req);
                let timeout_header = req
                    .headers()
                    .get("x-request-timeout-ms")
                    .map(|v| v.to_str().unwrap().to_owned());
                let deadline = Deadline::of(&req);
                let other_header = req.headers().contains_key("x-other");
                let body = match req.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(e) => return Err(e),
                };
                let n = {
                    let mut seen = this.seen.lock().unwrap();
                    seen.push(Seen {
                        at,
                        attempt,
                        body,
                        timeout_header,
                        deadline,
                        other_header,
                    });
                    seen.len() - 1
                };
                let answer = this.answers[n.min(this.answers.len() - 1)].clone();
                respond(answer).await
            }
        })
    }
}

async fn respond(answer: Answer) -> Result<Response<()>, BoxError> {
    let status = |code: u16| Response::builder().status(code).body(()).unwrap();
    match answer {
        Answer::Status(code) => Ok(status(code)),
        Answer::StatusRetryAfter(code, after) => Ok(Response::builder()
            .status(code)
            .header(header::RETRY_AFTER, after)
            .body(())
            .unwrap()),
        Answer::Refused => Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
        Answer::Reset => Err(io::Error::from(io::ErrorKind::ConnectionReset).into()),
        Answer::Hang => std::future::pending().await,
        Answer::After(delay, code) => {
            tokio::time::sleep(delay).await;
            Ok(status(code))
        }
        Answer::DeadlineExceeded => Err(deadline_exceeded()),
        Answer::CircuitOpen => Err(Box::new(CircuitOpen::new(Duration::from_secs(1)))),
        Answer::StatusFrom(code, port) => {
            let mut response = status(code);
            response.extensions_mut().insert(Endpoint::new(addr(port)));
            Ok(response)
        }
        Answer::RefusedOn(port) => Err(EndpointError::new(
            Endpoint::new(addr(port)),
            io::Error::from(io::ErrorKind::ConnectionRefused),
        )
        .into()),
    }
}

/// The error of a request that arrives with no time left.
fn deadline_exceeded() -> BoxError {
    let mut svc = DeadlineLayer::default().layer(service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(()))
    }));
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(Deadline::at(Instant::now()));
    let mut call = tokio_test::task::spawn(svc.call(request));
    match call.poll() {
        std::task::Poll::Ready(Err(err)) => {
            assert!(err.is::<DeadlineExceeded>());
            err
        }
        _ => panic!("an expired request fails at once"),
    }
}

fn get() -> Request<Body> {
    Request::get("http://upstream/")
        .body(Body::default())
        .unwrap()
}

fn post(body: &'static str) -> Request<Body> {
    Request::post("http://upstream/orders")
        .body(Body::new(Bytes::from(body)))
        .unwrap()
}

fn layer() -> RetryLayer {
    RetryLayer::builder().seed(1).build().unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_get_that_fails_with_502_is_retried_until_it_succeeds() {
    let up = Script::new(vec![
        Answer::Status(502),
        Answer::Status(502),
        Answer::Status(200),
    ]);
    let svc = layer().layer(up.service());
    let response = svc.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = up.seen();
    let numbers: Vec<u32> = seen.iter().map(|s| s.attempt.number()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(!seen[0].attempt.is_retry() && seen[1].attempt.is_retry());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn at_most_three_attempts_then_the_last_failure_as_it_came() {
    let up = Script::new(vec![
        Answer::Status(502),
        Answer::Status(503),
        Answer::Status(504),
    ]);
    let svc = layer().layer(up.service());
    let response = svc.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(up.calls(), 3);

    let up = Script::new(vec![Answer::Status(502)]);
    let one = RetryLayer::builder().max_attempts(1).build().unwrap();
    assert_eq!(
        one.layer(up.service())
            .oneshot(get())
            .await
            .unwrap()
            .status(),
        502
    );
    assert_eq!(up.calls(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_post_is_not_retried_after_it_may_have_been_sent() {
    for answer in [Answer::Status(502), Answer::Status(503), Answer::Reset] {
        let up = Script::new(vec![answer, Answer::Status(200)]);
        let result = layer().layer(up.service()).oneshot(post("pay")).await;
        assert!(result.map(|r| r.status() != 200).unwrap_or(true));
        assert_eq!(up.calls(), 1);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_post_is_retried_after_a_refused_connection_with_its_whole_body() {
    let up = Script::new(vec![Answer::Refused, Answer::Status(201)]);
    let response = layer()
        .layer(up.service())
        .oneshot(post("order #7"))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == "order #7"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_idempotency_key_makes_a_post_retryable() {
    let up = Script::new(vec![Answer::Status(503), Answer::Status(200)]);
    let mut request = post("pay");
    request
        .headers_mut()
        .insert("idempotency-key", "k-1".parse().unwrap());
    let response = layer().layer(up.service()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(up.calls(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_stacks_own_rejections_and_spent_deadlines_are_not_retried() {
    for answer in [Answer::DeadlineExceeded, Answer::CircuitOpen] {
        let up = Script::new(vec![answer, Answer::Status(200)]);
        let err = layer()
            .layer(up.service())
            .oneshot(get())
            .await
            .unwrap_err();
        assert!(
            err.is::<DeadlineExceeded>() || err.is::<CircuitOpen>(),
            "{err}"
        );
        assert_eq!(up.calls(), 1);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn backoff_waits_stay_within_full_jitter_bounds() {
    let mut first_waits = Vec::new();
    for seed in 0..50 {
        let up = Script::new(vec![
            Answer::Status(503),
            Answer::Status(503),
            Answer::Status(503),
        ]);
        let layer = RetryLayer::builder().seed(seed).build().unwrap();
        let response = layer.layer(up.service()).oneshot(get()).await.unwrap();
        assert_eq!(response.status(), 503);
        let seen = up.seen();
        let first = seen[1].at - seen[0].at;
        let second = seen[2].at - seen[1].at;
        // tokio's timer wakes on whole milliseconds, rounding up: a wait
        // drawn from [0, 25 ms) ends at most at 25 ms.
        assert!(first <= Duration::from_millis(25), "{first:?}");
        assert!(second <= Duration::from_millis(50), "{second:?}");
        first_waits.push(first);
    }
    // Full jitter: the waits are spread over the whole range.
    let min = first_waits.iter().min().unwrap();
    let max = first_waits.iter().max().unwrap();
    assert!(
        *min < Duration::from_millis(5) && *max > Duration::from_millis(20),
        "{min:?}..{max:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_same_seed_waits_the_same() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let up = Script::new(vec![
            Answer::Status(502),
            Answer::Status(502),
            Answer::Status(200),
        ]);
        let layer = RetryLayer::builder().seed(42).build().unwrap();
        layer.layer(up.service()).oneshot(get()).await.unwrap();
        let seen = up.seen();
        runs.push((seen[1].at - seen[0].at, seen[2].at - seen[1].at));
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_is_honoured_when_it_fits_the_deadline() {
    let up = Script::new(vec![
        Answer::StatusRetryAfter(503, "2"),
        Answer::Status(200),
    ]);
    let mut request = get();
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    let response = layer().layer(up.service()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = up.seen();
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_secs(2) && waited <= Duration::from_millis(2_025),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_past_the_deadline_returns_the_response_at_once() {
    let up = Script::new(vec![
        Answer::StatusRetryAfter(503, "5"),
        Answer::Status(200),
    ]);
    let mut request = get();
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(3)));
    let start = Instant::now();
    let response = layer().layer(up.service()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(up.calls(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_longer_than_allowed_returns_the_response() {
    let up = Script::new(vec![
        Answer::StatusRetryAfter(429, "30"),
        Answer::Status(200),
    ]);
    let start = Instant::now();
    let response = layer().layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(start.elapsed(), Duration::ZERO);

    let up = Script::new(vec![
        Answer::StatusRetryAfter(429, "30"),
        Answer::Status(200),
    ]);
    let patient = RetryLayer::builder()
        .max_retry_after(Duration::from_secs(60))
        .build()
        .unwrap();
    let response = patient.layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(up.seen()[1].at - up.seen()[0].at >= Duration::from_secs(30));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_malformed_retry_after_falls_back_to_the_backoff() {
    let up = Script::new(vec![
        Answer::StatusRetryAfter(503, "soon"),
        Answer::Status(200),
    ]);
    let response = layer().layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(up.seen()[1].at - up.seen()[0].at <= Duration::from_millis(25));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_attempt_starts_and_no_wait_ends_past_the_deadline() {
    // Long backoffs against short deadlines, many seeds: whatever the
    // draw, the layer gives up rather than wait past the deadline.
    for seed in 0..40u64 {
        let up = Script::new(vec![Answer::After(Duration::from_millis(30), 503)]);
        let layer = RetryLayer::builder()
            .seed(seed)
            .max_attempts(10)
            .backoff(Backoff::exponential(
                Duration::from_millis(100),
                Duration::from_millis(400),
            ))
            .build()
            .unwrap();
        let budget = Duration::from_millis(100 + seed * 10);
        let mut request = get();
        let deadline = Deadline::after(budget);
        request.extensions_mut().insert(deadline);
        let response = layer.layer(up.service()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 503);
        assert!(Instant::now() <= deadline.instant() + Duration::from_millis(30));
        for seen in up.seen() {
            assert!(
                seen.at < deadline.instant(),
                "seed {seed}: an attempt started after the deadline"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_empty_budget_returns_the_original_failure() {
    let budget = Budget::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap();
    let layer = RetryLayer::builder().budget(budget).build().unwrap();
    let up = Script::new(vec![Answer::Status(502), Answer::Status(200)]);
    let response = layer.layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(up.calls(), 1);

    let up = Script::new(vec![Answer::Refused, Answer::Status(200)]);
    let err = layer.layer(up.service()).oneshot(get()).await.unwrap_err();
    let io = err.downcast_ref::<io::Error>().expect("the original error");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_clone_and_every_service_of_a_layer_share_one_budget() {
    // Half a retry per request, no floor.
    let budget = Budget::builder()
        .ratio(0.5)
        .min_per_second(0)
        .build()
        .unwrap();
    let layer = RetryLayer::builder().budget(budget).build().unwrap();
    let handle = layer.handle();
    let up = Script::new(vec![Answer::Status(200)]);
    let a = layer.layer(up.service());
    let b = layer.layer(up.service());
    for _ in 0..3 {
        a.clone().oneshot(get()).await.unwrap();
        b.clone().oneshot(get()).await.unwrap();
    }
    assert_eq!(handle.snapshot().retries_available, 3);

    // Three failing requests: each deposits half a retry, so the six
    // earlier requests and these three pay for four retries.
    let failing = Script::new(vec![Answer::Status(502)]);
    let c = layer.layer(failing.service());
    for _ in 0..3 {
        c.clone().oneshot(get()).await.unwrap();
    }
    // 7 units after the first deposit: 3 + 3 attempts for the first two
    // requests, then one unit left, less than a retry, for the third.
    assert_eq!(failing.calls(), 3 + 3 + 1);
    assert_eq!(handle.snapshot().retries_available, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_attempt_lists_the_endpoints_already_tried() {
    let up = Script::new(vec![
        Answer::RefusedOn(1),
        Answer::StatusFrom(502, 2),
        Answer::StatusFrom(200, 3),
    ]);
    let response = layer().layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    let tried: Vec<Vec<Endpoint>> = up
        .seen()
        .iter()
        .map(|s| s.attempt.tried().to_vec())
        .collect();
    assert_eq!(
        tried,
        [
            vec![],
            vec![Endpoint::new(addr(1))],
            vec![Endpoint::new(addr(1)), Endpoint::new(addr(2))]
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_endpoint_wrapper_is_taken_off_a_returned_error() {
    let up = Script::new(vec![Answer::RefusedOn(1)]);
    let err = layer()
        .layer(up.service())
        .oneshot(get())
        .await
        .unwrap_err();
    assert!(!err.is::<EndpointError>());
    assert_eq!(
        err.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(up.calls(), 3);
}

/// A retry sends what is left of the deadline header, and the whole head
/// otherwise. The layer keeps a request's head for later attempts without
/// the deadline header and `Deadline` when they are all it has (see
/// `copy_head`), and with everything otherwise: either way every attempt
/// gets the whole head, the deadline as it was and the header as it is now.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_sends_what_is_left_of_the_deadline_header_and_the_whole_head() {
    for (with_deadline, other_header, other_extension) in [
        (false, false, false),
        (true, false, false),
        (true, true, false),
        (true, false, true),
    ] {
        let up = Script::new(vec![
            Answer::After(Duration::from_millis(300), 502),
            Answer::Status(200),
        ]);
        let deadline = Deadline::after(Duration::from_secs(5));
        let mut request = get();
        request
            .headers_mut()
            .insert("x-request-timeout-ms", "1000".parse().unwrap());
        if with_deadline {
            request.extensions_mut().insert(deadline);
        }
        if other_header {
            request
                .headers_mut()
                .insert("x-other", "1".parse().unwrap());
        }
        if other_extension {
            request.extensions_mut().insert(7u8);
        }
        layer().layer(up.service()).oneshot(request).await.unwrap();
        let seen = up.seen();
        let case = format!("deadline {with_deadline}, other header {other_header}, other extension {other_extension}");
        assert_eq!(seen.len(), 2, "{case}");
        for attempt in &seen {
            assert_eq!(
                attempt.deadline,
                with_deadline.then_some(deadline),
                "{case}"
            );
            assert_eq!(attempt.other_header, other_header, "{case}");
        }
        assert_eq!(seen[0].timeout_header.as_deref(), Some("1000"), "{case}");
        let left: u64 = seen[1].timeout_header.as_deref().unwrap().parse().unwrap();
        let spent = (seen[1].at - seen[0].at).as_millis() as u64;
        assert_eq!(left, 1000 - spent, "{case}");
        assert!(left <= 700, "{case}");
    }
}

/// A deadline layer with a header name of its own: each retry sends what is
/// left of the budget in that header, never the first attempt's figure
/// (the next hop would believe it has more time than it has).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_refreshes_a_deadline_header_of_any_name() {
    let budgets = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let upstream = {
        let budgets = budgets.clone();
        service_fn(move |req: Request<ReplayBody<Body>>| {
            let budgets = budgets.clone();
            async move {
                let ms = req.headers()["x-budget-ms"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(!req.headers().contains_key("x-request-timeout-ms"));
                let n = {
                    let mut budgets = budgets.lock().unwrap();
                    budgets.push((Instant::now(), ms));
                    budgets.len()
                };
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut response = Response::new(());
                *response.status_mut() = if n < 3 {
                    http::StatusCode::BAD_GATEWAY
                } else {
                    http::StatusCode::OK
                };
                Ok::<_, BoxError>(response)
            }
        })
    };
    let deadline = tower_steady::deadline::DeadlineLayer::client()
        .timeout(Duration::from_secs(2))
        .margin(Duration::ZERO)
        .header_name(http::HeaderName::from_static("x-budget-ms"))
        .build()
        .unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(deadline)
        .layer(layer())
        .service(upstream);
    let response = svc.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let budgets = budgets.lock().unwrap().clone();
    assert_eq!(budgets.len(), 3);
    assert_eq!(budgets[0].1, 2000);
    for pair in budgets.windows(2) {
        let spent = (pair[1].0 - pair[0].0).as_millis() as u64;
        assert!(spent >= 200, "{budgets:?}");
        assert_eq!(pair[1].1, pair[0].1 - spent, "{budgets:?}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retried_response_says_how_many_attempts_and_how_long_they_waited() {
    let up = Script::new(vec![
        Answer::Status(502),
        Answer::Status(502),
        Answer::Status(200),
    ]);
    let start = Instant::now();
    let response = layer().layer(up.service()).oneshot(get()).await.unwrap();
    let elapsed = start.elapsed();
    let retried = *response.extensions().get::<Retried>().unwrap();
    assert_eq!(retried.attempts, 3);
    // Only the backoff took time; tokio's timer rounds each wait up to its
    // next millisecond.
    assert!(retried.backoff > Duration::ZERO, "{retried:?}");
    assert!(
        retried.backoff <= elapsed && elapsed <= retried.backoff + Duration::from_millis(2),
        "{retried:?} {elapsed:?}"
    );

    // The last failure, handed on after three attempts, says so too.
    let up = Script::new(vec![Answer::Status(503)]);
    let response = layer().layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.extensions().get::<Retried>().unwrap().attempts, 3);

    // A first attempt's answer carries nothing.
    let up = Script::new(vec![Answer::Status(200)]);
    let response = layer().layer(up.service()).oneshot(get()).await.unwrap();
    assert!(response.extensions().get::<Retried>().is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_get_is_hedged_and_the_first_success_wins() {
    let up = Script::new(vec![
        Answer::Hang,
        Answer::After(Duration::from_millis(10), 200),
    ]);
    let layer = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(50)))
        .build()
        .unwrap();
    let handle = layer.handle();
    let before = handle.snapshot().retries_available;
    let start = Instant::now();
    let response = layer.layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_millis(60));
    let seen = up.seen();
    assert!(seen[1].attempt.is_hedge());
    assert_eq!(seen[1].at - seen[0].at, Duration::from_millis(50));
    // The hedge drew from the budget.
    assert_eq!(handle.snapshot().retries_available, before - 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_losing_attempt_is_cancelled() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = service_fn(move |_req: Request<ReplayBody<Body>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let guard = DropFlag(flag.clone());
        async move {
            if n == 0 {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(Response::new(()))
        }
    });
    let layer = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(20)))
        .build()
        .unwrap();
    layer.layer(svc).oneshot(get()).await.unwrap();
    assert!(cancelled.load(Ordering::SeqCst));
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_post_is_never_hedged() {
    let up = Script::new(vec![Answer::After(Duration::from_millis(500), 200)]);
    let layer = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(50)))
        .build()
        .unwrap();
    let response = layer.layer(up.service()).oneshot(post("x")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(up.calls(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hedge_failure_waits_for_the_first_attempt() {
    let up = Script::new(vec![
        Answer::After(Duration::from_millis(100), 200),
        Answer::Status(502),
    ]);
    let layer = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(20)))
        .build()
        .unwrap();
    let start = Instant::now();
    let response = layer.layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(up.calls(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn percentile_hedging_starts_once_latencies_are_known() {
    let layer = RetryLayer::builder()
        .hedge(Hedge::percentile(0.9))
        .build()
        .unwrap();
    let handle = layer.handle();
    let fast = Script::new(vec![Answer::After(Duration::from_millis(10), 200)]);
    let svc = layer.layer(fast.service());
    for _ in 0..30 {
        svc.clone().oneshot(get()).await.unwrap();
    }
    assert_eq!(
        handle.snapshot().hedge_delay,
        None,
        "not before the period ends"
    );
    advance(Duration::from_secs(5)).await;
    let delay = handle.snapshot().hedge_delay.expect("known after a period");
    assert!(
        delay >= Duration::from_millis(10) && delay <= Duration::from_micros(12_500),
        "{delay:?}"
    );

    let slow = Script::new(vec![
        Answer::Hang,
        Answer::After(Duration::from_millis(10), 200),
    ]);
    let start = Instant::now();
    layer.layer(slow.service()).oneshot(get()).await.unwrap();
    assert_eq!(slow.calls(), 2);
    // The hedge timer wakes on the next whole millisecond.
    let elapsed = start.elapsed();
    let expected = delay + Duration::from_millis(10);
    assert!(
        elapsed >= expected && elapsed <= expected + Duration::from_millis(1),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_dropped_during_the_backoff_leaks_nothing() {
    let budget = Budget::builder()
        .ratio(0.0)
        .min_per_second(1)
        .build()
        .unwrap();
    let before = budget.available();
    let freed = Arc::new(AtomicBool::new(false));
    let up = Script::new(vec![Answer::Status(503)]);
    let mut svc = RetryLayer::builder()
        .budget(budget.clone())
        .backoff(Backoff::exponential(
            Duration::from_secs(1),
            Duration::from_secs(1),
        ))
        .build()
        .unwrap()
        .layer(tracked_upstream(up.clone()));
    let body = Tracked {
        chunk: Some(Bytes::from_owner(Owner(freed.clone()))),
    };
    let request = Request::put("http://upstream/x").body(body).unwrap();
    let mut future = tokio_test::task::spawn(svc.ready().await.unwrap().call(request));
    // The first attempt fails: the layer takes a retry and waits.
    while up.calls() == 0 {
        assert!(future.poll().is_pending());
        tokio::task::yield_now().await;
    }
    assert!(future.poll().is_pending());
    assert_eq!(budget.available(), before - 1);
    assert!(
        !freed.load(Ordering::SeqCst),
        "the body is kept for the retry"
    );
    drop(future);
    // The retry that was never sent goes back to the budget, and the body
    // kept for it is freed.
    assert_eq!(budget.available(), before);
    assert!(freed.load(Ordering::SeqCst));
}

/// Owns a chunk's memory and records when it is freed.
struct Owner(Arc<AtomicBool>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        b"payload"
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A body of one chunk.
struct Tracked {
    chunk: Option<Bytes>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.chunk.take().map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunk.is_none()
    }
}

fn tracked_upstream(
    up: Script,
) -> impl Service<
    Request<ReplayBody<Tracked>>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<Response<()>, BoxError>> + Send,
> + Clone {
    service_fn(move |req: Request<ReplayBody<Tracked>>| {
        let up = up.clone();
        async move {
            let attempt = Attempt::of_or_first(&req);
            // Read the body, keep none of it.
            let body = match req.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => return Err(e),
            };
            assert_eq!(body, "payload");
            drop(body);
            up.seen.lock().unwrap().push(Seen {
                at: Instant::now(),
                attempt,
                body: Bytes::new(),
                timeout_header: None,
                deadline: None,
                other_header: false,
            });
            Ok(Response::builder().status(503).body(()).unwrap())
        }
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_error_making_the_service_ready_for_a_retry_is_returned() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_req: Request<ReplayBody<Body>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(Response::builder().status(503).body(()).unwrap()) }
    });
    // Ready once, then broken.
    let svc = tower::ServiceBuilder::new()
        .layer(layer())
        .layer_fn(|s| ReadyOnce { inner: s, ready: 0 })
        .service(inner);
    let err = svc.oneshot(get()).await.unwrap_err();
    assert_eq!(err.to_string(), "service broke");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[derive(Clone)]
struct ReadyOnce<S> {
    inner: S,
    ready: usize,
}

impl<S, R> Service<R> for ReadyOnce<S>
where
    S: Service<R, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.ready += 1;
        if self.ready > 1 {
            return std::task::Poll::Ready(Err("service broke".into()));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.inner.call(request)
    }
}

#[test]
fn bad_settings_name_their_field() {
    let field = |r: Result<RetryLayer, tower_steady::ConfigError>| r.unwrap_err().field();
    assert_eq!(
        field(RetryLayer::builder().max_attempts(0).build()),
        "retry.max_attempts"
    );
    assert_eq!(
        field(RetryLayer::builder().max_attempts(11).build()),
        "retry.max_attempts"
    );
    assert_eq!(
        field(
            RetryLayer::builder()
                .backoff(Backoff::exponential(
                    Duration::from_secs(2),
                    Duration::from_secs(1)
                ))
                .build()
        ),
        "retry.backoff"
    );
    assert_eq!(
        field(RetryLayer::builder().hedge(Hedge::percentile(1.0)).build()),
        "retry.hedge"
    );
    assert_eq!(
        field(
            RetryLayer::builder()
                .hedge(Hedge::percentile(f64::NAN))
                .build()
        ),
        "retry.hedge"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_without_a_body_use_an_empty_replay() {
    let up = Script::new(vec![Answer::Status(502), Answer::Status(200)]);
    let svc = service_fn({
        let up = up.clone();
        move |req: Request<ReplayBody<Empty<Bytes>>>| {
            let up = up.clone();
            async move {
                assert!(http_body::Body::is_end_stream(req.body()));
                let n = up.seen.lock().unwrap().len();
                up.seen.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    attempt: Attempt::of_or_first(&req),
                    body: Bytes::new(),
                    timeout_header: None,
                    deadline: None,
                    other_header: false,
                });
                respond(if n == 0 {
                    Answer::Status(502)
                } else {
                    Answer::Status(200)
                })
                .await
            }
        }
    });
    let request = Request::builder()
        .method(Method::DELETE)
        .uri("http://upstream/x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = layer().layer(svc).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// The first retry of a request that failed on a known endpoint goes (to
/// another endpoint, below) at once; the second backs off, and so does a
/// first retry whose endpoint is unknown (it may go back to the same one).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_first_retry_elsewhere_goes_at_once_and_later_ones_back_off() {
    let up = Script::new(vec![
        Answer::StatusFrom(502, 1),
        Answer::StatusFrom(502, 2),
        Answer::StatusFrom(200, 3),
    ]);
    let response = layer().layer(up.service()).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[1].at - seen[0].at,
        Duration::ZERO,
        "no backoff elsewhere"
    );
    let second = seen[2].at - seen[1].at;
    assert!(second > Duration::ZERO, "{second:?}");
    assert!(second <= Backoff::default().ceiling(2), "{second:?}");
    // The only wait scheduled was the second's (the timer rounds it up to
    // its next millisecond).
    let retried = *response.extensions().get::<Retried>().unwrap();
    assert!(retried.backoff <= second && second <= retried.backoff + Duration::from_millis(1));

    // No endpoint reported: the first retry backs off too.
    let up = Script::new(vec![Answer::Status(502), Answer::Status(200)]);
    layer().layer(up.service()).oneshot(get()).await.unwrap();
    let seen = up.seen();
    let first = seen[1].at - seen[0].at;
    assert!(first > Duration::ZERO, "{first:?}");
    assert!(first <= Backoff::default().ceiling(1), "{first:?}");
}
