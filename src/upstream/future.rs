//! Future types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::body::EndpointBody;
use super::endpoint::{Health, Verdict};
use super::health::Registry;
use super::NoHealthyUpstream;
use crate::classify::{Classify, Outcome};
use crate::http::{Endpoint, EndpointError};
use crate::BoxError;

pin_project! {
    /// Response future of [`Upstreams`](super::Upstreams).
    ///
    /// It waits for the chosen endpoint's service to be ready, calls it,
    /// and records the outcome and the latency in the endpoint's health.
    /// A failure is reported with the endpoint it happened on (an
    /// [`Endpoint`] extension on a failed response, and, when a retry layer
    /// is calling, an [`EndpointError`] around an error) so that the retry
    /// layer sends the retry elsewhere.
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        track: Option<Track>,
        classifier: C,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // The endpoint's service was ready when the request came, and was
        // called then.
        Called { #[pin] future: S::Future },
        // It was not: the service and the request wait here for it. Boxed,
        // so that this rare case (a limit or a buffer below the set) does
        // not make every request's future carry a service and a request
        // as well as the call's future.
        Waiting { waiting: Option<Box<(S, Request<B>)>> },
        // Its readiness failed when the request came, or there was no
        // endpoint to send it to (`NoHealthyUpstream`, with no track).
        Failed { error: Option<BoxError> },
        Done,
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    /// Calls `service` at once if it is ready (asked with a waker that
    /// does nothing: if it is not, the future asks again with its own).
    pub(crate) fn new(mut service: S, request: Request<B>, track: Track, classifier: C) -> Self {
        let mut cx = Context::from_waker(Waker::noop());
        let state = match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => State::Called {
                future: {
                    // What the endpoint's service calls is not called by a
                    // retry layer (a set of sets reports its own endpoint).
                    let _not_retry = crate::http::not_retry_calling();
                    service.call(request)
                },
            },
            Poll::Ready(Err(error)) => State::Failed {
                error: Some(error.into()),
            },
            Poll::Pending => State::Waiting {
                waiting: Some(Box::new((service, request))),
            },
        };
        Self {
            state,
            track: Some(track),
            classifier,
        }
    }

    pub(crate) fn rejected(error: NoHealthyUpstream, classifier: C) -> Self {
        Self {
            state: State::Failed {
                error: Some(error.into()),
            },
            track: None,
            classifier,
        }
    }
}

impl<S, B, C, RB> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    C: Classify + Clone,
{
    type Output = Result<Response<EndpointBody<RB, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result = match this.state.as_mut().project() {
                StateProj::Called { future } => match future.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    // The usual end: the response moved once, into the
                    // answer.
                    Poll::Ready(Ok(response)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(answered(response, this.track, this.classifier)));
                    }
                    Poll::Ready(Err(error)) => Err(error.into()),
                },
                StateProj::Waiting { waiting } => {
                    let Some(pair) = waiting.as_mut() else {
                        return Poll::Pending;
                    };
                    match pair.0.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => {
                            let (mut service, request) = *waiting.take().expect("checked above");
                            let future = service.call(request);
                            this.state.set(State::Called { future });
                            continue;
                        }
                        Poll::Ready(Err(error)) => Err(error.into()),
                    }
                }
                StateProj::Failed { error } => match error.take() {
                    Some(error) => Err(error),
                    None => return Poll::Pending,
                },
                // Polled after it completed.
                StateProj::Done => return Poll::Pending,
            };
            this.state.set(State::Done);
            return Poll::Ready(match result {
                Ok(response) => Ok(answered(response, this.track, this.classifier)),
                Err(error) => Err(failed(error, this.track, this.classifier)),
            });
        }
    }
}

/// The attempt failed with `error`: recorded against its endpoint, which
/// the error names when the set reports endpoints.
fn failed<C: Classify>(error: BoxError, track: &mut Option<Track>, classifier: &C) -> BoxError {
    let Some(mut track) = track.take() else {
        return error;
    };
    track.complete(classifier.classify_error(&*error));
    if track.report {
        EndpointError::new(Endpoint::new(track.health.addr), error).into()
    } else {
        error
    }
}

