use std::time::Duration;

use tower_layer::Layer;

use super::Timeout;

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
        let mut timeout = Timeout::new(inner, self.timeout);
        timeout.handler = self.handler;
        timeout
    }
}
