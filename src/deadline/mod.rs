//! Middleware that gives each request one total time budget.
//!
//! A request may be tried several times, wait for backoff between attempts,
//! and cross several hops; its caller still waits only so long. [`DeadlineLayer`]
//! sets that budget once, outside every other layer:
//!
//! * it stores the request's [`Deadline`] in the request's extensions, so the
//!   layers inside it (retry, backoff, hedging) can read
//!   [`Deadline::remaining`] and never wait past it;
//! * it fails the response future with [`DeadlineExceeded`] when the budget
//!   runs out, whatever the inner layers are doing;
//! * a request that arrives with its budget already spent is failed at once,
//!   **without calling the inner service**: nobody is waiting for its answer.
//!
//! [`ErrorResponseLayer`] turns [`DeadlineExceeded`] into `504 Gateway
//! Timeout`.
//!
//! The default budget is 15 seconds, Envoy's default route timeout.
//!
//! # Propagation
//!
//! A deadline is worth most when it travels with the request, so that the
//! next hop stops working for a caller that has given up (gRPC's deadline
//! propagation, Envoy's `x-envoy-expected-rq-timeout-ms`).
//!
//! * **Server side** ([`DeadlineLayer::server`]): the caller's remaining
//!   budget is read from [`x-request-timeout-ms`](header::REQUEST_TIMEOUT_MS)
//!   (whole milliseconds) and from [`grpc-timeout`](header::GRPC_TIMEOUT),
//!   and the smallest of those and our own budget wins. Malformed values are
//!   ignored (and logged at debug); absurdly large ones lose to our own
//!   budget, so a caller can shorten a request's budget but never lengthen
//!   it.
//! * **Client side** ([`DeadlineLayer::client`]): the remaining budget,
//!   minus a margin for the answer's trip back (10 ms by default), is written
//!   to `x-request-timeout-ms` on the outgoing request, and on a gRPC
//!   request (a `POST` with `content-type: application/grpc`) to
//!   `grpc-timeout` as well, in gRPC's form (at most 8 digits and a unit,
//!   rounded down). A retry writes what is left of it on every later
//!   attempt.
//!
//! A [`Deadline`] already in the request's extensions is kept if it is
//! earlier. A proxy passes its incoming request's deadline on by copying the
//! extension to the outgoing request:
//!
//! ```
//! # use http::Request;
//! use tower_steady::deadline::Deadline;
//! # let incoming = Request::new(());
//! # let mut outgoing = Request::new(());
//! if let Some(deadline) = Deadline::of(&incoming) {
//!     outgoing.extensions_mut().insert(deadline);
//! }
//! ```
//!
//! # Cost
//!
//! Inserting the extension allocates the request's extension map if it has
//! none yet; that is the price of a budget every inner layer can read.
//! Writing the header allocates the request's header map if it has none yet;
//! its value, for the usual client request whose budget is the layer's
//! whole timeout, is made once when the layer is built and shared (no
//! formatting, no allocation), and formatted only for a shorter budget. The
//! timer is created only if the response is not ready at its first poll, as
//! in [`timeout`](crate::timeout), and not at all inside a deadline or
//! timeout that ends no later (a proxy's client deadline inside its server
//! deadline), nor while an attempt timeout inside that ends sooner has one
//! of its own: see [`timeout`'s costs](crate::timeout#cost).
//!
//! In the client preset ([`Resilience::client`](crate::Resilience::client)),
//! the deadline layer sits above the retry layer, which copies each
//! request's head for its later attempts and gives every later attempt its
//! own `Deadline` and header anyway. There, a request that carries no
//! `Deadline` yet is not given one (nor, when its budget is the whole
//! timeout, its header) by the deadline layer: it hands both to the retry
//! layer, which writes them into the first attempt once the head is
//! copied, and the copy holds neither: one allocation fewer, and one
//! header fewer to copy and drop, for every request. Every attempt carries
//! the same `Deadline` and header as otherwise; only stale-if-error, which
//! the preset puts between the two and which reads neither, sees the
//! request without them. This is a departure from "the layer writes the
//! request", made deliberately for the preset's common case; a deadline
//! layer built on its own, or a request with a deadline already, is
//! written here as described above.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_steady::deadline::{error::DeadlineExceeded, Deadline, DeadlineLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_steady::ConfigError> {
//! let app = service_fn(|req: Request<()>| async move {
//!     // Inner layers and handlers see how much time is left.
//!     let left = Deadline::of(&req).unwrap().remaining();
//!     assert!(left <= Duration::from_millis(250));
//!     Ok::<_, Infallible>(Response::new(()))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::server().timeout(Duration::from_secs(2)).build()?)
//!     .service(app);
//!
//! // The caller has 250 ms left: that, not our 2 s, is the budget.
//! let req = Request::get("/").header("x-request-timeout-ms", "250").body(()).unwrap();
//! svc.clone().oneshot(req).await.unwrap();
//!
//! // The caller has no time left: the app is not called at all.
//! let req = Request::get("/").header("x-request-timeout-ms", "0").body(()).unwrap();
//! let err = svc.oneshot(req).await.unwrap_err();
//! assert!(err.is::<DeadlineExceeded>());
//! # Ok(())
//! # }
//! ```
//!
//! [`ErrorResponseLayer`]: crate::http::ErrorResponseLayer
//! [`DeadlineExceeded`]: error::DeadlineExceeded