/// The endpoint answered `response`: recorded (or watched to its end), and
/// a failed response says where it came from.
fn answered<RB, C: Classify + Clone>(
    response: Response<RB>,
    track: &mut Option<Track>,
    classifier: &C,
) -> Response<EndpointBody<RB, C>> {
    let Some(mut track) = track.take() else {
        return response.map(EndpointBody::recorded);
    };
    // A gRPC call whose status comes in its trailers is recorded when its
    // body ends, with the latency to its head.
    let (outcome, trailers) = classifier.classify_head(&response);
    if trailers {
        let rtt = track.elapsed();
        let classifier = classifier.clone();
        return response.map(|body| EndpointBody::watched(body, track, rtt, classifier));
    }
    let addr = track.health.addr;
    track.complete(outcome);
    let mut response = response.map(EndpointBody::recorded);
    // Only a failed response needs to say where it came from (for the retry
    // layer): the success path inserts nothing, so it allocates nothing.
    if !outcome.is_success() {
        response.extensions_mut().insert(Endpoint::new(addr));
    }
    response
}

impl<S, B, C> fmt::Debug for ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("endpoint", &self.track.as_ref().map(|t| t.health.addr))
            .field("waiting", &matches!(self.state, State::Waiting { .. }))
            .finish()
    }
}

/// A request in flight to one endpoint: counted in its in-flight number
/// until it completes or is dropped.
pub(crate) struct Track {
    registry: Arc<Registry>,
    health: Arc<Health>,
    /// When the request was sent, on the registry's clock.
    started: u64,
    /// Whether this request is the probe of an ejected endpoint.
    probe: bool,
    /// Whether a retry layer is calling: an error is then wrapped in an
    /// [`EndpointError`] (see `crate::http::endpoint_wanted`).
    report: bool,
    done: bool,
}

impl Track {
    pub(crate) fn new(
        registry: Arc<Registry>,
        health: Arc<Health>,
        started: u64,
        probe: bool,
        report: bool,
    ) -> Self {
        health.start();
        Self {
            registry,
            health,
            started,
            probe,
            report,
            done: false,
        }
    }

    fn complete(&mut self, outcome: Outcome) {
        // One clock read, on the registry's clock, for both the latency and
        // the record's time.
        let now = self.now();
        self.record(outcome, self.rtt(now), now);
    }

    /// The registry's clock now.
    fn now(&self) -> u64 {
        self.registry.nanos(Instant::now())
    }

    /// The time from the request's start to `now` (the registry's clock).
    fn rtt(&self, now: u64) -> Duration {
        Duration::from_nanos(now.saturating_sub(self.started))
    }

    /// The time since the request's start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.rtt(self.now())
    }

    /// Records `outcome` now, with `rtt` as the request's latency.
    pub(crate) fn complete_with(&mut self, outcome: Outcome, rtt: Duration) {
        let now = self.now();
        self.record(outcome, rtt, now);
    }

    fn record(&mut self, outcome: Outcome, rtt: Duration, now: u64) {
        self.done = true;
        self.health.finish();
        self.registry
            .record(&self.health, Verdict::of(outcome), rtt, now, self.probe);
    }
}

impl fmt::Debug for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Track")
            .field("endpoint", &self.health.addr)
            .field("probe", &self.probe)
            .finish()
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.health.finish();
        if self.probe {
            self.registry.abandon_probe(&self.health, self.now());
        }
    }
}

pin_project! {
    /// Response future of [`SetAuthority`](super::SetAuthority): the inner
    /// service's, or at once an
    /// [`UnsupportedTarget`](super::UnsupportedTarget) for a request whose
    /// target cannot be pointed at an endpoint.
    pub struct SetAuthorityFuture<F> {
        #[pin]
        kind: SetAuthorityKind<F>,
    }
}

pin_project! {
    #[project = SetAuthorityProj]
    enum SetAuthorityKind<F> {
        Called { #[pin] future: F },
        Refused,
    }
}

impl<F> SetAuthorityFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        Self {
            kind: SetAuthorityKind::Called { future },
        }
    }

    pub(crate) fn refused() -> Self {
        Self {
            kind: SetAuthorityKind::Refused,
        }
    }
}

impl<F, T, E> Future for SetAuthorityFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            SetAuthorityProj::Called { future } => future.poll(cx).map_err(Into::into),
            SetAuthorityProj::Refused => Poll::Ready(Err(super::UnsupportedTarget::new().into())),
        }
    }
}

impl<F> fmt::Debug for SetAuthorityFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SetAuthorityKind::Called { .. } => "called",
            SetAuthorityKind::Refused => "refused",
        };
        f.debug_struct("SetAuthorityFuture")
            .field("kind", &kind)
            .finish()
    }
}
