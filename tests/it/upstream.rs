//! Behaviour of `Upstreams`, under paused time, over simulated endpoints.
#![cfg(feature = "upstream")]

use crate::common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::Feed;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tokio::sync::mpsc;
use tokio::time::{advance, sleep};
use tower::discover::Change;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_steady::classify::{Classify, HttpClassifier};
use tower_steady::http::EndpointError;
use tower_steady::http::ErrorResponseLayer;
use tower_steady::retry::{Backoff, RetryLayer};
use tower_steady::upstream::{
    EndpointState, HealthCheck, HttpGet, NoHealthyUpstream, Upstreams, UpstreamsBuilder,
};
use tower_steady::BoxError;

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 8000 + n))
}

fn addrs(n: u16) -> Vec<SocketAddr> {
    (0..n).map(addr).collect()
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Up,
    Status(u16),
    Refuse,
    /// Answers after this long.
    Slow(Duration),
    /// Answers 503 to the next n requests, then 200.
    Flaky(u32),
}

/// A simulated fleet: each endpoint answers as its mode says, and counts
/// what it got.
#[derive(Clone, Debug, Default)]
struct Fleet {
    modes: Arc<Mutex<HashMap<SocketAddr, Mode>>>,
    /// `/healthz` answers 200 unless set to false.
    healthz: Arc<Mutex<HashMap<SocketAddr, bool>>>,
    hits: Arc<Mutex<HashMap<SocketAddr, u32>>>,
    checks: Arc<Mutex<HashMap<SocketAddr, u32>>>,
}

impl Fleet {
    fn set(&self, at: SocketAddr, mode: Mode) {
        self.modes.lock().unwrap().insert(at, mode);
    }

    fn set_healthz(&self, at: SocketAddr, up: bool) {
        self.healthz.lock().unwrap().insert(at, up);
    }

    fn hits(&self, at: SocketAddr) -> u32 {
        self.hits.lock().unwrap().get(&at).copied().unwrap_or(0)
    }

    fn checks(&self, at: SocketAddr) -> u32 {
        self.checks.lock().unwrap().get(&at).copied().unwrap_or(0)
    }

    fn reset_hits(&self) {
        self.hits.lock().unwrap().clear();
    }