pub mod error;
pub use self::error::DeadlineExceeded;
pub mod future;
pub(crate) mod handover;
pub mod header;
mod layer;

pub use self::layer::{DeadlineBuilder, DeadlineLayer};

/// The old name of [`DeadlineBuilder`].
#[deprecated(since = "0.1.0", note = "renamed `DeadlineBuilder`")]
pub type DeadlineLayerBuilder = DeadlineBuilder;

use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, Request};
use tokio::time::Instant;
use tower_service::Service;

use self::future::ResponseFuture;
use self::layer::Config;
use crate::time::saturating_add;
use crate::BoxError;

/// The instant by which a request must be answered.
///
/// [`DeadlineLayer`] stores one in each request's extensions; read it with
/// [`Deadline::of`]. One that a layer wrote into a header also remembers
/// which header, so that each later attempt of the request (a retry) can
/// say what is left of it there, as the retry layer does. Two
/// deadlines compare by their instant alone.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Instant,
    /// The header the layer that set it wrote, if it wrote one.
    header: Option<&'static HeaderName>,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl std::hash::Hash for Deadline {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.at.hash(state);
    }
}

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Self {
            at: instant,
            header: None,
        }
    }

    /// The header the deadline layer that set this deadline wrote it to.
    #[cfg_attr(not(feature = "retry"), allow(dead_code))]
    pub(crate) fn header(&self) -> Option<&'static HeaderName> {
        self.header
    }

    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self::at(saturating_add(Instant::now(), budget))
    }

    /// The deadline stored in `request`'s extensions, if any.
    pub fn of<B>(request: &Request<B>) -> Option<Self> {
        request.extensions().get::<Deadline>().copied()
    }

    /// The instant of the deadline.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The time left until the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.at <= Instant::now()
    }
}

/// Enforces a request's [`Deadline`]. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct EnforceDeadline<S> {
    inner: S,
    config: Config,
}

impl<S> EnforceDeadline<S> {
    pub(crate) fn new(inner: S, config: Config) -> Self {
        Self { inner, config }
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

/// `slot`, a request's deadline, made `at` if that is earlier (never
/// later), and naming `header` if this layer writes one.
#[inline]
fn update(slot: &mut Deadline, at: Instant, header: Option<&'static HeaderName>) -> Deadline {
    if at <= slot.at {
        *slot = Deadline::at(at);
    }
    if header.is_some() {
        slot.header = header;
    }
    *slot
}

impl<S, B> Service<Request<B>> for EnforceDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let now = crate::time::now();
        let config = &self.config;

        // Our own budget, shortened by the caller's if it sent one.
        let mut budget = config.timeout;
        if config.read_headers {
            if let Some(theirs) = header::read(request.headers(), config.header_name) {
                budget = budget.min(theirs);
            }
        }
        let own = now.checked_add(budget);
        let own_at = own.unwrap_or_else(|| saturating_add(now, budget));
        // The request's `Deadline`, found or made with one lookup of the
        // extensions: an outer one (an outer layer's, or a proxy's incoming
        // request's) is replaced in place by ours if ours is earlier, and
        // never extended; a request without one is given ours. Set before
        // the headers are written, since it is known already: the header
        // this layer writes, if it writes one. Above the client preset's
        // retry, a request without one is not given it here: the retry
        // writes it into the first attempt, after copying the head
        // (`handover`).
        let header = config.write_header.then_some(config.header_name);
        let (deadline, handed) = if config.retry_below {
            match request.extensions_mut().get_mut::<Deadline>() {
                Some(slot) => (update(slot, own_at, header), false),
                None => (Deadline { at: own_at, header }, true),
            }
        } else {
            let slot = request
                .extensions_mut()
                .get_or_insert_with(|| Deadline::at(own_at));
            (update(slot, own_at, header), false)
        };

        if deadline.at <= now {
            tracing::debug!(
                target: "tower_steady::deadline",
                "request arrived with no time left; not calling the service"
            );
            crate::observability::emit::deadline_exceeded("arrival");
            return ResponseFuture::expired();
        }

        let mut whole = None;
        if config.write_header {
            // What is left: the budget itself when the deadline is our own
            // (no clock arithmetic back from the instant), else measured.
            let remaining = match own {
                Some(at) if at == deadline.at => budget,
                _ => deadline.at.saturating_duration_since(now),
            };
            // A gRPC server reads its own header: a gRPC request carries
            // the budget in both, written here.
            let grpc = crate::classify::grpc::is_grpc_request(&request);
            match config.whole_budget {
                // The usual case on a client: the budget is all ours.
                Some(value) if remaining == config.timeout => {
                    if handed && !grpc {
                        whole = Some(handover::WholeHeader::new(
                            config.header_name,
                            value,
                            header::said(remaining.saturating_sub(config.margin)),
                        ));
                    } else {
                        request
                            .headers_mut()
                            .insert(config.header_name.clone(), value.clone());
                    }
                }
                _ => header::write(
                    request.headers_mut(),
                    config.header_name,
                    remaining.saturating_sub(config.margin),
                ),
            }
            if grpc {
                header::write_grpc(
                    request.headers_mut(),
                    remaining.saturating_sub(config.margin),
                );
            }
        }
        let _now = crate::time::scope(now);
        let _given = handed.then(|| {
            handover::Handover {
                deadline,
                header: whole,
            }
            .give()
        });
        ResponseFuture::running(self.inner.call(request), deadline.at)
    }
}
