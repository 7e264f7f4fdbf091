//! What each attempt knows about the attempts before it.

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::net::SocketAddr;

use http::{Request, Response};

use crate::BoxError;

/// The request extension the [retry layer](crate::retry) puts on every
/// retry and hedge: which attempt this is, and the endpoints the earlier
/// ones went to.
///
/// It lives beside [`Retried`](super::Retried) because two layers speak it
/// (the retry layer writes it, a balancer such as
/// [`Upstreams`](crate::upstream::Upstreams) reads it), and neither needs
/// the other to build.
///
/// A balancer below the retry layer reads it to send a retry somewhere
/// else: a request that failed on one replica should not go back to it
/// while another is available.
///
/// The first attempt carries none: inserting an extension allocates (the
/// extension map and a box for the value), the first attempt is every
/// request, and "no `Attempt`" already says "attempt 1, nothing tried".
/// [`Attempt::of_or_first`] reads it that way. This is a deliberate
/// reading of "each attempt carries an extension": the information is
/// there for every attempt, and the success path stays allocation-free.
///
/// ```
/// use http::Request;
/// use tower_steady::http::Attempt;
///
/// # let request = Request::new(());
/// let attempt = Attempt::of_or_first(&request);
/// if attempt.is_retry() {
///     // Avoid attempt.tried() when choosing an endpoint.
/// }
/// assert_eq!(attempt.number(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    number: u32,
    hedge: bool,
    tried: Vec<Endpoint>,
}

const FIRST: Attempt = Attempt {
    number: 1,
    hedge: false,
    tried: Vec::new(),
};

impl Attempt {
    #[cfg_attr(not(feature = "retry"), allow(dead_code))]
    pub(crate) fn new(number: u32, hedge: bool, tried: Vec<Endpoint>) -> Self {
        Self {
            number,
            hedge,
            tried,
        }
    }

    /// The attempt extension of `request`, if a retry layer put one there
    /// (on a retry or a hedge).
    pub fn of<B>(request: &Request<B>) -> Option<&Attempt> {
        request.extensions().get::<Attempt>()
    }

    /// The attempt extension of `request`, or the first attempt's (number
    /// 1, nothing tried) when there is none.
    pub fn of_or_first<B>(request: &Request<B>) -> Attempt {
        Self::of(request).cloned().unwrap_or(FIRST)
    }

    /// The attempt's number: 1 for the first, 2 for the first retry or the
    /// hedge, and so on.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether this is a retry or a hedge (any attempt but the first).
    pub fn is_retry(&self) -> bool {
        self.number > 1
    }

    /// Whether this is a hedge: sent while an earlier attempt is still in
    /// flight.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// The endpoints the earlier attempts of this request went to, oldest
    /// first, as far as they reported them (see [`Endpoint`]). A hedge is
    /// sent before the attempt it races has reported anything.
    pub fn tried(&self) -> &[Endpoint] {
        &self.tried
    }
}

/// The endpoint an attempt went to.
///
/// The retry layer learns it from what the attempt returned: an
/// `Endpoint` in the response's extensions, or an [`EndpointError`] around
/// the error. A balancer reports both; the retry layer lists them in the
/// next attempt's [`Attempt::tried`], and takes the [`EndpointError`]
/// wrapper off before returning an error, so callers see the error itself.
/// [`Upstreams`](crate::upstream::Upstreams) wraps an error only when a
/// retry layer is calling it: used without one, it returns its endpoints'
/// errors as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    addr: SocketAddr,
}

impl Endpoint {
    /// The endpoint at `addr`.
    pub const fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// The endpoint's address.
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint a response came from, if the service that sent it said.
    pub fn of<B>(response: &Response<B>) -> Option<Endpoint> {
        response.extensions().get::<Endpoint>().copied()
    }

    /// The endpoint named by the first [`EndpointError`] in `error`'s
    /// source chain.
    pub fn of_error(error: &(dyn Error + 'static)) -> Option<Endpoint> {
        let mut current = Some(error);
        while let Some(err) = current {
            if let Some(e) = err.downcast_ref::<EndpointError>() {
                return Some(e.endpoint);
            }
            current = err.source();
        }
        None
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

/// An error of an attempt, with the endpoint it went to.
///
/// Classification looks through it (it is the error's
/// [`source`](Error::source)); the retry layer records the endpoint and
/// returns [`into_inner`](Self::into_inner) if it gives up.
#[derive(Debug)]
pub struct EndpointError {
    endpoint: Endpoint,
    source: BoxError,
}

impl EndpointError {
    /// `error`, which happened on `endpoint`.
    pub fn new(endpoint: Endpoint, error: impl Into<BoxError>) -> Self {
        Self {
            endpoint,
            source: error.into(),
        }
    }

    /// The endpoint the attempt went to.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The error itself.
    pub fn into_inner(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt on {} failed", self.endpoint)
    }
}

impl Error for EndpointError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

thread_local! {
    /// Whether a retry layer is calling the service below it on this
    /// thread (see [`endpoint_wanted`]).
    static RETRY_CALLING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the layer that will answer `request` should report the endpoint
/// of a failed attempt (wrap its error in an [`EndpointError`]): yes when a
/// retry layer is calling it, which a retry or hedge says with its
/// [`Attempt`] and the first attempt by being sent inside
/// [`retry_calling`]. A balancer used without a retry layer then returns
/// its endpoints' errors as they are.
///
/// The first attempt carries no extension (inserting one allocates on
/// every request), so the retry layer says it with a thread-local flag held
/// while it calls the service below, as the crate's shared clock reading is
/// (`crate::time::scope`). A first attempt that crosses to another task
/// (a buffer between the two layers) is not seen as one and its error is
/// returned bare: the retry layer then does not learn where it went, and
/// the retry may go back to the same endpoint.
#[cfg_attr(not(feature = "upstream"), allow(dead_code))]
pub(crate) fn endpoint_wanted<B>(request: &Request<B>) -> bool {
    RETRY_CALLING.with(Cell::get) || Attempt::of(request).is_some()
}

/// Marks the services called while the guard lives as called by a retry
/// layer (see [`endpoint_wanted`]), then gives the previous value back,
/// even on a panic.
#[cfg_attr(not(feature = "retry"), allow(dead_code))]
#[inline]
pub(crate) fn retry_calling() -> RetryCalling {
    RetryCalling(RETRY_CALLING.with(|c| c.replace(true)))
}

/// Clears the mark of [`retry_calling`] while the guard lives: for a
/// balancer that calls its endpoint's service from its own `call`, which is
/// not called by a retry layer whatever called the balancer.
#[cfg_attr(not(feature = "upstream"), allow(dead_code))]
#[inline]
pub(crate) fn not_retry_calling() -> RetryCalling {
    RetryCalling(RETRY_CALLING.with(|c| c.replace(false)))
}

/// See [`retry_calling`].
#[must_use = "the mark holds only while the guard lives"]
pub(crate) struct RetryCalling(bool);

impl Drop for RetryCalling {
    #[inline]
    fn drop(&mut self) {
        RETRY_CALLING.with(|c| c.set(self.0));
    }
}

/// Takes an [`EndpointError`] wrapper off `error`.
#[cfg_attr(not(feature = "retry"), allow(dead_code))]
pub(crate) fn unwrap_endpoint(error: BoxError) -> BoxError {
    match error.downcast::<EndpointError>() {
        Ok(wrapped) => wrapped.into_inner(),
        Err(error) => error,
    }
}
