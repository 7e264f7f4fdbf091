//! Time on the request path: a timer that costs nothing until it is
//! needed, and one clock read shared by the layers of one `call`.

use std::cell::Cell;

use tokio::time::Instant;

#[cfg(all(test, any(feature = "timeout", feature = "deadline")))]
pub(crate) use self::timer::ARMED;
#[cfg(any(feature = "timeout", feature = "deadline"))]
pub(crate) use self::timer::{saturating_add, LazyTimer};

#[cfg(any(feature = "timeout", feature = "deadline"))]
mod timer {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use pin_project_lite::pin_project;
    use tokio::time::{sleep_until, Instant, Sleep};

    pin_project! {
        /// Fires at `deadline`, but creates its `Sleep` only when first
        /// polled pending, and none at all when an enclosing timer covers
        /// it (see [`watch`](Self::watch)).
        ///
        /// Timeout futures poll their inner future first and this timer only when
        /// the inner future is pending, so a response that is ready at once never
        /// registers anything with the runtime's timer.
        #[derive(Debug)]
        pub(crate) struct LazyTimer {
            #[pin]
            state: State,
            deadline: Instant,
        }
    }

    pin_project! {
        /// A timer's `Sleep`, or what it learned of the timer around it
        /// instead (in the `Sleep`'s spare bit patterns: no larger than an
        /// `Option<Sleep>`).
        #[project = StateProj]
        #[derive(Debug)]
        enum State {
            /// Not polled pending yet: the next pending poll decides.
            Unknown,
            /// An enclosing timer due earlier ends this timer's future
            /// first.
            Earlier,
            /// An enclosing timer due at the same instant wakes the task
            /// then; this timer reads the clock when polled.
            Tie,
            Armed {
                #[pin]
                sleep: Sleep,
            },
        }
    }

    /// An enclosing timer without a `Sleep` yet (its owner's first poll, or
    /// a timer covered itself) polling its inner future: its deadline and
    /// the memory of that inner future.
    #[derive(Clone, Copy)]
    struct Watcher {
        at: Instant,
        start: usize,
        len: usize,
    }

    thread_local! {
        /// The innermost watching timer (see [`LazyTimer::watch`]) on this
        /// thread, if any.
        static WATCHER: Cell<Option<Watcher>> = const { Cell::new(None) };
    }

    #[cfg(test)]
    thread_local! {
        /// How many `Sleep`s this thread's timers created.
        pub(crate) static ARMED: Cell<usize> = const { Cell::new(0) };
    }

    /// What a timeout or deadline future holds while it polls its inner
    /// future (see [`LazyTimer::watch`]). Gives the previous watcher back
    /// when dropped, even on a panic.
    #[must_use = "the inner future is watched only while the guard lives"]
    pub(crate) struct Watch(Option<Watcher>);

    impl Drop for Watch {
        #[inline]
        fn drop(&mut self) {
            WATCHER.set(self.0);
        }
    }

    impl LazyTimer {
        pub(crate) fn new(deadline: Instant) -> Self {
            Self {
                state: State::Unknown,
                deadline,
            }
        }

        /// Holds this timer up as the watcher of `inner`, the future its
        /// owner is about to poll, until the guard is dropped; only while
        /// this timer has no `Sleep` (the owner's first poll, or while it is
        /// covered itself), so later polls pay nothing.
        ///
        /// A timer first polled inside `inner` then (a deadline or timeout
        /// layer further down the same stack, in the same `poll`) whose
        /// deadline is not earlier than this one creates no `Sleep` of its
        /// own: this timer ends `inner` by then. On a tie the owner polls
        /// `inner` first when this timer wakes the task, and the inner
        /// timer, reading the clock, fires first, as it would with a
        /// `Sleep` of its own. A proxy's server and client deadlines (the
        /// client's never later than the server's) and an attempt timeout
        /// longer than the deadline around it cost one timer instead of
        /// two. "Inside" is in memory: a future stored within `inner`,
        /// which cannot outlive it or be polled by another task; a future
        /// behind a box, in a spawned task or behind a buffer is elsewhere,
        /// and so is one first polled later (a retry after a backoff): they
        /// keep their own timers.
        #[inline]
        pub(crate) fn watch<F>(&self, inner: &F) -> Option<Watch> {
            if matches!(self.state, State::Armed { .. }) {
                return None;
            }
            Some(Watch(WATCHER.replace(Some(Watcher {
                at: self.deadline,
                start: inner as *const F as usize,
                len: std::mem::size_of::<F>(),
            }))))
        }

