//! Error types.

use std::fmt;
use std::time::Duration;

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
