//! Middleware that fails fast while an upstream is down.
//!
//! When every replica of an upstream fails, each call to it still costs a
//! connection attempt or a timeout, and callers pile up waiting for answers
//! that will not come. [`CircuitBreakerLayer`] watches the outcomes of calls
//! and, once enough of them fail, turns calls away at once with
//! [`CircuitOpen`] instead of sending them. With
//! [`ErrorResponseLayer`](crate::http::ErrorResponseLayer) on top that is a
//! `503 Service Unavailable` whose `Retry-After` says when the breaker will
//! try the upstream again: an honest answer in microseconds instead of a
//! `502` or `504` after a timeout.
//!
//! # States
//!
//! ```text
//!            failure ratio, slow-call ratio
//!            or consecutive failures reached
//!  Closed ───────────────────────────────────▶ Open ◀──────────┐
//!    ▲                                          │               │
//!    │ every probe succeeded                    │ open period   │ a probe
//!    │                                          ▼ over          │ failed
//!    └─────────────────────────────────────── HalfOpen ─────────┘
//! ```
//!
//! * [`State::Closed`]: calls pass, and their outcomes are recorded in a
//!   sliding window. When a call fails and the window holds at least
//!   [`minimum_calls`] of which at least [`failure_ratio`] failed (or, if
//!   configured, [`slow_calls`] took too long, or the last
//!   [`consecutive_failures`] all failed), the breaker opens.
//! * [`State::Open`]: calls are turned away with [`CircuitOpen`], carrying
//!   the time left in the open period. The first open period lasts
//!   [`open_duration`]; each reopening after failed probes doubles it, up to
//!   [`max_open_duration`], and each is shortened by up to [`jitter`] of
//!   itself so that gateways that opened together do not probe together.
//! * [`State::HalfOpen`]: the first call after the open period becomes a
//!   probe, and up to [`half_open_probes`] calls are let through in all;
//!   others are turned away. If every probe succeeds, the breaker closes
//!   with an empty window and the open duration back to its base; if one
//!   fails, it opens again.
//! * [`State::ForcedOpen`] and [`State::ForcedClosed`]: set by hand through
//!   the [`BreakerHandle`], until [`reset`](BreakerHandle::reset).
//!
//! # The window
//!
//! The window really slides: it is the last [`window`] of time, cut into
//! [`bucket`]s, and an outcome is forgotten one window after the bucket it
//! was recorded in, whether or not the breaker changed state meanwhile. A
//! burst of failures a minute ago does not count against an upstream that
//! has answered every call since. Closing after probes empties it, so the
//! failures that opened the breaker do not open it again at once.
//!
//! # What counts as a failure
//!
//! The [`classify`](crate::classify) module decides, with
//! [`HttpClassifier`](crate::classify::HttpClassifier) by default (set your
//! own with [`classifier`](CircuitBreakerBuilder::classifier)): 5xx
//! responses, connection errors, timeouts. A 4xx is the upstream working
//! and never counts. Two failures do not count either:
//!
//! * `429 Too Many Requests`, unless
//!   [`too_many_requests_is_failure`](CircuitBreakerBuilder::too_many_requests_is_failure)
//!   is set: an upstream that answers 429 is up and is pacing this caller.
//!   Opening the breaker on it would turn a rate limit into an outage.
//! * A [deadline](crate::deadline) that ran out before the request was
//!   sent: the caller's budget was spent elsewhere.
//!
//! A call whose response future is dropped before it completes (the caller
//! went away, an outer timeout fired) counts neither way; if it was a
//! half-open probe, its slot is given to the next call.
//!
//! # Cost
//!
//! A closed breaker admits a call with one atomic load, and records its
//! outcome with one clock read and one compare-and-swap on this core's
//! stripe of the window's current bucket (so calls completing on different
//! cores do not fight over one cache line); the window is summed only when
//! a call fails. No lock is taken and nothing is allocated on that path. Transitions take a short
//! lock. The crate's benchmarks compare it with tower-resilience's
//! circuit breaker.
//!
//! The breaker decides in `call`, not in `poll_ready`: readiness is the
//! inner service's, so a breaker in front of a buffer or a balancer never
//! holds a slot it is about to refuse.
//!
//! # Logs
//!
//! Every transition is a `tracing` event with target
//! `tower_steady::circuit_breaker` and a `breaker` field with the
//! [`name`](CircuitBreakerBuilder::name): `warn` when the breaker opens
//! (with the reason and the window's counts), `info` otherwise.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_steady::circuit_breaker::{CircuitBreakerLayer, CircuitOpen, State};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_steady::BoxError> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .name("inventory")
//!     .minimum_calls(5)
//!     .open_duration(Duration::from_secs(5))
//!     .build()?;
//! let handle = breaker.handle();
//!
//! // An upstream that is down.
//! let upstream = service_fn(|_req: Request<()>| async {
//!     let mut response = Response::new(());
//!     *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!     Ok::<_, std::convert::Infallible>(response)
//! });
//! let svc = ServiceBuilder::new().layer(breaker).service(upstream);
//!
//! for _ in 0..5 {
//!     svc.clone().oneshot(Request::new(())).await?;
//! }
//! assert_eq!(handle.state(), State::Open);
//!
//! // Turned away without reaching the upstream.
//! let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert!(open.retry_after() <= Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```
//!
//! [`minimum_calls`]: CircuitBreakerBuilder::minimum_calls
//! [`failure_ratio`]: CircuitBreakerBuilder::failure_ratio
//! [`slow_calls`]: CircuitBreakerBuilder::slow_calls
//! [`consecutive_failures`]: CircuitBreakerBuilder::consecutive_failures
//! [`open_duration`]: CircuitBreakerBuilder::open_duration
//! [`max_open_duration`]: CircuitBreakerBuilder::max_open_duration
//! [`jitter`]: CircuitBreakerBuilder::jitter
//! [`half_open_probes`]: CircuitBreakerBuilder::half_open_probes
//! [`window`]: CircuitBreakerBuilder::window
//! [`bucket`]: CircuitBreakerBuilder::bucket
//! [`CircuitOpen`]: error::CircuitOpen

