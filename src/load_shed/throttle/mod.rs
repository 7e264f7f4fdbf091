//! The client side: adaptive throttling.

pub(crate) mod future;
mod handle;
mod layer;
mod window;

pub use self::handle::{ThrottleHandle, ThrottleSnapshot};
pub use self::layer::{ThrottleBuilder, ThrottleLayer};

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use tower_service::Service;

use self::future::ThrottleFuture;
use self::window::Throttler;
use crate::classify::{Classify, HttpClassifier};
use crate::BoxError;

/// Refuses a share of requests locally while the upstream refuses them,
/// with [`Overloaded`](super::Overloaded). See the
/// [module docs](super#adaptive-throttling).
#[derive(Debug, Clone)]
pub struct Throttle<S, C = HttpClassifier> {
    inner: S,
    throttler: Arc<Throttler>,
    classifier: C,
}

impl<S, C> Throttle<S, C> {
    fn new(inner: S, throttler: Arc<Throttler>, classifier: C) -> Self {
        Self {
            inner,
            throttler,
            classifier,
        }
    }

    /// A handle on the throttle this service shares with its clones.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle::new(self.throttler.clone())
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

impl<S, C, Request, B> Service<Request> for Throttle<S, C>
where
    S: Service<Request, Response = Response<B>>,
    S::Error: Into<BoxError>,
    C: Classify + Clone,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ThrottleFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let now = crate::time::now();
        let _now = crate::time::scope(now);
        match self.throttler.admit(now) {
            Ok(()) => ThrottleFuture::called(
                self.inner.call(request),
                self.throttler.clone(),
                self.classifier.clone(),
            ),
            Err(probability) => {
                tracing::debug!(
                    target: "tower_steady::load_shed",
                    probability,
                    "request throttled"
                );
                self.throttler.shed.add(1);
                ThrottleFuture::refused(self.throttler.retry_after())
            }
        }
    }
}
