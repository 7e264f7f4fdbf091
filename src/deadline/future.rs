//! Future types.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::error::DeadlineExceeded;
use crate::time::{LazyTimer, Watch};
use crate::BoxError;

pin_project! {
    /// Response future of [`EnforceDeadline`](super::EnforceDeadline).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        // The inner service is working on the request.
        Running {
            #[pin]
            inner: F,
            #[pin]
            timer: LazyTimer,
        },
        // The request arrived expired; the inner service was not called.
        Expired,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn running(inner: F, deadline: Instant) -> Self {
        Self {
            state: State::Running {
                inner,
                timer: LazyTimer::new(deadline),
            },
        }
    }

    pub(crate) fn expired() -> Self {
        Self {
            state: State::Expired,
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
        match self.project().state.project() {
            StateProj::Running { mut inner, timer } => {
                // The inner future first: on a tie the response wins. The
                // timers first polled inside it that this one covers make
                // none of their own (see `LazyTimer::watch`).
                let watch = timer.watch(&*inner, cx);
                // Each arm returns what it matched: the response is moved
                // once, where `map_err` would move it through a temporary.
                let promised = match inner.as_mut().poll(cx) {
                    Poll::Ready(Ok(response)) => return Poll::Ready(Ok(response)),
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Pending => Watch::end(watch),
                };
                ready!(timer.poll_elapsed(cx, promised));
                tracing::debug!(target: "tower_steady::deadline", "request deadline exceeded");
                crate::observability::emit::deadline_exceeded("in_flight");
                Poll::Ready(Err(DeadlineExceeded::while_running().into()))
            }
            StateProj::Expired => Poll::Ready(Err(DeadlineExceeded::before_sending().into())),
        }
    }
}
