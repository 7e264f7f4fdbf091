//! Future types.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::body::BreakerBody;
use super::breaker::{Breaker, Permit, PermitKind};
use super::error::CircuitOpen;
use crate::classify::{Classify, FailureKind, Outcome, RetrySafety};
use crate::BoxError;

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker).
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        classifier: C,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    pub(crate) enum Kind<F> {
        // Admitted: the inner service's response, recorded when it is ready.
        Called { #[pin] future: F, guard: Guard },
        // Turned away by the breaker.
        Rejected { retry_after: Duration },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, guard: Guard, classifier: C) -> Self {
        Self {
            kind: Kind::Called { future, guard },
            classifier,
        }
    }

    pub(crate) fn rejected(retry_after: Duration, classifier: C) -> Self {
        Self {
            kind: Kind::Rejected { retry_after },
            classifier,
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify + Clone,
{
    type Output = Result<Response<BreakerBody<B, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future, guard } => {
                // A response and an error each take their own arm, matched
                // on the `Poll` itself (`ready!` would move the value out
                // first), so that the response is moved once, into the
                // answer.
                match future.poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(response)) => {
                        if !guard.records() {
                            guard.done = true;
                            return Poll::Ready(Ok(response.map(BreakerBody::counted)));
                        }
                        // A gRPC call whose status comes in its trailers is
                        // counted when its body ends.
                        let (outcome, trailers) = this.classifier.classify_head(&response);
                        if trailers {
                            let guard = std::mem::replace(guard, Guard::finished(guard));
                            let classifier = this.classifier.clone();
                            return Poll::Ready(Ok(
                                response.map(|body| BreakerBody::watched(body, guard, classifier))
                            ));
                        }
                        guard.finish(&outcome);
                        Poll::Ready(Ok(response.map(BreakerBody::counted)))
                    }
                    Poll::Ready(Err(error)) => {
                        let error: BoxError = error.into();
                        if !guard.records() {
                            guard.done = true;
                        } else if refused_locally(&*error) {
                            // Refused by a throttle below, never sent: no
                            // evidence about the upstream beyond the
                            // refusals the throttle counted, and counting
                            // its own refusals would keep the breaker open
                            // because the throttle is throttling. Neither a
                            // success nor a failure.
                            guard.skip();
                        } else {
                            guard.finish(&this.classifier.classify_error(&*error));
                        }
                        Poll::Ready(Err(error))
                    }
                }
            }
            KindProj::Rejected { retry_after } => {
                Poll::Ready(Err(CircuitOpen::new(*retry_after).into()))
            }
        }
    }
}

/// An admitted call's permit, given back to the breaker when the call
/// completes, or released if the call's future is dropped first.
#[derive(Debug)]
pub(crate) struct Guard {
    breaker: Arc<Breaker>,
    permit: Permit,
    done: bool,
}

impl Guard {
    pub(crate) fn new(breaker: Arc<Breaker>, permit: Permit) -> Self {
        Self {
            breaker,
            permit,
            done: false,
        }
    }

    /// Whether the call's outcome is recorded (not when forced closed).
    fn records(&self) -> bool {
        !self.done && self.permit.kind() != PermitKind::Bypass
    }

    /// A guard with nothing left to do, put in the place of one whose
    /// permit moved to a [`BreakerBody`].
    fn finished(from: &Guard) -> Self {
        Self {
            breaker: from.breaker.clone(),
            permit: from.permit,
            done: true,
        }
    }

    fn skip(&mut self) {
        self.done = true;
        self.breaker.release(&self.permit);
    }

    pub(crate) fn finish(&mut self, outcome: &Outcome) {
        self.done = true;
        let failure = counts_as_failure(
            outcome,
            self.breaker.settings().too_many_requests_is_failure,
        );
        let unreachable = outcome.kind() == Some(FailureKind::Connect);
        self.breaker
            .complete(&self.permit, failure, unreachable, Instant::now());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled: neither a success nor a failure, and a probe's slot
            // is free again.
            self.breaker.release(&self.permit);
        }
    }
}

/// Whether `error` is a local refusal by a layer below that shed or
/// throttled the call ([`Overloaded`](crate::error::Overloaded)) anywhere in
/// its source chain.
fn refused_locally(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(err) = current {
        if err.is::<crate::error::Overloaded>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// Whether `outcome` counts against the upstream.
///
/// Every failure does, except:
/// - `429 Too Many Requests`, unless configured: the upstream is up and is
///   pacing this caller; opening the breaker would turn a rate limit into
///   an outage. Throttling and `Retry-After` deal with it.
/// - a deadline that ran out before the request was sent: the caller's
///   budget was spent elsewhere, not by the upstream;
/// - a request that cannot be sent as it is
///   ([`Unsupported`](FailureKind::Unsupported)): the fault is the
///   request's, and counting it would let any client open the breaker.
pub(crate) fn counts_as_failure(outcome: &Outcome, too_many_requests_is_failure: bool) -> bool {
    match *outcome {
        Outcome::Success => false,
        Outcome::Failure {
            kind: FailureKind::TooManyRequests,
            ..
        } => too_many_requests_is_failure,
        Outcome::Failure {
            kind: FailureKind::DeadlineExceeded,
            safety: RetrySafety::NotSent,
        } => false,
        Outcome::Failure {
            kind: FailureKind::Unsupported,
            ..
        } => false,
        Outcome::Failure { .. } => true,
    }
}
