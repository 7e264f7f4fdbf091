use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::health::Registry;

/// A handle on an [`Upstreams`](super::Upstreams), from
/// [`Upstreams::handle`](super::Upstreams::handle): every endpoint's state
/// at one moment.
///
/// Cheap to clone; it does not keep the endpoints' services alive.
#[derive(Debug, Clone)]
pub struct UpstreamsHandle {
    registry: Arc<Registry>,
}

impl UpstreamsHandle {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    /// Every endpoint of the current set, in the set's order.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot> {
        self.registry.snapshot(Instant::now())
    }

    /// The endpoint at `addr`, if it is in the set.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<EndpointSnapshot> {
        self.snapshot().into_iter().find(|e| e.addr == addr)
    }

    /// How many endpoints take requests now (healthy or in slow start).
    pub fn healthy(&self) -> usize {
        self.registry.healthy()
    }
}

/// One endpoint's state and numbers at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct EndpointSnapshot {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// Whether it takes requests.
    pub state: EndpointState,
    /// Requests sent to it and not answered yet.
    pub in_flight: u32,
    /// Its peak-EWMA latency estimate now.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "latency_ms", serialize_with = "crate::serde_util::millis")
    )]
    pub latency: Duration,
    /// Its success rate over the last success-rate interval (or the current
    /// one, before the first has ended); `None` before any request.
    pub success_rate: Option<f64>,
    /// How many times it has been ejected (passively: failures, success
    /// rate, failed probes).
    pub ejections: u32,
    /// While passively ejected: the time left before its probe.
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "ejected_for_ms",
            serialize_with = "crate::serde_util::opt_millis"
        )
    )]
    pub ejected_for: Option<Duration>,
    /// Whether active health checks have marked it down.
    pub checks_failing: bool,
}

/// Whether an endpoint takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum EndpointState {
    /// It takes its full share.
    Healthy,
    /// Re-admitted or newly added: its share ramps up over the slow-start
    /// window.
    SlowStart,
    /// Ejected by outlier detection or failing health checks: it takes
    /// nothing (unless the set is in panic mode).
    Ejected,
    /// Its ejection is over and one probe request is in flight.
    Probing,
}
