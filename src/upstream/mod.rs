//! Balancing over the endpoints of an upstream, routing around the ones
//! that fail and bringing them back gently.
//!
//! When one replica of an upstream crashes, hangs or restarts, a gateway
//! that keeps sending it its share of requests answers its clients with
//! 502s. [`Upstreams`] is a `Service<http::Request<B>>` over a set of
//! endpoints (one service per address, made by a function of yours, usually
//! a hyper-util client wrapped in [`SetAuthority`]) that keeps every
//! endpoint's health and sends each request to a healthy one.
//!
//! # The set
//!
//! * fixed: [`UpstreamsBuilder::build`] with a list of addresses;
//! * dynamic: [`UpstreamsBuilder::build_discover`] with any
//!   [`tower::discover::Discover`] keyed by address;
//! * a DNS name: [`Dns`], which looks the name up again every 5 s and
//!   reports the addresses that came and went.
//!
//! A removed endpoint takes no new request; the requests in flight on it
//! finish there (each holds its own clone of the endpoint's service). An
//! added endpoint starts in slow start.
//!
//! # Balancing
//!
//! Power of two choices (Mitzenmacher, "The Power of Two Choices in
//! Randomized Load Balancing", 2001) over a peak-EWMA load, as in Finagle
//! and tower's `p2c::Balance`: two endpoints are drawn at random, and the
//! request goes to the one with the lower latency estimate × (requests in
//! flight + 1). The estimate jumps to any slower answer at once and forgets
//! over 10 s, so a replica that slows down loses its share within a few
//! requests. An endpoint not measured yet costs nothing while it has no
//! request in flight (Finagle's rule): a new replica gets a request at once
//! and is judged by its answer. The draws come from a seedable generator
//! ([`UpstreamsBuilder::seed`]).
//!
//! A retry avoids the endpoints its request already tried: the retry layer
//! puts an [`Attempt`] extension on every retry, listing the endpoints the
//! earlier attempts went to, and `Upstreams` draws among the others
//! whenever another eligible one exists. It reports where each failure
//! happened (an [`Endpoint`](crate::http::Endpoint) extension on a failed
//! response, an [`EndpointError`](crate::http::EndpointError) around an
//! error), which is how the retry layer knows. The error is wrapped only
//! when a retry layer is calling (its first attempt or a later one); used
//! without one, `Upstreams` returns its endpoints' errors as they are, so
//! `error.downcast_ref::<hyper_util::client::legacy::Error>()` works on
//! them.
//!
//! # Passive health: outlier detection
//!
//! Every answer is classified (by [`HttpClassifier`] unless
//! [`UpstreamsBuilder::classifier`] says otherwise). Defaults follow Envoy's
//! outlier detection:
//!
//! | rule | default |
//! |---|---|
//! | eject after gateway failures in a row (502, 503, 504, connect failure, reset, timeout); any other answer ends the run | 5 |
//! | eject success-rate outliers: below mean − 1.9 σ of the endpoints with ≥ 100 requests in the 10 s interval, when there are ≥ 5 of them | on |
//! | ejection length: 30 s × the number of ejections, capped, shortened by up to 10% at random | 30 s … 300 s |
//! | ejection length for an endpoint whose last failure was a refused connection (a restart): 1 s × the ejections in a row, so it is probed back within about a second and the wait grows only while it keeps refusing | 1 s … 300 s |
//! | each 10 s spent healthy takes one off that number | |
//! | ejected at once, at most (at least one may always be) | 10% |
//! | the last endpoint taking requests is ejected only for refusing connections | |
//! | below this part healthy, balance over every endpoint (panic mode) | 50% |
//!
//! A local rejection, the caller's spent deadline and unrecognised errors
//! say nothing of the endpoint and count neither way.
//!
//! **The last one.** An endpoint is not ejected for the answers it gave
//! (gateway statuses, resets, timeouts, a low success rate) while no other
//! endpoint of the set takes requests: ejecting it would answer every
//! request with [`NoHealthyUpstream`] for the whole ejection, 30 s at
//! least, while it may answer most of them well. At 5% of `502`s, five in
//! a row come once in about three million requests, every few minutes at
//! 20 000 a second: a set of one would be taken out again and again, each
//! time for longer. Whether a lone upstream fails too often is the
//! [circuit breaker](crate::circuit_breaker)'s to judge, over its window.
//! An endpoint that refuses connections is not there at all, and is
//! ejected even when it is the last (for about a second, while it
//! restarts). Envoy ejects the last host too, then sends it every request
//! anyway in panic mode; here it is simply kept.
//!
//! **Re-admission.** When an ejection is over, the next request is sent to
//! the endpoint as its one probe (no other request goes there meanwhile).
//! If it succeeds, the endpoint is back in slow start: its share of
//! requests ramps from 10% of a full share to all of it over 30 s (Envoy's
//! slow start, aggression 1). If it fails, the endpoint is ejected again,
//! for longer. With [`RetryLayer`](crate::retry::RetryLayer) above, a
//! failed probe is retried on another endpoint like any failure, so the
//! probe costs the caller a retry, not an error.
//!
//! **Nothing available.** If every endpoint is ejected (refusing
//! connections, or failing their active checks) and none is due for its probe, the request
//! fails at once with [`NoHealthyUpstream`], carrying the time to the next
//! probe: [`ErrorResponseLayer`](crate::http::ErrorResponseLayer) answers
//! `503` with that as `Retry-After`, and the retry layer does not retry it.
//! This departs from Envoy, whose panic mode also covers a set with no
//! healthy endpoint at all: here, with none healthy, the honest answer is
//! "come back when the probe is due" rather than sending every request to
//! endpoints known to fail. Panic mode covers the case between (some, but
//! fewer than half, healthy).
//!
//! # Active health checks
//!
//! Off by default; [`UpstreamsBuilder::health_check`] turns them on: a
//! periodic `GET` of a path through each endpoint's own service
//! ([`HealthCheck::http_get`]) or a call to a service of yours
//! ([`HealthCheck::service`]), every 2 s, each given 1 s; 3 failures in a
//! row take the endpoint out, 2 passes in a row bring it back (in slow
//! start). Checks run on tasks of their own, so the builder must be called
//! inside a tokio runtime when they are on. Failing checks are not bound by
//! the 10% cap: the endpoint itself says it is unwell.
//!
//! # Where it goes
//!
//! `Upstreams` is the bottom of a client stack: the retry layer (and the
//! whole-upstream circuit breaker) above it, a per-attempt
//! [`TimeoutLayer`](crate::timeout::TimeoutLayer) inside each endpoint's
//! service, so that a hung replica's timeouts count against that replica.
//!
//! ```
//! # use std::time::Duration;
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::Empty;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_steady::retry::{ReplayBody, RetryLayer};
//! use tower_steady::upstream::{SetAuthority, Upstreams};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let replica = listener.local_addr()?;
//! # tokio::spawn(async move {
//! #     axum::serve(listener, axum::Router::new().route("/", axum::routing::get(|| async { "hi" }))).await
//! # });
//! // One client (one connection pool) for every endpoint; the retry layer
//! // replays bodies, so the client sends `ReplayBody`s.
//! let client = Client::builder(TokioExecutor::new())
//!     .build_http::<ReplayBody<Empty<Bytes>>>();
//! let upstreams = Upstreams::builder()
//!     .build([replica], |addr| SetAuthority::new(addr, client.clone()))?;
//! let handle = upstreams.handle();
//!
//! let service = ServiceBuilder::new()
//!     .layer(RetryLayer::new())
//!     .service(upstreams);
//! let response = service
//!     .oneshot(Request::get("/").body(Empty::new())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(handle.snapshot()[0].addr, replica);
//! # Ok(()) }
//! ```
//!
//! With active health checks:
//!
//! ```
//! # use std::time::Duration;
//! # use bytes::Bytes;
//! # use http_body_util::Empty;
//! # use hyper_util::client::legacy::Client;
//! # use hyper_util::rt::TokioExecutor;
//! use tower_steady::upstream::{HealthCheck, SetAuthority, Upstreams};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let upstreams = Upstreams::builder()
//!     .health_check(HealthCheck::http_get("/healthz").interval(Duration::from_secs(5)))
//!     .build(["10.0.0.1:8080".parse()?, "10.0.0.2:8080".parse()?], |addr| {
//!         SetAuthority::new(addr, client.clone())
//!     })?;
//! # Ok(()) }
//! ```
//!
//! # What a request costs
//!
//! No lock and no allocation on the way: one clock read, one atomic load
//! to see whether the set changed (a clone refreshes its copy of the set,
//! under a mutex, only when it did), one to see whether a probe is due,
//! one for the healthy count, two random draws, two cost reads (an atomic
//! load each, and an `exp` unless the estimate was updated in the same
//! millisecond), an atomic add for the in-flight count, and
//! clones of the endpoint's service and two `Arc`s. The clone is asked
//! whether it is ready (with a waker that does nothing) and called at once
//! when it is, as an HTTP client always is, so the response future holds
//! only the call's future; an endpoint's service that is not ready (a
//! limit or a buffer of yours below the set) waits in the future with the
//! request, in a box (an allocation for that wait only), and is asked
//! again with the future's waker. On the answer: one
//! more clock read, a compare-and-swap for the estimate, and an atomic add
//! for the success-rate counts (the requests and the successes share one
//! word) besides the in-flight count's. Ejections, probes, re-admissions, changes of the set and the
//! success-rate comparison (once per interval) take the registry's mutex:
//! they are rare, and need a view of the whole set. A failed response gets
//! an [`Endpoint`](crate::retry::Endpoint) extension (an allocation, on the
//! failure path only).
//!
//! Requires every endpoint's service to be `Clone + Send + Sync`: every
//! request clones the chosen one, and clones on any thread share the set.
//!
//! # Observability
//!
//! [`Upstreams::handle`] gives an [`UpstreamsHandle`]: per endpoint, its
//! address, state ([`EndpointState`]: healthy, slow start, ejected,
//! probing), requests in flight, latency estimate, success rate, ejection
//! count. Events, target `tower_steady::upstream`: warn "endpoint ejected"
//! (endpoint, reason `consecutive_failures` / `success_rate` /
//! `unreachable` / `probe_failed`, ejections, duration_ms, healthy) and "endpoint ejected:
//! health checks fail"; info "endpoint re-admitted after a successful
//! probe" and "endpoint re-admitted: health checks pass"; debug for skipped
//! ejections (cap reached), probes, checks, set changes and requests
//! answered [`NoHealthyUpstream`]; trace for panic-mode picks.
//!
//! [`Attempt`]: crate::retry::Attempt
//! [`HttpClassifier`]: crate::classify::HttpClassifier

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::discover::Change;
use tower_service::Service;

