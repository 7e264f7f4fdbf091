use std::time::Duration;

use tower_layer::Layer;

use super::ErrorResponse;
use crate::classify::HttpClassifier;
use crate::http::retry_after::whole_seconds_at_least_one;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) rewrite_bad_gateway: bool,
    pub(crate) retry_after_secs: u64,
    /// The name in `Proxy-Status`, or `None` for no header.
    pub(crate) proxy_name: Option<&'static str>,
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
/// # gRPC
///
/// A gRPC call, a `POST` whose `content-type` is `application/grpc` (or
/// `+proto`, ...), is answered in gRPC's terms, since a gRPC client reads an HTTP error
/// page as a broken message (`INTERNAL`): HTTP 200, a trailers-only
/// response with `content-type: application/grpc`, a `grpc-status` and a
/// short `grpc-message`, the `Retry-After` a `503` would carry as
/// `grpc-retry-pushback-ms`, and the same `Proxy-Status`:
///
/// | would be | `grpc-status` |
/// |---|---|
/// | `503` (shed, breaker open, no healthy upstream, unreachable, reset, an upstream's `502`) | 14 `UNAVAILABLE`, with `grpc-retry-pushback-ms` |
/// | `504` (a timeout, the deadline) | 4 `DEADLINE_EXCEEDED` |
/// | an upstream's `429` as an error | 8 `RESOURCE_EXHAUSTED` |
/// | `501` | 12 `UNIMPLEMENTED` |
/// | `502` (malformed), `500` | 13 `INTERNAL` |
///
/// # What the client sees
///
/// A short, generic body and `Cache-Control: no-store`; never an internal
/// address or an error's text, which can reveal the topology behind the
/// service. Every response the layer makes (and every upstream `502` it
/// rewrites) carries an RFC 9209 `Proxy-Status` header saying why, with
/// an error type from the RFC's registry and a short fixed text
/// (`tower-steady; error=destination_unavailable; details="circuit open"`),
/// and a [`ProxyStatus`](crate::http::ProxyStatus) extension with the
/// same for callers in the process: a client can tell its own open breaker
/// from the upstream's `503`. The name is [`proxy_name`](Self::proxy_name)
/// (`tower-steady` by default).
///
/// | cause | `error` | `details` |
/// |---|---|---|
/// | this service's concurrency limit | `proxy_internal_response` | `overloaded` |
/// | the client throttle | `destination_unavailable` | `throttled` |
/// | an open circuit breaker | `destination_unavailable` | `circuit open` |
/// | no healthy endpoint | `destination_unavailable` | `no healthy upstream` |
/// | connection refused | `connection_refused` | `connection refused` |
/// | connect timed out | `connection_timeout` | `connect timeout` |
/// | host or network unreachable | `destination_ip_unroutable` | `destination unreachable` |
/// | connection reset or closed | `connection_terminated` | `connection closed` |
/// | response cut short | `http_response_incomplete` | `response incomplete` |
/// | attempt timeout, handler timeout | `http_response_timeout` | `attempt timeout`, `handler timeout` |
/// | deadline exceeded | `http_response_timeout` | `deadline exceeded` |
/// | malformed response | `http_protocol_error` | `malformed response` |
/// | a tunnel asked of an endpoint set | `proxy_internal_response` | `unsupported target` |
/// | anything else | `proxy_internal_error` | `internal error` |
/// | an upstream's `502`, rewritten | (none); `received-status=502` | `upstream answered 502` |
///
/// The body is `application/problem+json` (RFC 9457) when the request's
/// `Accept` asks for JSON, plain text otherwise; the `Accept` value is kept
/// with the request and read only when an answer is written. The real cause is
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
                proxy_name: Some("tower-steady"),
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

    /// The name this service gives itself in `Proxy-Status` (default
    /// `tower-steady`): a host or service name, as RFC 9209 asks. A name
    /// that is not a structured-field token is sent as a quoted string.
    pub fn proxy_name(mut self, name: &'static str) -> Self {
        self.settings.proxy_name = Some(name);
        self
    }

    /// No `Proxy-Status` header on the responses it makes (the
    /// [`ProxyStatus`](crate::http::ProxyStatus) extension is still there).
    pub fn without_proxy_status(mut self) -> Self {
        self.settings.proxy_name = None;
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
        super::future::series_built();
        ErrorResponse::new(inner, self.classifier.clone(), self.settings)
    }
}