    fn node(&self, at: SocketAddr) -> Node {
        Node {
            at,
            fleet: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
struct Node {
    at: SocketAddr,
    fleet: Fleet,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Empty<Bytes>>, BoxError>> + Send>>;

impl<B> Service<Request<B>> for Node {
    type Response = Response<Empty<Bytes>>;
    type Error = BoxError;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Answer {
        let status = |code: u16| {
            let mut response = Response::new(Empty::new());
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            response
        };
        if request.uri().path() == "/healthz" {
            *self
                .fleet
                .checks
                .lock()
                .unwrap()
                .entry(self.at)
                .or_default() += 1;
            let up = self.fleet.healthz.lock().unwrap().get(&self.at).copied();
            let code = if up.unwrap_or(true) { 200 } else { 503 };
            return Box::pin(async move { Ok(status(code)) });
        }
        *self.fleet.hits.lock().unwrap().entry(self.at).or_default() += 1;
        let mode = {
            let mut modes = self.fleet.modes.lock().unwrap();
            let mode = modes.get(&self.at).copied();
            if let Some(Mode::Flaky(n)) = mode {
                let next = if n > 1 { Mode::Flaky(n - 1) } else { Mode::Up };
                modes.insert(self.at, next);
            }
            mode
        };
        Box::pin(async move {
            match mode.unwrap_or(Mode::Up) {
                Mode::Up => Ok(status(200)),
                Mode::Status(code) => Ok(status(code)),
                Mode::Refuse => Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
                Mode::Flaky(_) => Ok(status(503)),
                Mode::Slow(latency) => {
                    sleep(latency).await;
                    Ok(status(200))
                }
            }
        })
    }
}

/// The builder every test starts from: exact ejection times.
fn builder() -> UpstreamsBuilder {
    Upstreams::builder().seed(7).ejection_jitter(0.0)
}

type Req = Request<Empty<Bytes>>;

fn get() -> Req {
    Request::get("/").body(Empty::new()).unwrap()
}

/// Waits for `service` and sends it `request` (the endpoints take any
/// body, so the request type is named here).
async fn call<S: Service<Req>>(service: &mut S, request: Req) -> Result<S::Response, S::Error> {
    service.ready().await?.call(request).await
}

/// Sends `request` and returns its future without awaiting it.
async fn start<S: Service<Req>>(service: &mut S, request: Req) -> S::Future
where
    S::Error: std::fmt::Debug,
{
    service.ready().await.unwrap().call(request)
}

async fn send(service: &mut Upstreams<Node>) -> Result<StatusCode, BoxError> {
    call(service, get()).await.map(|r| r.status())
}

/// Sends `n` requests one after the other, `gap` apart.
async fn send_n(
    service: &mut Upstreams<Node>,
    n: usize,
    gap: Duration,
) -> Vec<Result<StatusCode, BoxError>> {
    let mut results = Vec::with_capacity(n);
    for _ in 0..n {
        results.push(send(service).await);
        advance(gap).await;
    }
    results
}

fn state(service: &Upstreams<Node>, at: SocketAddr) -> EndpointState {
    service.handle().endpoint(at).unwrap().state
}

/// The time left of `at`'s ejection, if it is ejected.
fn ejected_for(service: &Upstreams<Node>, at: SocketAddr) -> Option<Duration> {
    service.handle().endpoint(at).unwrap().ejected_for
}

const GAP: Duration = Duration::from_millis(10);

/// `builder` over `n` endpoints, the first answering as `mode`, and
/// requests sent (no time passing) until that one is ejected.
async fn first_ejected(builder: UpstreamsBuilder, n: u16, mode: Mode) -> (Fleet, Upstreams<Node>) {
    let fleet = Fleet::default();
    fleet.set(addr(0), mode);
    let mut service = builder.build(addrs(n), |a| fleet.node(a)).unwrap();
    for _ in 0..100 {
        if state(&service, addr(0)) == EndpointState::Ejected {
            return (fleet, service);
        }
        let _ = send(&mut service).await;
    }
    panic!("never ejected: {:?}", service.handle().snapshot());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ejects_after_five_consecutive_gateway_failures() {
    let fleet = Fleet::default();
    fleet.set(addr(1), Mode::Status(502));
    let mut service = builder().build(addrs(3), |a| fleet.node(a)).unwrap();

    send_n(&mut service, 300, GAP).await;

    // Exactly five 502s reached it, then it was taken out.
    assert_eq!(fleet.hits(addr(1)), 5);
    let snapshot = service.handle().endpoint(addr(1)).unwrap();
    assert_eq!(snapshot.state, EndpointState::Ejected);
    assert_eq!(snapshot.ejections, 1);
    let left = snapshot.ejected_for.unwrap();
    assert!(
        left <= Duration::from_secs(30) && left > Duration::from_secs(26),
        "{left:?}"
    );
    assert_eq!(service.handle().healthy(), 2);
    assert_eq!(fleet.hits(addr(0)) + fleet.hits(addr(2)), 295);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_last_endpoint_taking_requests_is_not_ejected_for_its_answers() {
    // A set of one answering 502, twenty times in a row: every request
    // still reaches it (its answers are the best the set has), and it
    // stays in.
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Status(502));
    let mut service = builder().build([addr(0)], |a| fleet.node(a)).unwrap();
    let results = send_n(&mut service, 20, GAP).await;
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(StatusCode::BAD_GATEWAY))));
    assert_eq!(fleet.hits(addr(0)), 20);
    assert_eq!(state(&service, addr(0)), EndpointState::Healthy);
    // Timeouts and resets are answers of a kind too; refused connections
    // are not: the process is not there, and the set says so at once.
    fleet.set(addr(0), Mode::Refuse);
    send_n(&mut service, 5, GAP).await;
    assert_eq!(state(&service, addr(0)), EndpointState::Ejected);
    let error = send(&mut service).await.unwrap_err();
    assert!(error.is::<NoHealthyUpstream>(), "{error}");

    // Two endpoints, both answering 503, any number ejectable: the first
    // to fail five times in a row goes out, the other stays and takes
    // every request.
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Status(503));
    fleet.set(addr(1), Mode::Status(503));
    let mut service = builder()
        .max_ejected_ratio(1.0)
        .build(addrs(2), |a| fleet.node(a))
        .unwrap();
    send_n(&mut service, 40, GAP).await;
    assert_eq!(service.handle().healthy(), 1);
    fleet.reset_hits();
    let results = send_n(&mut service, 20, GAP).await;
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(StatusCode::SERVICE_UNAVAILABLE))));
    assert_eq!(fleet.hits(addr(0)) + fleet.hits(addr(1)), 20);
    assert_eq!(service.handle().healthy(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refused_connections_and_timeouts_count_but_an_answer_ends_the_run() {
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Refuse);
    let mut service = builder().build([addr(0)], |a| fleet.node(a)).unwrap();
    send_n(&mut service, 4, GAP).await;
    // A 500 is an answer: the endpoint is up, if broken. The run starts
    // over.
    fleet.set(addr(0), Mode::Status(500));
    send_n(&mut service, 1, GAP).await;
    fleet.set(addr(0), Mode::Refuse);
    send_n(&mut service, 4, GAP).await;
    assert_eq!(state(&service, addr(0)), EndpointState::Healthy);
    send_n(&mut service, 1, GAP).await;
    assert_eq!(state(&service, addr(0)), EndpointState::Ejected);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_ejection_lasts_longer_up_to_the_cap() {
    // Refused connections, with the unreachable ejection as long as the
    // base one: the multiplier and the cap are the same for both.
    let builder = builder().unreachable_ejection(Duration::from_secs(30));
    let (fleet, mut service) = first_ejected(builder, 3, Mode::Refuse).await;
    let mut durations = Vec::new();
    for _ in 0..12 {
        let left = ejected_for(&service, addr(0)).unwrap();
        durations.push(left.as_secs_f64().round() as u64);
        // When the ejection is over, the next request is its probe, and
        // fails.
        advance(left).await;
        let before = fleet.hits(addr(0));
        send(&mut service).await.unwrap_err();
        assert_eq!(fleet.hits(addr(0)), before + 1, "the probe went to it");
        assert_eq!(state(&service, addr(0)), EndpointState::Ejected);
    }
    assert_eq!(
        durations,
        [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
    );
    assert_eq!(service.handle().endpoint(addr(0)).unwrap().ejections, 13);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_healthy_spell_shortens_the_next_ejection() {
    let builder = builder()
        .slow_start(Duration::ZERO)
        .unreachable_ejection(Duration::from_secs(30));
    let (fleet, mut service) = first_ejected(builder, 3, Mode::Refuse).await;
    // Second ejection: 60 s.
    advance(Duration::from_secs(30)).await;
    send(&mut service).await.unwrap_err();
    assert_eq!(
        ejected_for(&service, addr(0)),
        Some(Duration::from_secs(60))
    );
    // It recovers, is probed back in and stays healthy for 20 s (two
    // intervals): the multiplier falls from 2 to 0, so the next ejection is
    // a first one again.
    fleet.set(addr(0), Mode::Up);
    advance(Duration::from_secs(60)).await;
    send(&mut service).await.unwrap();
    assert_eq!(state(&service, addr(0)), EndpointState::Healthy);
    advance(Duration::from_secs(20)).await;
    fleet.set(addr(0), Mode::Refuse);
    send_n(&mut service, 50, GAP).await;
    let left = ejected_for(&service, addr(0)).unwrap();
    assert!(
        left <= Duration::from_secs(30) && left > Duration::from_secs(29),
        "{left:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn at_most_a_tenth_of_the_set_is_ejected_but_always_one() {
    // Three endpoints, two failing: one may be ejected (a tenth of three
    // is less than one, and one is always allowed).
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Status(503));
    fleet.set(addr(1), Mode::Status(503));
    let mut service = builder().build(addrs(3), |a| fleet.node(a)).unwrap();
    send_n(&mut service, 200, GAP).await;
    let ejected = |service: &Upstreams<Node>| {
        service
            .handle()
            .snapshot()
            .iter()
            .filter(|e| e.state == EndpointState::Ejected)
            .count()
    };
    assert_eq!(ejected(&service), 1);
    assert_eq!(service.handle().healthy(), 2);

    // Twenty endpoints, five failing: two may be.
    let fleet = Fleet::default();
    for n in 0..5 {
        fleet.set(addr(n), Mode::Status(503));
    }
    let mut service = builder().build(addrs(20), |a| fleet.node(a)).unwrap();
    send_n(&mut service, 1000, GAP).await;
    assert_eq!(ejected(&service), 2);
}

/// Four endpoints, the first `failing` answering 503, any number of them
/// ejectable: each endpoint's requests out of 400, once the failing ones
/// are out.
async fn hits_with_failing(failing: u16) -> Vec<u32> {
    let fleet = Fleet::default();
    for n in 0..failing {
        fleet.set(addr(n), Mode::Status(503));
    }
    let mut service = builder()
        .max_ejected_ratio(1.0)
        .build(addrs(4), |a| fleet.node(a))
        .unwrap();
    send_n(&mut service, 200, GAP).await;
    assert_eq!(service.handle().healthy(), usize::from(4 - failing));
    fleet.reset_hits();
    send_n(&mut service, 400, GAP).await;
    (0..4).map(|n| fleet.hits(addr(n))).collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn below_half_healthy_the_whole_set_takes_requests() {
    // Three of four ejected: one healthy endpoint cannot carry the load,
    // so balance over all four.
    let hits = hits_with_failing(3).await;
    for (n, hits) in hits.iter().enumerate() {
        assert!((70..130).contains(hits), "endpoint {n}: {hits} of 400");
    }
    // At half healthy, panic mode is off: the two ejected get nothing.
    let hits = hits_with_failing(2).await;
    assert_eq!(hits[0] + hits[1], 0, "{hits:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_every_endpoint_ejected_requests_get_no_healthy_upstream_until_the_probe() {
    let builder = builder().unreachable_ejection(Duration::from_secs(30));
    let (fleet, mut service) = first_ejected(builder, 1, Mode::Refuse).await;
    advance(Duration::from_secs(10)).await;
    let error = send(&mut service).await.unwrap_err();
    let none = error.downcast_ref::<NoHealthyUpstream>().unwrap();
    assert_eq!(none.retry_after(), Duration::from_secs(20));
    let outcome = HttpClassifier::new().classify_error(&*error);
    assert_eq!(
        outcome.safety(),
        Some(tower_steady::classify::RetrySafety::NotSent)
    );
    assert_eq!(
        HttpClassifier::new().retry_after(&*error),
        Some(Duration::from_secs(20))
    );
    assert_eq!(fleet.hits(addr(0)), 5, "nothing was sent");

    // At the edge, ErrorResponseLayer answers 503 with the time to the probe.
    let mut edge = ErrorResponseLayer::new().layer(service.clone());
    let response = call(&mut edge, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "20");

    // The probe goes out at 30 s.
    fleet.set(addr(0), Mode::Up);
    advance(Duration::from_secs(20)).await;
    assert_eq!(send(&mut service).await.unwrap(), StatusCode::OK);
    assert_eq!(state(&service, addr(0)), EndpointState::SlowStart);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_probe_then_slow_start_ramps_the_share_up() {
    let (fleet, mut service) = first_ejected(builder(), 3, Mode::Status(502)).await;

    // Recovered; at the end of the ejection one request probes it.
    fleet.set(addr(0), Mode::Up);
    advance(Duration::from_secs(30)).await;
    fleet.reset_hits();
    send(&mut service).await.unwrap();
    assert_eq!(fleet.hits(addr(0)), 1, "the first request is the probe");
    assert_eq!(state(&service, addr(0)), EndpointState::SlowStart);

    // Its share over each fifth of the 30 s window, 300 requests each.
    let mut shares = Vec::new();
    for _ in 0..7 {
        fleet.reset_hits();
        send_n(&mut service, 300, Duration::from_millis(20)).await;
        shares.push(fleet.hits(addr(0)));
    }
    // A full share is a third (100). It starts near a tenth of that and
    // grows with the window.
    assert!(shares[0] < 30, "{shares:?}");
    for pair in shares[..5].windows(2) {
        assert!(pair[0] < pair[1], "{shares:?}");
    }
    assert!((85..=115).contains(&shares[6]), "{shares:?}");
    assert_eq!(state(&service, addr(0)), EndpointState::Healthy);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_probe_lets_the_next_request_probe() {
    let (fleet, mut service) = first_ejected(builder(), 1, Mode::Refuse).await;
    advance(Duration::from_secs(30)).await;
    fleet.set(addr(0), Mode::Slow(Duration::from_secs(5)));

    let probe = start(&mut service, get()).await;
    assert_eq!(state(&service, addr(0)), EndpointState::Probing);
    // Only one probe: the next request finds nothing to send to.
    let error = send(&mut service).await.unwrap_err();
    assert!(error.is::<NoHealthyUpstream>());
    drop(probe);

    assert_eq!(state(&service, addr(0)), EndpointState::Ejected);
    fleet.set(addr(0), Mode::Up);
    assert_eq!(send(&mut service).await.unwrap(), StatusCode::OK);
    assert_eq!(state(&service, addr(0)), EndpointState::SlowStart);
}

/// Sends 1200 requests 10 ms apart (12 s: one success-rate interval and a
/// bit), `flaky` failing every other one with a 500 (an answer, so never
/// five gateway failures in a row).
async fn half_failing(service: &mut Upstreams<Node>, fleet: &Fleet, flaky: SocketAddr) {
    for i in 0..1200 {
        let mode = if i % 2 == 0 {
            Mode::Status(500)
        } else {
            Mode::Up
        };
        fleet.set(flaky, mode);
        send(service).await.unwrap();
        advance(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn success_rate_outliers_are_ejected() {
    // Six endpoints, each with more than 100 requests in the interval: the
    // one at half success is far below the others.
    let fleet = Fleet::default();
    let flaky = addr(5);
    let mut service = builder().build(addrs(6), |a| fleet.node(a)).unwrap();
    half_failing(&mut service, &fleet, flaky).await;
    assert_eq!(state(&service, flaky), EndpointState::Ejected);
    let rate = service
        .handle()
        .endpoint(flaky)
        .unwrap()
        .success_rate
        .unwrap();
    assert!((0.4..0.6).contains(&rate), "{rate}");
    for n in 0..5 {
        assert_eq!(state(&service, addr(n)), EndpointState::Healthy);
    }

    // With fewer than five endpoints there is no comparison.
    let fleet = Fleet::default();
    let mut service = builder().build(addrs(4), |a| fleet.node(a)).unwrap();
    half_failing(&mut service, &fleet, addr(3)).await;
    assert_eq!(state(&service, addr(3)), EndpointState::Healthy);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_less_loaded_of_two_gets_the_request() {
    // One endpoint answers in 200 ms, the others in 10 ms: peak EWMA sees
    // it, and with requests overlapping its in-flight count too.
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Slow(Duration::from_millis(200)));
    for n in 1..4 {
        fleet.set(addr(n), Mode::Slow(Duration::from_millis(10)));
    }
    let service = builder().build(addrs(4), |a| fleet.node(a)).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let mut service = service.clone();
        tasks.push(tokio::spawn(async move { send(&mut service).await }));
        advance(Duration::from_millis(5)).await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let slow = fleet.hits(addr(0));
    // Uniform would be 100; p2c alone, without a load signal, would be
    // about as much.
    assert!(slow < 40, "slow endpoint got {slow} of 400");
    let latency = service.handle().endpoint(addr(0)).unwrap().latency;
    assert!(latency > Duration::from_millis(100), "{latency:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_goes_to_an_endpoint_not_yet_tried() {
    // One endpoint answers 503 to everything and is never ejected (a high
    // threshold). A GET that lands on it first is retried once: if the
    // retry went back, the request would fail.
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Status(503));
    let upstreams = builder()
        .consecutive_failures(1_000)
        .build(addrs(3), |a| fleet.node(a))
        .unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::none())
        .seed(3)
        .build()
        .unwrap();
    let mut service = retry.layer(upstreams);
    let mut ok = 0;
    for _ in 0..300 {
        let response = call(&mut service, get()).await.unwrap();
        if response.status() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 300);
    assert!(
        fleet.hits(addr(0)) > 50,
        "the bad endpoint was tried first often"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_a_retry_layer_errors_come_back_as_they_are() {
    // Used alone, the balancer returns its endpoint's error itself: a
    // caller's `downcast_ref` of the connector's error type works.
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Refuse);
    let mut service = builder().build([addr(0)], |a| fleet.node(a)).unwrap();
    let error = send(&mut service).await.unwrap_err();
    assert!(!error.is::<EndpointError>(), "{error:?}");
    let io = error
        .downcast_ref::<io::Error>()
        .expect("the endpoint's error");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn under_a_retry_layer_a_failed_first_attempt_says_where_it_went() {
    // One of three endpoints refuses every connection and is never ejected.
    // The retry layer learns where the first attempt failed only from the
    // `EndpointError` around it: if that were missing, a third of the
    // retries would go back to the refusing endpoint and fail.
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Refuse);
    let upstreams = builder()
        .consecutive_failures(1_000)
        .build(addrs(3), |a| fleet.node(a))
        .unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::none())
        .seed(5)
        .build()
        .unwrap();
    let mut service = retry.layer(upstreams);
    let mut ok = 0;
    for _ in 0..300 {
        if call(&mut service, get()).await.is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 300);
    assert!(
        fleet.hits(addr(0)) > 50,
        "the refusing endpoint was tried first often"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_goes_back_when_every_healthy_endpoint_was_tried() {
    // One endpoint, failing its first request: the retry has nowhere else
    // to go, so it goes back.
    let fleet = Fleet::default();
    fleet.set(addr(0), Mode::Flaky(1));
    let upstreams = builder().build([addr(0)], |a| fleet.node(a)).unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::none())
        .build()
        .unwrap();
    let mut service = retry.layer(upstreams);
    let response = call(&mut service, get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(fleet.hits(addr(0)), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn active_checks_take_an_endpoint_out_after_three_failures_and_back_after_two_passes() {
    let fleet = Fleet::default();
    let service = builder()
        .health_check(HealthCheck::<HttpGet<Empty<Bytes>>>::http_get("/healthz"))
        .build(addrs(3), |a| fleet.node(a))
        .unwrap();
    // Let every endpoint's checks start (they are spread over 2 s).
    advance(Duration::from_secs(2)).await;
    sleep(Duration::from_millis(1)).await;
    assert!(fleet.checks(addr(1)) >= 1);
    assert_eq!(state(&service, addr(1)), EndpointState::Healthy);

    fleet.set_healthz(addr(1), false);
    // Two failures are not enough.
    sleep(Duration::from_secs(4)).await;
    assert_eq!(state(&service, addr(1)), EndpointState::Healthy);
    sleep(Duration::from_secs(2)).await;
    let snapshot = service.handle().endpoint(addr(1)).unwrap();
    assert_eq!(snapshot.state, EndpointState::Ejected);
    assert!(snapshot.checks_failing);

    // No request goes to it now.
    fleet.reset_hits();
    let mut sender = service.clone();
    send_n(&mut sender, 100, Duration::ZERO).await;
    assert_eq!(fleet.hits(addr(1)), 0);

    fleet.set_healthz(addr(1), true);
    sleep(Duration::from_secs(2)).await;
    assert_eq!(
        state(&service, addr(1)),
        EndpointState::Ejected,
        "one pass is not enough"
    );
    sleep(Duration::from_secs(2)).await;
    let snapshot = service.handle().endpoint(addr(1)).unwrap();
    assert_eq!(snapshot.state, EndpointState::SlowStart);
    assert!(!snapshot.checks_failing);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_check_service_and_timeouts_decide_health_too() {
    // A user check that hangs for the endpoint at port 1: a check that does
    // not answer within its timeout fails.
    let check = service_fn(|at: SocketAddr| async move {
        if at == addr(1) {
            sleep(Duration::from_secs(60)).await;
        }
        Ok::<_, Infallible>(())
    });
    let fleet = Fleet::default();
    let service = builder()
        .health_check(
            HealthCheck::service(check)
                .fall(2)
                .interval(Duration::from_secs(1)),
        )
        .build(addrs(2), |a| fleet.node(a))
        .unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(state(&service, addr(1)), EndpointState::Ejected);
    assert_eq!(state(&service, addr(0)), EndpointState::Healthy);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dynamic_set_is_followed_and_removed_endpoints_finish_their_requests() {
    let fleet = Fleet::default();
    let (feed, changes) = mpsc::unbounded_channel();
    feed.send(Change::Insert(addr(0), fleet.node(addr(0))))
        .unwrap();
    feed.send(Change::Insert(addr(1), fleet.node(addr(1))))
        .unwrap();
    let mut service = builder().build_discover(Feed(changes)).unwrap();
    // The changes already sent are the first set: healthy at once.
    assert_eq!(service.addrs(), [addr(0), addr(1)]);
    assert_eq!(service.handle().healthy(), 2);

    // A slow request in flight on endpoint 0 when it is removed.
    fleet.set(addr(0), Mode::Slow(Duration::from_secs(1)));
    fleet.set(addr(1), Mode::Slow(Duration::from_secs(1)));
    let mut in_flight = Vec::new();
    for _ in 0..10 {
        in_flight.push(start(&mut service, get()).await);
    }
    assert!(service.handle().endpoint(addr(0)).unwrap().in_flight > 0);
    feed.send(Change::Remove(addr(0))).unwrap();
    feed.send(Change::Insert(addr(2), fleet.node(addr(2))))
        .unwrap();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(service.addrs(), [addr(1), addr(2)]);
    assert_eq!(
        state(&service, addr(2)),
        EndpointState::SlowStart,
        "added endpoints ramp up"
    );
    for response in in_flight {
        assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    }

    fleet.reset_hits();
    send_n(&mut service, 50, Duration::ZERO).await;
    assert_eq!(fleet.hits(addr(0)), 0);
    assert_eq!(fleet.hits(addr(1)) + fleet.hits(addr(2)), 50);

    // Everything removed: nothing to send to.
    feed.send(Change::Remove(addr(1))).unwrap();
    feed.send(Change::Remove(addr(2))).unwrap();
    sleep(Duration::from_millis(1)).await;
    assert!(send(&mut service)
        .await
        .unwrap_err()
        .is::<NoHealthyUpstream>());
}

#[test]
fn bad_settings_are_refused_with_the_field() {
    let field =
        |result: Result<Upstreams<Node>, tower_steady::ConfigError>| result.unwrap_err().field();
    let fleet = Fleet::default();
    let make = |a| fleet.node(a);
    assert_eq!(
        field(builder().consecutive_failures(0).build(addrs(1), make)),
        "upstream.consecutive_failures"
    );
    assert_eq!(
        field(
            builder()
                .max_ejection(Duration::from_secs(1))
                .build(addrs(1), make)
        ),
        "upstream.max_ejection"
    );
    assert_eq!(
        field(builder().max_ejected_ratio(1.5).build(addrs(1), make)),
        "upstream.max_ejected_ratio"
    );
    assert_eq!(
        field(builder().panic_threshold(-0.1).build(addrs(1), make)),
        "upstream.panic_threshold"
    );
    assert_eq!(
        field(builder().interval(Duration::ZERO).build(addrs(1), make)),
        "upstream.interval"
    );
    assert_eq!(
        field(builder().slow_start_min_weight(0.0).build(addrs(1), make)),
        "upstream.slow_start_min_weight"
    );
    assert_eq!(
        field(
            builder()
                .health_check(HealthCheck::<HttpGet<Empty<Bytes>>>::http_get("healthz"))
                .build(addrs(1), make)
        ),
        "health_check.path"
    );
    assert_eq!(
        field(
            builder()
                .health_check(HealthCheck::<HttpGet<Empty<Bytes>>>::http_get("/h").rise(0))
                .build(addrs(1), make)
        ),
        "health_check.rise"
    );
}

/// An endpoint that refuses connections (a restart) is ejected for a
/// second, not thirty: the next request after that probes it, and once it
/// answers it takes requests again. While it keeps refusing, each
/// ejection is a second longer. One that answers badly gets the long one.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_replica_that_refuses_connections_is_probed_back_within_a_second() {
    let (fleet, mut service) = first_ejected(builder(), 3, Mode::Refuse).await;
    assert_eq!(ejected_for(&service, addr(0)), Some(Duration::from_secs(1)));
    // Still down at the first probe: 2 s, then 3 s.
    for expected in [2, 3] {
        advance(ejected_for(&service, addr(0)).unwrap()).await;
        send(&mut service).await.unwrap_err();
        assert_eq!(
            ejected_for(&service, addr(0)),
            Some(Duration::from_secs(expected))
        );
    }
    // Back up: the probe after the ejection re-admits it.
    fleet.set(addr(0), Mode::Up);
    advance(Duration::from_secs(3)).await;
    assert_eq!(send(&mut service).await.unwrap(), StatusCode::OK);
    assert_eq!(state(&service, addr(0)), EndpointState::SlowStart);

    // Answering 503s instead: the base ejection, 30 s.
    let (_, service) = first_ejected(builder(), 3, Mode::Status(503)).await;
    assert_eq!(
        ejected_for(&service, addr(0)),
        Some(Duration::from_secs(30))
    );
}

/// An endpoint's service that is ready only while its gate is open, or
/// whose readiness fails; it counts its calls.
#[derive(Clone, Default)]
struct Gated(Arc<Mutex<Gate>>);

#[derive(Default)]
struct Gate {
    open: bool,
    fail: bool,
    calls: usize,
    waiting: Vec<std::task::Waker>,
}

impl Gated {
    fn set(&self, open: bool, fail: bool) {
        let mut gate = self.0.lock().unwrap();
        gate.open = open;
        gate.fail = fail;
        gate.waiting.drain(..).for_each(std::task::Waker::wake);
    }

    fn calls(&self) -> usize {
        self.0.lock().unwrap().calls
    }
}

impl Service<Req> for Gated {
    type Response = Response<Empty<Bytes>>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut gate = self.0.lock().unwrap();
        if gate.fail {
            return Poll::Ready(Err(io::Error::other("not ready, ever").into()));
        }
        if gate.open {
            return Poll::Ready(Ok(()));
        }
        gate.waiting.push(cx.waker().clone());
        Poll::Pending
    }

    fn call(&mut self, _: Req) -> Self::Future {
        self.0.lock().unwrap().calls += 1;
        std::future::ready(Ok(Response::new(Empty::new())))
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_ready_endpoint_is_called_at_once_and_a_busy_one_is_waited_for() {
    let gated = Gated::default();
    let endpoint = gated.clone();
    let mut set = builder()
        .build(addrs(1), move |_| endpoint.clone())
        .unwrap();

    // Ready (an HTTP client always is): called from the set's `call`,
    // before its future is polled.
    gated.set(true, false);
    let future = start(&mut set, get()).await;
    assert_eq!(gated.calls(), 1);
    assert_eq!(future.await.unwrap().status(), StatusCode::OK);

    // Not ready: the request waits in the future, which asks again with
    // its own waker and is woken when the service is ready.
    gated.set(false, false);
    let mut waiting = tokio_test::task::spawn(start(&mut set, get()).await);
    assert_eq!(gated.calls(), 1);
    assert!(waiting.poll().is_pending());
    assert!(!waiting.is_woken());
    gated.set(true, false);
    assert!(waiting.is_woken());
    let Poll::Ready(response) = waiting.poll() else {
        panic!("ready once the service is");
    };
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_eq!(gated.calls(), 2);

    // Readiness that fails, at once or while waiting: the request fails
    // with the service's error and the service is not called.
    gated.set(false, true);
    let error = start(&mut set, get()).await.await.unwrap_err();
    assert_eq!(error.to_string(), "not ready, ever");
    gated.set(false, false);
    let mut waiting = tokio_test::task::spawn(start(&mut set, get()).await);
    assert!(waiting.poll().is_pending());
    gated.set(false, true);
    let Poll::Ready(result) = waiting.poll() else {
        panic!("failed once readiness fails");
    };
    assert_eq!(result.unwrap_err().to_string(), "not ready, ever");
    assert_eq!(gated.calls(), 2);
    assert_eq!(set.handle().endpoint(addr(0)).unwrap().in_flight, 0);
}