        /// `Ready` once the deadline has passed.
        pub(crate) fn poll_elapsed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let here = &*self as *const Self as usize;
            let mut this = self.project();
            if let State::Unknown = *this.state {
                match WATCHER.get() {
                    Some(w) if here.wrapping_sub(w.start) < w.len && w.at <= *this.deadline => {
                        this.state.set(if w.at < *this.deadline {
                            State::Earlier
                        } else {
                            State::Tie
                        });
                    }
                    _ => {
                        #[cfg(test)]
                        ARMED.with(|n| n.set(n.get() + 1));
                        this.state.set(State::Armed {
                            sleep: sleep_until(*this.deadline),
                        });
                    }
                }
            }
            match this.state.project() {
                StateProj::Armed { sleep } => sleep.poll(cx),
                StateProj::Earlier => Poll::Pending,
                StateProj::Tie if Instant::now() < *this.deadline => Poll::Pending,
                // `Unknown` is never left above.
                StateProj::Tie | StateProj::Unknown => Poll::Ready(()),
            }
        }
    }

    /// `now + duration`, or an instant decades away when that overflows, as
    /// tokio does for its own "far future".
    pub(crate) fn saturating_add(now: Instant, duration: std::time::Duration) -> Instant {
        now.checked_add(duration)
            .unwrap_or_else(|| now + std::time::Duration::from_secs(86_400 * 365 * 30))
    }
}

thread_local! {
    /// The time the outermost layer of the `call` running on this thread
    /// read; `None` outside one (see [`now`]).
    static CALL_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The current time, for a layer's `call`.
///
/// A client stack is five layers that each need the time when a request
/// arrives (the deadline, the retry budget, the throttle's window, the
/// attempt timeout, ...), and a clock read costs about 25 ns on a virtual
/// machine, more than some layers' whole work. So a layer reads the clock
/// once and calls its inner service inside a [`scope`], and the layers
/// below, called synchronously from there, take that reading instead of
/// their own. It is at most as old as the `call`s between them (well under
/// a microsecond, a thousandth of the timer's resolution). Outside such a
/// `call` (a response future being polled, a retry sent later, another
/// task behind a buffer), this is `Instant::now()`. Paused time in tests is
/// unchanged: it does not move while code runs.
///
/// The rule, the same in every layer: a layer's `call` takes the time from
/// here (timeout, deadline, retry, circuit breaker, throttle, adaptive
/// limit, stale-if-error, upstreams), and a layer that calls its inner
/// service with a reading of its own holds a [`scope`] around that call;
/// response futures, timers and background tasks read `Instant::now()`,
/// since no reading is shared there. The retry layer's mark for the
/// balancer below it (`crate::http::retry_calling`) is the one other
/// thread-local of the request path and follows the same guard pattern.
///
/// This departs from tower, where every layer reads the clock itself; it
/// is private to the crate and never seen by a user's service, whose own
/// reads are untouched.
#[inline]
pub(crate) fn now() -> Instant {
    CALL_NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// `d` in nanoseconds, `u64::MAX` past that (584 years): the one
/// conversion the layers' windows and clocks count in, without the 128-bit
/// arithmetic of `Duration::as_nanos`.
#[cfg_attr(
    not(any(feature = "circuit-breaker", feature = "load-shed")),
    allow(dead_code)
)]
pub(crate) fn saturating_nanos(d: std::time::Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

// Unused while `upstream` is the only one of these features on.
#[allow(unused_imports)]
pub(crate) use self::scoped::scope;

// Only the layers that share their reading (timeout, deadline, retry, load
// shedding, stale-if-error) make a scope; the breaker and `upstream` only
// read one.
#[cfg_attr(
    not(any(
        feature = "timeout",
        feature = "deadline",
        feature = "retry",
        feature = "load-shed",
        feature = "fallback"
    )),
    allow(dead_code)
)]
mod scoped {
    use super::{Instant, CALL_NOW};

    /// Makes `now` what [`now`](super::now) returns until the guard is
    /// dropped (a layer holds it while it calls its inner service), then
    /// gives the previous value back, even on a panic. A guard rather than
    /// a closure: the inner service's future is then built where the
    /// layer's own is, without one more move of it.
    #[inline]
    pub(crate) fn scope(now: Instant) -> Scope {
        Scope(CALL_NOW.with(|c| c.replace(Some(now))))
    }

    /// See [`scope`].
    #[must_use = "the reading is shared only while the guard lives"]
    pub(crate) struct Scope(Option<Instant>);

