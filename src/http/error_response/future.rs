//! Future types.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderName, Response, StatusCode};
use pin_project_lite::pin_project;

use super::layer::Settings;
use super::page::{self, Asked, Format};
use crate::classify::{Classify, FailureKind};
use crate::error::Chain;
use crate::http::retry_after::whole_seconds_at_least_one;
use crate::http::{ProxyStatus, ResponseBody};
use crate::BoxError;

pin_project! {
    /// Response future of [`ErrorResponse`](super::ErrorResponse).
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F>,
        classifier: C,
        settings: Settings,
        asked: Asked,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] inner: F },
        // The inner service failed in `poll_ready`; it was never called.
        Failed { error: Option<BoxError> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, classifier: C, settings: Settings, asked: Asked) -> Self {
        Self {
            state: State::Called { inner },
            classifier,
            settings,
            asked,
        }
    }

    pub(crate) fn failed(error: BoxError, classifier: C, settings: Settings, asked: Asked) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            classifier,
            settings,
            asked,
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<ResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let error = match this.state.project() {
            // Matched on the `Poll` itself (not through `ready!`, which
            // moves its value out first): a response passed on is moved
            // once, its body wrapped where it lies.
            StateProj::Called { inner } => match inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(response)) if !rewrites(&response, this.settings) => {
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                Poll::Ready(Ok(_)) => {
                    return Poll::Ready(Ok(bad_gateway(this.settings, this.asked)));
                }
                Poll::Ready(Err(error)) => error.into(),
            },
            StateProj::Failed { error } => match error.take() {
                Some(error) => error,
                // Polled again after completion: answer the same way rather
                // than panic.
                None => crate::BoxError::from("error response already taken"),
            },
        };
        Poll::Ready(Ok(answer(
            &*error,
            this.classifier,
            this.settings,
            this.asked.format(),
        )))
    }
}

/// Whether `response`, from the inner service, is an upstream `502` to be
/// rewritten (every other response is passed on as it came).
fn rewrites<B>(response: &Response<B>, settings: &Settings) -> bool {
    settings.rewrite_bad_gateway && response.status() == StatusCode::BAD_GATEWAY
}

/// The `503` that takes the place of an upstream's `502`.
#[cold]
fn bad_gateway<B>(settings: &Settings, asked: &Asked) -> Response<ResponseBody<B>> {
    tracing::debug!(
        target: "tower_steady::http",
        status = 503,
        upstream_status = 502,
        "rewriting the upstream's 502 to 503"
    );
    crate::observability::emit::error_response("503", FailureKind::BadGateway.as_str());
    let cause = ProxyStatus::replaced(
        FailureKind::BadGateway,
        StatusCode::BAD_GATEWAY,
        "upstream answered 502",
    );
    let answer = make(
        StatusCode::SERVICE_UNAVAILABLE,
        FailureKind::BadGateway,
        settings.retry_after_secs,
        asked.format(),
    );
    with_cause(answer, cause, settings)
}

/// The response that tells the truth about `error`.
fn answer<B, C: Classify>(
    error: &(dyn std::error::Error + Send + Sync + 'static),
    classifier: &C,
    settings: &Settings,
    format: Format,
) -> Response<ResponseBody<B>> {
    let outcome = classifier.classify_error(error);
    let kind = outcome.kind().unwrap_or(FailureKind::Other);
    let status = status_for(kind);
    let retry_after = classifier
        .retry_after(error)
        .map_or(settings.retry_after_secs, whole_seconds_at_least_one);

    let cause = Chain(error);
    if status == StatusCode::SERVICE_UNAVAILABLE
        || status == StatusCode::GATEWAY_TIMEOUT
        || status == StatusCode::NOT_IMPLEMENTED
    {
        tracing::debug!(target: "tower_steady::http", status = status.as_u16(), kind = kind.as_str(), %cause, "answering an error");
    } else {
        tracing::warn!(target: "tower_steady::http", status = status.as_u16(), kind = kind.as_str(), %cause, "answering an error");
    }
    crate::observability::emit::error_response(status_label(status), kind.as_str());
    let cause = ProxyStatus::of_error(kind, error);
    with_cause(make(status, kind, retry_after, format), cause, settings)
}

/// The answer for a failure of `kind`, `status` in HTTP's terms, in the
/// request's format: a gRPC request gets a trailers-only response with the
/// matching gRPC status, and the `Retry-After` of a `503` as
/// `grpc-retry-pushback-ms`.
fn make<B>(
    status: StatusCode,
    kind: FailureKind,
    retry_after_secs: u64,
    format: Format,
) -> Response<ResponseBody<B>> {
    match format {
        Format::Grpc => {
            let (code, message) = crate::classify::grpc::answer_for(kind);
            let pushback = (status == StatusCode::SERVICE_UNAVAILABLE)
                .then(|| retry_after_secs.saturating_mul(1000));
            page::grpc_response(code, message, pushback)
        }
        Format::Json => page::response(status, retry_after_secs, true),
        Format::Text => page::response(status, retry_after_secs, false),
    }
}

/// `response` with its `Proxy-Status` header (unless turned off) and its
/// [`ProxyStatus`] extension.
fn with_cause<B>(
    mut response: Response<B>,
    cause: ProxyStatus,
    settings: &Settings,
) -> Response<B> {
    if let Some(name) = settings.proxy_name {
        response
            .headers_mut()
            .insert(HeaderName::from_static("proxy-status"), cause.header(name));
    }
    response.extensions_mut().insert(cause);
    response
}

/// Makes the layer's series exist: one per failure kind, with the status
/// it is answered with, and the rewritten `502`.
pub(crate) fn series_built() {
    let pairs = FailureKind::ALL.map(|kind| (status_label(status_for(kind)), kind.as_str()));
    crate::observability::emit::error_responses_built(&pairs);
}

/// A status as the `status` label.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        503 => "503",
        504 => "504",
        502 => "502",
        501 => "501",
        _ => "500",
    }
}

/// The status that tells the truth about a failure of `kind`.
fn status_for(kind: FailureKind) -> StatusCode {
    match kind {
        // Nothing answered, or something said "not now": come back later.
        FailureKind::Rejected
        | FailureKind::Connect
        | FailureKind::Reset
        | FailureKind::BadGateway
        | FailureKind::Unavailable
        | FailureKind::TooManyRequests => StatusCode::SERVICE_UNAVAILABLE,
        FailureKind::Timeout | FailureKind::DeadlineExceeded | FailureKind::GatewayTimeout => {
            StatusCode::GATEWAY_TIMEOUT
        }
        // The one honest 502: the upstream answered, but not in HTTP.
        FailureKind::Protocol => StatusCode::BAD_GATEWAY,
        FailureKind::ServerError | FailureKind::Other => StatusCode::INTERNAL_SERVER_ERROR,
        // The request asked for what this stack does not do (a tunnel).
        FailureKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_failure_kind_maps_to_a_502_except_a_malformed_response() {
        use FailureKind::*;
        for kind in [
            BadGateway,
            Unavailable,
            GatewayTimeout,
            TooManyRequests,
            ServerError,
            Timeout,
            DeadlineExceeded,
            Connect,
            Reset,
            Rejected,
            Unsupported,
            Other,
        ] {
            assert_ne!(status_for(kind), StatusCode::BAD_GATEWAY, "{kind}");
        }
        assert_eq!(status_for(Protocol), StatusCode::BAD_GATEWAY);
    }
}