use self::check::sealed::CheckFn;
use self::endpoint::Health;
use self::health::{CheckSettings, Registry, TARGET};
use crate::classify::{Classify, HttpClassifier};
use crate::http::Attempt;
use crate::rng::Rng;
use crate::BoxError;

mod authority;
pub mod body;
mod builder;
mod check;
mod dns;
mod endpoint;
mod error;
mod ewma;
mod handle;
mod health;

pub mod future;

pub use self::authority::SetAuthority;
pub use self::body::EndpointBody;
pub use self::builder::UpstreamsBuilder;
pub use self::check::{Check, HealthCheck, HttpGet, ServiceCheck};
pub use self::dns::Dns;
pub use self::error::{NoHealthyUpstream, UnsupportedTarget};
pub use self::handle::{EndpointSnapshot, EndpointState, UpstreamsHandle};

use self::future::{ResponseFuture, Track};

/// A service that balances requests over a set of endpoints, keeping track
/// of each one's health. See the [module docs](self).
///
/// Cloning is cheap, and every clone shares the set and its health.
pub struct Upstreams<S, C = HttpClassifier> {
    shared: Arc<Shared<S>>,
    /// This clone's copy of the set, refreshed when the set changes.
    endpoints: Arc<[Endpoint<S>]>,
    generation: u64,
    classifier: C,
}

