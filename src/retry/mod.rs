//! Middleware that retries failed requests, within a budget.
//!
//! Most 502s a gateway sees are transient: a connection refused by a
//! replica that is restarting, a reset on a connection the upstream had
//! just closed, a 503 from an instance that is shedding load. Sent again a
//! moment later, often to another replica, the request succeeds and the
//! caller never knows. [`RetryLayer`] does that, and makes sure that
//! retrying cannot make an outage worse.
//!
//! # What is retried
//!
//! A failed attempt is retried only if [`classify`](crate::classify) says
//! it is safe:
//!
//! * a failure that never reached the upstream ([`RetrySafety::NotSent`]:
//!   connection refused, reset before the request was written), whatever
//!   the method;
//! * a failure the upstream may have seen ([`RetrySafety::MaybeSent`]: 502,
//!   503, 504, 429, a reset after sending, an attempt timeout) only if the
//!   request is [idempotent](crate::classify::is_idempotent) (GET, HEAD,
//!   OPTIONS, TRACE, PUT, DELETE, or an `Idempotency-Key` header).
//!
//! Never retried: [`DeadlineExceeded`](crate::deadline::error::DeadlineExceeded)
//! (no time is left) and the stack's own rejections
//! ([`FailureKind::Rejected`]: an open breaker, a shed request), which
//! would only be rejected again. And then, in this order:
//!
//! 1. at most 3 attempts per request, the first included;
//! 2. the request body must still be there to send (see [`ReplayBody`]);
//! 3. the wait before the retry, a full-jitter exponential [`Backoff`] (25 ms
//!    base, 250 ms cap) or the upstream's `Retry-After` on a 503 or a 429
//!    (or `grpc-retry-pushback-ms` on a gRPC answer, whose negative or
//!    malformed value means no retry) if it asks for longer (up to 10 s),
//!    must end before the request's
//!    [`Deadline`]: the layer **never waits past the deadline**, it returns
//!    the failure at once instead. The first retry of a request whose
//!    failed attempt said which endpoint it went to (an [`Endpoint`], as
//!    [`Upstreams`](crate::upstream::Upstreams) reports) waits for nothing
//!    but a `Retry-After`: a balancer below sends it to another endpoint,
//!    and the backoff is there for the one that failed (HAProxy's
//!    redispatch, Envoy's `previous_hosts`). Later retries back off;
//! 4. the [`Budget`] must have a retry left: at most 20% of requests over
//!    10 s, plus 10 retries per second (Finagle's defaults). An upstream
//!    that fails everything sees at most 1.2 times its normal load, not 3
//!    times.
//!
//! When any of these says no, the caller gets the failure as it came: the
//! upstream's response, or its error. A `tracing` event (target
//! `tower_steady::retry`) gives each decision and its reason: `debug` for
//! retries and refusals, `info` when the budget is empty.
//!
//! # Bodies
//!
//! The inner service receives `Request<`[`ReplayBody<B>`]`>`: the first
//! attempt streams the caller's body and keeps a copy of it (up to 64 KiB
//! by default), which later attempts send again. A larger body is sent once
//! and the request is not retried. No `Clone` body is needed.
//!
//! So the service below must take that body type: a hyper-util client is
//! built for `ReplayBody<B>`, not for `B`.
//!
//! ```
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::Empty;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{Layer, ServiceExt};
//! use tower_steady::retry::{ReplayBody, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
//! let service = RetryLayer::new().layer(client);
//! let call = service.oneshot(Request::get("http://127.0.0.1:1/").body(Empty::<Bytes>::new()).unwrap());
//! # drop(call);
//! # }
//! ```
//!
//! A client built for the caller's own body type (`build_http::<Empty<Bytes>>()`)
//! does not compile, with an error that `Retry<Client<..>>` is not a
//! `Service` (`oneshot`, `ready` or `call` "exists but its trait bounds
//! were not satisfied"); the fix is the body type above. The same holds for
//! `Resilience::client()`, which contains this layer.
//!
//! ```compile_fail
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::Empty;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{Layer, ServiceExt};
//! use tower_steady::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let service = RetryLayer::new().layer(client);
//! // error[E0599]: the method `oneshot` exists for struct `Retry<Client<..>>`,
//! // but its trait bounds were not satisfied
//! let call = service.oneshot(Request::get("http://127.0.0.1:1/").body(Empty::<Bytes>::new()).unwrap());
//! # drop(call);
//! # }
//! ```
//!
//! # Attempts and endpoints
//!
//! Every retry and hedge carries an [`Attempt`] extension: its number and
//! the [`Endpoint`]s the earlier attempts went to, so that a balancer below
//! can send a retry somewhere else. The first attempt carries none (no
//! extension means attempt 1, nothing tried; see
//! [`Attempt::of_or_first`]), so that the success path does not allocate
//! for it.
//!
//! # Hedging
//!
//! Optionally, an idempotent request still unanswered after a delay is sent
//! a second time, and the first success wins; see [`Hedge`].
//!
//! # Cost
//!
//! On the success path the layer takes no lock and makes one clock read (the
//! budget's deposit, a single atomic add). It does allocate: to send a
//! request again it must keep its head (method, URI, headers, extensions),
//! so it clones it, as every retry layer must (tower's `Retry` does it
//! through `Policy::clone_request`). A request with a body also
//! allocates the buffer its replay needs (no layer that resends requests
//! can avoid that copy), and each attempt's [`ReplayBody`] keeps its state
//! behind one pointer, so that the layers below and hyper, which move each
//! attempt's request several times, move a request no larger than one with
//! hyper's own body. A request with an empty body (most
//! GETs) costs no body allocation, and copying a head with no headers and
//! no extensions allocates nothing. The deadline layer's header and
//! [`Deadline`](crate::deadline::Deadline) are left out of the copy when
//! they are all the head holds (each later attempt gets them anew), so the
//! usual request of a client stack (a `GET` with only what the deadline
//! layer wrote) is kept without allocating. In the client preset they are
//! left out of every copy: its deadline layer hands them to this layer,
//! which writes them into the first attempt once the head is copied (see
//! the [`deadline`](crate::deadline) module). The response future holds the
//! first attempt's future inline and a hedge's boxed: a hedge allocates,
//! and the future is not twice the size of the attempt's for the requests
//! that never hedge.
//!
//! # What the response says
//!
//! A response that took more than one attempt (a retry or a hedge) carries
//! a [`Retried`](crate::http::Retried) extension: the attempts sent and the
//! backoff waited. The adaptive limit of a server in front takes that
//! backoff off the latency it measures, so a retried request does not look
//! like a queue.
//!
//! An empty budget returns the last attempt's own failure, which tells the
//! caller more than a `BudgetExhausted` error would: there is no such
//! error, and the budget's state is in the `tracing` event and in
//! [`RetryHandle`].
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, sync::atomic::{AtomicUsize, Ordering}, sync::Arc};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_steady::retry::{ReplayBody, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_steady::ConfigError> {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = calls.clone();
//! // An upstream whose first answer is a 502.
//! let upstream = service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let body = req.into_body().collect().await?.to_bytes();
//!         assert_eq!(body, "order #7"); // every attempt sends the whole body
//!         let status = if n == 0 { StatusCode::BAD_GATEWAY } else { StatusCode::OK };
//!         Ok::<_, tower_steady::BoxError>(Response::builder().status(status).body(()).unwrap())
//!     }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::builder().seed(7).build()?)
//!     .service(upstream);
//!
//! // A PUT is idempotent: its 502 is retried, body and all.
//! let request = Request::put("/orders/7").body(Full::new(Bytes::from("order #7"))).unwrap();
//! let response = client.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # Ok(())
//! # }
//! ```
//!
//! [`RetrySafety::NotSent`]: crate::classify::RetrySafety::NotSent
//! [`RetrySafety::MaybeSent`]: crate::classify::RetrySafety::MaybeSent
//! [`FailureKind::Rejected`]: crate::classify::FailureKind::Rejected
//! [`Deadline`]: crate::deadline::Deadline

mod backoff;
mod body;
pub mod budget;
pub mod error;
pub mod future;
mod hedge;
mod layer;
mod policy;

pub use self::backoff::Backoff;
pub use self::body::ReplayBody;
pub use self::budget::{Budget, BudgetBuilder};
pub use self::hedge::Hedge;
pub use self::layer::{RetryBuilder, RetryHandle, RetryLayer, RetrySnapshot};
pub use crate::http::{Attempt, Endpoint, EndpointError};

/// The old name of [`RetryBuilder`].
#[deprecated(since = "0.1.0", note = "renamed `RetryBuilder`")]
pub type RetryLayerBuilder = RetryBuilder;

/// The old name of [`RetrySnapshot`].
#[deprecated(since = "0.1.0", note = "renamed `RetrySnapshot`")]
pub type Snapshot = RetrySnapshot;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use self::future::ResponseFuture;
use self::layer::Shared;
use crate::classify::Classify;
use crate::BoxError;

/// Retries failed requests within a budget. See the [module docs](self).
///
/// Made by [`RetryLayer`]; every clone shares the layer's budget.
#[derive(Debug)]
pub struct Retry<S, C = crate::classify::HttpClassifier> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> Retry<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
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

impl<S, C, B, RB> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was made ready goes with this request; the clone
        // stays for the next one.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let now = crate::time::now();
        self.shared.budget.deposit_at(now);
        ResponseFuture::start(service, self.shared.clone(), request, now)
    }
}

#[cfg(test)]
mod tests;
