//! A timer that costs nothing until it is needed.

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
