//! A fixed fallback: the layer that answers chosen failures with a fixed
//! response.

pub(crate) mod future;
mod layer;

pub use self::layer::{FallbackBuilder, FallbackLayer};

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use tower_service::Service;

use self::future::FallbackFuture;
use crate::classify::{Classify, HttpClassifier};
use crate::fallback::Failures;
use crate::http::ResponseBody;
use crate::BoxError;

/// Answers chosen failures with a fixed response. See
/// [`FallbackLayer`](crate::fallback::FallbackLayer).
#[derive(Debug)]
pub struct Fallback<S, C = HttpClassifier> {
    inner: S,
    template: Arc<Template>,
    failures: Failures,
    classifier: C,
}

impl<S: Clone, C: Clone> Clone for Fallback<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            template: self.template.clone(),
            failures: self.failures,
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C> Fallback<S, C> {
    pub(crate) fn new(
        inner: S,
        template: Arc<Template>,
        failures: Failures,
        classifier: C,
    ) -> Self {
        Self {
            inner,
            template,
            failures,
            classifier,
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

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for Fallback<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    C: Classify + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = FallbackFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        FallbackFuture::new(
            self.inner.call(request),
            self.template.clone(),
            self.failures,
            self.classifier.clone(),
        )
    }
}

/// The fallback response, shared by every clone; copied for each use (a
/// cold path: only failures are answered with it).
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Template {
    pub(crate) fn response<B>(&self) -> Response<ResponseBody<B>> {
        let mut response = Response::new(ResponseBody::full(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}
