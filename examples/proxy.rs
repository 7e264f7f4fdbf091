//! The main demo: a reverse proxy in front of flaky upstreams, bare and
//! with the presets, side by side.
//!
//! ```text
//! cargo run --release --example proxy
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 \
//!     --upstream http://127.0.0.1:9001 --upstream http://127.0.0.1:9002
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --upstream ... --bare
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --upstream ... --tower
//! ```
//!
//! With no arguments it runs four scenarios, each against three fresh
//! upstreams started in-process on loopback with faults injected by
//! [`ChaosLayer`]: transient 502s and connection resets, a replica that
//! crashes and restarts, a replica that hangs, and an overload. Each
//! scenario sends the same load (a fixed rate for a fixed time, never more
//! requests than that) through two reverse proxies on loopback and prints
//! what the callers got:
//!
//! * the **bare** proxy does what a hand-written proxy does: round robin
//!   over the upstreams, a `502` when the upstream cannot be reached or
//!   the connection breaks, a `504` after its own timeout;
//! * the **resilient** proxy is `Resilience::server()` around a handler
//!   that forwards through `Resilience::client()` over an `Upstreams` set,
//!   with a timeout on each attempt inside each replica's service.
//!
//! It ends in about 20 s. With `--listen` and `--upstream` it is a
//! real reverse proxy until Ctrl-C: the resilient one; or, as baselines
//! for measurements, the bare one (`--bare`), or the bare one inside
//! tower's own layers in the presets' places (`--tower`: load shedding, a
//! concurrency limit and a timeout around the handler; a retry with
//! tower's `TpsBudget`, load shedding, a concurrency limit and an attempt
//! timeout around the client).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tower::layer::util::Identity;
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_steady::chaos::{ChaosLayer, Fault};
use tower_steady::circuit_breaker::CircuitBreakerLayer;
use tower_steady::deadline::DeadlineLayer;
use tower_steady::fallback::StaleIfErrorLayer;
use tower_steady::http::ErrorResponseLayer;
use tower_steady::load_shed::{AdaptiveLimitLayer, ThrottleLayer};
use tower_steady::preset::{ClientLayer, ServerLayer};
use tower_steady::retry::{Attempt, ReplayBody, RetryLayer};
use tower_steady::timeout::TimeoutLayer;
use tower_steady::upstream::{SetAuthority, Upstreams};
use tower_steady::Resilience;

const HELP: &str = "\
usage: proxy [--listen ADDR --upstream URL [--upstream URL ...] [--bare | --tower]
              [--threads N]]
       proxy --upstream-server --listen ADDR [--fail-502 RATE]
             [--capacity N --work MS] [--cache-control VALUE]

  (no flags)        run the demo: four fault scenarios against in-process
                    upstreams on loopback, bare proxy and resilient proxy
                    side by side; exits by itself in about 20 s
  --listen ADDR     serve a reverse proxy on ADDR (e.g. 127.0.0.1:8080)
                    until Ctrl-C
  --upstream URL    an upstream to forward to (http://host:port); repeat
                    for each replica; a name is resolved once, at start
  --bare            no layers: round robin, 502 when an upstream cannot be
                    reached, 504 after 15 s (a baseline for measurements)
  --tower           the bare proxy inside tower's built-in layers (another
                    baseline): LoadShed, ConcurrencyLimit (1024) and a 15 s
                    Timeout around the handler; Retry (5xx and errors, at
                    most 2 retries, a TpsBudget), LoadShed, ConcurrencyLimit
                    (1024) and a 5 s Timeout around each attempt; 503 when
                    shed, 504 after a timeout, 502 when the upstream fails
  --threads N       with --listen: N threads, each a single-threaded runtime
                    with its own listener on ADDR (SO_REUSEPORT) and its own
                    connections to the upstreams, as nginx's worker
                    processes; the resilient proxy's presets are built once
                    and shared (one breaker, retry budget, throttle and
                    limit), each thread tracks the upstreams' health on its
                    own; without it, one multi-thread runtime shares
                    everything
  --report          with --listen, the resilient proxy only: print the
                    circuit breaker's and each endpoint's state changes to
                    stderr, as milliseconds since start, for the scenario
                    scripts
  --upstream-server instead of a proxy, serve a fast upstream on ADDR
                    (every path answers 200 with a short body), for benchmarks
  --fail-502 RATE   with --upstream-server: answer this fraction of
                    requests (0 to 1) with 502, injected by ChaosLayer
  --capacity N      with --upstream-server: work on at most N requests at
                    once; the rest wait in line (a queueing upstream)
  --work MS         with --capacity: each request takes MS milliseconds
  --cache-control VALUE
                    with --upstream-server: send this Cache-Control on
                    every answer (e.g. max-age=60), so copies can be stored
                    (an upstream server prints how many requests it got
                    when it stops on Ctrl-C or SIGINT)
  --help            this text

