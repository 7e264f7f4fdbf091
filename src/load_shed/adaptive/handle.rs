use std::sync::Arc;
use std::time::Duration;

use super::limiter::Limiter;

/// A handle on a concurrency limit, from
/// [`AdaptiveLimitLayer::handle`](super::AdaptiveLimitLayer::handle) or
/// [`AdaptiveLimit::handle`](super::AdaptiveLimit::handle).
///
/// Cheap to clone; every clone reads the same limit.
#[derive(Debug, Clone)]
pub struct LimitHandle {
    limiter: Arc<Limiter>,
}

/// A limit's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LimitSnapshot {
    /// The limit requests are admitted against now.
    pub limit: u32,
    /// Requests admitted and not yet completed or dropped.
    pub in_flight: u32,
    /// Requests waiting for a place (adaptive mode only).
    pub waiting: u32,
    /// Requests shed since the layer was built.
    pub rejected: u64,
    /// Of those, the sheddable ones.
    pub rejected_sheddable: u64,
    /// The latency the adaptive limit takes for "no queue"; `None` in
    /// fixed mode or before the first window closed.
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "no_load_ms",
            serialize_with = "crate::serde_util::opt_millis"
        )
    )]
    pub no_load: Option<Duration>,
}

impl LimitHandle {
    pub(crate) fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }

    /// The limit requests are admitted against now.
    pub fn limit(&self) -> u32 {
        self.limiter.limit()
    }

    /// Requests admitted and not yet completed or dropped.
    pub fn in_flight(&self) -> u32 {
        self.limiter.in_flight()
    }

    /// Requests waiting for a place (adaptive mode only).
    pub fn waiting(&self) -> u32 {
        self.limiter.waiting()
    }

    /// Everything at once.
    pub fn snapshot(&self) -> LimitSnapshot {
        let (rejected, rejected_sheddable) = self.limiter.rejected();
        LimitSnapshot {
            limit: self.limiter.limit(),
            in_flight: self.limiter.in_flight(),
            waiting: self.limiter.waiting(),
            rejected,
            rejected_sheddable,
            no_load: self.limiter.no_load(),
        }
    }
}
