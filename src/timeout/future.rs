//! Future types.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::error::Elapsed;
use crate::time::{LazyTimer, Watch};
use crate::BoxError;

pin_project! {
    /// Response future of [`Timeout`](super::Timeout).
    ///
    /// The timer is created the first time the inner future is pending, so a
    /// response that is ready at once never touches the runtime's timer.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        timer: LazyTimer,
        handler: bool,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, timer: LazyTimer, handler: bool) -> Self {
        Self {
            inner,
            timer,
            handler,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();

        // The inner future first: on a tie the response wins. The timers
        // inside it that this one covers make none of their own (see
        // `LazyTimer::watch`).
        let watch = this.timer.watch(&*this.inner, cx);
        // Each arm returns what it matched: the response is moved once,
        // where `map_err` would move it through a temporary.
        let promised = match this.inner.as_mut().poll(cx) {
            Poll::Ready(Ok(response)) => return Poll::Ready(Ok(response)),
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
            Poll::Pending => Watch::end(watch),
        };
        ready!(this.timer.poll_elapsed(cx, promised));
        crate::observability::emit::timeout();
        if *this.handler {
            tracing::debug!(target: "tower_steady::timeout", "handler timed out");
            Poll::Ready(Err(Elapsed::handler().into()))
        } else {
            tracing::debug!(target: "tower_steady::timeout", "attempt timed out");
            Poll::Ready(Err(Elapsed::new().into()))
        }
    }
}
