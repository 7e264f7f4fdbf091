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
//!   server's capacity from its latency and rejects requests over it at once
//!   with [`Overloaded`]. A fixed limit that rejects (instead of waiting, as
//!   tower's `ConcurrencyLimit` does) is the same layer with
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
//! The limit is TCP Vegas applied to requests, as in Netflix's
//! [concurrency-limits] (`VegasLimit`), with a tolerance taken from its
//! `Gradient2Limit`. Completed requests are measured in windows; at the end
//! of each, Vegas compares the window's mean latency `rtt` with the
//! unloaded latency `no_load` (the lowest window mean seen) and estimates
//! the queue: of `limit` requests in flight, the share of their time above
//! `tolerance × no_load` was spent waiting, so
//! `queue = ⌈limit × (1 − tolerance × no_load / rtt)⌉` (at least 0). With
//! `step = max(1, ⌊log10(limit)⌋)`:
//!
//! | the window saw | the limit |
//! |---|---|
//! | a request time out (a drop) | − step |
//! | fewer than half the limit in flight | holds: it is not what bounds the server |
//! | `queue ≤ step` | + 6 × step (beta) |
//! | `queue < 3 × step` (alpha) | + step |
//! | `queue > 6 × step` (beta) | − step |
//! | a queue between alpha and beta | holds |
//!
//! The [`tolerance`] (1.5 by default) is how much slower than unloaded a
//! window may be before the excess counts as a queue. Vegas as published
//! (`tolerance(1.0)`) reads any rise as a queue: under a load above
//! capacity `C` its limit settles where the queue is between alpha and
//! beta, `C + 3` to `C + 6` for limits under 100, and accepted requests wait
//! behind at most that many others. That is tight for a fast server on a
//! busy machine: with sub-millisecond requests, the scheduling of a
//! saturated CPU alone makes a window 1.3 to 1.8 times slower than the
//! unloaded one, and published Vegas then sheds one request in five of a
//! server that could answer them all in a millisecond (measured with
//! `benches/proxy.sh`). With the default, the limit settles where latency
//! is about 1.5 times the unloaded one (about `1.5 × C` plus alpha to beta
//! under a load above capacity): still far from the timeouts that shedding
//! is there to prevent, and with no shedding on a merely busy server.
//!
//! The unloaded latency can only go down by observation. A service that
//! became slower for good (a bigger dataset, a slower dependency) would look
//! queued forever, and one under load from its first second never sees its
//! unloaded latency at all. So every [`probe_interval`] (30 s, jittered
//! down to half), the limit halves for two windows: the first lets the queue
//! drain, the second measures the latency with no queue and makes it the new
//! unloaded latency, higher or lower. It is BBR's `ProbeRTT` in spirit
//! (Cardwell et al., "BBR: Congestion-Based Congestion Control", 2016).
//! Netflix's Vegas instead resets the unloaded latency to the latest
//! sample, which under steady overload is a queued one, and lets the limit
//! drift up; measuring with the queue drained is what keeps it near `C`.
//! While a probe runs, requests over half the limit are shed: it costs
//! those two windows (at most 2 s) every 15 to 30 s, and nothing when the
//! server is not busy.
//!
//! A window lasts twice the unloaded latency, at least [`min_window`]
//! (100 ms) and at most [`max_window`] (1 s), and closes only once
//! it holds [`window_samples`] (10) latencies or a timeout. Its latency is
//! the time from `call` to the response (not its body), less the backoff
//! a retry layer below reports in [`Retried`](crate::http::Retried): a
//! server that forwards through a retrying client would otherwise read the
//! few retried requests' waits (up to 250 ms each) as a queue and shed
//! with room to spare. Successes and
//! client errors are latencies; timeouts (the inner service's
//! [`Elapsed`](crate::timeout::error::Elapsed), a `408`, a deadline
//! that ran out after the request was sent) are drops; other failures are
//! not measured, since a fast failure says nothing about a queue.
//!
//! | setting | default | source |
//! |---|---|---|
//! | [`initial_limit`] | 20 | Netflix `VegasLimit` |
//! | [`min_limit`] | 1 | Netflix `VegasLimit` |
//! | [`max_limit`] | 1000 | Netflix `VegasLimit` (`maxConcurrency`) |
//! | [`smoothing`] | 1.0 (none: each step is taken whole) | Netflix `VegasLimit` |
//! | [`tolerance`] | 1.5 | Netflix `Gradient2Limit` (its `rttTolerance`) |
//! | [`probe_interval`] | 30 s, jittered to 15–30 s | BBR re-measures every 10 s; a limit drain costs more than a packet-window one |
//! | [`min_window`] / [`max_window`] / [`window_samples`] | 100 ms / 1 s / 10 | Netflix `WindowedLimit` (1 s / 1 s / 10); a shorter minimum lets fast services adapt in seconds, not minutes |
//! | [`sheddable_ratio`] | 0.8 | |
//!
//! The limit adapts to one latency, so put it on a group of routes whose
//! latencies are alike; a mix of 1 ms and 1 s routes measures the mix.
//! Keep health checks outside it: a shed health check takes the instance
//! out of its load balancer, and on a quiet night a window of fast health
//! checks alone would become the unloaded latency, making the next
//! morning's real requests look queued until the next probe.
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
//! completion one subtraction and, in adaptive mode, a clock read at each
//! end of the request and two additions to the window. The window is
//! closed, and the algorithm run, by one completing request under a lock
//! taken with `try_lock`, which never waits: once per window, or on each
//! completion of a window that has run its time but still lacks samples.
//! Nothing is allocated per request; the response future holds a clone of
//! the limiter's `Arc`. The
//! throttle reads the clock once and two counters per request, and draws a
//! random number only when `p > 0`. See `BENCHMARKS.md`.
//!
//! Both layers decide in `call` (where the request, and so its
//! criticality, is known) and leave readiness to the inner service.
//!
//! # Logs
//!
//! Target `tower_steady::load_shed`: `debug` when the limit changes (from,
//! to, reason, window latency, unloaded latency) and when a request is shed
//! or throttled.
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
//! [`smoothing`]: AdaptiveLimitBuilder::smoothing
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