/// One endpoint of the set: its health and its service.
struct Endpoint<S> {
    health: Arc<Health>,
    service: S,
}

impl<S: Clone> Clone for Endpoint<S> {
    fn clone(&self) -> Self {
        Self {
            health: self.health.clone(),
            service: self.service.clone(),
        }
    }
}

/// What every clone shares.
pub(crate) struct Shared<S> {
    registry: Arc<Registry>,
    /// The current set, swapped whole on every change.
    set: Mutex<Arc<[Endpoint<S>]>>,
    /// Bumped on every change of the set: one load per request tells a
    /// clone whether its copy is current.
    generation: AtomicU64,
    check: Option<(CheckFn<S>, CheckSettings)>,
    /// Dropped with the last clone: stops the discovery task.
    _closed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<S: Clone + Send + Sync + 'static> Shared<S> {
    pub(crate) fn new(
        registry: Registry,
        check: Option<(CheckFn<S>, CheckSettings)>,
        closed: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Self {
        Self {
            registry: Arc::new(registry),
            set: Mutex::new(Arc::from(Vec::new())),
            generation: AtomicU64::new(0),
            check,
            _closed: closed,
        }
    }

    /// Applies a change of the set. `added` is false for the first set
    /// (its endpoints start healthy) and true afterwards (new endpoints
    /// start in slow start).
    pub(crate) fn apply(self: &Arc<Self>, change: Change<SocketAddr, S>, added: bool) {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next: Vec<Endpoint<S>> = set.iter().cloned().collect();
        match change {
            Change::Insert(addr, service) => {
                if let Some(existing) = next.iter_mut().find(|e| e.health.addr == addr) {
                    existing.service = service;
                } else {
                    let health = self.registry.health(addr, Instant::now(), added);
                    self.spawn_check(&health, &service);
                    tracing::debug!(target: TARGET, endpoint = %addr, "endpoint added");
                    next.push(Endpoint { health, service });
                }
            }
            Change::Remove(addr) => {
                let before = next.len();
                next.retain(|e| e.health.addr != addr);
                if next.len() != before {
                    tracing::debug!(
                        target: TARGET,
                        endpoint = %addr,
                        "endpoint removed; its requests in flight finish"
                    );
                }
            }
        }
        self.registry
            .replace(next.iter().map(|e| e.health.clone()).collect());
        *set = Arc::from(next);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn spawn_check(self: &Arc<Self>, health: &Arc<Health>, service: &S) {
        let Some((check, settings)) = &self.check else {
            return;
        };
        // Spread the endpoints' checks over one interval.
        let first = Instant::now() + settings.interval.mul_f64(self.registry.rng.next_f64());
        tokio::spawn(check::run(
            Arc::downgrade(self),
            health.clone(),
            service.clone(),
            check.clone(),
            *settings,
            first,
        ));
    }
}

impl<S, C> Upstreams<S, C> {
    pub(crate) fn from_shared(shared: Arc<Shared<S>>, classifier: C) -> Self {
        let (endpoints, generation) = current(&shared);
        Self {
            shared,
            endpoints,
            generation,
            classifier,
        }
    }

    /// A handle to read every endpoint's state.
    pub fn handle(&self) -> UpstreamsHandle {
        UpstreamsHandle::new(self.shared.registry.clone())
    }

    /// The addresses of the current set.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        current(&self.shared)
            .0
            .iter()
            .map(|e| e.health.addr)
            .collect()
    }
}

impl Upstreams<()> {
    /// A builder to configure health tracking and balancing.
    pub fn builder() -> UpstreamsBuilder {
        UpstreamsBuilder::new()
    }
}

fn current<S>(shared: &Shared<S>) -> (Arc<[Endpoint<S>]>, u64) {
    let set = shared.set.lock().unwrap_or_else(PoisonError::into_inner);
    // Read under the lock: a change bumps the generation while holding it.
    (set.clone(), shared.generation.load(Ordering::Acquire))
}

/// The endpoint chosen for a request.
struct Pick {
    index: usize,
    probe: bool,
}

/// Random draws before falling back to a scan: with at least half of the
/// set eligible (else panic mode makes all of it eligible), four draws
/// miss with probability at most 1/16.
const DRAWS: usize = 4;

/// Two costs this close are equal.
const TIE: f64 = 1.01;

/// The random draws of one pick: 32 bits of one generator call each, so
/// that the two candidates of a pick cost one call of the generator (an
/// atomic add on state every clone shares, which the cores of a
/// multi-threaded runtime pass between them).
struct Draws<'a> {
    rng: &'a Rng,
    bits: u64,
    left: u8,
}

