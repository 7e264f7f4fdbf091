//! Errors shared by every layer.

use std::fmt;

/// The error type every layer of this crate returns: a boxed error that
/// callers inspect with [`downcast_ref`](std::error::Error#method.downcast_ref)
/// or `is::<T>()`, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A configuration value was rejected when a layer was built.
///
/// Layers validate their configuration once, in their builder's `build()`,
/// so a bad value is found at start-up rather than deep inside a request.
/// The error names the field (`"chaos.rate"`) and says what is wrong with it.
///
/// ```
/// use std::time::Duration;
/// use tower_steady::deadline::DeadlineLayer;
///
/// let err = DeadlineLayer::builder()
///     .timeout(Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "deadline.timeout");
/// assert_eq!(err.to_string(), "invalid deadline.timeout: must be greater than zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    #[allow(dead_code)] // used by the layers that validate configuration
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The field that was rejected, as `layer.field`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the field was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Displays an error followed by each of its sources, separated by `": "`.
///
/// Used for logs only: error text never goes into a response body.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}
