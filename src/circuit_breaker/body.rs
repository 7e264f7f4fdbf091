//! The body of a response the breaker has let through.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::Guard;
use crate::classify::{grpc, Classify};

pin_project! {
    /// The body of a response from a
    /// [`CircuitBreaker`](super::CircuitBreaker): the inner service's body,
    /// as it is.
    ///
    /// A gRPC response whose status is still to come in its trailers (a
    /// streamed call, or one that fails after its response began) is
    /// counted when its body ends: a failing `grpc-status` in the
    /// trailers is a failed call, an error while reading the body a reset,
    /// an end without a status a success. Every other response was counted
    /// when its head arrived, and its body costs nothing more.
    #[derive(Debug)]
    pub struct BreakerBody<B, C> {
        #[pin]
        body: B,
        watch: Option<(Guard, C)>,
    }
}

impl<B, C> BreakerBody<B, C> {
    pub(crate) fn counted(body: B) -> Self {
        Self { body, watch: None }
    }

    pub(crate) fn watched(body: B, guard: Guard, classifier: C) -> Self {
        Self {
            body,
            watch: Some((guard, classifier)),
        }
    }

    /// Consumes `self`, returning the inner body (an outcome still to be
    /// counted is then not counted).
    pub fn into_inner(self) -> B {
        self.body
    }
}

impl<B: Body, C: Classify> Body for BreakerBody<B, C> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if let Some((_, classifier)) = this.watch.as_ref() {
            if let Some(outcome) = grpc::frame_outcome(&frame, classifier) {
                if let Some((mut guard, _)) = this.watch.take() {
                    guard.finish(&outcome);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