impl<'a> Draws<'a> {
    fn new(rng: &'a Rng) -> Self {
        Self {
            rng,
            bits: 0,
            left: 0,
        }
    }

    /// A uniform index below `n` (Lemire's multiply-shift on 32 bits: no
    /// division, and a bias below `n / 2^32`).
    fn below(&mut self, n: usize) -> usize {
        if self.left == 0 {
            self.bits = self.rng.next_u64();
            self.left = 2;
        }
        let r = self.bits as u32;
        self.bits >>= 32;
        self.left -= 1;
        ((u128::from(r) * n as u128) >> 32) as usize
    }
}

impl<S, C> Upstreams<S, C> {
    fn refresh(&mut self) {
        if self.shared.generation.load(Ordering::Acquire) != self.generation {
            (self.endpoints, self.generation) = current(&self.shared);
        }
    }

    /// An index other than `not` for which `ok` holds, chosen at random
    /// (uniformly among the others: a draw never lands on `not`).
    fn sample(
        &self,
        draws: &mut Draws<'_>,
        not: Option<usize>,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        let others = n - usize::from(not.is_some());
        match others {
            0 => return None,
            // One endpoint: nothing to draw.
            1 if n == 1 => return ok(0).then_some(0),
            _ => {}
        }
        for _ in 0..DRAWS {
            let mut i = draws.below(others);
            if not.is_some_and(|not| i >= not) {
                i += 1;
            }
            if ok(i) {
                return Some(i);
            }
        }
        let start = draws.below(n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| Some(i) != not && ok(i))
    }