The resilient proxy is Resilience::server() (deadline, adaptive concurrency
limit, error responses) around Resilience::client() (deadline, stale-if-error,
retry, circuit breaker, throttle) over an Upstreams set with a 5 s timeout on
each attempt.";

/// What both proxies are: a service from the caller's request to the
/// answer, never failing.
#[tokio::main]
async fn main() -> ExitCode {
    match run_main().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("proxy: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run_main() -> Result<(), BoxError> {
    let mut listen = None;
    let mut upstreams = Vec::new();
    let mut kind = Kind::Resilient;
    let mut threads = None;
    let mut report = false;
    let mut upstream_server = false;
    let mut fail_502 = 0.0;
    let mut capacity = None;
    let mut work = Duration::ZERO;
    let mut cache_control = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = Some(args.next().ok_or("--listen needs an address")?),
            "--upstream" => upstreams.push(args.next().ok_or("--upstream needs a URL")?),
            "--bare" => kind = Kind::Bare,
            "--tower" => kind = Kind::Tower,
            "--threads" => {
                let n: usize = args.next().ok_or("--threads needs a number")?.parse()?;
                if n == 0 {
                    return Err("--threads must be at least 1".into());
                }
                threads = Some(n);
            }
            "--report" => report = true,
            "--upstream-server" => upstream_server = true,
            "--fail-502" => fail_502 = args.next().ok_or("--fail-502 needs a rate")?.parse()?,
            "--capacity" => {
                capacity = Some(args.next().ok_or("--capacity needs a number")?.parse()?);
            }
            "--work" => {
                let ms: u64 = args.next().ok_or("--work needs milliseconds")?.parse()?;
                work = Duration::from_millis(ms);
            }
            "--cache-control" => {
                let value = args.next().ok_or("--cache-control needs a value")?;
                cache_control = Some(http::HeaderValue::try_from(value)?);
            }
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n\n{HELP}").into()),
        }
    }
    if (fail_502 != 0.0 || capacity.is_some() || cache_control.is_some()) && !upstream_server {
        return Err(format!(
            "--fail-502, --capacity and --cache-control go with --upstream-server\n\n{HELP}"
        )
        .into());
    }
    if !work.is_zero() && capacity.is_none() {
        return Err(format!("--work goes with --capacity\n\n{HELP}").into());
    }
    let upstream = UpstreamSettings {
        fail_502,
        capacity: capacity.map(|slots| Capacity { slots, work }),
        cache_control,
    };
    match listen {
        Some(listen) if upstream_server => serve_upstream(&listen, upstream).await,
        None if upstream_server => {
            Err(format!("--upstream-server needs --listen\n\n{HELP}").into())
        }
        Some(_) if threads.is_some() && report => {
            Err(format!("--report goes without --threads\n\n{HELP}").into())
        }
        Some(_) if report && kind != Kind::Resilient => Err(format!(
            "--report goes with the resilient proxy, not --bare or --tower\n\n{HELP}"
        )
        .into()),
        Some(listen) => serve(&listen, &upstreams, kind, report, threads).await,
        None if upstreams.is_empty() && kind == Kind::Resilient => demo().await,
        None => Err(format!("--upstream, --bare and --tower need --listen\n\n{HELP}").into()),
    }
}

// ---------------------------------------------------------------------------
// The two proxies.

/// The caller's request, sent on to `upstream`: hop-by-hop headers dropped,
/// the path and query kept.
fn onward<B>(mut request: Request<B>) -> Request<B> {
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::HOST,
    ] {
        request.headers_mut().remove(name);
    }
    request.headers_mut().remove("keep-alive");
    request.headers_mut().remove("proxy-connection");
    request
}

/// What axum serves: either proxy, as one unboxed service.
trait App:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

