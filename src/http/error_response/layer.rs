use std::time::Duration;

use tower_layer::Layer;

use super::ErrorResponse;
use crate::classify::HttpClassifier;
use crate::http::retry_after::whole_seconds_at_least_one;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) rewrite_bad_gateway: bool,
    pub(crate) retry_after_secs: u64,
}

/// Turns every error of the stack below it into a well-formed response.
///
/// An error that reaches hyper closes the connection without an answer, and
/// a gateway in front of this service then reports `502 Bad Gateway` for a
/// failure that was really an overload or a timeout. This layer answers
/// instead, with the status that tells the truth, so the service's error
/// type becomes [`Infallible`](std::convert::Infallible) and an axum app
/// keeps it. It belongs at the very top of a server or proxy stack.
///
/// # Which status
///
/// Errors are classified with the layer's [`Classify`](crate::classify::Classify)
/// ([`HttpClassifier`] by default):
///
/// | outcome | response |
/// |---|---|
/// | rejected here (overloaded, breaker open, no healthy upstream), upstream unreachable, connection reset | `503 Service Unavailable` + `Retry-After` |
/// | attempt timed out, deadline exceeded | `504 Gateway Timeout` |
/// | the upstream's response was malformed | `502 Bad Gateway` |
/// | anything else | `500 Internal Server Error` |
///
/// and responses pass through untouched, except an upstream's `502`, which
/// becomes `503` + `Retry-After` (see [`rewrite_bad_gateway`](Self::rewrite_bad_gateway)).
///
/// `Retry-After` is the error's own hint ([`Classify::retry_after`]) when it
/// has one, else one second ([`retry_after`](Self::retry_after)); always in
/// whole seconds, at least one.
///
/// # What the client sees
///
/// A short, generic body and `Cache-Control: no-store`; never an internal
/// address or an error's text, which can reveal the topology behind the
/// service. The body is `application/problem+json` (RFC 9457) when the
/// request's `Accept` asks for JSON, plain text otherwise. The real cause is
/// logged with `tracing` (target `tower_steady::http`): at `debug` for
/// `503` and `504`, at `warn` for `502` and `500`, which are never expected.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower::ServiceBuilder;
/// use tower_steady::{http::ErrorResponseLayer, timeout::TimeoutLayer};
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(
///         ServiceBuilder::new()
///             .layer(ErrorResponseLayer::new())
///             .layer(TimeoutLayer::new(Duration::from_secs(5))),
///     );
/// ```
///
/// [`Classify::retry_after`]: crate::classify::Classify::retry_after
#[derive(Debug, Clone)]
pub struct ErrorResponseLayer<C = HttpClassifier> {
    classifier: C,
    settings: Settings,
}

impl ErrorResponseLayer {
    /// The layer with [`HttpClassifier`], upstream `502`s rewritten, and a
    /// one-second default `Retry-After`.
    pub fn new() -> Self {
        Self {
            classifier: HttpClassifier::new(),
            settings: Settings {
                rewrite_bad_gateway: true,
                retry_after_secs: 1,
            },
        }
    }
}

impl Default for ErrorResponseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> ErrorResponseLayer<C> {
    /// Classifies errors with `classifier` instead.
    pub fn classifier<C2>(self, classifier: C2) -> ErrorResponseLayer<C2> {
        ErrorResponseLayer {
            classifier,
            settings: self.settings,
        }
    }

    /// Whether an upstream's `502 Bad Gateway` response is rewritten to
    /// `503 Service Unavailable` + `Retry-After` (the default) or passed
    /// through as it is.
    ///
    /// The rewrite keeps an upstream's failure from reaching the client as a
    /// `502`, which most clients and monitors read as "the gateway is
    /// broken", and replaces the upstream's error page, which may name
    /// internal hosts.
    pub fn rewrite_bad_gateway(mut self, rewrite: bool) -> Self {
        self.settings.rewrite_bad_gateway = rewrite;
        self
    }

    /// The `Retry-After` sent with a `503` when the error carries no hint of
    /// its own. Rounded up to whole seconds; at least one second. Default one
    /// second.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.settings.retry_after_secs = whole_seconds_at_least_one(delay);
        self
    }
}

impl<S, C: Clone> Layer<S> for ErrorResponseLayer<C> {
    type Service = ErrorResponse<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse::new(inner, self.classifier.clone(), self.settings)
    }
}
