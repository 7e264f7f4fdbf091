//! The server side: a concurrency limit that rejects, fixed or adaptive.

mod delay;
pub(crate) mod future;
mod handle;
mod layer;
mod limiter;
mod queue;

pub use self::handle::{LimitHandle, LimitSnapshot};
pub use self::layer::{AdaptiveLimitBuilder, AdaptiveLimitLayer};

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use self::future::{LimitFuture, Permit, Waiting};
use self::limiter::{Enqueued, Limiter};
use super::Criticality;
use crate::classify::{Classify, HttpClassifier};
use crate::BoxError;

/// Admits requests up to a concurrency limit and sheds the rest at once with
/// [`Overloaded`](super::Overloaded). See the [module docs](super).
#[derive(Debug, Clone)]
pub struct AdaptiveLimit<S, C = HttpClassifier> {
    inner: S,
    limiter: Arc<Limiter>,
    classifier: C,
}

impl<S, C> AdaptiveLimit<S, C> {
    fn new(inner: S, limiter: Arc<Limiter>, classifier: C) -> Self {
        Self {
            inner,
            limiter,
            classifier,
        }
    }

    /// A handle on the limit this service shares with its clones.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle::new(self.limiter.clone())
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, B, RB> Service<Request<B>> for AdaptiveLimit<S, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify + Clone,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = LimitFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Below the sheddable share, without reading the request's
        // criticality; above it, by it.
        if self.limiter.try_acquire_either() {
            return self.admitted(request);
        }
        let criticality = Criticality::of(&request);
        let shed = match self.limiter.try_acquire(criticality) {
            Ok(()) => return self.admitted(request),
            Err(shed) => shed,
        };
        // Over the limit. A critical request of an adaptive limit may wait
        // for a place (see `queue`); a sheddable one, or any over a fixed
        // limit, is shed at once.
        if self.limiter.is_adaptive() && criticality == Criticality::Critical {
            let now = crate::time::now();
            match self.limiter.enqueue(now) {
                Enqueued::Admitted => return self.admitted(request),
                Enqueued::Waiting(waiter, wait) => {
                    // The ready service goes with the request; this one
                    // gets a clone, to be made ready for the next call.
                    let clone = self.inner.clone();
                    let service = std::mem::replace(&mut self.inner, clone);
                    let until = waiter.enqueued + wait;
                    return LimitFuture::waiting(
                        Waiting {
                            service,
                            request: Some(request),
                            waiter,
                            limiter: self.limiter.clone(),
                            classifier: Some(self.classifier.clone()),
                        },
                        until,
                    );
                }
                Enqueued::Shed => {}
            }
        }
        self.limiter.count_shed(criticality);
        tracing::debug!(
            target: "tower_steady::load_shed",
            in_flight = shed.in_flight,
            limit = shed.limit,
            criticality = criticality.as_str(),
            "request shed"
        );
        self.limiter.metrics.shed.add(1);
        LimitFuture::shed(self.limiter.retry_after())
    }
}

impl<S, C> AdaptiveLimit<S, C>
where
    C: Clone,
{
    /// Calls the inner service with a place held.
    fn admitted<B>(&mut self, request: Request<B>) -> LimitFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        // Only the adaptive limit measures: a clock read and the classifier
        // for it, none for a fixed one.
        let adaptive = self.limiter.is_adaptive();
        let started = adaptive.then(crate::time::now);
        let classifier = adaptive.then(|| self.classifier.clone());
        let permit = Permit::new(self.limiter.clone(), started);
        let _now = started.map(crate::time::scope);
        LimitFuture::admitted(self.inner.call(request), permit, classifier)
    }
}
