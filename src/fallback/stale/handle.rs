use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Shared;

/// A handle on a [`StaleIfErrorLayer`](crate::fallback::StaleIfErrorLayer)'s store,
/// shared with every service the layer made. Cheap to clone.
#[derive(Clone)]
pub struct StaleIfErrorHandle {
    shared: Arc<Shared>,
}

/// The store's size and counters, read by [`StaleIfErrorHandle::stats`].
///
/// Lookups happen only after a failure: `hits + misses` is the number of
/// failures of stored-or-storable requests the layer looked up, and
/// `hits − stale_served` the copies found too old to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct StaleIfErrorStats {
    /// Copies stored now.
    pub entries: usize,
    /// Bytes they count against the budget.
    pub bytes: usize,
    /// Responses stored since the layer was built.
    pub stored: u64,
    /// Failures for which a copy was found.
    pub hits: u64,
    /// Failures for which none was.
    pub misses: u64,
    /// Stale copies served.
    pub stale_served: u64,
}

impl StaleIfErrorHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The store's size and counters now. Takes the store's lock briefly.
    pub fn stats(&self) -> StaleIfErrorStats {
        let sizes = self.shared.sizes();
        let c = &self.shared.counters;
        StaleIfErrorStats {
            entries: sizes.entries,
            bytes: sizes.bytes,
            stored: c.stored.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            stale_served: c.served.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for StaleIfErrorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleIfErrorHandle")
            .field("stats", &self.stats())
            .finish()
    }
}
