//! The crate's vocabulary: [`BoxError`], [`ConfigError`], and the small
//! error types that several layers read, each a layer's own refusal or
//! timeout (`Elapsed`, `DeadlineExceeded`, `CircuitOpen`, `Overloaded`,
//! `NoHealthyUpstream`, `UnsupportedTarget`).
//!
//! This module imports no layer: [`classify`](crate::classify), which every
//! layer consults, reads these types from here, and each layer re-exports
//! the ones it returns at its module root (`timeout::Elapsed`) and from its
//! `error` module. So the shared decisions depend on the vocabulary only,
//! never on a layer, and any layer builds alone. The types are here
//! whatever features are on, so code that downcasts a stack's errors can
//! name them all from one place:
//!
//! ```
//! use tower_steady::error::{CircuitOpen, Elapsed, Overloaded};
//! use tower_steady::BoxError;
//!
//! fn what_went_wrong(error: &BoxError) -> &'static str {
//!     if error.is::<Elapsed>() {
//!         "timed out"
//!     } else if error.is::<CircuitOpen>() || error.is::<Overloaded>() {
//!         "refused, try again later"
//!     } else {
//!         "failed"
//!     }
//! }
//! # assert_eq!(what_went_wrong(&BoxError::from(Elapsed::new())), "timed out");
//! ```

use std::fmt;
use std::time::Duration;

/// The error type every layer of this crate returns: a boxed error that
/// callers inspect with [`downcast_ref`](std::error::Error#method.downcast_ref)
/// or `is::<T>()`, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A configuration value was rejected when a layer was built.
///
/// Layers validate their configuration once, in their builder's `build()`,
/// so a bad value is found at start-up rather than deep inside a request.
/// The error names the field (`"chaos.rate"`) and says what is wrong with it.
///
/// ```
/// use std::time::Duration;
/// use tower_steady::deadline::DeadlineLayer;
///
/// let err = DeadlineLayer::builder()
///     .timeout(Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "deadline.timeout");
/// assert_eq!(err.to_string(), "invalid deadline.timeout: must be greater than zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    #[allow(dead_code)] // used by the layers that validate configuration
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The field that was rejected, as `layer.field`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the field was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Displays an error followed by each of its sources, separated by `": "`.
///
/// Used for logs only: error text never goes into a response body.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// The attempt took longer than its timeout, or, from a
/// [`TimeoutLayer::handler`](crate::timeout::TimeoutLayer::handler), the
/// server's handler did.
#[derive(Debug, Default)]
pub struct Elapsed {
    handler: bool,
}

impl Elapsed {
    /// A new `Elapsed` error: an attempt timed out.
    pub const fn new() -> Self {
        Elapsed { handler: false }
    }

    /// A server's handler timed out.
    pub const fn handler() -> Self {
        Elapsed { handler: true }
    }

    /// Whether it was a server's handler that timed out (rather than an
    /// attempt sent to an upstream).
    pub const fn is_handler(&self) -> bool {
        self.handler
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.handler {
            "handler timed out"
        } else {
            "request timed out"
        })
    }
}

impl std::error::Error for Elapsed {}

/// The request's total time budget ran out.
///
/// Returned at once, without calling the inner service, when a request
/// arrives already expired; and when the budget runs out while the inner
/// service is still working on it. [`classify`](crate::classify) calls the
/// first `NotSent` and the second `MaybeSent`; both become `504 Gateway
/// Timeout` through [`ErrorResponseLayer`](crate::http::ErrorResponseLayer).
#[derive(Debug)]
pub struct DeadlineExceeded {
    sent: bool,
}

impl DeadlineExceeded {
    #[allow(dead_code)] // made by the layer that returns it, when it is on
    pub(crate) const fn before_sending() -> Self {
        Self { sent: false }
    }

    #[allow(dead_code)] // made by the layer that returns it, when it is on
    pub(crate) const fn while_running() -> Self {
        Self { sent: true }
    }

