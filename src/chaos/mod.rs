//! Middleware that injects faults, for testing.
//!
//! **A testing tool.** [`ChaosLayer`] makes a healthy service misbehave the
//! way real upstreams do, so the rest of a stack can be tested, demonstrated
//! and benchmarked against failures on demand: wrap an in-process upstream
//! (an axum app) in it, or a client in a test. Do not leave it in a
//! production stack by accident; it has no business there unless you are
//! running a deliberate fault-injection experiment.
//!
//! Each [`Fault`] is injected into its own fraction of calls:
//!
//! * [`Fault::Status`]: answer with an error status (502, 503, 504, 429, ...)
//!   and an empty body, without calling the inner service;
//! * [`Fault::ConnectionRefused`] and [`Fault::ConnectionReset`]: fail with an
//!   `std::io::Error` of that kind, which
//!   [`classify`](crate::classify) treats exactly like a real one (not sent,
//!   and maybe sent);
//! * [`Fault::Hang`]: never answer, like an upstream that accepted the
//!   connection and went silent;
//!
//! and latency, fixed or drawn from a range, is added to its own fraction of
//! calls, independently.
//!
//! Draws come from a seedable, lock-free generator shared by every clone, so
//! a seeded layer gives the same faults on every run with the same order of
//! calls. The response body type must implement `Default` (axum's `Body`
//! does), for the empty body of injected statuses.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_steady::chaos::{ChaosLayer, Fault};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let chaos = ChaosLayer::builder()
//!     .seed(7)
//!     .fault(Fault::Status(StatusCode::BAD_GATEWAY), 0.2)
//!     .fault(Fault::ConnectionRefused, 0.1)
//!     .latency_between(0.5, Duration::from_millis(10), Duration::from_millis(200))
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(chaos)
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("ok")))
//!     }));
//!
//! let mut bad_gateways = 0;
//! for _ in 0..1000 {
//!     match svc.clone().oneshot(Request::new(String::new())).await {
//!         Ok(res) if res.status() == StatusCode::BAD_GATEWAY => bad_gateways += 1,
//!         _ => {}
//!     }
//! }
//! assert!((150..250).contains(&bad_gateways));
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod future;
mod layer;

pub use self::layer::{ChaosBuilder, ChaosLayer};

/// The old name of [`ChaosBuilder`].
#[deprecated(since = "0.1.0", note = "renamed `ChaosBuilder`")]
pub type ChaosLayerBuilder = ChaosBuilder;

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower_service::Service;

use self::future::{ResponseFuture, State};
use crate::rng::Rng;
use crate::BoxError;

/// A fault [`ChaosLayer`] can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status and an empty body.
    Status(StatusCode),
    /// Fail as if the connection had been refused: not sent.
    ConnectionRefused,
    /// Fail as if the connection had been reset after sending.
    ConnectionReset,
    /// Never answer.
    Hang,
}

#[derive(Debug)]
pub(crate) struct Shared {
    rng: Rng,
    // Each fault with the cumulative rate up to and including it, so one
    // draw picks at most one fault.
    faults: Box<[(Fault, f64)]>,
    latency: Option<(f64, Duration, Duration)>,
}

impl Shared {
    fn draw_latency(&self) -> Option<Duration> {
        let (rate, min, max) = self.latency?;
        if self.rng.next_f64() >= rate {
            return None;
        }
        Some(min + (max - min).mul_f64(self.rng.next_f64()))
    }

    fn draw_fault(&self) -> Option<Fault> {
        if self.faults.is_empty() {
            return None;
        }
        let x = self.rng.next_f64();
        self.faults
            .iter()
            .find(|(_, cumulative)| x < *cumulative)
            .map(|(fault, _)| *fault)
    }
}

/// Injects faults into calls to the inner service. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Chaos<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Chaos<S> {
    fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Chaos<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let delay = self.shared.draw_latency().map(tokio::time::sleep);
        let fault = self.shared.draw_fault();
        if let Some(fault) = fault {
            tracing::debug!(target: "tower_steady::chaos", ?fault, "injecting a fault");
        }
        let state = match fault {
            None => State::pass(self.inner.call(request)),
            Some(Fault::Status(status)) => State::Status { status },
            Some(Fault::ConnectionRefused) => State::Error {
                kind: io::ErrorKind::ConnectionRefused,
                what: "connection refused",
            },
            Some(Fault::ConnectionReset) => State::Error {
                kind: io::ErrorKind::ConnectionReset,
                what: "connection reset",
            },
            Some(Fault::Hang) => State::Hang,
        };
        ResponseFuture::new(delay, state)
    }
}