fn answer(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// The bare and the tower proxies' choice of upstream: round robin, the
/// request's URI pointed at the next upstream (its path and query kept),
/// each attempt counted. The URI is rewritten in place, with each
/// upstream's authority made once, as the resilient proxy's `SetAuthority`
/// does: a `format!` of the whole URI for each request cost the baselines
/// about 3 300 instructions and 25 atomic operations a request (callgrind)
/// that the resilient proxy does not pay, which flattered it in every
/// comparison.
#[derive(Clone)]
struct RoundRobin {
    upstreams: Arc<[Authority]>,
    next: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
}

impl RoundRobin {
    fn new(upstreams: Vec<SocketAddr>, attempts: Arc<AtomicUsize>) -> Self {
        let authority = |addr: SocketAddr| {
            Authority::try_from(addr.to_string()).expect("a socket address is an authority")
        };
        Self {
            upstreams: upstreams.into_iter().map(authority).collect(),
            next: Arc::default(),
            attempts,
        }
    }

    /// Points `request` at the next upstream.
    fn point(&self, request: &mut Request<Body>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.upstreams[n % self.upstreams.len()].clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        *request.uri_mut() = Uri::from_parts(parts).expect("a scheme, an authority and a path");
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Round robin over `upstreams` with a plain hyper-util client: a 502 when
/// the request fails, a 504 after `timeout`.
fn bare_proxy(
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    attempts: Arc<AtomicUsize>,
) -> impl App {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let upstreams = RoundRobin::new(upstreams, attempts);
    service_fn(move |request: Request<Body>| {
        let mut request = onward(request);
        upstreams.point(&mut request);
        let call = client.request(request);
        async move {
            Ok(match tokio::time::timeout(timeout, call).await {
                Ok(Ok(response)) => response.map(Body::new),
                Ok(Err(_)) => answer(StatusCode::BAD_GATEWAY),
                Err(_) => answer(StatusCode::GATEWAY_TIMEOUT),
            })
        }
    })
}

/// The bare proxy inside tower's built-in layers, in the places the presets'
/// layers take in [`resilient_proxy`]: around the handler `LoadShed`,
/// `ConcurrencyLimit` (1024) and a `Timeout` of `deadline` (what a server
/// built from tower's layers has); around the client `Retry` (5xx answers
/// and errors, at most 2 retries, within a `TpsBudget` of 20% over 10 s
/// plus 10 a second: the retry budget's defaults here), `LoadShed`,
/// `ConcurrencyLimit` (1024) and a `Timeout` of `attempt_timeout` on each
/// attempt. The errors become answers at the top, as axum's
/// `HandleErrorLayer` would make them: `503` when shed, `504` after a
/// timeout, `502` when the upstream failed. A baseline for measurements:
/// what the same places cost with tower's own layers.
fn tower_proxy(
    upstreams: Vec<SocketAddr>,
    deadline: Duration,
    attempt_timeout: Duration,
    attempts: Arc<AtomicUsize>,
) -> impl App {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let upstreams = RoundRobin::new(upstreams, attempts);
    let forward = service_fn(move |mut request: Request<Body>| {
        upstreams.point(&mut request);
        let call = client.request(request);
        async move { Ok::<_, BoxError>(call.await?.map(Body::new)) }
    });
    let policy = TowerRetry {
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
        retries: 0,
    };
    ServiceBuilder::new()
        .layer_fn(|inner| Answered {
            inner,
            failed: None,
        })
        .load_shed()
        .concurrency_limit(1024)
        .timeout(deadline)
        .map_request(onward)
        .retry(policy)
        .load_shed()
        .concurrency_limit(1024)
        .timeout(attempt_timeout)
        .service(forward)
}

/// [`tower_proxy`]'s retry policy, as tower's documentation shows one:
/// answers below 500 pay into the budget; a 5xx or an error is retried at
/// once while the budget allows, twice at most. A request is copied only
/// when its body is empty (a proxy built from tower's layers has no
/// replayable body).
#[derive(Clone)]
struct TowerRetry {
    budget: Arc<TpsBudget>,
    retries: u32,
}

impl<E> tower::retry::Policy<Request<Body>, Response<Body>, E> for TowerRetry {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Body>,
        result: &mut Result<Response<Body>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) if !response.status().is_server_error() => {
                self.budget.deposit();
                None
            }
            _ if self.retries >= 2 || !self.budget.withdraw() => None,
            _ => {
                self.retries += 1;
                Some(std::future::ready(()))
            }
        }
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        if !http_body::Body::is_end_stream(request.body()) {
            return None;
        }
        let mut copy = Request::new(Body::empty());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

/// [`tower_proxy`]'s top: every error of the layers below as an answer
/// ([`tower_answer`]), as axum's `HandleErrorLayer` does, without its
/// boxed future and its clone of the service below for each request.
struct Answered<S> {
    inner: S,
    /// An error of the service below from `poll_ready`, answered at the
    /// next call (tower's `LoadShed`, at the top, reports none there).
    failed: Option<BoxError>,
}

impl<S: Clone> Clone for Answered<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            failed: None,
        }
    }
}