    /// Whether the inner service had been called (and so may have sent the
    /// request on) when the deadline passed.
    pub fn was_sent(&self) -> bool {
        self.sent
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// The circuit breaker is open: the call was turned away without reaching
/// the inner service.
///
/// It carries the time until the breaker lets a probe through, which
/// [`HttpClassifier`](crate::classify::HttpClassifier) reports as the error's
/// retry-after hint, so [`ErrorResponseLayer`](crate::http::ErrorResponseLayer)
/// answers `503 Service Unavailable` with a matching `Retry-After`. It is
/// classified [`Rejected`](crate::classify::FailureKind::Rejected) and
/// [`NotSent`](crate::classify::RetrySafety::NotSent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    retry_after: Duration,
}

impl CircuitOpen {
    /// A rejection whose caller may try again after `retry_after`.
    pub const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long until the breaker lets a call through again: the rest of
    /// the open period, one second while half-open probes are under way, the
    /// base open duration while forced open.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker open")
    }
}

impl std::error::Error for CircuitOpen {}

/// The request was shed: turned away at once, without reaching the inner
/// service, because the service is at its concurrency limit
/// ([`AdaptiveLimit`](crate::load_shed::AdaptiveLimit)) or because the upstream has
/// been refusing this client's requests ([`Throttle`](crate::load_shed::Throttle)).
///
/// It carries a retry-after hint (1 s by default), which
/// [`HttpClassifier`](crate::classify::HttpClassifier) reports so that
/// [`ErrorResponseLayer`](crate::http::ErrorResponseLayer) answers
/// `503 Service Unavailable` with a matching `Retry-After`. It is classified
/// [`Rejected`](crate::classify::FailureKind::Rejected) and
/// [`NotSent`](crate::classify::RetrySafety::NotSent), and the retry layer
/// never retries it: a shed request retried at once is the load it was shed
/// to avoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    retry_after: Duration,
    throttled: bool,
}

impl Overloaded {
    /// A rejection whose caller may try again after `retry_after`.
    pub const fn new(retry_after: Duration) -> Self {
        Self {
            retry_after,
            throttled: false,
        }
    }

    /// A request a client throttle refused because the upstream has been
    /// refusing this client's requests.
    pub const fn throttled(retry_after: Duration) -> Self {
        Self {
            retry_after,
            throttled: true,
        }
    }

    /// How long the caller should wait before trying again.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Whether a client throttle refused it (the upstream is refusing),
    /// rather than a concurrency limit of this service.
    pub const fn is_throttled(&self) -> bool {
        self.throttled
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service overloaded")
    }
}

impl std::error::Error for Overloaded {}

/// No endpoint could take the request: the set is empty, or every endpoint
/// is ejected and none is due for its probe yet.
///
/// The request was never sent, so it is classified
/// [`Rejected`](crate::classify::FailureKind::Rejected) /
/// [`NotSent`](crate::classify::RetrySafety::NotSent): the retry layer does
/// not retry it (there is nowhere else to send it) and
/// [`ErrorResponseLayer`](crate::http::ErrorResponseLayer) answers `503`
/// with its [`retry_after`](Self::retry_after) as `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoHealthyUpstream {
    retry_after: Duration,
}

impl NoHealthyUpstream {
    #[allow(dead_code)] // made by the layer that returns it, when it is on
    pub(crate) const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long until an endpoint may take requests again: the time to the
    /// next probe of an ejected endpoint, or to the next health check.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for NoHealthyUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no healthy upstream")
    }
}

impl std::error::Error for NoHealthyUpstream {}

/// A request whose target is not a path on a server: a `CONNECT` (or any
/// other authority-form target, `host:port`). [`SetAuthority`] refuses it
/// rather than point it at an endpoint, which would lose the target the
/// caller asked for (`CONNECT example.com:443` would reach the replica as
/// `CONNECT 10.0.0.2:8080`), or pass it on to a client that would open a
/// tunnel to wherever the caller named.
///
/// It is classified [`Unsupported`](crate::classify::FailureKind::Unsupported)
/// / [`NotSent`](crate::classify::RetrySafety::NotSent): never retried, never
/// counted against the upstream, and answered `501 Not Implemented` by
/// [`ErrorResponseLayer`](crate::http::ErrorResponseLayer).
///
/// [`SetAuthority`]: crate::upstream::SetAuthority
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnsupportedTarget {
    _priv: (),
}

impl UnsupportedTarget {
    #[allow(dead_code)] // made by the layer that returns it, when it is on
    pub(crate) const fn new() -> Self {
        Self { _priv: () }
    }
}

impl fmt::Display for UnsupportedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request target cannot be sent to an endpoint")
    }
}

impl std::error::Error for UnsupportedTarget {}
