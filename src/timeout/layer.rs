use std::time::Duration;

use tower_layer::Layer;

use super::Timeout;
use crate::ConfigError;

/// Applies a [`Timeout`] to every request. See the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
    handler: bool,
}

impl TimeoutLayer {
    /// A layer that fails any call taking longer than `timeout`: an
    /// attempt's timeout, on the client side.
    pub const fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            handler: false,
        }
    }

    /// [`new`](Self::new), refusing a zero timeout (which fails every
    /// request that is not ready at once) with a [`ConfigError`] naming
    /// `timeout.timeout`, as the presets do.
    pub fn try_new(timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout.timeout",
                "must be greater than zero",
            ));
        }
        Ok(Self::new(timeout))
    }

    /// A timeout for a server's handler: the same, but what times out is
    /// called a handler timeout (in its log event, its error,
    /// [`Elapsed::is_handler`](super::Elapsed::is_handler), and the
    /// `Proxy-Status` an [`ErrorResponseLayer`](crate::http::ErrorResponseLayer)
    /// answers it with). `Resilience::server()` uses it.
    pub const fn handler(timeout: Duration) -> Self {
        Self {
            timeout,
            handler: true,
        }
    }

    /// The timeout applied to each call.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        crate::observability::emit::timeout_built();
        let mut timeout = Timeout::new(inner, self.timeout);
        timeout.handler = self.handler;
        timeout
    }
}
