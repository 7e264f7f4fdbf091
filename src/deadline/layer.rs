use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tower_layer::Layer;

use super::header::REQUEST_TIMEOUT_MS;
use super::EnforceDeadline;
use crate::ConfigError;

/// Total budget when none is set: Envoy's default route timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time kept back, when writing the header, for the answer's trip back.
const DEFAULT_MARGIN: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) timeout: Duration,
    pub(crate) read_headers: bool,
    pub(crate) write_header: bool,
    pub(crate) margin: Duration,
    /// `'static` so that each request's [`Deadline`](super::Deadline) can
    /// name it at no cost: the default is a constant, a name set with
    /// [`header_name`](DeadlineBuilder::header_name) is allocated once,
    /// when the layer is built, and kept for the life of the program.
    pub(crate) header_name: &'static HeaderName,
    /// The header's value for a request whose budget is the whole
    /// `timeout` (a client's usual request), made once so that writing it
    /// neither formats nor allocates; set by `build`. A static value, so
    /// that copying it into a request touches no reference count.
    pub(crate) whole_budget: Option<&'static HeaderValue>,
    /// Whether the retry layer below is handed the request's `Deadline`
    /// and header to write (see [`handover`](super::handover)): set by the
    /// client preset, which builds the two together, never otherwise.
    pub(crate) retry_below: bool,
}

/// Gives each request a total time budget. See the [module docs](super).
///
/// `DeadlineLayer::default()` is a 15 s budget that reads and writes no
/// headers; [`server`](Self::server) and [`client`](Self::client) start
/// builders for the two sides of a hop.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    config: Config,
}

impl Default for DeadlineLayer {
    fn default() -> Self {
        Self {
            config: DeadlineBuilder::new().config,
        }
    }
}

impl DeadlineLayer {
    /// A deadline with the defaults: 15 s per request, no headers read or
    /// written (as [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder with the defaults: 15 s, no headers read or written.
    pub fn builder() -> DeadlineBuilder {
        DeadlineBuilder::new()
    }

    /// A builder for the server side of a hop: the caller's budget is read
    /// from `x-request-timeout-ms` and `grpc-timeout`.
    pub fn server() -> DeadlineBuilder {
        DeadlineBuilder::new().read_headers(true)
    }

    /// A builder for the client side of a hop: the remaining budget is
    /// written to `x-request-timeout-ms` on the outgoing request.
    pub fn client() -> DeadlineBuilder {
        DeadlineBuilder::new().write_header(true)
    }

    /// The total budget of each request.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// This layer with the client preset's retry layer below it: a request
    /// that has no `Deadline` yet gets its own, and its header, from the
    /// retry, after the retry has copied its head (see
    /// [`handover`](super::handover)).
    #[cfg(feature = "preset")]
    pub(crate) fn above_retry(mut self) -> Self {
        self.config.retry_below = true;
        self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = EnforceDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EnforceDeadline::new(inner, self.config.clone())
    }
}

/// Builds a [`DeadlineLayer`], checking its configuration.
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get the layer"]
pub struct DeadlineBuilder {
    config: Config,
    header_name: Option<HeaderName>,
    /// Whether [`margin`](Self::margin) was called.
    margin_set: bool,
}

impl DeadlineBuilder {
    fn new() -> Self {
        Self {
            config: Config {
                timeout: DEFAULT_TIMEOUT,
                read_headers: false,
                write_header: false,
                margin: DEFAULT_MARGIN,
                header_name: &super::header::DEFAULT_HEADER,
                whole_budget: None,
                retry_below: false,
            },
            header_name: None,
            margin_set: false,
        }
    }

    /// The total budget of each request. Default 15 s; must be above zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Whether to read the caller's budget from the request's headers.
    pub fn read_headers(mut self, read: bool) -> Self {
        self.config.read_headers = read;
        self
    }

    /// Whether to write the remaining budget to the outgoing request.
    pub fn write_header(mut self, write: bool) -> Self {
        self.config.write_header = write;
        self
    }

    /// Time subtracted from the remaining budget when writing the header, for
    /// the answer's trip back. Default 10 ms, or a tenth of the timeout
    /// when that is less (so a short timeout needs no margin of its own);
    /// set here, it must be below the timeout.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.config.margin = margin;
        self.margin_set = true;
        self
    }

    /// The header that carries the budget in milliseconds. Default
    /// `x-request-timeout-ms`. `grpc-timeout` is read as well, whatever this
    /// is.
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.header_name = Some(name);
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(mut self) -> Result<DeadlineLayer, ConfigError> {
        if !self.margin_set {
            self.config.margin = self.config.margin.min(self.config.timeout / 10);
        }
        let c = &self.config;
        if c.timeout.is_zero() {
            return Err(ConfigError::new(
                "deadline.timeout",
                "must be greater than zero",
            ));
        }
        if c.margin >= c.timeout {
            return Err(ConfigError::new(
                "deadline.margin",
                "must be less than the timeout",
            ));
        }
        let mut config = self.config;
        if let Some(name) = self.header_name {
            if name != REQUEST_TIMEOUT_MS {
                // Once per layer built with its own header name.
                config.header_name = Box::leak(Box::new(name));
            }
        }
        if config.write_header {
            config.whole_budget = Some(super::header::static_value(
                config.timeout.saturating_sub(config.margin),
            ));
        }
        crate::observability::emit::deadline_built();
        Ok(DeadlineLayer { config })
    }
}
