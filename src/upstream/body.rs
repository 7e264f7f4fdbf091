//! The body of a response from an endpoint of the set.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::Track;
use crate::classify::{grpc, Classify};

pin_project! {
    /// The body of a response from [`Upstreams`](super::Upstreams): the
    /// endpoint's body, as it is.
    ///
    /// A gRPC response whose status is still to come in its trailers is
    /// recorded in the endpoint's health when its body ends (its latency is
    /// still the time to the response's head): a failing `grpc-status` in
    /// the trailers counts against the endpoint, as a trailers-only one
    /// does. Every other response was recorded when its head arrived.
    #[derive(Debug)]
    pub struct EndpointBody<B, C> {
        #[pin]
        body: B,
        watch: Option<(Track, Duration, C)>,
    }
}

impl<B, C> EndpointBody<B, C> {
    pub(crate) fn recorded(body: B) -> Self {
        Self { body, watch: None }
    }

    pub(crate) fn watched(body: B, track: Track, rtt: Duration, classifier: C) -> Self {
        Self {
            body,
            watch: Some((track, rtt, classifier)),
        }
    }

    /// Consumes `self`, returning the endpoint's body (an outcome still to
    /// be recorded is then not recorded).
    pub fn into_inner(self) -> B {
        self.body
    }
}

impl<B: Body, C: Classify> Body for EndpointBody<B, C> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if let Some((_, _, classifier)) = this.watch.as_ref() {
            if let Some(outcome) = grpc::frame_outcome(&frame, classifier) {
                if let Some((mut track, rtt, _)) = this.watch.take() {
                    track.complete_with(outcome, rtt);
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
