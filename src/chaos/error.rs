//! Error types.

use std::fmt;

/// Marks an error as injected by [`ChaosLayer`](super::ChaosLayer).
///
/// Connection faults are returned as a [`std::io::Error`] of the matching
/// kind (`ConnectionRefused`, `ConnectionReset`), so they are classified
/// exactly like the real thing; the `io::Error` wraps an `Injected`, so a
/// test can still tell them apart:
///
/// ```
/// # use tower_steady::chaos::error::Injected;
/// # let err: tower_steady::BoxError = Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, Injected::new("connection refused")));
/// let io = err.downcast_ref::<std::io::Error>().unwrap();
/// assert!(io.get_ref().unwrap().is::<Injected>());
/// ```
#[derive(Debug)]
pub struct Injected {
    fault: &'static str,
}

impl Injected {
    /// An injected fault described as `fault`.
    pub const fn new(fault: &'static str) -> Self {
        Self { fault }
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "injected fault: {}", self.fault)
    }
}

impl std::error::Error for Injected {}