    /// The endpoint for `request` at `nanos` (the registry's clock).
    fn pick<B>(&self, request: &Request<B>, nanos: u64) -> Result<Pick, NoHealthyUpstream> {
        let registry = &*self.shared.registry;
        let endpoints = &*self.endpoints;
        if endpoints.is_empty() {
            return Err(NoHealthyUpstream::new(registry.retry_after(nanos)));
        }

        // An ejection is over: this request is its endpoint's probe.
        if nanos >= registry.next_probe() {
            if let Some(health) = registry.start_probe(nanos) {
                match endpoints
                    .iter()
                    .position(|e| Arc::ptr_eq(&e.health, &health))
                {
                    Some(index) => return Ok(Pick { index, probe: true }),
                    // It left the set since this clone's copy was taken.
                    None => registry.abandon_probe(&health, nanos),
                }
            }
        }

        let healthy = registry.healthy();
        if healthy == 0 {
            return Err(NoHealthyUpstream::new(registry.retry_after(nanos)));
        }
        // Panic mode: too few are healthy for them to take all the load, so
        // balance over the whole set (Envoy's healthy panic threshold).
        let panic = (healthy as f64) < registry.config.panic_threshold * endpoints.len() as f64;
        let tried = Attempt::of(request).map_or(&[][..], |attempt| attempt.tried());
        let eligible = |i: usize| panic || endpoints[i].health.is_healthy();
        let untried =
            |i: usize| eligible(i) && !tried.iter().any(|t| t.addr() == endpoints[i].health.addr);

        // Power of two choices: two distinct candidates at random, untried
        // ones if there are any, and the less loaded of the two.
        let mut draws = Draws::new(&registry.rng);
        let (first, ok): (usize, &dyn Fn(usize) -> bool) =
            match self.sample(&mut draws, None, untried) {
                Some(i) => (i, &untried),
                None => match self.sample(&mut draws, None, eligible) {
                    Some(i) => (i, &eligible),
                    None => return Err(NoHealthyUpstream::new(registry.retry_after(nanos))),
                },
            };
        let Some(second) = self.sample(&mut draws, Some(first), ok) else {
            return Ok(Pick {
                index: first,
                probe: false,
            });
        };
        let (a, b) = (&endpoints[first].health, &endpoints[second].health);
        // Costs within 1% of each other are a tie, won by the first draw
        // (itself random): otherwise the rounding of alike estimates would
        // favour one endpoint for good.
        let cost_a = a.cost(nanos, &registry.config);
        let cost_b = b.cost(nanos, &registry.config);
        let (winner, loser) = if cost_a <= cost_b * TIE {
            (first, second)
        } else {
            (second, first)
        };
        // Slow start: the winner keeps the request with probability equal
        // to its weight, so its share ramps up with the weight.
        let weight = endpoints[winner].health.weight(nanos, &registry.config);
        let index = if weight < 1.0 && registry.rng.next_f64() >= weight {
            loser
        } else {
            winner
        };
        if panic {
            tracing::trace!(target: TARGET, healthy, total = endpoints.len(), "panic mode: balancing over every endpoint");
        }
        Ok(Pick {
            index,
            probe: false,
        })
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Upstreams<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstreams")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| e.health.addr)
                    .collect::<Vec<_>>(),
            )
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Clone for Upstreams<S, C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            endpoints: self.endpoints.clone(),
            generation: self.generation,
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C, B, RB> Service<Request<B>> for Upstreams<S, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify + Clone,
{
    type Response = Response<EndpointBody<RB, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    /// Always ready: the chosen endpoint's own readiness is asked in
    /// `call`, which calls it at once when it is ready (as an HTTP client
    /// always is) and otherwise leaves the response future to wait for it;
    /// and an empty or fully ejected set is answered with
    /// [`NoHealthyUpstream`] at once rather than by waiting.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.refresh();
        // The registry's clock, read once for the pick and the request's
        // start.
        let now = self.shared.registry.nanos(crate::time::now());
        match self.pick(&request, now) {
            Ok(Pick { index, probe }) => {
                let endpoint = &self.endpoints[index];
                let track = Track::new(
                    self.shared.registry.clone(),
                    endpoint.health.clone(),
                    now,
                    probe,
                    crate::http::endpoint_wanted(&request),
                );
                ResponseFuture::new(
                    endpoint.service.clone(),
                    request,
                    track,
                    self.classifier.clone(),
                )
            }
            Err(error) => {
                tracing::debug!(
                    target: TARGET,
                    retry_after_ms = error.retry_after().as_millis() as u64,
                    "no healthy upstream"
                );
                ResponseFuture::rejected(error, self.classifier.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u16) -> Upstreams<()> {
        let addrs = (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)));
        Upstreams::builder()
            .seed(3)
            .build(addrs, |_| ())
            .expect("a valid set")
    }

    #[test]
    fn two_draws_take_one_call_of_the_generator() {
        let (rng, reference) = (Rng::from_seed(9), Rng::from_seed(9));
        let mut draws = Draws::new(&rng);
        let first = reference.next_u64();
        let (a, b) = (draws.below(10), draws.below(10));
        assert_eq!(a, ((u128::from(first as u32) * 10) >> 32) as usize);
        assert_eq!(b, ((u128::from((first >> 32) as u32) * 10) >> 32) as usize);
        assert_eq!(rng.next_u64(), reference.next_u64(), "one call for both");
    }

    #[test]
    fn a_second_candidate_is_drawn_uniformly_among_the_others() {
        let upstreams = set(3);
        let rng = Rng::from_seed(5);
        let mut draws = Draws::new(&rng);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let i = upstreams
                .sample(&mut draws, Some(1), |_| true)
                .expect("two others");
            counts[i] += 1;
        }
        assert_eq!(counts[1], 0, "never the first candidate");
        assert!(
            (1300..1700).contains(&counts[0]) && (1300..1700).contains(&counts[2]),
            "{counts:?}"
        );
        // Only the last one is eligible: the draws miss and the scan finds it.
        assert_eq!(upstreams.sample(&mut draws, Some(1), |i| i == 2), Some(2));
        assert_eq!(upstreams.sample(&mut draws, Some(1), |i| i == 1), None);
    }

    #[test]
    fn a_set_of_one_is_picked_without_a_draw() {
        let upstreams = set(1);
        let (rng, reference) = (Rng::from_seed(11), Rng::from_seed(11));
        let mut draws = Draws::new(&rng);
        assert_eq!(upstreams.sample(&mut draws, None, |_| true), Some(0));
        assert_eq!(upstreams.sample(&mut draws, None, |_| false), None);
        assert_eq!(upstreams.sample(&mut draws, Some(0), |_| true), None);
        assert_eq!(rng.next_u64(), reference.next_u64(), "nothing drawn");
    }
}
