//! Future types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;
use tracing::Span;

use super::body::{Replay, ReplayBody};
use super::hedge::HedgeDelay;
use super::layer::Shared;
use super::policy::{self, Asked, Decision, Failed, Rules};
use super::Budget;
use crate::classify::{is_idempotent, Classify, FailureKind, Outcome};
use crate::deadline::handover::Handover;
use crate::deadline::header::AttemptBudget;
use crate::deadline::Deadline;
use crate::http::Retried;
use crate::http::{unwrap_endpoint, Attempt, Endpoint};
use crate::time::saturating_add;
use crate::BoxError;

const TARGET: &str = "tower_steady::retry";

pin_project! {
    /// Response future of [`Retry`](super::Retry).
    ///
    /// It runs one attempt at a time, or two while a hedge races the first.
    /// When an attempt ends, the first success wins and the other attempt
    /// is dropped; a failure while the other attempt is still running is
    /// set aside. When both an attempt and the hedge timer are ready in the
    /// same poll, the attempt wins: no hedge is sent for a request that has
    /// its answer.
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        primary: Option<S::Future>,
        // Boxed: a hedge is the rare case (a slow answer, hedging on), and
        // an inline second attempt would double the future's size for
        // every request.
        #[pin]
        hedge: Option<Pin<Box<S::Future>>>,
        // The backoff before a retry, or the delay before the hedge.
        #[pin]
        timer: Option<Sleep>,
        ctx: Ctx<S, B, C>,
    }
}

struct Ctx<S, B, C> {
    service: S,
    shared: Arc<Shared<C>>,
    /// The request's head, to make every later attempt from (see
    /// [`copy_head`]).
    head: Parts,
    /// The first attempt's deadline header when it was its only header
    /// (and `head` was kept without it); otherwise it is read from `head`
    /// when a later attempt is made. Every later attempt sends what is
    /// left of it (the deadline layer's own bookkeeping).
    budget: Option<AttemptBudget>,
    replay: Replay<B>,
    phase: Phase,
    /// Attempts sent so far.
    attempts: u32,
    tried: Vec<Endpoint>,
    started: Instant,
    /// When the primary and the hedge were sent, for the attempt-duration
    /// histogram.
    #[cfg(feature = "metrics")]
    sent: [Instant; 2],
    deadline: Option<Deadline>,
    idempotent: bool,
    /// When to hedge, while a hedge may still be sent.
    hedge_at: Option<Instant>,
    /// A retry taken from the budget and not sent yet.
    token: Option<Token>,
    /// The `attempt` spans of the primary and the hedge, entered while
    /// their futures are called and polled; `None` while no subscriber
    /// wants them (`debug` for this target), which keeps the future small
    /// and the request path free of allocation.
    spans: Option<Box<[Span; 2]>>,
    /// Whether a retry was scheduled (latencies are then not recorded).
    retried: bool,
    /// The backoff scheduled so far, for the [`Retried`] extension.
    backoff: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Backoff,
    Ready,
}

/// A retry taken from the budget; given back if dropped before it is sent.
struct Token {
    budget: Budget,
    tick: u64,
}

impl Token {
    fn spend(self) {
        std::mem::forget(self);
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.budget.give_back(self.tick);
    }
}

/// What polling one attempt came to.
enum Step<T> {
    Answered(T),
    Retry,
    Running,
}

enum Settle<T> {
    /// The request is answered.
    Done(Result<T, BoxError>),
    /// The other attempt is still running.
    Wait,
    /// A retry is scheduled.
    Retry,
}

