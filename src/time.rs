//! Time on the request path: a timer that costs nothing until it is
//! needed, and one clock read shared by the layers of one `call`.

use std::cell::Cell;

use tokio::time::Instant;

#[cfg(all(test, any(feature = "timeout", feature = "deadline")))]
pub(crate) use self::timer::ARMED;
#[cfg(any(feature = "timeout", feature = "deadline"))]
pub(crate) use self::timer::{saturating_add, LazyTimer, Watch};

#[cfg(any(feature = "timeout", feature = "deadline"))]
mod timer {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, RawWakerVTable};

    use pin_project_lite::pin_project;
    use tokio::time::{sleep_until, Instant, Sleep};

    pin_project! {
        /// Fires at `deadline`, but creates its `Sleep` only when first
        /// polled pending, none at all when an enclosing timer covers it
        /// (see [`watch`](Self::watch)), and none while a timer inside, due
        /// sooner, has one (see [`poll_elapsed`](Self::poll_elapsed)).
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
        /// A timer's `Sleep`.
        #[derive(Debug)]
        struct Armed {
            #[pin]
            sleep: Sleep,
        }

        impl PinnedDrop for Armed {
            // A timer with a `Sleep` dropped while a watcher around it
            // watches (an attempt that ended, in the same poll that goes on
            // to wait for something else) takes its promise with it.
            #[inline]
            fn drop(this: Pin<&mut Self>) {
                if watched(&*this as *const Armed as usize) {
                    SEEN.set(Seen::Dropped);
                }
            }
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
                sleep: Armed,
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
        /// What the timers inside the watched future said during this poll.
        seen: Seen,
        /// The waker its owner was polled with.
        waker: WakerId,
    }

    /// Which waker a `Context` carries, compared as `Waker::will_wake`
    /// does: a timer's `Sleep` wakes the task its watcher runs in only when
    /// it was polled with the watcher's waker (not with one of its own, as
    /// a future polled with `Waker::noop` is).
    type WakerId = (*const (), *const RawWakerVTable);

    #[inline]
    fn waker_id(cx: &Context<'_>) -> WakerId {
        let waker = cx.waker();
        (waker.data(), waker.vtable())
    }

    /// What a watcher learned of the timers with a `Sleep` inside the future
    /// it watches, during one poll.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Seen {
        /// Nothing.
        Nothing,
        /// One due no later than the watcher was polled pending: the task is
        /// woken by the watcher's deadline, and polled again.
        Promised,
        /// One was dropped: whatever it promised is gone with it.
        Dropped,
    }

    impl Watcher {
        /// Whether `addr` is in the watched future's memory.
        #[inline]
        fn holds(&self, addr: usize) -> bool {
            addr.wrapping_sub(self.start) < self.len
        }
    }

    /// Tells the watcher around the timer at `here` (if any) that the task
    /// will be woken at `at` at the latest, by that timer's `Sleep`.
    #[inline]
    fn promise(here: usize, at: Instant, cx: &Context<'_>) {
        if watched(here)
            && SEEN.get() == Seen::Nothing
            && AT.get().is_some_and(|w| at <= w)
            && WAKER.get() == waker_id(cx)
        {
            SEEN.set(Seen::Promised);
        }
    }

    // The innermost watching timer (see [`LazyTimer::watch`]) on this
    // thread, if any, one field a cell: each read or write is then a move of
    // a word or two, where one cell for the whole `Watcher` copied all of
    // it for every look at one field.
    thread_local! {
        /// Its deadline; `None` when there is no watcher.
        static AT: Cell<Option<Instant>> = const { Cell::new(None) };
        /// The memory it watches, as `(start, len)`; empty when there is no
        /// watcher.
        static RANGE: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
        /// What it has seen in this poll.
        static SEEN: Cell<Seen> = const { Cell::new(Seen::Nothing) };
        /// The waker its owner was polled with.
        static WAKER: Cell<WakerId> = const { Cell::new((std::ptr::null(), std::ptr::null())) };
    }

    /// Whether the innermost watcher watches the memory at `addr`.
    #[inline]
    fn watched(addr: usize) -> bool {
        let (start, len) = RANGE.get();
        addr.wrapping_sub(start) < len
    }

    /// The innermost watcher.
    #[inline]
    fn current() -> Option<Watcher> {
        let at = AT.get()?;
        let (start, len) = RANGE.get();
        Some(Watcher {
            at,
            start,
            len,
            seen: SEEN.get(),
            waker: WAKER.get(),
        })
    }

    /// Makes `watcher` the innermost one.
    #[inline]
    fn install(watcher: Option<Watcher>) {
        match watcher {
            Some(w) => {
                AT.set(Some(w.at));
                RANGE.set((w.start, w.len));
                SEEN.set(w.seen);
                WAKER.set(w.waker);
            }
            None => {
                AT.set(None);
                RANGE.set((0, 0));
            }
        }
    }

    #[cfg(test)]
    thread_local! {
        /// How many `Sleep`s this thread's timers created.
        pub(crate) static ARMED: Cell<usize> = const { Cell::new(0) };
    }

    /// What a timeout or deadline future holds while it polls its inner
    /// future (see [`LazyTimer::watch`]). Gives the previous watcher back
    /// when ended with [`end`](Self::end) or dropped, even on a panic, with
    /// what this one learned when it watched a part of the previous one's
    /// future.
    #[must_use = "the inner future is watched only while the guard lives"]
    pub(crate) struct Watch(Option<Watcher>);

    impl Watch {
        /// Ends the watch of a future that was polled pending, and returns
        /// whether a timer inside it due no later than the watcher promised
        /// to wake the task, and none was dropped (see
        /// [`LazyTimer::poll_elapsed`]). Gives the previous watcher back,
        /// with what this one learned when it watched a part of the previous
        /// one's future: a drop, and a promise when this watcher is due no
        /// later than the previous one (otherwise the promised instant may
        /// be later than the previous one's deadline).
        #[inline]
        pub(crate) fn end(watch: Option<Self>) -> bool {
            let Some(watch) = watch else { return false };
            let previous = watch.0;
            std::mem::forget(watch);
            let Some(this) = current() else {
                install(previous);
                return false;
            };
            install(previous);
            if this.seen != Seen::Nothing {
                if let Some(outer) = previous {
                    if outer.seen != Seen::Dropped
                        && outer.holds(this.start)
                        && (this.seen == Seen::Dropped
                            || (this.at <= outer.at && this.waker == outer.waker))
                    {
                        SEEN.set(this.seen);
                    }
                }
            }
            this.seen == Seen::Promised
        }
    }

    impl Drop for Watch {
        // The watched future answered (or panicked): whatever a timer inside
        // promised is dropped with this watch, since that future will not
        // be polled again; only a timer dropped inside is passed on.
        #[inline]
        fn drop(&mut self) {
            let (dropped, (start, _)) = (SEEN.get() == Seen::Dropped, RANGE.get());
            install(self.0);
            if dropped && self.0.is_some_and(|outer| outer.holds(start)) {
                SEEN.set(Seen::Dropped);
            }
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
        /// owner is about to poll, until the guard is ended or dropped; only
        /// while this timer has no `Sleep` (the owner's first poll, while it
        /// is covered itself, or while a timer inside has one), so later
        /// polls pay nothing. The guard, ended with [`Watch::end`] when
        /// `inner` is pending, says whether a timer inside promised to wake
        /// the task by this one's deadline.
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
        pub(crate) fn watch<F>(&self, inner: &F, cx: &Context<'_>) -> Option<Watch> {
            if matches!(self.state, State::Armed { .. }) {
                return None;
            }
            let previous = current();
            install(Some(Watcher {
                at: self.deadline,
                start: inner as *const F as usize,
                len: std::mem::size_of::<F>(),
                seen: Seen::Nothing,
                waker: waker_id(cx),
            }));
            Some(Watch(previous))
        }

        /// `Ready` once the deadline has passed. Called when the owner's
        /// inner future was polled pending, with what [`Watch::end`] said of
        /// that poll: `promised`, whether a timer inside that future will
        /// wake the task by this timer's deadline.
        ///
        /// A timer without a `Sleep` yet, when one inside due no later than
        /// this one has promised that, makes none in this poll either: the
        /// task is polled again by then, and this timer decides again. A
        /// proxy's deadlines around an attempt timeout (shorter than they
        /// are) cost one timer, the attempt's, instead of two. When the
        /// attempt ends and the work goes on (a retry's backoff), that
        /// poll has no promise, or has the dropped timer's mark, and this
        /// timer makes its `Sleep` then.
        pub(crate) fn poll_elapsed(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            promised: bool,
        ) -> Poll<()> {
            let here = &*self as *const Self as usize;
            let mut this = self.project();
            if let State::Unknown = *this.state {
                if promised {
                    return Poll::Pending;
                }
                match AT.get() {
                    Some(at) if watched(here) && at <= *this.deadline => {
                        this.state.set(if at < *this.deadline {
                            State::Earlier
                        } else {
                            State::Tie
                        });
                    }
                    _ => {
                        #[cfg(test)]
                        ARMED.with(|n| n.set(n.get() + 1));
                        this.state.set(State::Armed {
                            sleep: Armed {
                                sleep: sleep_until(*this.deadline),
                            },
                        });
                    }
                }
            }
            match this.state.project() {
                StateProj::Armed { sleep } => {
                    let polled = sleep.project().sleep.poll(cx);
                    if polled.is_pending() {
                        promise(here, *this.deadline, cx);
                    }
                    polled
                }
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

        /// Calling `service` answers `body` `after` that long, `armed`
        /// `Sleep`s made meanwhile.
        async fn answers<S>(service: S, body: &str, after: Duration, armed: usize)
        where
            S: tower::Service<Request<()>, Response = Response<&'static str>, Error = BoxError>,
        {
            let (before, start) = (self::armed(), Instant::now());
            let response = service.oneshot(Request::new(())).await.unwrap();
            assert_eq!(*response.body(), body);
            assert_eq!(Instant::now() - start, after);
            assert_eq!(self::armed() - before, armed, "Sleeps made");
        }

        /// A deadline layer of `timeout`.
        fn deadline(timeout: Duration) -> DeadlineLayer {
            DeadlineLayer::builder().timeout(timeout).build().unwrap()
        }

        /// Calling `service` ends with the deadline's error `after` that
        /// long, `armed` `Sleep`s made meanwhile; within 60 s (of paused
        /// time), if nothing else wakes it.
        async fn ends_by_deadline<S>(service: S, after: Duration, armed: usize)
        where
            S: tower::Service<Request<()>, Error = BoxError>,
            S::Response: std::fmt::Debug,
        {
            let guarded = tokio::time::timeout(Duration::from_secs(60), failure(service));
            let (error, elapsed, made) = guarded.await.expect("the deadline fires");
            assert!(error.is::<DeadlineExceeded>(), "{error}");
            assert_eq!((elapsed, made), (after, armed));
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
            // The outer deadline's timer only.
            answers(
                layer.layer(between),
                "inner deadline",
                Duration::from_secs(1),
                1,
            )
            .await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_later_timer_inside_an_earlier_one_makes_none() {
            let inner = TimeoutLayer::new(Duration::from_secs(30)).layer(silent());
            let outer = deadline(Duration::from_secs(2)).layer(inner);
            ends_by_deadline(outer, Duration::from_secs(2), 1).await;
        }

        #[tokio::test(start_paused = true)]
        async fn an_earlier_timer_inside_a_later_one_is_the_only_one() {
            let inner = TimeoutLayer::new(Duration::from_secs(1)).layer(silent());
            let outer = TimeoutLayer::new(Duration::from_secs(5)).layer(inner);
            let (error, after, armed) = failure(outer).await;
            assert!(error.is::<Elapsed>(), "{error}");
            assert_eq!((after, armed), (Duration::from_secs(1), 1));
        }

        #[tokio::test(start_paused = true)]
        async fn a_proxy_s_deadlines_around_an_attempt_timeout_make_one_timer() {
            // The server's deadline, the client's (due at the same instant),
            // an attempt timeout inside both, and an answer after 100 ms.
            let deadline = deadline(Duration::from_secs(15));
            let answering = service_fn(|_: Request<()>| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, BoxError>(Response::new("answer"))
            });
            let attempt = TimeoutLayer::new(Duration::from_secs(5)).layer(answering);
            // The attempt timeout's timer only.
            let proxy = deadline.layer(deadline.layer(attempt));
            answers(proxy, "answer", Duration::from_millis(100), 1).await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_later_timer_makes_its_own_once_the_earlier_one_inside_has_fired() {
            // The attempt times out at 1 s, and the work goes on waiting for
            // something that never comes: the deadline still ends it.
            let attempt = TimeoutLayer::new(Duration::from_secs(1)).layer(silent());
            let going_on = service_fn(move |request: Request<()>| {
                let call = attempt.clone().oneshot(request);
                async move {
                    let error = call.await.unwrap_err();
                    assert!(error.is::<Elapsed>(), "{error}");
                    pending::<Answer>().await
                }
            });
            let outer = deadline(Duration::from_secs(3)).layer(going_on);
            ends_by_deadline(outer, Duration::from_secs(3), 2).await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_later_timer_makes_its_own_when_the_earlier_one_is_dropped_in_the_same_poll() {
            // In one poll: the attempt is polled (its timer made), then
            // dropped when another branch is ready first, and the work goes
            // on waiting. Nothing inside wakes the task any more.
            let attempt = TimeoutLayer::new(Duration::from_secs(1)).layer(silent());
            let dropping = service_fn(move |request: Request<()>| {
                let call = attempt.clone().oneshot(request);
                async move {
                    tokio::select! {
                        biased;
                        _ = call => unreachable!("the attempt never answers"),
                        () = std::future::ready(()) => {}
                    }
                    pending::<Answer>().await
                }
            });
            let deadline = deadline(Duration::from_secs(3));
            ends_by_deadline(deadline.layer(dropping.clone()), Duration::from_secs(3), 2).await;

            // The same with a second deadline between, due at the same
            // instant: the drop it saw is passed on to the outer one.
            let twice = deadline.layer(deadline.layer(dropping));
            ends_by_deadline(twice, Duration::from_secs(3), 2).await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_timer_polled_with_a_waker_of_its_own_promises_nothing() {
            // The attempt is polled once with a waker that wakes nothing,
            // then kept while the work waits on: its timer would never wake
            // this task, and the deadline still fires.
            fn aside<S>(
                attempt: S,
            ) -> impl tower::Service<
                Request<()>,
                Response = Response<&'static str>,
                Error = BoxError,
                Future: Send,
            > + Clone
            where
                S: tower::Service<Request<()>, Response = Response<&'static str>, Error = BoxError>
                    + Clone
                    + Send
                    + 'static,
                S::Future: Send,
            {
                service_fn(move |request: Request<()>| {
                    let call = attempt.clone().oneshot(request);
                    async move {
                        let mut call = std::pin::pin!(call);
                        {
                            let mut elsewhere =
                                std::task::Context::from_waker(std::task::Waker::noop());
                            assert!(call.as_mut().poll(&mut elsewhere).is_pending());
                        }
                        pending::<()>().await;
                        call.await
                    }
                })
            }
            let deadline = deadline(Duration::from_secs(3));
            let attempt = TimeoutLayer::new(Duration::from_secs(1)).layer(silent());
            let outer = deadline.layer(aside(attempt.clone()));
            ends_by_deadline(outer, Duration::from_secs(3), 2).await;

            // The same with a deadline around the attempt, polled with that
            // waker too: what its attempt promised it is not passed on.
            let outer = deadline.layer(aside(deadline.layer(attempt)));
            ends_by_deadline(outer, Duration::from_secs(3), 2).await;
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
