//! Middleware that sheds load early and honestly instead of queueing it into
//! timeouts.
//!
//! Overload is the first cause of `502`s: a server that accepts more work
//! than it can do queues it, every request in the queue gets slower, the
//! gateway in front times out and answers `502` or `504` for requests the
//! server then finishes for nobody. Turning the excess away at once, with a
//! `503` and a `Retry-After`, keeps the accepted requests fast and tells the
//! others the truth. This module does it on both sides of a call:
//!
//! * [`AdaptiveLimitLayer`], on a server: a concurrency limit that finds the
//!   server's capacity from its latency, lets a burst wait for a place, and
//!   sheds with [`Overloaded`] only while a standing queue hurts callers. A
//!   fixed limit that rejects at once (instead of waiting, as tower's
//!   `ConcurrencyLimit` does) is the same layer with
//!   [`fixed`](AdaptiveLimitBuilder::fixed).
//! * [`ThrottleLayer`], on a client: adaptive throttling from the Google SRE
//!   book. When the upstream has been refusing requests, the client refuses
//!   a share of them itself, locally, without sending them, so an upstream
//!   that is struggling is not also buried under the requests it refuses.
//!
//! Both answer [`Overloaded`], which [`ErrorResponseLayer`] turns into
//! `503 Service Unavailable` with `Retry-After: 1` (the hint is
//! configurable), which the [classifier](crate::classify) calls
//! [`Rejected`](crate::classify::FailureKind::Rejected) and
//! [`NotSent`](crate::classify::RetrySafety::NotSent), and which the retry
//! layer never retries.
//!
//! # The adaptive limit
//!
//! A limit that answers `503` when nothing is wrong is worse than no
//! limit. So the adaptive limit sheds only when a queue hurts callers in
//! absolute terms: when the time requests wait has *stayed* above a small
//! target, CoDel's idea (Nichols and Jacobson, "Controlling Queue Delay",
//! 2012), as Facebook applies it to server admission ("Fail at Scale",
//! 2015). A latency a little above the quietest one seen (a saturated CPU
//! scheduling a sub-millisecond handler, a cache miss) is the service
//! working, and is never a reason to refuse a request. It works in two
//! parts.
//!
//! **The limit** on requests in flight starts open (at [`max_limit`],
//! 1000), so a server that has just started takes a burst. Completed
//! requests are measured in windows; at the end of each, the window's mean
//! latency `rtt` is compared with the unloaded latency `no_load` (the
//! lowest window mean seen), and the requests in flight with the rate the
//! service completes them (by Little's law they will take
//! `in_flight / rate`, which shows a queue still growing before its
//! requests complete). With `threshold = max(target, (tolerance − 1) ×
//! no_load)` (5 ms, or half the unloaded latency for a service slower than
//! 10 ms):
//!
//! | the window saw | the limit |
//! |---|---|
//! | a delay above the threshold, in the second window in a row (or the first, when the limit is full, or when what is in flight would take 100 ms to clear and is more than was ever in flight the window before) | down to `rate × (no_load + threshold)`: as many as the service completes in the latency allowed (Little's law, as BBR sizes its window) |
//! | a delay above the threshold, the window before had none, the limit open | holds: one window of late completions is a stall (a virtual machine's CPU taken away, a page-in) as often as a queue, and its rate is no measure of the service; the next window decides |
//! | a delay under half the threshold, the limit full | up to `2 × rate × (no_load + threshold)`: it doubles while there is no queue |
//! | a delay under the threshold, the limit full | + 1 |
//! | fewer requests than the limit | holds: it is not what bounds the service |
//!
//! A decrease must buy a lower latency: once ten requests admitted under
//! the lowered limit have completed, their latency is compared with the
//! one that brought the limit down, and if it did not fall by a tenth, the
//! latency is the service's own (it became slower for good, or a
//! dependency did), becomes the unloaded latency, and the limit goes back
//! up. The unloaded latency is re-measured while the limit is full: every
//! [`probe_interval`] (30 s, jittered down to half) the limit drops for two
//! windows to half of what the service completes in its unloaded latency,
//! the first to drain the queue, the second to measure (BBR's `ProbeRTT`:
//! Cardwell et al., "BBR: Congestion-Based Congestion Control", 2016). A
//! limit that is not full is never probed.
//!
//! **The queue.** A request that finds the limit full is not refused: it
//! waits, in arrival order, for a place. While the queue has not been busy
//! for a whole [`interval`] (100 ms), a request may wait up to the
//! interval, so a burst is absorbed and served. Once it has, the queue is
//! standing: a request may wait only the [`target`] (5 ms), and one that
//! would wait longer (places free at the rate requests complete) is shed at
//! once, with `Retry-After`. The queue stops standing once it has been
//! empty for an interval. So a server is shed only under a sustained load
//! above what it completes, and then it stays busy with what it admits,
//! answers those within about `no_load + threshold`, and refuses the rest
//! in microseconds instead of queueing them into timeouts. Requests
//! marked [sheddable](Criticality) never wait, and a
//! [`fixed`](AdaptiveLimitBuilder::fixed) limit has no queue: it sheds at
//! once what is over it.
//!
//! The latency measured is the time from admission to the response (not
//! its body): time in this server's handler, not in the queue, less the
//! backoff a retry layer below reports in [`Retried`](crate::http::Retried).
//! Only successes and client errors are latencies. A failure says nothing
//! of a queue in this server: a fast one is a refusal, and a slow one (a
//! timeout, an upstream that hangs or refuses while a retry backs off) is
//! an upstream's trouble, which the client stack answers (breaker,
//! throttle, stale copy). A response that stands in for a failure (a stale
//! copy or a fallback page, marked with
//! [`Substituted`](crate::http::Substituted)) is not a latency either: a
//! proxy serving stale copies through an outage keeps its limit where it
//! was, so the stale copies keep being served (see
//! [`Resilience`](crate::Resilience) for the order of the layers).
//!
//! A window lasts twice the unloaded latency, at least [`min_window`]
//! (100 ms) and at most [`max_window`] (1 s), and closes only once it holds
//! [`window_samples`] (10) latencies.
//!
//! | setting | default | source |
//! |---|---|---|
//! | [`initial_limit`] | [`max_limit`] | starts open, so a cold server takes a burst |
//! | [`min_limit`] | 1 | Netflix `VegasLimit` |
//! | [`max_limit`] | 1000 | Netflix `VegasLimit` (`maxConcurrency`) |
//! | [`target`] | 5 ms | CoDel's target |
//! | [`interval`] | 100 ms | CoDel's interval; Facebook's queue timeout outside overload |
//! | [`tolerance`] | 1.5 | Netflix `Gradient2Limit` (its `rttTolerance`), for services slower than 10 ms |
//! | [`probe_interval`] | 30 s, jittered to 15–30 s | BBR re-measures every 10 s; only a full limit is probed |
//! | [`min_window`] / [`max_window`] / [`window_samples`] | 100 ms / 1 s / 10 | Netflix `WindowedLimit` (1 s / 1 s / 10); a shorter minimum lets fast services adapt in seconds, not minutes |
//! | [`sheddable_ratio`] | 0.8 | |
//!
//! The limit adapts to one latency, so put it on a group of routes whose
//! latencies are alike; a mix of 1 ms and 1 s routes measures the mix.
//! Keep health checks outside it: a shed health check takes the instance
//! out of its load balancer, and on a quiet night a window of fast health
//! checks alone would become the unloaded latency, making the next
//! morning's real requests look queued until a decrease is found not to
//! help.
//!
//! # Criticality
//!
//! A request is [`Criticality::Critical`] unless marked
//! [`Criticality::Sheddable`], by the extension or by the
//! [`x-criticality`](CRITICALITY) header (`sheddable` or `critical`, in any
//! case; other values are ignored). Sheddable requests are admitted only
//! while fewer than [`sheddable_ratio`] of the limit are in flight (80%, at
//! least one), so as the limit nears they are shed first and the last fifth
//! is kept for critical ones. The header cannot raise a request above the
//! default, so honouring it from untrusted clients is harmless.
//!
//! # Adaptive throttling
//!
//! [`ThrottleLayer`] counts, over a sliding window (60 s in 1 s buckets),
//! the requests this client made (`requests`, including those it refused
//! itself) and those the upstream accepted (`accepts`), and refuses a new
//! request locally with probability
//!
//! ```text
//! p = max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! (Beyer et al., *Site Reliability Engineering*, 2016, chapter 21,
//! "Handling Overload"). With `K = 2` the client sends up to twice what the
//! upstream accepts: enough to notice when it recovers, while the rest is
//! refused at no cost to the upstream. `p` is capped ([`max_probability`],
//! 0.9) so some requests always probe, and the throttle stays off while the
//! window holds fewer than [`min_requests`] (60, one a second): at low
//! rates there is no flood to hold back, and every refusal would be a lost
//! request.
//!
//! When the upstream recovers, the refusals it caused stay in the window
//! until they age out, and each counted as a request the upstream did not
//! accept; so the throttle lets go over about two windows, sending more as
//! it goes. In the paused-time test (50 requests a second, the upstream
//! back after refusing everything), the refusals per 60 s window after the
//! recovery were 2 514, 861, then none. A shorter [`window`] forgets
//! faster, and also reacts to briefer trouble.
//!
//! What the upstream *accepted* is decided by the
//! [classifier](crate::classify): a success, or a failure that shows it
//! took the request (a `500`, a malformed response). Refusals are `429`,
//! `502`, `503`, `504`, timeouts, connection failures and resets, and
//! rejections by layers below (an open breaker, no healthy endpoint). A
//! request dropped before it completes counts neither way.
//!
//! # Cost
//!
//! Admission is one load and one compare-and-swap on the in-flight count;
//! completion one subtraction, one load of the number waiting and, in
//! adaptive mode, a clock read at each end of the request and two additions
//! to the window; a request's criticality (a header lookup) is read only
//! when the sheddable share of the limit is in flight. The window is closed, and the algorithm run, by one
//! completing request under a lock taken with `try_lock`, which never
//! waits: once per window, or on each completion of a window that has run
//! its time but still lacks samples. Nothing is allocated per request
//! admitted at once; the response future holds a clone of the limiter's
//! `Arc`. A request that waits (the limit is full) takes the queue's lock,
//! allocates its place in the queue and, in one box, its timer and what
//! it needs to be called later, including a clone of the
//! inner service, so the service must be `Clone`, as axum's and hyper's
//! are. The
//! throttle reads the clock once and one word holding both of its counts
//! per request, draws a random number only when `p > 0`, and counts the
//! answer with two atomic adds (its bucket's word and the window's). The
//! crate's benchmarks (`benches/`) measure it.
//!
//! Both layers decide in `call` (where the request, and so its
//! criticality, is known) and leave readiness to the inner service.
//!
//! # Logs
//!
//! Target `tower_steady::load_shed`: `debug` when the limit changes (from,
//! to, reason, window latency, unloaded latency) and when a request is shed
//! (at once, or after waiting for a place) or throttled.
//!
//! # Examples
//!
//! ## A server that sheds instead of queueing
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_steady::http::ErrorResponseLayer;
//! use tower_steady::load_shed::AdaptiveLimitLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_steady::BoxError> {
//! // A fixed limit of one, to show a rejection; `AdaptiveLimitLayer::new()`
//! // finds the limit by itself.
//! let limit = AdaptiveLimitLayer::builder().fixed(1).build()?;
//! let handle = limit.handle();
//! let mut app = ServiceBuilder::new()
//!     .layer(ErrorResponseLayer::new())
//!     .layer(limit)
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("done")))
//!     }));
//!
//! // One request called and not yet answered holds the only place ...
//! let first = app.ready().await?.call(Request::new(String::new()));
//! assert_eq!(handle.in_flight(), 1);
//!
//! // ... so the next is shed at once, honestly.
//! let response = app.clone().oneshot(Request::new(String::new())).await?;
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(response.headers()["retry-after"], "1");
//!
//! // The first completes normally and gives its place back.
//! assert_eq!(first.await?.status(), StatusCode::OK);
//! assert_eq!(handle.in_flight(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! ## A client that stops flooding a refusing upstream
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_steady::load_shed::{Overloaded, ThrottleLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_steady::BoxError> {
//! let throttle = ThrottleLayer::builder().min_requests(10).seed(7).build()?;
//! let handle = throttle.handle();
//! // An upstream that refuses everything.
//! let upstream = service_fn(|_req: Request<()>| async {
//!     let mut response = Response::new(());
//!     *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!     Ok::<_, Infallible>(response)
//! });
//! let client = ServiceBuilder::new().layer(throttle).service(upstream);
//!
//! let mut refused_locally = 0;
//! for _ in 0..100 {
//!     match client.clone().oneshot(Request::new(())).await {
//!         Ok(_) => {}
//!         Err(e) if e.is::<Overloaded>() => refused_locally += 1,
//!         Err(e) => return Err(e),
//!     }
//! }
//! // Most of the flood never left the client.
//! assert!(refused_locally > 50);
//! assert_eq!(handle.snapshot().rejected, refused_locally);
//! # Ok(())
//! # }
//! ```
//!
//! [concurrency-limits]: https://github.com/Netflix/concurrency-limits
//! [`ErrorResponseLayer`]: crate::http::ErrorResponseLayer
//! [`initial_limit`]: AdaptiveLimitBuilder::initial_limit
//! [`min_limit`]: AdaptiveLimitBuilder::min_limit
//! [`max_limit`]: AdaptiveLimitBuilder::max_limit
//! [`target`]: AdaptiveLimitBuilder::target
//! [`interval`]: AdaptiveLimitBuilder::interval
//! [`tolerance`]: AdaptiveLimitBuilder::tolerance
//! [`probe_interval`]: AdaptiveLimitBuilder::probe_interval
//! [`min_window`]: AdaptiveLimitBuilder::min_window
//! [`max_window`]: AdaptiveLimitBuilder::max_window
//! [`window_samples`]: AdaptiveLimitBuilder::window_samples
//! [`sheddable_ratio`]: AdaptiveLimitBuilder::sheddable_ratio
//! [`max_probability`]: ThrottleBuilder::max_probability
//! [`min_requests`]: ThrottleBuilder::min_requests
//! [`window`]: ThrottleBuilder::window

mod adaptive;
pub mod error;
mod throttle;

pub mod future {
    //! Future types.
    pub use super::adaptive::future::LimitFuture;
    pub use super::throttle::future::ThrottleFuture;
}

pub use self::adaptive::{
    AdaptiveLimit, AdaptiveLimitBuilder, AdaptiveLimitLayer, LimitHandle, LimitSnapshot,
};
pub use self::error::Overloaded;
pub use self::throttle::{
    Throttle, ThrottleBuilder, ThrottleHandle, ThrottleLayer, ThrottleSnapshot,
};

use http::header::HeaderName;
use http::Request;

/// The header that marks a request's [`Criticality`]: `x-criticality`, with
/// the value `sheddable` or `critical` (in any case).
pub const CRITICALITY: HeaderName = HeaderName::from_static("x-criticality");

/// How much a request matters when the server must shed some. See the
/// [module docs](self#criticality).
///
/// Set it as a request extension (it wins over the header), or send the
/// [`CRITICALITY`] header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Criticality {
    /// Admitted up to the whole limit. The default.
    #[default]
    Critical,
    /// Admitted up to the sheddable share of the limit: shed first.
    Sheddable,
}

impl Criticality {
    /// The criticality of `request`: its extension, else its header, else
    /// [`Critical`](Criticality::Critical).
    pub fn of<B>(request: &Request<B>) -> Self {
        if let Some(criticality) = request.extensions().get::<Criticality>() {
            return *criticality;
        }
        match request.headers().get(CRITICALITY) {
            Some(value) if value.as_bytes().eq_ignore_ascii_case(b"sheddable") => {
                Criticality::Sheddable
            }
            _ => Criticality::Critical,
        }
    }

    /// A short, stable name for logs and metric labels.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Criticality::Critical => "critical",
            Criticality::Sheddable => "sheddable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criticality_comes_from_the_extension_then_the_header() {
        let plain = Request::new(());
        assert_eq!(Criticality::of(&plain), Criticality::Critical);

        let marked = Request::builder()
            .header("x-criticality", "SHEDDABLE")
            .body(())
            .unwrap();
        assert_eq!(Criticality::of(&marked), Criticality::Sheddable);

        let odd = Request::builder()
            .header("x-criticality", "very")
            .body(())
            .unwrap();
        assert_eq!(Criticality::of(&odd), Criticality::Critical);

        let mut both = marked;
        both.extensions_mut().insert(Criticality::Critical);
        assert_eq!(Criticality::of(&both), Criticality::Critical);
    }
}
