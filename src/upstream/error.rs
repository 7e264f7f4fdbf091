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