    impl Drop for Scope {
        #[inline]
        fn drop(&mut self) {
            CALL_NOW.with(|c| c.set(self.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_call_shares_its_reading_and_gives_it_back() {
        let outer = Instant::now() - Duration::from_secs(5);
        let inner = outer + Duration::from_secs(1);
        assert!(CALL_NOW.with(Cell::get).is_none());
        let seen = {
            let _outer = scope(outer);
            let nested = {
                let _inner = scope(inner);
                now()
            };
            (now(), nested)
        };
        assert_eq!(seen, (outer, inner));
        assert!(
            CALL_NOW.with(Cell::get).is_none(),
            "restored after the call"
        );
        assert_ne!(now(), outer, "outside a call: the clock");
        let panicked = std::panic::catch_unwind(|| {
            let _outer = scope(outer);
            panic!("inner call")
        });
        assert!(panicked.is_err());
        assert!(CALL_NOW.with(Cell::get).is_none(), "restored after a panic");
    }

    #[cfg(all(feature = "timeout", feature = "deadline"))]
    mod covered {
        use std::future::{pending, Future};
        use std::pin::Pin;
        use std::time::Duration;

        use http::{Request, Response};
        use tokio::time::Instant;
        use tower::{service_fn, BoxError, Layer, ServiceExt};

        use crate::deadline::{DeadlineExceeded, DeadlineLayer};
        use crate::time::ARMED;
        use crate::timeout::{Elapsed, TimeoutLayer};

        type Answer = Result<Response<&'static str>, BoxError>;

        fn armed() -> usize {
            ARMED.with(|n| n.get())
        }

        /// What calling `service` ends with: its error, after how long, and
        /// how many `Sleep`s were made meanwhile.
        async fn failure<S>(service: S) -> (BoxError, Duration, usize)
        where
            S: tower::Service<Request<()>, Error = BoxError>,
            S::Response: std::fmt::Debug,
        {
            let (before, start) = (armed(), Instant::now());
            let error = service.oneshot(Request::new(())).await.unwrap_err();
            (error, Instant::now() - start, armed() - before)
        }

        /// A service that never answers.
        fn silent() -> impl tower::Service<
            Request<()>,
            Response = Response<&'static str>,
            Error = BoxError,
            Future: Send,
        > + Clone {
            service_fn(|_: Request<()>| pending::<Answer>())
        }

        #[tokio::test(start_paused = true)]
        async fn a_deadline_inside_one_due_at_the_same_instant_makes_no_timer_and_fires_first() {
            let layer = DeadlineLayer::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap();
            // Between the two deadlines, what the inner one's error becomes
            // (a stale page, an error response): only seen if it fires first.
            let inner = layer.layer(silent());
            let between = service_fn(move |request: Request<()>| {
                let call = inner.clone().oneshot(request);
                async move {
                    match call.await {
                        Err(error) if error.is::<DeadlineExceeded>() => {
                            Ok::<_, BoxError>(Response::new("inner deadline"))
                        }
                        other => other,
                    }
                }
            });
            let outer = layer.layer(between);
            let (before, start) = (armed(), Instant::now());
            let response = outer.oneshot(Request::new(())).await.unwrap();
            assert_eq!(*response.body(), "inner deadline");
            assert_eq!(Instant::now() - start, Duration::from_secs(1));
            assert_eq!(armed() - before, 1, "the outer deadline's timer only");
        }

        #[tokio::test(start_paused = true)]
        async fn a_later_timer_inside_an_earlier_one_makes_none() {
            let inner = TimeoutLayer::new(Duration::from_secs(30)).layer(silent());
            let outer = DeadlineLayer::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap()
                .layer(inner);
            let (error, after, armed) = failure(outer).await;
            assert!(error.is::<DeadlineExceeded>(), "{error}");
            assert_eq!((after, armed), (Duration::from_secs(2), 1));
        }

        #[tokio::test(start_paused = true)]
        async fn an_earlier_timer_inside_a_later_one_makes_its_own() {
            let inner = TimeoutLayer::new(Duration::from_secs(1)).layer(silent());
            let outer = TimeoutLayer::new(Duration::from_secs(5)).layer(inner);
            let (error, after, armed) = failure(outer).await;
            assert!(error.is::<Elapsed>(), "{error}");
            assert_eq!((after, armed), (Duration::from_secs(1), 2));
        }

        #[tokio::test(start_paused = true)]
        async fn a_timer_behind_a_box_or_in_another_task_makes_its_own() {
            let timeout = TimeoutLayer::new(Duration::from_secs(1));
            // Behind a box: not inside the outer future's memory.
            let boxed = timeout.layer(silent()).map_future(|future| {
                Box::pin(future) as Pin<Box<dyn Future<Output = Answer> + Send>>
            });
            let outer = timeout.layer(boxed);
            let (error, _, armed_here) = failure(outer).await;
            assert!(error.is::<Elapsed>(), "{error}");
            assert_eq!(armed_here, 2, "one for each");

            // In a spawned task, which the outer future does not end: the
            // inner timer still ends it at its own deadline.
            let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
            let inner = timeout.layer(silent());
            let spawning = service_fn(move |request: Request<()>| {
                let (call, sender) = (inner.clone().oneshot(request), sender.clone());
                let task = tokio::spawn(async move {
                    let elapsed = call.await.is_err_and(|e| e.is::<Elapsed>());
                    let _ = sender.send(elapsed);
                });
                async move {
                    let _ = task.await;
                    Ok::<_, BoxError>(Response::new("joined"))
                }
            });
            let outer = DeadlineLayer::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap()
                .layer(spawning);
            let (before, start) = (armed(), Instant::now());
            let (error, after, _) = failure(outer).await;
            assert!(error.is::<DeadlineExceeded>(), "{error}");
            assert_eq!(after, Duration::from_millis(500));
            let elapsed = receiver
                .recv()
                .await
                .expect("the spawned call ends by itself");
            assert!(elapsed, "the spawned call timed out");
            assert_eq!(armed() - before, 2);
            assert_eq!(Instant::now() - start, Duration::from_secs(1));
        }
    }
}
