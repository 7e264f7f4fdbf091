//! Time on the request path: a timer that costs nothing until it is
//! needed, and one clock read shared by the layers of one `call`.

use std::cell::Cell;

use tokio::time::Instant;

#[cfg(any(feature = "timeout", feature = "deadline"))]
pub(crate) use self::timer::{saturating_add, LazyTimer};

#[cfg(any(feature = "timeout", feature = "deadline"))]
mod timer {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use pin_project_lite::pin_project;
    use tokio::time::{sleep_until, Instant, Sleep};

    pin_project! {
        /// Fires at `deadline`, but creates its `Sleep` only when first polled.
        ///
        /// Timeout futures poll their inner future first and this timer only when
        /// the inner future is pending, so a response that is ready at once never
        /// registers anything with the runtime's timer.
        #[derive(Debug)]
        pub(crate) struct LazyTimer {
            #[pin]
            sleep: Option<Sleep>,
            deadline: Instant,
        }
    }

    impl LazyTimer {
        pub(crate) fn new(deadline: Instant) -> Self {
            Self {
                sleep: None,
                deadline,
            }
        }

        /// `Ready` once the deadline has passed.
        pub(crate) fn poll_elapsed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut this = self.project();
            if this.sleep.is_none() {
                this.sleep.set(Some(sleep_until(*this.deadline)));
            }
            match this.sleep.as_pin_mut() {
                Some(sleep) => sleep.poll(cx),
                None => Poll::Ready(()),
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
}