pub mod body;
mod breaker;
pub mod error;
pub mod future;
mod handle;
mod layer;
mod window;

#[cfg(test)]
mod tests;

pub use self::body::BreakerBody;
pub use self::error::CircuitOpen;
pub use self::handle::{BreakerHandle, BreakerSnapshot};

/// The old name of [`BreakerSnapshot`].
#[deprecated(since = "0.1.0", note = "renamed `BreakerSnapshot`")]
pub type Snapshot = BreakerSnapshot;
pub use self::layer::{CircuitBreakerBuilder, CircuitBreakerLayer};

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use tower_service::Service;

use self::breaker::Breaker;
use self::future::{Guard, ResponseFuture};
use crate::classify::Classify;
use crate::BoxError;

/// The state of a circuit breaker. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum State {
    /// Calls pass and are recorded.
    Closed,
    /// Calls are turned away until the open period is over.
    Open,
    /// A few probes are let through to see whether the upstream is back.
    HalfOpen,
    /// Opened by hand: calls are turned away until reset.
    ForcedOpen,
    /// Closed by hand: calls pass, unrecorded, until reset.
    ForcedClosed,
}

impl State {
    /// A short, stable name for logs and metric labels.
    pub const fn as_str(&self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
        }
    }
}

/// Fails fast while the inner service's upstream is down. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
}

impl<S, C> CircuitBreaker<S, C> {
    fn new(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
        }
    }

    /// A handle on the breaker this service shares with its clones.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.breaker.clone())
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Request, B> Service<Request> for CircuitBreaker<S, C>
where
    S: Service<Request, Response = Response<B>>,
    S::Error: Into<BoxError>,
    C: Classify + Clone,
{
    type Response = Response<BreakerBody<B, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.breaker.acquire(crate::time::now) {
            Ok(permit) => ResponseFuture::called(
                self.inner.call(request),
                Guard::new(self.breaker.clone(), permit),
                self.classifier.clone(),
            ),
            Err(retry_after) => {
                tracing::debug!(
                    target: "tower_steady::circuit_breaker",
                    breaker = %self.breaker.name(),
                    retry_after_ms = retry_after.as_millis() as u64,
                    "call turned away"
                );
                crate::observability::emit::breaker_rejected(self.breaker.name_arc());
                ResponseFuture::rejected(retry_after, self.classifier.clone())
            }
        }
    }
}
