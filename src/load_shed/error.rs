//! Error types.

use std::fmt;
use std::time::Duration;

/// The request was shed: turned away at once, without reaching the inner
/// service, because the service is at its concurrency limit
/// ([`AdaptiveLimit`](super::AdaptiveLimit)) or because the upstream has
/// been refusing this client's requests ([`Throttle`](super::Throttle)).
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
}

impl Overloaded {
    /// A rejection whose caller may try again after `retry_after`.
    pub const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long the caller should wait before trying again.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service overloaded")
    }
}

impl std::error::Error for Overloaded {}