impl<S, B, C, RB> ResponseFuture<S, B, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body,
    C: Classify,
{
    pub(crate) fn start(
        mut service: S,
        shared: Arc<Shared<C>>,
        request: Request<B>,
        now: Instant,
    ) -> Self {
        let idempotent = is_idempotent(&request);
        // What the client preset's deadline layer above handed over: the
        // request's `Deadline` and maybe its header, written into the first
        // attempt once the head is copied without them.
        let handed = Handover::take();
        let deadline = match handed {
            Some(handed) => Some(handed.deadline),
            None => Deadline::of(&request),
        };
        let whole = handed.and_then(|handed| handed.header);
        let (mut parts, body) = request.into_parts();
        // Otherwise the deadline header is kept aside only when it is the
        // only header; else it stays in the head, and is read from there
        // for a retry, so a request that is not retried never looks it up.
        let budget = match whole {
            Some(_) => None,
            None => AttemptBudget::of_only_header(&parts.headers, deadline.as_ref()),
        };
        let head = copy_head(
            &mut parts,
            budget.is_some(),
            handed.is_none() && deadline.is_some(),
        );
        let budget = match whole {
            Some(whole) => Some(whole.write(&mut parts.headers)),
            None => budget,
        };
        if let Some(handed) = handed {
            parts.extensions.insert(handed.deadline);
        }
        let (first, replay) = ReplayBody::first(body, shared.replay_limit);
        // The first attempt carries no `Attempt`: inserting an extension
        // allocates, and "none" already says "first, nothing tried".

        let hedge_at = match shared.hedge {
            Some(_) if !idempotent || shared.max_attempts < 2 => None,
            Some(HedgeDelay::Fixed(delay)) => Some(saturating_add(now, delay)),
            Some(HedgeDelay::Percentile(_)) => shared
                .latencies
                .as_ref()
                .and_then(|l| l.delay(now))
                .map(|delay| saturating_add(now, delay)),
            None => None,
        };

        let span = attempt_span(1, false);
        let primary = {
            let _entered = span.enter();
            let _now = crate::time::scope(now);
            let _retry = crate::http::retry_calling();
            service.call(Request::from_parts(parts, first))
        };
        // Cold path: only with a subscriber for the span.
        let spans = (!span.is_disabled()).then(|| Box::new([span, Span::none()]));
        Self {
            primary: Some(primary),
            hedge: None,
            timer: None,
            ctx: Ctx {
                service,
                shared,
                head,
                budget,
                replay,
                phase: Phase::Running,
                attempts: 1,
                tried: Vec::new(),
                started: now,
                deadline,
                idempotent,
                hedge_at,
                token: None,
                spans,
                #[cfg(feature = "metrics")]
                sent: [now; 2],
                retried: false,
                backoff: Duration::ZERO,
            },
        }
    }
}

