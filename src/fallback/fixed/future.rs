//! Response future of [`Fallback`](crate::fallback::Fallback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::Template;
use crate::classify::Classify;
use crate::fallback::{Failures, TARGET};
use crate::http::ResponseBody;
use crate::BoxError;

pin_project! {
    /// Response future of [`Fallback`](crate::fallback::Fallback).
    pub struct FallbackFuture<F, C> {
        #[pin]
        inner: F,
        template: Arc<Template>,
        failures: Failures,
        classifier: C,
    }
}

impl<F, C> FallbackFuture<F, C> {
    pub(crate) fn new(
        inner: F,
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
}

impl<F, C, B, E> Future for FallbackFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<ResponseBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        match this.classifier.classify_result(&result).kind() {
            Some(kind) if this.failures.contains(kind) => {
                tracing::debug!(target: TARGET, kind = kind.as_str(), status = this.template.status.as_u16(), "fallback response served");
                crate::observability::emit::fallback_served(kind.as_str());
                let mut response = this.template.response();
                response
                    .extensions_mut()
                    .insert(crate::http::Substituted::new(kind));
                Poll::Ready(Ok(response))
            }
            _ => Poll::Ready(result.map(|r| r.map(ResponseBody::inner))),
        }
    }
}

impl<F, C> fmt::Debug for FallbackFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackFuture")
            .field("status", &self.template.status)
            .field("failures", &self.failures)
            .finish()
    }
}
