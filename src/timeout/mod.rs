//! Middleware that applies a timeout to requests.
//!
//! [`TimeoutLayer`] bounds one *attempt*: the time from `call` until the
//! inner service's response future completes. It is the innermost layer of
//! the client stack, right around the HTTP client, so that a hanging upstream
//! costs one attempt, not the whole request; the total budget of a request,
//! across all its attempts, is the [`deadline`](crate::deadline) layer's job.
//! When the time is up the response future fails with [`Elapsed`], which
//! [`classify`](crate::classify) calls a [`Timeout`] that may have been sent,
//! and [`ErrorResponseLayer`] answers with `504 Gateway Timeout`.
//!
//! There is no default: an attempt timeout is set when it is wanted. A zero
//! timeout is allowed here, as in tower (only a response that is ready on
//! the first poll gets through); the presets refuse one with a
//! [`ConfigError`](crate::ConfigError), since there it is always a mistake.
//!
//! On a server, [`TimeoutLayer::handler`] bounds the handler instead, and
//! what times out is reported as a handler timeout.
//!
//! # Cost
//!
//! Most of the cost of a timeout is its timer: creating a `tokio::time::Sleep`
//! looks up the runtime's timer, and polling it inserts an entry into the
//! timer wheel that has to be removed again. Here the timer is created only
//! when the inner future returns `Pending` for the first time; a response
//! that is ready on its first poll (a cache hit, a rejection by an inner
//! layer, an in-process service) costs one clock read and nothing else. The
//! crate's benchmarks compare it with tower's `Timeout`.
//!
//! A timeout inside another timeout or a [deadline](crate::deadline) that
//! ends no later (an attempt timeout longer than what is left of the
//! request's deadline, a proxy's client deadline inside its server
//! deadline) creates no timer at all: the outer one ends both. The inner
//! one still fires first when both are due at the same instant, as if it
//! had its own timer, so the layers between them see its error. This holds
//! when the inner future is stored inside the outer one and first polled
//! in the outer one's first poll, as in one stack of layers; a future
//! behind a box, in a spawned task or behind a buffer, or made later (a
//! retry after its backoff) keeps its own timer.
//!
//! The other way round, a deadline or timeout around an attempt timeout
//! that ends sooner (a proxy's deadlines around each replica's attempt
//! timeout) makes no timer while that one has its own: the attempt's timer
//! wakes the task first, and the outer one decides again then. It makes its
//! own once that attempt has ended and the work goes on (a retry's backoff,
//! or anything else still pending), when a timer inside is dropped while
//! the request waits on, or when the attempt was polled with a waker other
//! than the outer future's (its timer would wake something else). A
//! proxy's request makes one timer instead of two. This departs from
//! tower, where every `Timeout` registers its own.
//!
//! # Ties
//!
//! The inner future is always polled before the timer. If the response is
//! ready at the same poll in which the timer fires, the response wins: work
//! that was done is not thrown away.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_steady::timeout::{error::Elapsed, TimeoutLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let slow = service_fn(|_req: Request<()>| async {
//!     tokio::time::sleep(Duration::from_secs(10)).await;
//!     Ok::<_, Infallible>(Response::new(()))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(1)))
//!     .service(slow);
//!
//! let err = svc.oneshot(Request::new(())).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! # }
//! ```
//!
//! [`Elapsed`]: error::Elapsed
//! [`Timeout`]: crate::classify::FailureKind::Timeout
//! [`ErrorResponseLayer`]: crate::http::ErrorResponseLayer

pub mod error;
pub use self::error::Elapsed;
pub mod future;
mod layer;

pub use self::layer::TimeoutLayer;

use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use crate::time::{saturating_add, LazyTimer};
use crate::BoxError;

use self::future::ResponseFuture;

/// Applies a timeout to each request. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
    handler: bool,
}

impl<S> Timeout<S> {
    /// Wraps `inner`, failing any call that takes longer than `timeout`.
    pub const fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            handler: false,
        }
    }

    /// The timeout applied to each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
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

impl<S, Request> Service<Request> for Timeout<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is not timed: waiting for capacity is the job of the
        // layers that manage it (load shedding, the balancer).
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        // The clock starts at `call`, as in tower; the timer itself is made
        // only if the response is not ready at its first poll.
        let now = crate::time::now();
        let deadline = saturating_add(now, self.timeout);
        let _now = crate::time::scope(now);
        ResponseFuture::new(
            self.inner.call(request),
            LazyTimer::new(deadline),
            self.handler,
        )
    }
}
