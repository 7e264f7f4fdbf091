//! Error types.

use std::fmt;
use std::time::Duration;

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
/// [`SetAuthority`]: super::SetAuthority
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnsupportedTarget {
    _priv: (),
}

impl UnsupportedTarget {
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