impl<S, B, C, RB> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body,
    C: Classify,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.ctx.phase {
                Phase::Backoff => {
                    if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                        ready!(timer.poll(cx));
                    }
                    this.timer.set(None);
                    this.ctx.phase = Phase::Ready;
                }
                Phase::Ready => {
                    if let Err(e) = ready!(this.ctx.service.poll_ready(cx)) {
                        // The retry was not sent: its token goes back.
                        this.ctx.token = None;
                        return Poll::Ready(this.ctx.finished(Err(e.into())));
                    }
                    if let Some(token) = this.ctx.token.take() {
                        token.spend();
                    }
                    let request = this.ctx.next_request(false);
                    let call = this.ctx.call(PRIMARY, request);
                    this.primary.set(Some(call));
                    this.ctx.phase = Phase::Running;
                }
                Phase::Running if this.hedge.is_none() => {
                    // The usual case, one attempt and no hedge: a success
                    // is handed out as it came, without the general path's
                    // moves of the response through its steps.
                    if let Some(primary) = this.primary.as_mut().as_pin_mut() {
                        let mut polled = {
                            let _entered =
                                this.ctx.spans.as_ref().map(|spans| spans[PRIMARY].enter());
                            primary.poll(cx)
                        };
                        match polled {
                            Poll::Pending => {}
                            Poll::Ready(Ok(ref mut response))
                                if this.ctx.succeeded(PRIMARY, response) =>
                            {
                                // Already classified: `finished` would
                                // classify it again for its metrics. The
                                // response is marked where it lies and
                                // moved once, into the return value.
                                this.ctx.finished_ok(response);
                                this.primary.set(None);
                                return polled.map_err(Into::into);
                            }
                            Poll::Ready(result) => {
                                this.primary.set(None);
                                let timer = this.timer.as_mut();
                                match this.ctx.settle(PRIMARY, result, false, timer) {
                                    Settle::Done(out) => {
                                        return Poll::Ready(this.ctx.finished(out))
                                    }
                                    Settle::Retry => continue,
                                    // Not racing: nothing to wait for.
                                    Settle::Wait => {}
                                }
                            }
                        }
                    }
                    // `hedge_at` checked here: without hedging (most
                    // requests) a pending attempt costs no call.
                    if this.primary.is_some()
                        && this.ctx.hedge_at.is_some()
                        && this
                            .ctx
                            .send_hedge(cx, this.timer.as_mut(), this.hedge.as_mut())
                    {
                        continue;
                    }
                    return Poll::Pending;
                }
                Phase::Running => {
                    // The first attempt, then the hedge, each with the
                    // other as its rival.
                    match this.ctx.poll_attempt(
                        cx,
                        PRIMARY,
                        this.primary.as_mut(),
                        this.hedge.as_mut(),
                        this.timer.as_mut(),
                    ) {
                        Step::Answered(out) => return Poll::Ready(this.ctx.finished(out)),
                        Step::Retry => continue,
                        Step::Running => {}
                    }
                    match this.ctx.poll_attempt(
                        cx,
                        HEDGE,
                        this.hedge.as_mut(),
                        this.primary.as_mut(),
                        this.timer.as_mut(),
                    ) {
                        Step::Answered(out) => return Poll::Ready(this.ctx.finished(out)),
                        Step::Retry => continue,
                        Step::Running => {}
                    }
                    if this.hedge.is_none()
                        && this.primary.is_some()
                        && this
                            .ctx
                            .send_hedge(cx, this.timer.as_mut(), this.hedge.as_mut())
                    {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S, B, C, RB> Ctx<S, B, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body,
    C: Classify,
{
    /// Reports a request's final outcome and time (with the `metrics`
    /// feature) and hands the result on, marked [`Retried`] if it took
    /// more than one attempt.
    fn finished(&self, mut out: Result<Response<RB>, BoxError>) -> Result<Response<RB>, BoxError> {
        #[cfg(feature = "metrics")]
        let outcome = self.shared.classifier.classify_result(&out);
        if let Ok(response) = &mut out {
            self.mark_retried(response);
        }
        #[cfg(feature = "metrics")]
        self.report(outcome);
        out
    }

    /// [`finished`](Self::finished) for a response already classified a
    /// success.
    fn finished_ok(&self, response: &mut Response<RB>) {
        self.mark_retried(response);
        #[cfg(feature = "metrics")]
        self.report(Outcome::Success);
    }

    /// Marks a response that took more than one attempt [`Retried`].
    fn mark_retried(&self, response: &mut Response<RB>) {
        if self.attempts > 1 {
            // Allocates the extension map: only for a retried request.
            response
                .extensions_mut()
                .insert(Retried::new(self.attempts, self.backoff));
        }
    }

    /// The request's outcome and time, with the `metrics` feature.
    #[cfg(feature = "metrics")]
    fn report(&self, outcome: Outcome) {
        let elapsed = self
            .shared
            .durations
            .then(|| Instant::now().saturating_duration_since(self.started));
        self.shared.metrics.request(outcome.kind(), elapsed);
    }

    /// Sends an attempt (`next_request` has counted it) inside a new
    /// `attempt` span kept in `slot`.
    fn call(&mut self, slot: usize, request: Request<ReplayBody<B>>) -> S::Future {
        let span = attempt_span(self.attempts, slot == HEDGE);
        let future = {
            let _entered = span.enter();
            let _retry = crate::http::retry_calling();
            self.service.call(request)
        };
        #[cfg(feature = "metrics")]
        if self.shared.durations {
            self.sent[slot] = Instant::now();
        }
        if !span.is_disabled() || self.spans.is_some() {
            // Cold path: only with a subscriber for the span.
            self.spans
                .get_or_insert_with(|| Box::new([Span::none(), Span::none()]))[slot] = span;
        }
        future
    }

    /// Polls one running attempt (`mine`, in `slot`) while `rival` may be
    /// running too: the first success wins and drops the rival.
    fn poll_attempt<M, R>(
        &mut self,
        cx: &mut Context<'_>,
        slot: usize,
        mut mine: Pin<&mut Option<M>>,
        mut rival: Pin<&mut Option<R>>,
        timer: Pin<&mut Option<Sleep>>,
    ) -> Step<Result<Response<RB>, BoxError>>
    where
        M: Future<Output = Result<Response<RB>, S::Error>>,
    {
        let Some(fut) = mine.as_mut().as_pin_mut() else {
            return Step::Running;
        };
        let polled = {
            let _entered = self.spans.as_ref().map(|spans| spans[slot].enter());
            fut.poll(cx)
        };
        let Poll::Ready(result) = polled else {
            return Step::Running;
        };
        mine.set(None);
        match self.settle(slot, result, rival.is_some(), timer) {
            Settle::Done(out) => {
                rival.set(None);
                Step::Answered(out)
            }
            Settle::Retry => Step::Retry,
            Settle::Wait => Step::Running,
        }
    }

    /// Whether `response`, the answer of the attempt in `slot`, is a
    /// success, recorded as [`settle`](Self::settle) records one; a
    /// failure is left for `settle`.
    fn succeeded(&self, slot: usize, response: &Response<RB>) -> bool {
        let outcome = self.shared.classifier.classify_response(response);
        if !outcome.is_success() {
            return false;
        }
        self.record_attempt(slot, outcome);
        self.record_latency();
        true
    }

    /// The attempt in `slot` ended with `outcome`: its duration, with the
    /// `metrics` feature.
    fn record_attempt(&self, slot: usize, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        if self.shared.durations {
            let elapsed = Instant::now().saturating_duration_since(self.sent[slot]);
            self.shared.metrics.attempt(outcome.kind(), elapsed);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (slot, outcome);
    }

    /// A success's latency, for the hedge delay's percentile (first
    /// attempts only).
    fn record_latency(&self) {
        if let Some(latencies) = &self.shared.latencies {
            if !self.retried {
                let now = Instant::now();
                latencies.record(now, now.saturating_duration_since(self.started));
            }
        }
    }

    /// Decides what an attempt's result means for the request.
    fn settle(
        &mut self,
        slot: usize,
        result: Result<Response<RB>, S::Error>,
        racing: bool,
        mut timer: Pin<&mut Option<Sleep>>,
    ) -> Settle<Response<RB>> {
        let result = result.map_err(Into::into);
        let outcome = self.shared.classifier.classify_result(&result);
        self.record_attempt(slot, outcome);
        let Outcome::Failure { kind, safety } = outcome else {
            self.record_latency();
            return Settle::Done(result.map_err(unwrap_endpoint));
        };

        let endpoint = match &result {
            Ok(response) => Endpoint::of(response),
            Err(error) => Endpoint::of_error(&**error),
        };
        if racing {
            tracing::debug!(
                target: TARGET,
                kind = kind.as_str(),
                "attempt failed while another is running; waiting for it"
            );
            self.tried.extend(endpoint);
            return Settle::Wait;
        }
        // Whatever happens now, the hedge is off.
        self.hedge_at = None;
        timer.set(None);

        let elsewhere = endpoint.is_some();
        let safe = safety.allows_retry(self.idempotent);
        let Some(wait) = self.decide(kind, safe, elsewhere, &result) else {
            return Settle::Done(result.map_err(unwrap_endpoint));
        };
        self.tried.extend(endpoint);
        timer.set(Some(sleep_until(saturating_add(Instant::now(), wait))));
        self.phase = Phase::Backoff;
        self.retried = true;
        self.backoff += wait;
        Settle::Retry
    }

    /// The wait before a retry, or `None` to return the failure.
    ///
    /// `elsewhere`: the failed attempt said which endpoint it went to, so a
    /// balancer below sends the retry to another one.
    fn decide(
        &mut self,
        kind: FailureKind,
        safe: bool,
        elsewhere: bool,
        result: &Result<Response<RB>, BoxError>,
    ) -> Option<Duration> {
        let attempt = self.attempts;
        let shared = &*self.shared;
        let now = Instant::now();
        let asked = match result {
            Ok(response) => policy::asked(response.status(), response.headers()),
            Err(_) => Asked::Nothing,
        };
        let failed = Failed {
            kind,
            safe,
            elsewhere,
            attempt,
            can_replay: self.replay.can_replay(),
            retry_after: match asked {
                Asked::Wait(wait) => Some(wait),
                _ => None,
            },
            no_retry_asked: asked == Asked::NoRetry,
            time_left: self
                .deadline
                .map(|deadline| deadline.instant().saturating_duration_since(now)),
        };
        let rules = Rules {
            max_attempts: shared.max_attempts,
            backoff: &shared.backoff,
            max_retry_after: shared.max_retry_after,
        };
        let wait = match policy::decide(&failed, rules, || shared.rng.next_f64()) {
            Decision::Retry(wait) => wait,
            Decision::Refuse(reason) => {
                tracing::debug!(target: TARGET, attempt, kind = kind.as_str(), reason, "not retrying");
                return None;
            }
        };
        let Some(tick) = shared.budget.take(now) else {
            tracing::info!(
                target: TARGET,
                attempt,
                kind = kind.as_str(),
                "retry budget exhausted; returning the failure"
            );
            shared.metrics.budget_exhausted(false);
            return None;
        };
        self.token = Some(Token {
            budget: shared.budget.clone(),
            tick,
        });
        tracing::debug!(
            target: TARGET,
            attempt,
            kind = kind.as_str(),
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        shared.metrics.retry(kind);
        Some(wait)
    }

    /// Sends the hedge into `hedge` once its delay is up and it may go;
    /// whether it was sent.
    fn send_hedge(
        &mut self,
        cx: &mut Context<'_>,
        timer: Pin<&mut Option<Sleep>>,
        mut hedge: Pin<&mut Option<Pin<Box<S::Future>>>>,
    ) -> bool {
        let Poll::Ready(Some(request)) = self.poll_hedge(cx, timer) else {
            return false;
        };
        let call = self.call(HEDGE, request);
        // Cold path: a hedge goes out only for a slow answer, with hedging
        // on; the box keeps every other request's future small.
        hedge.set(Some(Box::pin(call)));
        true
    }

    /// Polls the hedge delay; `Some(request)` when a hedge is to be sent.
    fn poll_hedge(
        &mut self,
        cx: &mut Context<'_>,
        mut timer: Pin<&mut Option<Sleep>>,
    ) -> Poll<Option<Request<ReplayBody<B>>>> {
        let Some(at) = self.hedge_at else {
            return Poll::Ready(None);
        };
        if timer.is_none() {
            timer.set(Some(sleep_until(at)));
        }
        if let Some(sleep) = timer.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        let refuse = |this: &mut Self, mut timer: Pin<&mut Option<Sleep>>, reason: &'static str| {
            this.hedge_at = None;
            timer.set(None);
            tracing::debug!(target: TARGET, reason, "not hedging");
            Poll::Ready(None)
        };
        let expired = self.deadline.is_some_and(|deadline| deadline.is_expired());
        let can_hedge = self.replay.can_hedge();
        if let Some(reason) =
            policy::hedge_refusal(self.attempts, self.shared.max_attempts, can_hedge, expired)
        {
            return refuse(self, timer, reason);
        }
        match self.service.poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return refuse(self, timer, "the service failed"),
            Poll::Ready(Ok(())) => {}
        }
        if !self.shared.budget.withdraw() {
            self.hedge_at = None;
            timer.set(None);
            tracing::info!(target: TARGET, "retry budget exhausted; not hedging");
            self.shared.metrics.budget_exhausted(true);
            return Poll::Ready(None);
        }
        self.hedge_at = None;
        timer.set(None);
        tracing::debug!(target: TARGET, attempt = self.attempts + 1, "hedging");
        self.shared.metrics.hedge();
        Poll::Ready(Some(self.next_request(true)))
    }

    /// The request of the next attempt.
    fn next_request(&mut self, hedge: bool) -> Request<ReplayBody<B>> {
        self.attempts += 1;
        let mut parts = self.head.clone();
        if let Some(deadline) = self.deadline {
            // Back in, if `copy_head` left it out.
            parts.extensions.insert(deadline);
        }
        parts
            .extensions
            .insert(Attempt::new(self.attempts, hedge, self.tried.clone()));
        // The deadline header written for the first attempt is older than
        // this one: send what is left of it.
        let budget = self
            .budget
            .or_else(|| AttemptBudget::of(&parts.headers, self.deadline.as_ref()));
        if let Some(budget) = budget {
            let spent = Instant::now().saturating_duration_since(self.started);
            budget.write(&mut parts.headers, spent);
        }
        Request::from_parts(parts, self.replay.replay())
    }
}

const PRIMARY: usize = 0;
const HEDGE: usize = 1;

/// The span an attempt runs in: what the layers below log while it runs
/// (a timeout, an ejection, a breaker opening) carries its number.
fn attempt_span(attempt: u32, hedge: bool) -> Span {
    tracing::debug_span!(target: TARGET, "attempt", attempt, hedge)
}

/// A copy of a request's head, less the deadline header if
/// `without_header` and the [`Deadline`] extension if `without_deadline`,
/// when they are all their map holds.
///
/// The head kept for later attempts leaves out what every later attempt is
/// given anew. A request whose only header and only extension are the ones
/// the deadline layer above wrote (the usual request of a client stack) is
/// then kept without allocating: a copy of a one-entry map allocates as
/// much as the map itself, a copy of an empty one nothing. A map left out
/// is set aside in `parts` while the rest is cloned, and put back.
///
/// `Parts::clone` copies the fields into the new head as they are; making
/// a default head (`Request::new`) and assigning each field would build a
/// default URI and header map only to drop them.
fn copy_head(parts: &mut Parts, without_header: bool, without_deadline: bool) -> Parts {
    let header_aside = without_header && parts.headers.len() == 1;
    let deadline_aside = without_deadline && parts.extensions.len() == 1;
    if !header_aside && !deadline_aside {
        return parts.clone();
    }
    let headers = header_aside.then(|| std::mem::take(&mut parts.headers));
    let extensions = deadline_aside.then(|| std::mem::take(&mut parts.extensions));
    let head = parts.clone();
    if let Some(headers) = headers {
        parts.headers = headers;
    }
    if let Some(extensions) = extensions {
        parts.extensions = extensions;
    }
    head
}

impl<S, B, C> fmt::Debug for ResponseFuture<S, B, C>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("phase", &self.ctx.phase)
            .field("attempts", &self.ctx.attempts)
            .field("hedging", &self.hedge.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderName, HeaderValue, ACCEPT};

    use super::*;
    use crate::deadline::header::REQUEST_TIMEOUT_MS;

    fn parts(headers: &[(HeaderName, &'static str)], deadline: bool, other: bool) -> Parts {
        let mut request = Request::builder()
            .method("PUT")
            .uri("http://upstream.test/items/7?x=1")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
        }
        if deadline {
            request
                .extensions_mut()
                .insert(Deadline::at(Instant::now() + Duration::from_secs(1)));
        }
        if other {
            request.extensions_mut().insert(7_u32);
        }
        request.into_parts().0
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_is_copied_less_only_what_it_may_leave_out() {
        let only = [(REQUEST_TIMEOUT_MS, "800")];
        let two = [(REQUEST_TIMEOUT_MS, "800"), (ACCEPT, "*/*")];
        for (headers, deadline, other) in [
            (&only[..], true, false),
            (&only[..], true, true),
            (&two[..], true, false),
            (&two[..], false, true),
            (&[][..], false, false),
        ] {
            for (without_header, without_deadline) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                // As `start` asks: the header left out only when it is the
                // deadline's, the extension only when there is a `Deadline`.
                if without_deadline && !deadline {
                    continue;
                }
                let mut original = parts(headers, deadline, other);
                let copy = copy_head(&mut original, without_header, without_deadline);
                let case =
                    format!("{headers:?} {deadline} {other} {without_header} {without_deadline}");
                // The original keeps everything.
                assert_eq!(original.headers.len(), headers.len(), "{case}");
                assert_eq!(
                    original.extensions.len(),
                    deadline as usize + other as usize,
                    "{case}"
                );
                // The copy: the same request line, its maps less what may be
                // left out when it is all they hold.
                assert_eq!(copy.method, original.method, "{case}");
                assert_eq!(copy.uri, original.uri, "{case}");
                assert_eq!(copy.version, original.version, "{case}");
                let header_out = without_header && headers.len() == 1;
                let expected = if header_out { 0 } else { headers.len() };
                assert_eq!(copy.headers.len(), expected, "{case}");
                if !header_out {
                    assert_eq!(copy.headers, original.headers, "{case}");
                }
                let extensions = deadline as usize + other as usize;
                let deadline_out = without_deadline && extensions == 1;
                assert_eq!(
                    copy.extensions.len(),
                    if deadline_out { 0 } else { extensions },
                    "{case}"
                );
                assert_eq!(
                    copy.extensions.get::<u32>(),
                    original.extensions.get::<u32>(),
                    "{case}"
                );
            }
        }
    }
}
