//! MODULE_DOCS_PLACEHOLDER

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
use self::health::{CheckSettings, Health, Registry, TARGET};
use crate::classify::{Classify, HttpClassifier};
use crate::retry::Attempt;
use crate::BoxError;

mod authority;
mod builder;
mod check;
mod dns;
mod error;
mod ewma;
mod handle;
mod health;

pub mod future;

pub use self::authority::SetAuthority;
pub use self::builder::UpstreamsBuilder;
pub use self::check::{Check, HealthCheck, HttpGet, ServiceCheck};
pub use self::dns::Dns;
pub use self::error::NoHealthyUpstream;
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

impl<S, C> Upstreams<S, C> {
    fn refresh(&mut self) {
        if self.shared.generation.load(Ordering::Acquire) != self.generation {
            (self.endpoints, self.generation) = current(&self.shared);
        }
    }

    fn random(&self, n: usize) -> usize {
        // Lemire's multiply-shift: uniform enough, no division.
        ((u128::from(self.shared.registry.rng.next_u64()) * n as u128) >> 64) as usize
    }

    /// An index other than `not` for which `ok` holds, chosen at random.
    fn sample(&self, not: Option<usize>, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        for _ in 0..DRAWS {
            let i = self.random(n);
            if Some(i) != not && ok(i) {
                return Some(i);
            }
        }
        let start = self.random(n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| Some(i) != not && ok(i))
    }

    fn pick<B>(&self, request: &Request<B>, now: Instant) -> Result<Pick, NoHealthyUpstream> {
        let registry = &*self.shared.registry;
        let endpoints = &*self.endpoints;
        let nanos = registry.nanos(now);
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
                    None => registry.abandon_probe(&health, now),
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
        let (first, ok): (usize, &dyn Fn(usize) -> bool) = match self.sample(None, untried) {
            Some(i) => (i, &untried),
            None => match self.sample(None, eligible) {
                Some(i) => (i, &eligible),
                None => return Err(NoHealthyUpstream::new(registry.retry_after(nanos))),
            },
        };
        let Some(second) = self.sample(Some(first), ok) else {
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
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    /// Always ready: the chosen endpoint's own readiness is awaited by the
    /// response future, and an empty or fully ejected set is answered with
    /// [`NoHealthyUpstream`] at once rather than by waiting.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.refresh();
        let now = Instant::now();
        match self.pick(&request, now) {
            Ok(Pick { index, probe }) => {
                let endpoint = &self.endpoints[index];
                let track = Track::new(
                    self.shared.registry.clone(),
                    endpoint.health.clone(),
                    now,
                    probe,
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
