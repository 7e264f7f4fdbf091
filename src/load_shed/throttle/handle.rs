use std::sync::Arc;

use tokio::time::Instant;

use super::window::Throttler;

/// A handle on a throttle, from
/// [`ThrottleLayer::handle`](super::ThrottleLayer::handle) or
/// [`Throttle::handle`](super::Throttle::handle).
///
/// Cheap to clone; every clone reads the same throttle.
#[derive(Debug, Clone)]
pub struct ThrottleHandle {
    throttler: Arc<Throttler>,
}

/// A throttle's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ThrottleSnapshot {
    /// Requests in the window, refused ones included.
    pub requests: u64,
    /// Of those, the ones the upstream accepted.
    pub accepts: u64,
    /// The probability the next request is refused locally.
    pub probability: f64,
    /// Requests refused locally since the layer was built.
    pub rejected: u64,
}

impl ThrottleHandle {
    pub(crate) fn new(throttler: Arc<Throttler>) -> Self {
        Self { throttler }
    }

    /// The window's counts and the refusal probability now.
    pub fn snapshot(&self) -> ThrottleSnapshot {
        self.throttler.window.advance(Instant::now());
        let (requests, accepts) = self.throttler.window.totals();
        ThrottleSnapshot {
            requests,
            accepts,
            probability: self.throttler.probability(requests, accepts),
            rejected: self.throttler.rejected(),
        }
    }
}