impl<S> Service<Request<Body>> for Answered<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = AnsweredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.failed.is_none() {
            if let Err(error) = std::task::ready!(self.inner.poll_ready(cx)) {
                self.failed = Some(error);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.failed.take() {
            Some(error) => AnsweredFuture {
                inner: None,
                failed: Some(error),
            },
            None => AnsweredFuture {
                inner: Some(self.inner.call(request)),
                failed: None,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Answered`]'s response future.
    struct AnsweredFuture<F> {
        #[pin]
        inner: Option<F>,
        failed: Option<BoxError>,
    }
}

impl<F> Future for AnsweredFuture<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.as_pin_mut() {
            Some(inner) => std::task::ready!(inner.poll(cx)),
            None => Err(this
                .failed
                .take()
                .unwrap_or_else(|| "polled after it answered".into())),
        };
        Poll::Ready(tower_answer(result))
    }
}

/// [`tower_proxy`]'s errors as answers: `503` for a request shed, `504`
/// after a timeout, `502` for anything else (the upstream failed).
fn tower_answer(result: Result<Response<Body>, BoxError>) -> Result<Response<Body>, Infallible> {
    Ok(match result {
        Ok(response) => response,
        Err(error) if error.is::<tower::load_shed::error::Overloaded>() => {
            answer(StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(error) if error.is::<tower::timeout::error::Elapsed>() => {
            answer(StatusCode::GATEWAY_TIMEOUT)
        }
        Err(_) => answer(StatusCode::BAD_GATEWAY),
    })
}

/// Which proxy `--listen` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `--bare`: [`bare_proxy`].
    Bare,
    /// `--tower`: [`tower_proxy`].
    Tower,
    /// The default: [`resilient_proxy`].
    Resilient,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::Tower => "tower",
            Kind::Resilient => "resilient",
        }
    }
}

/// The client preset as the resilient proxy builds it: every part but
/// the attempt timeout, which each replica's service has instead.
type ClientPreset = ClientLayer<
    ErrorResponseLayer,
    DeadlineLayer,
    StaleIfErrorLayer,
    RetryLayer,
    CircuitBreakerLayer,
    ThrottleLayer,
    Identity,
>;

/// The server preset as the resilient proxy builds it.
type ServerPreset = ServerLayer<ErrorResponseLayer, DeadlineLayer, AdaptiveLimitLayer, Identity>;

/// The two presets the resilient proxy lays over its upstreams, built
/// once. Every service made from a built layer, and every clone of one,
/// shares its state: the circuit breaker, the retry budget, the throttle
/// and the adaptive limit. With `--threads N` each thread lays the same
/// presets over its own `Upstreams` set and client, so the threads share
/// one breaker, one budget and one limit, as the tasks of one
/// multi-thread runtime do; each thread keeps its own connections and its
/// own view of each upstream's health, as nginx's workers do.
#[derive(Clone)]
struct Presets {
    client: ClientPreset,
    server: ServerPreset,
}

impl Presets {
    /// `deadline` is the whole request's budget.
    fn new(deadline: Duration) -> Result<Self, BoxError> {
        // The client's deadline reads no header: the server stack's has
        // read the caller's budget already, and the `Deadline` it set
        // bounds this one (a proxy with only the client stack reads it
        // here, with `read_headers(true)`).
        let client = Resilience::client()
            .deadline(DeadlineLayer::client().timeout(deadline))
            .build()?;
        let server = Resilience::server().build()?;
        Ok(Self { client, server })
    }
}

/// `Resilience::server()` around `Resilience::client()` (the `presets`)
/// over an `Upstreams` set of `upstreams`, each replica's service with its
/// own attempt timeout (so a hang counts against that replica). The two
/// stacks are one service, unboxed: the client stack's response body is
/// wrapped by the server stack's and turned into axum's `Body` once, at the
/// top.
fn resilient_proxy(
    presets: &Presets,
    upstreams: Vec<SocketAddr>,
    attempt_timeout: Duration,
    attempts: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
) -> Result<(impl App, Watch), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Body>>();
    let set = Upstreams::builder().build(upstreams, move |addr| {
        let (attempts, retries) = (attempts.clone(), retries.clone());
        ServiceBuilder::new()
            .map_request(move |request: Request<ReplayBody<Body>>| {
                attempts.fetch_add(1, Ordering::Relaxed);
                if Attempt::of(&request).is_some() {
                    retries.fetch_add(1, Ordering::Relaxed);
                }
                request
            })
            .layer(TimeoutLayer::new(attempt_timeout))
            .service(SetAuthority::new(addr, client.clone()))
    })?;
    let (layer, server) = (presets.client.clone(), presets.server.clone());
    let watch = Watch {
        client: layer.handles().clone(),
        limit: server.handles().limit.clone(),
        endpoints: set.handle(),
    };
    let app = ServiceBuilder::new()
        .map_response(|response: Response<_>| response.map(Body::new))
        .layer(server)
        .map_request(onward)
        .layer(layer)
        .service(set);
    Ok((app, watch))
}

/// What `--report` prints: the breaker's state, each endpoint's, and
/// what each layer refused.
struct Watch {
    client: tower_steady::preset::Handles,
    limit: Option<tower_steady::load_shed::LimitHandle>,
    endpoints: tower_steady::upstream::UpstreamsHandle,
}

impl Watch {
    /// Every 10 ms until the process ends, prints each change of the
    /// breaker's state, of an endpoint's state and of the server's
    /// adaptive limit, as `ms what state`; and
    /// once a second, when any of them moved, what was refused so far, as
    /// `ms refused limit=N throttle=N budget_empty_ms=N retries=N`: the
    /// requests the server's adaptive limit shed and the client's throttle
    /// refused since the start, how many of the 10 ms samples found the
    /// retry budget empty (times 10), and the limit and the retries the
    /// budget allows at that second.
    fn report(self) {
        tokio::spawn(async move {
            let start = Instant::now();
            let mut breaker = String::new();
            let mut endpoints = std::collections::BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let (mut empty_ms, mut printed, mut ticks) = (0u64, (0, 0, 0), 0u32);
            let mut last_limit = 0;
            loop {
                tick.tick().await;
                let ms = start.elapsed().as_millis();
                if let Some(handle) = &self.client.breaker {
                    let state = format!("{:?}", handle.state());
                    if state != breaker {
                        eprintln!("{ms} breaker {state}");
                        breaker = state;
                    }
                }
                for endpoint in self.endpoints.snapshot() {
                    let state = format!("{:?}", endpoint.state);
                    if endpoints.get(&endpoint.addr) != Some(&state) {
                        eprintln!("{ms} endpoint {} {state}", endpoint.addr);
                        endpoints.insert(endpoint.addr, state);
                    }
                }
                if let Some(limit) = self.limit.as_ref().map(|l| l.limit()) {
                    if limit != last_limit {
                        eprintln!("{ms} limit {limit}");
                        last_limit = limit;
                    }
                }
                let retries = self
                    .client
                    .retry
                    .as_ref()
                    .map(|r| r.snapshot().retries_available);
                if retries == Some(0) {
                    empty_ms += 10;
                }
                ticks += 1;
                if ticks % 100 != 0 {
                    continue;
                }
                let limit = self.limit.as_ref().map(|l| l.snapshot());
                let shed = limit.map_or(0, |l| l.rejected);
                let throttled = self
                    .client
                    .throttle
                    .as_ref()
                    .map_or(0, |t| t.snapshot().rejected);
                if (shed, throttled, empty_ms) != printed {
                    printed = (shed, throttled, empty_ms);
                    eprintln!(
                        "{ms} refused limit={shed} throttle={throttled} budget_empty_ms={empty_ms} \
                         limit_now={} retries={}",
                        limit.map_or(0, |l| l.limit),
                        retries.unwrap_or(0),
                    );
                }
            }
        });
    }
}

/// The proxy's HTTP server: every path forwarded, through the bare proxy
/// or the resilient one. No router: with one route for every path, an axum
/// `Router` would only add its per-request work (a clone of the boxed
/// route and a boxed future per request, two more when a layer is applied
/// with `Router::layer`). An application with routes wraps its `Router`
/// the same way, the stack around the router and the response body mapped
/// to axum's `Body` as in [`resilient_proxy`], so that the stack runs once
/// per request, before routing (the README shows it). Neither proxy is
/// boxed: axum clones the service for each request, and a boxed service's
/// clone is an allocation. Nor are the two put in one `Either`: each
/// caller serves the one it built, since `Either::call` would move the
/// resilient proxy's future (the two stacks' futures, nested) once more
/// per request.
fn proxy_app<A: App>(app: A) -> axum::routing::IntoMakeService<A> {
    axum::ServiceExt::<Request<Body>>::into_make_service(app)
}

/// Serves `app` on `listener` until Ctrl-C.
async fn serve_until_ctrl_c<A: App>(listener: TcpListener, app: A) -> Result<(), BoxError> {
    axum::serve(listener, proxy_app(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// With `--listen`: the whole request's budget (the bare proxy's timeout,
/// the tower proxy's and the presets' deadline).
const LISTEN_DEADLINE: Duration = Duration::from_secs(15);
/// With `--listen`: each attempt's timeout (tower's and the resilient
/// proxy's).
const LISTEN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// `--listen ADDR --upstream URL...`: a real proxy until Ctrl-C.
async fn serve(
    listen: &str,
    upstreams: &[String],
    kind: Kind,
    report: bool,
    threads: Option<usize>,
) -> Result<(), BoxError> {
    if upstreams.is_empty() {
        return Err(format!("--listen needs at least one --upstream\n\n{HELP}").into());
    }
    let mut addrs = Vec::new();
    for url in upstreams {
        let uri: Uri = url.parse()?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{url}: only http:// upstreams").into());
        }
        let authority = uri.authority().ok_or(format!("{url}: no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let found = tokio::net::lookup_host((authority.host(), port)).await?;
        let before = addrs.len();
        addrs.extend(found);
        if addrs.len() == before {
            return Err(format!("{url}: the name has no address").into());
        }
    }
    if let Some(threads) = threads {
        let listen = tokio::net::lookup_host(listen)
            .await?
            .next()
            .ok_or(format!("{listen}: no address"))?;
        return serve_per_thread(listen, addrs, kind, threads);
    }
    let listener = TcpListener::bind(listen).await?;
    println!(
        "{} proxy on http://{} in front of {addrs:?}; Ctrl-C to stop",
        kind.name(),
        listener.local_addr()?
    );
    let attempts = Arc::default();
    match kind {
        Kind::Bare => {
            let app = bare_proxy(addrs.clone(), LISTEN_DEADLINE, attempts);
            serve_until_ctrl_c(listener, app).await
        }
        Kind::Tower => {
            let app = tower_proxy(
                addrs.clone(),
                LISTEN_DEADLINE,
                LISTEN_ATTEMPT_TIMEOUT,
                attempts,
            );
            serve_until_ctrl_c(listener, app).await
        }
        Kind::Resilient => {
            let presets = Presets::new(LISTEN_DEADLINE)?;
            let (app, watch) = resilient_proxy(
                &presets,
                addrs.clone(),
                LISTEN_ATTEMPT_TIMEOUT,
                attempts,
                Arc::default(),
            )?;
            if report {
                watch.report();
            }
            serve_until_ctrl_c(listener, app).await
        }
    }
}

/// `--threads N`: N threads, each a current-thread runtime serving its own
/// `SO_REUSEPORT` listener on `listen` with its own proxy (its own client
/// and connections), until Ctrl-C. The resilient proxy's presets are built
/// once, here, and laid over each thread's upstreams: the threads share
/// their state (see [`Presets`]). The tower proxy's layers are built in
/// each thread, as tower's `ConcurrencyLimit` makes its semaphore for each
/// service it wraps.
fn serve_per_thread(
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
    kind: Kind,
    threads: usize,
) -> Result<(), BoxError> {
    println!(
        "{} proxy on http://{listen} in front of {upstreams:?}, {threads} threads; Ctrl-C to stop",
        kind.name(),
    );
    let presets = match kind {
        Kind::Resilient => Some(Presets::new(LISTEN_DEADLINE)?),
        Kind::Bare | Kind::Tower => None,
    };
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let upstreams = upstreams.clone();
            let presets = presets.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime
                    .block_on(async move {
                        let socket = TcpSocket::new_v4()?;
                        socket.set_reuseport(true)?;
                        socket.set_reuseaddr(true)?;
                        socket.bind(listen)?;
                        let listener = socket.listen(1024)?;
                        // The presets are there for the resilient proxy only.
                        match presets {
                            Some(presets) => {
                                let (app, _) = resilient_proxy(
                                    &presets,
                                    upstreams,
                                    LISTEN_ATTEMPT_TIMEOUT,
                                    Arc::default(),
                                    Arc::default(),
                                )?;
                                serve_until_ctrl_c(listener, app).await?;
                            }
                            None if kind == Kind::Tower => {
                                let app = tower_proxy(
                                    upstreams,
                                    LISTEN_DEADLINE,
                                    LISTEN_ATTEMPT_TIMEOUT,
                                    Arc::default(),
                                );
                                serve_until_ctrl_c(listener, app).await?;
                            }
                            None => {
                                let app = bare_proxy(upstreams, LISTEN_DEADLINE, Arc::default());
                                serve_until_ctrl_c(listener, app).await?;
                            }
                        }
                        Ok::<_, BoxError>(())
                    })
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| "a proxy thread panicked")?
            .map_err(|e| format!("a proxy thread: {e}"))?;
    }
    Ok(())
}

/// What `--upstream-server` serves.
struct UpstreamSettings {
    fail_502: f64,
    capacity: Option<Capacity>,
    cache_control: Option<http::HeaderValue>,
}

/// `--upstream-server --listen ADDR [...]`: an upstream until Ctrl-C.
async fn serve_upstream(listen: &str, settings: UpstreamSettings) -> Result<(), BoxError> {
    let addr = tokio::net::lookup_host(listen)
        .await?
        .next()
        .ok_or(format!("{listen}: no address"))?;
    let mut chaos = ChaosLayer::builder();
    if settings.fail_502 > 0.0 {
        chaos = chaos.fault(Fault::Status(StatusCode::BAD_GATEWAY), settings.fail_502);
    }
    let mut replica = Replica::new(addr, 0, chaos.build()?, settings.capacity);
    replica.cache_control = settings.cache_control;
    let served = replica.served.clone();
    replica.restart()?;
    println!(
        "upstream on http://{}, {}% of answers 502{}; Ctrl-C to stop",
        replica.addr,
        settings.fail_502 * 100.0,
        settings.capacity.map_or(String::new(), |c| format!(
            ", {} at a time, {} ms each",
            c.slots,
            c.work.as_millis()
        )),
    );
    tokio::signal::ctrl_c().await?;
    println!("served {}", served.load(Ordering::Relaxed));
    Ok(())
}

// ---------------------------------------------------------------------------
// The demo's upstreams.

/// A replica's capacity: `slots` requests worked on at once, each for
/// `work`; the rest wait. The work is done even when the caller has gone,
/// as most servers do.
#[derive(Clone, Copy)]
struct Capacity {
    slots: usize,
    work: Duration,
}

/// One in-process upstream: a hyper server on loopback whose app is wrapped
/// in a `ChaosLayer`. It can be stopped (listener and connections closed)
/// and started again on the same port.
struct Replica {
    addr: SocketAddr,
    id: usize,
    chaos: ChaosLayer,
    capacity: Option<Capacity>,
    /// Sent on every answer when set.
    cache_control: Option<http::HeaderValue>,
    /// Requests that reached the app.
    served: Arc<AtomicUsize>,
    running: Option<JoinHandle<()>>,
}

impl Replica {
    fn new(addr: SocketAddr, id: usize, chaos: ChaosLayer, capacity: Option<Capacity>) -> Self {
        Self {
            addr,
            id,
            chaos,
            capacity,
            cache_control: None,
            served: Arc::default(),
            running: None,
        }
    }

    fn start(
        addr: SocketAddr,
        id: usize,
        chaos: ChaosLayer,
        capacity: Option<Capacity>,
    ) -> Result<Self, BoxError> {
        let mut replica = Self::new(addr, id, chaos, capacity);
        replica.restart()?;
        Ok(replica)
    }

    fn restart(&mut self) -> Result<(), BoxError> {
        // SO_REUSEADDR, so the port can be bound again right after a stop.
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr)?;
        let listener = socket.listen(1024)?;
        self.addr = listener.local_addr()?;
        let id = self.id;
        let slots = self
            .capacity
            .map(|c| (Arc::new(Semaphore::new(c.slots)), c.work));
        let cache_control = self.cache_control.clone();
        let served = self.served.clone();
        let app = self
            .chaos
            .clone()
            .layer(service_fn(move |_: Request<Incoming>| {
                let slots = slots.clone();
                let cache_control = cache_control.clone();
                async move {
                    if let Some((slots, work)) = slots {
                        // Spawned: the work goes on if the caller leaves.
                        let _ = tokio::spawn(async move {
                            let _slot = slots.acquire_owned().await;
                            tokio::time::sleep(work).await;
                        })
                        .await;
                    }
                    let mut response =
                        Response::new(Full::new(Bytes::from(format!("hello from replica {id}\n"))));
                    if let Some(value) = cache_control {
                        response.headers_mut().insert(header::CACHE_CONTROL, value);
                    }
                    Ok::<_, Infallible>(response)
                }
            }));
        self.running = Some(tokio::spawn(async move {
            // Dropping the set (when the task is aborted) closes every
            // connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let app = app.clone();
                let served = served.clone();
                connections.spawn(async move {
                    // Counted before the faults: every request that reached
                    // this process.
                    let service = hyper::service::service_fn(move |r| {
                        served.fetch_add(1, Ordering::Relaxed);
                        app.clone().oneshot(r)
                    });
                    // An injected reset is an error from the service: hyper
                    // closes the connection without an answer.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// The demo.

struct Scenario {
    title: &'static str,
    what: &'static str,
    /// Requests per second, and for how long.
    rate: u32,
    seconds: f64,
    /// The faults of replica `i`.
    chaos: fn(usize) -> ChaosLayer,
    capacity: Option<Capacity>,
    /// Replica 1 is down from this fraction of the run to that one.
    crash: Option<(f64, f64)>,
}

fn healthy(_: usize) -> ChaosLayer {
    ChaosLayer::builder().build().expect("no faults")
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            title: "transient 502s",
            what: "every replica answers 8% of requests with 502 and resets 2% of connections",
            rate: 300,
            seconds: 2.0,
            chaos: |i| {
                ChaosLayer::builder()
                    .seed(i as u64 + 1)
                    .fault(Fault::Status(StatusCode::BAD_GATEWAY), 0.08)
                    .fault(Fault::ConnectionReset, 0.02)
                    .build()
                    .expect("valid faults")
            },
            capacity: None,
            crash: None,
        },
        Scenario {
            title: "a replica crashes and restarts",
            what: "replica 1 of 3 refuses connections for the middle half of the run",
            rate: 300,
            seconds: 2.0,
            chaos: healthy,
            capacity: None,
            crash: Some((0.25, 0.75)),
        },
        Scenario {
            title: "a replica hangs",
            what: "replica 2 of 3 accepts requests and never answers",
            rate: 150,
            seconds: 2.0,
            chaos: |i| {
                let chaos = ChaosLayer::builder();
                let chaos = if i == 2 {
                    chaos.fault(Fault::Hang, 1.0)
                } else {
                    chaos
                };
                chaos.build().expect("valid faults")
            },
            capacity: None,
            crash: None,
        },
        Scenario {
            title: "an overload",
            what: "twice what the replicas can serve (2 at a time each, 50 ms of work) for 3 s",
            rate: 240,
            seconds: 3.0,
            chaos: healthy,
            capacity: Some(Capacity {
                slots: 2,
                work: Duration::from_millis(50),
            }),
            crash: None,
        },
    ]
}

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The bare proxy's timeout, and the resilient proxy's deadline: the same
/// budget for both.
const BUDGET: Duration = Duration::from_secs(1);
/// The resilient proxy's timeout on each attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Row {
    requests: usize,
    ok: usize,
    bad_gateway: usize,
    unavailable: usize,
    gateway_timeout: usize,
    other: usize,
    retries: Option<usize>,
    latencies: Vec<Duration>,
}

impl Row {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        sorted
            .get(((sorted.len().saturating_sub(1)) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    }

    fn print(&self, name: &str) {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "  {name:<10} {:>8} {:>6} {:>5} {:>5} {:>5} {:>6} {:>8} {:>10} {:>10}",
            self.requests,
            self.ok,
            self.bad_gateway,
            self.unavailable,
            self.gateway_timeout,
            self.other,
            self.retries.map_or("-".into(), |r| r.to_string()),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
        );
    }
}

/// Sends `rate` requests a second for `seconds` to `proxy`, each on its
/// own task (so a slow answer does not hold the next request back), and
/// tallies the answers. A request gets at most 10 s.
async fn load(proxy: SocketAddr, rate: u32, seconds: f64, sent: Arc<AtomicUsize>) -> Row {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let total = (f64::from(rate) * seconds) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    for _ in 0..total {
        tick.tick().await;
        sent.fetch_add(1, Ordering::Relaxed);
        let client = client.clone();
        let uri = Uri::try_from(format!("http://{proxy}/")).expect("a valid URI");
        tasks.spawn(async move {
            let start = Instant::now();
            let status = match tokio::time::timeout(Duration::from_secs(10), client.get(uri)).await
            {
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    status
                }
                _ => 0,
            };
            (status, start.elapsed())
        });
    }
    let mut row = Row {
        requests: total,
        ..Row::default()
    };
    while let Some(done) = tasks.join_next().await {
        let (status, latency) = done.expect("a load task");
        match status {
            200..=299 => row.ok += 1,
            502 => row.bad_gateway += 1,
            503 => row.unavailable += 1,
            504 => row.gateway_timeout += 1,
            _ => row.other += 1,
        }
        row.latencies.push(latency);
    }
    row
}

/// Serves `app` on `listener` until aborted.
fn spawn_proxy<A: App>(
    listener: TcpListener,
    app: A,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move { axum::serve(listener, proxy_app(app)).await })
}

/// One scenario through one proxy, on fresh upstreams.
async fn run(scenario: &Scenario, resilient: bool) -> Result<Row, BoxError> {
    let mut replicas = (0..3)
        .map(|i| Replica::start(LOOPBACK, i, (scenario.chaos)(i), scenario.capacity))
        .collect::<Result<Vec<_>, _>>()?;
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let (attempts, retries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = listener.local_addr()?;
    let server = if resilient {
        let presets = Presets::new(BUDGET)?;
        let (app, _) =
            resilient_proxy(&presets, addrs, ATTEMPT_TIMEOUT, attempts, retries.clone())?;
        spawn_proxy(listener, app)
    } else {
        spawn_proxy(listener, bare_proxy(addrs, BUDGET, attempts))
    };

    let sent = Arc::new(AtomicUsize::new(0));
    let driver = tokio::spawn(load(proxy, scenario.rate, scenario.seconds, sent.clone()));
    if let Some((down, up)) = scenario.crash {
        let total = f64::from(scenario.rate) * scenario.seconds;
        let mut poll = tokio::time::interval(Duration::from_millis(5));
        while (sent.load(Ordering::Relaxed) as f64) < total * down {
            poll.tick().await;
        }
        replicas[1].stop();
        while (sent.load(Ordering::Relaxed) as f64) < total * up {
            poll.tick().await;
        }
        replicas[1].restart()?;
    }
    let mut row = driver.await?;
    if resilient {
        row.retries = Some(retries.load(Ordering::Relaxed));
    }
    server.abort();
    Ok(row)
}

async fn demo() -> Result<(), BoxError> {
    let started = Instant::now();
    println!(
        "Each scenario sends the same load through a bare reverse proxy and through one built \
         with tower-steady's presets,\nto three upstreams on loopback. Both give up on a request \
         after {} s.\n",
        BUDGET.as_secs()
    );
    let scenarios = scenarios();
    for (n, scenario) in scenarios.iter().enumerate() {
        println!(
            "{}/{}: {} ({}; {} requests/s for {} s)",
            n + 1,
            scenarios.len(),
            scenario.title,
            scenario.what,
            scenario.rate,
            scenario.seconds
        );
        println!(
            "  {:<10} {:>8} {:>6} {:>5} {:>5} {:>5} {:>6} {:>8} {:>10} {:>10}",
            "proxy", "requests", "2xx", "502", "503", "504", "other", "retries", "p50", "p99"
        );
        run(scenario, false).await?.print("bare");
        run(scenario, true).await?.print("resilient");
        println!();
    }
    println!(
        "502 is what a proxy says when it has no valid answer. The resilient proxy retries \
         what is safe to retry\nwithin a budget, stops sending to what is broken, and answers \
         what still fails with 503 + Retry-After\nor 504. Done in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
