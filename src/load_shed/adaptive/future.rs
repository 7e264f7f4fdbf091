use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::limiter::{Limiter, Observation};
use super::queue::{Fate, Waiter};
use crate::classify::{Classify, Outcome};
use crate::http::{Retried, Substituted};
use crate::load_shed::Overloaded;
use crate::BoxError;

pin_project! {
    /// Response future of [`AdaptiveLimit`](crate::load_shed::AdaptiveLimit).
    ///
    /// An admitted request's place in the limit is held here and given back
    /// when the response (or error) arrives, or when the future is dropped.
    /// A request that waits for a place waits here, holding the inner
    /// service (made ready when the request was called) and the request,
    /// and calls it once a place is its; it leaves the queue if the future
    /// is dropped first.
    pub struct LimitFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S, B, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B, C>
    where
        S: Service<Request<B>>,
    {
        // The classifier only in adaptive mode, which measures outcomes.
        Admitted { #[pin] future: S::Future, permit: Permit, classifier: Option<C> },
        // Boxed: a request waits only while the limit is full (and its
        // place in the queue is an allocation already); inline, the timer
        // and the request would more than double every admitted request's
        // future, which each layer above moves.
        Waiting { queued: Pin<Box<Queued<S, B, C>>> },
        Shed { retry_after: Duration },
    }
}

pin_project! {
    /// A waiting request: how long it may wait, and what it needs to be
    /// called.
    pub(crate) struct Queued<S, B, C> {
        #[pin]
        timer: Sleep,
        waiting: Option<Waiting<S, B, C>>,
    }
}

/// What a waiting request keeps until its fate is decided.
pub(crate) struct Waiting<S, B, C> {
    pub(crate) service: S,
    pub(crate) request: Option<Request<B>>,
    pub(crate) waiter: Arc<Waiter>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) classifier: Option<C>,
}

impl<S, B, C> Drop for Waiting<S, B, C> {
    fn drop(&mut self) {
        // Still holding the request: its caller left before it was called.
        if self.request.is_some() {
            self.limiter.leave(&self.waiter);
        }
    }
}

impl<S, B, C> LimitFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    pub(crate) fn admitted(future: S::Future, permit: Permit, classifier: Option<C>) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                permit,
                classifier,
            },
        }
    }

    pub(crate) fn waiting(waiting: Waiting<S, B, C>, until: Instant) -> Self {
        Self {
            kind: Kind::Waiting {
                // Cold path: only a request that found the limit full.
                queued: Box::pin(Queued {
                    timer: tokio::time::sleep_until(until),
                    waiting: Some(waiting),
                }),
            },
        }
    }

    pub(crate) fn shed(retry_after: Duration) -> Self {
        Self {
            kind: Kind::Shed { retry_after },
        }
    }
}

impl<S, B, C, RB> Future for LimitFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<RB>, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().kind.project() {
                KindProj::Admitted {
                    future,
                    permit,
                    classifier,
                } => {
                    // A response and an error each take their own arm, matched
                    // on the `Poll` itself (`ready!` would move the value out
                    // first), so that the response is moved once, into the answer.
                    return match future.poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(response)) => {
                            match (permit.started, classifier.as_ref()) {
                                (Some(started), Some(classifier)) => {
                                    let outcome = classifier.classify_response(&response);
                                    // A retry's backoff below is a wait, not
                                    // a queue: it is not part of the latency.
                                    let extensions = response.extensions();
                                    let backoff = extensions
                                        .get::<Retried>()
                                        .map_or(Duration::ZERO, |r| r.backoff);
                                    let substituted = extensions.get::<Substituted>().is_some();
                                    let started = started.checked_add(backoff).unwrap_or(started);
                                    permit.finish(observation(&outcome, substituted), started);
                                }
                                _ => permit.release(),
                            }
                            Poll::Ready(Ok(response))
                        }
                        Poll::Ready(Err(error)) => {
                            let error: BoxError = error.into();
                            match (permit.started, classifier.as_ref()) {
                                (Some(started), Some(classifier)) => {
                                    let outcome = classifier.classify_error(&*error);
                                    permit.finish(observation(&outcome, false), started);
                                }
                                _ => permit.release(),
                            }
                            Poll::Ready(Err(error))
                        }
                    };
                }
                KindProj::Waiting { queued } => {
                    let queued = queued.as_mut().project();
                    let (timer, waiting) = (queued.timer, queued.waiting);
                    let Some(w) = waiting.as_ref() else {
                        return Poll::Ready(Err(Overloaded::new(Duration::ZERO).into()));
                    };
                    w.waiter.register(cx.waker());
                    let fate = match w.waiter.fate() {
                        Fate::Waiting => match timer.poll(cx) {
                            Poll::Ready(()) => w.limiter.give_up(&w.waiter, Instant::now()),
                            Poll::Pending => return Poll::Pending,
                        },
                        fate => fate,
                    };
                    let mut w = waiting.take().expect("checked above");
                    let request = w.request.take().expect("a waiting request holds it");
                    if fate != Fate::Admitted {
                        let retry_after = w.limiter.retry_after();
                        tracing::debug!(
                            target: "tower_steady::load_shed",
                            waited_us = w.waiter.enqueued.elapsed().as_micros() as u64,
                            "request shed after waiting for a place"
                        );
                        drop(request);
                        self.as_mut().project().kind.set(Kind::Shed { retry_after });
                        continue;
                    }
                    // The place is ours: measured from now, in the handler.
                    let started = Instant::now();
                    let permit = Permit::new(w.limiter.clone(), Some(started));
                    let future = w.service.call(request);
                    let classifier = w.classifier.take();
                    drop(w);
                    self.as_mut().project().kind.set(Kind::Admitted {
                        future,
                        permit,
                        classifier,
                    });
                }
                KindProj::Shed { retry_after } => {
                    return Poll::Ready(Err(Overloaded::new(*retry_after).into()));
                }
            }
        }
    }
}

impl<S, B, C> fmt::Debug for LimitFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Admitted { .. } => "admitted",
            Kind::Waiting { .. } => "waiting",
            Kind::Shed { .. } => "shed",
        };
        f.debug_struct("LimitFuture")
            .field("state", &state)
            .finish()
    }
}

/// What an outcome tells the limit: a latency for a success (a 4xx is the
/// service working); nothing for a failure, nor for a response that stands
/// in for one (a stale copy or a fallback page, [`Substituted`]). A fast
/// failure says nothing about a queue, and a slow one (a timeout, an
/// upstream that hangs or refuses while a retry backs off) is an
/// upstream's trouble, which the client stack deals with, not a queue in
/// this server. The successes that do complete while a server queues show
/// the queue.
fn observation(outcome: &Outcome, substituted: bool) -> Observation {
    match outcome {
        Outcome::Success if !substituted => Observation::Latency,
        _ => Observation::Ignored,
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
