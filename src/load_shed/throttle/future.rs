use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;

use super::window::Throttler;
use crate::classify::{Classify, FailureKind, Outcome, RetrySafety};
use crate::load_shed::Overloaded;
use crate::BoxError;

pin_project! {
    /// Response future of [`Throttle`](crate::load_shed::Throttle).
    #[derive(Debug)]
    pub struct ThrottleFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        // Sent: counted when the answer arrives; dropped, not at all.
        Called { #[pin] future: F, throttler: Arc<Throttler>, classifier: C },
        // Refused locally, already counted.
        Refused { retry_after: Duration },
    }
}

impl<F, C> ThrottleFuture<F, C> {
    pub(crate) fn called(future: F, throttler: Arc<Throttler>, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                throttler,
                classifier,
            },
        }
    }

    pub(crate) fn refused(retry_after: Duration) -> Self {
        Self {
            kind: Kind::Refused { retry_after },
        }
    }
}

impl<F, C, B, E> Future for ThrottleFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                throttler,
                classifier,
            } => {
                // A response and an error each take their own arm, matched
                // on the `Poll` itself (`ready!` would move the value out
                // first), so that the response is moved once, into the answer.
                match future.poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(response)) => {
                        record(throttler, &classifier.classify_response(&response));
                        Poll::Ready(Ok(response))
                    }
                    Poll::Ready(Err(error)) => {
                        let error: BoxError = error.into();
                        record(throttler, &classifier.classify_error(&*error));
                        Poll::Ready(Err(error))
                    }
                }
            }
            KindProj::Refused { retry_after } => {
                Poll::Ready(Err(Overloaded::throttled(*retry_after).into()))
            }
        }
    }
}

/// Counts an answered request in the throttle's window, unless it should
/// not count ([`accepted`]).
fn record(throttler: &Throttler, outcome: &Outcome) {
    if let Some(accepted) = accepted(outcome) {
        throttler.window.record(accepted);
    }
}

/// Whether the upstream accepted a request, or `None` when the request
/// should not count (the caller's deadline ran out before it was sent).
pub(crate) fn accepted(outcome: &Outcome) -> Option<bool> {
    use FailureKind::*;
    match *outcome {
        Outcome::Success => Some(true),
        Outcome::Failure { kind, safety } => match kind {
            BadGateway | Unavailable | GatewayTimeout | TooManyRequests | Timeout | Connect
            | Reset | Rejected => Some(false),
            DeadlineExceeded => match safety {
                RetrySafety::MaybeSent => Some(false),
                RetrySafety::NotSent => None,
            },
            // Never sent, and the request's own fault.
            Unsupported => None,
            // It answered (a 500, a malformed response) or something
            // unknown went wrong: no evidence of a refusal.
            _ => Some(true),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_overload_statuses_timeouts_and_connection_failures() {
        use FailureKind::*;
        use RetrySafety::*;
        let failure = |kind, safety| accepted(&Outcome::failure(kind, safety));
        assert_eq!(accepted(&Outcome::Success), Some(true));
        for kind in [
            BadGateway,
            Unavailable,
            GatewayTimeout,
            TooManyRequests,
            Timeout,
        ] {
            assert_eq!(failure(kind, MaybeSent), Some(false), "{kind}");
        }
        assert_eq!(failure(Connect, NotSent), Some(false));
        assert_eq!(failure(Rejected, NotSent), Some(false));
        assert_eq!(failure(ServerError, MaybeSent), Some(true));
        assert_eq!(failure(Protocol, MaybeSent), Some(true));
        assert_eq!(failure(DeadlineExceeded, MaybeSent), Some(false));
        assert_eq!(failure(DeadlineExceeded, NotSent), None);
    }
}
