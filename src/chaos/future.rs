//! Future types.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::error::Injected;
use crate::BoxError;

pin_project! {
    /// Response future of [`Chaos`](super::Chaos).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        // Injected latency, waited out before anything else.
        #[pin]
        delay: Option<Sleep>,
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    pub(crate) enum State<F> {
        // No fault: the inner service's response.
        Pass { #[pin] inner: F },
        // An error status instead of calling the inner service.
        Status { status: StatusCode },
        // A connection-style error of this kind.
        Error { kind: io::ErrorKind, what: &'static str },
        // Never completes.
        Hang,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(delay: Option<Sleep>, state: State<F>) -> Self {
        Self { delay, state }
    }
}

impl<F> State<F> {
    pub(crate) fn pass(inner: F) -> Self {
        State::Pass { inner }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(delay) = this.delay.as_mut().as_pin_mut() {
            ready!(delay.poll(cx));
            this.delay.set(None);
        }
        match this.state.project() {
            StateProj::Pass { inner } => inner.poll(cx).map_err(Into::into),
            StateProj::Status { status } => {
                let mut response = Response::new(B::default());
                *response.status_mut() = *status;
                Poll::Ready(Ok(response))
            }
            StateProj::Error { kind, what } => {
                Poll::Ready(Err(io::Error::new(*kind, Injected::new(what)).into()))
            }
            // Registers no waker: nothing will ever wake it. A timeout or a
            // dropped caller ends it.
            StateProj::Hang => Poll::Pending,
        }
    }
}
