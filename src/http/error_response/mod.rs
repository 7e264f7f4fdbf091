//! Middleware that turns every error into an honest HTTP response.

pub mod future;
mod layer;
mod page;

pub use self::layer::ErrorResponseLayer;

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use self::future::ResponseFuture;
use self::layer::Settings;
use self::page::Asked;
use super::ResponseBody;
use crate::classify::Classify;
use crate::BoxError;

/// Turns every error of the inner service into a response. See
/// [`ErrorResponseLayer`].
#[derive(Debug)]
pub struct ErrorResponse<S, C> {
    inner: S,
    classifier: C,
    settings: Settings,
    // An error the inner service returned from `poll_ready`. Our own
    // `poll_ready` cannot fail, so it is kept for the next `call` to answer.
    ready_error: Option<BoxError>,
}

impl<S: Clone, C: Clone> Clone for ErrorResponse<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            settings: self.settings,
            ready_error: None,
        }
    }
}

impl<S, C> ErrorResponse<S, C> {
    pub(crate) fn new(inner: S, classifier: C, settings: Settings) -> Self {
        Self {
            inner,
            classifier,
            settings,
            ready_error: None,
        }
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

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for ErrorResponse<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    C: Classify + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready_error.is_none() {
            if let Err(err) = std::task::ready!(self.inner.poll_ready(cx)) {
                self.ready_error = Some(err.into());
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let asked = Asked::of(&request);
        let classifier = self.classifier.clone();
        match self.ready_error.take() {
            Some(err) => ResponseFuture::failed(err, classifier, self.settings, asked),
            None => ResponseFuture::new(self.inner.call(request), classifier, self.settings, asked),
        }
    }
}
