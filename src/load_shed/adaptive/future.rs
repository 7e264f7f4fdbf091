use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::limiter::{Limiter, Observation};
use crate::classify::{Classify, FailureKind, Outcome, RetrySafety};
use crate::http::Retried;
use crate::load_shed::Overloaded;
use crate::BoxError;

pin_project! {
    /// Response future of [`AdaptiveLimit`](crate::load_shed::AdaptiveLimit).
    ///
    /// An admitted request's place in the limit is held here and given back
    /// when the response (or error) arrives, or when the future is dropped.
    #[derive(Debug)]
    pub struct LimitFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        // The classifier only in adaptive mode, which measures outcomes.
        Admitted { #[pin] future: F, permit: Permit, classifier: Option<C> },
        Shed { retry_after: Duration },
    }
}

impl<F, C> LimitFuture<F, C> {
    pub(crate) fn admitted(future: F, permit: Permit, classifier: Option<C>) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                permit,
                classifier,
            },
        }
    }

    pub(crate) fn shed(retry_after: Duration) -> Self {
        Self {
            kind: Kind::Shed { retry_after },
        }
    }
}

impl<F, C, B, E> Future for LimitFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                match (permit.started, classifier.as_ref()) {
                    (Some(started), Some(classifier)) => {
                        let outcome = classifier.classify_result(&result);
                        // A retry's backoff below is a wait, not a queue:
                        // it is not part of the latency.
                        let backoff = match &result {
                            Ok(response) => response
                                .extensions()
                                .get::<Retried>()
                                .map_or(Duration::ZERO, |r| r.backoff),
                            Err(_) => Duration::ZERO,
                        };
                        let started = started.checked_add(backoff).unwrap_or(started);
                        permit.finish(observation(&outcome), started);
                    }
                    _ => permit.release(),
                }
                Poll::Ready(result)
            }
            KindProj::Shed { retry_after } => {
                Poll::Ready(Err(Overloaded::new(*retry_after).into()))
            }
        }
    }
}

/// What an outcome tells the limit: a latency for a success (a 4xx is the
/// service working), a drop for a timeout, nothing for a fast failure.
fn observation(outcome: &Outcome) -> Observation {
    match *outcome {
        Outcome::Success => Observation::Latency,
        Outcome::Failure {
            kind: FailureKind::Timeout,
            ..
        }
        | Outcome::Failure {
            kind: FailureKind::DeadlineExceeded,
            safety: RetrySafety::MaybeSent,
        } => Observation::Dropped,
        Outcome::Failure { .. } => Observation::Ignored,
    }
}

/// An admitted request's place in the limit, given back exactly once: on
/// completion, or on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    /// When the request was admitted; `None` in fixed mode, which measures
    /// nothing.
    started: Option<Instant>,
    released: bool,
}

impl Permit {
    pub(crate) fn new(limiter: Arc<Limiter>, started: Option<Instant>) -> Self {
        Self {
            limiter,
            started,
            released: false,
        }
    }

    fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.limiter.release();
        }
    }

    fn finish(&mut self, observation: Observation, started: Instant) {
        if !self.released {
            self.release();
            self.limiter.observe(observation, started, Instant::now());
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Cancelled (or already released): the place is free either way.
        self.release();
    }
}
