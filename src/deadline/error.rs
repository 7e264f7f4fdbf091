//! Error types.

use std::fmt;

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
    pub(crate) const fn before_sending() -> Self {
        Self { sent: false }
    }

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
