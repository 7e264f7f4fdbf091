//! The requests waiting for a place, and CoDel's rule for when waiting has
//! become a standing queue.
//!
//! A request that finds the limit full waits here, in arrival order, for a
//! place to come free. How long it may wait is CoDel's answer (Nichols and
//! Jacobson, "Controlling Queue Delay", 2012), in the form Facebook applies
//! to server admission ("Fail at Scale", 2015): while the queue has not
//! been busy for a whole [`interval`](Codel::interval) (100 ms), a request
//! may wait up to the interval, so a burst is absorbed; once it has, the
//! queue is standing and hurts every caller: a request that finds the limit
//! full is shed at once, and one already waiting is shed when its turn
//! comes if it waited longer than the [`target`](Codel::target) (5 ms). The
//! queue stops standing once it has been empty for an interval: brief
//! moments empty in the middle of an overload do not restart the
//! allowance.
//!
//! Only the waiting path takes the lock here; a request admitted at once
//! never does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

/// CoDel's state: since when the queue has been busy, and since when empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Codel {
    pub(crate) target: Duration,
    pub(crate) interval: Duration,
    /// When the queue last started to hold requests after being empty for
    /// an interval.
    busy_since: Option<Instant>,
    /// When it last emptied; `None` while it holds requests.
    empty_since: Option<Instant>,
}

impl Codel {
    pub(crate) fn new(target: Duration, interval: Duration) -> Self {
        Self {
            target,
            interval,
            busy_since: None,
            empty_since: None,
        }
    }

    /// A request starts waiting in a queue that was empty.
    pub(crate) fn filled(&mut self, now: Instant) {
        let brief = self
            .empty_since
            .is_some_and(|at| now.saturating_duration_since(at) < self.interval);
        if !(brief && self.busy_since.is_some()) {
            self.busy_since = Some(now);
        }
        self.empty_since = None;
    }

    /// A request was turned away because its wait would be too long: the
    /// queue is as busy as if it held it.
    pub(crate) fn turned_away(&mut self, now: Instant) {
        if self.empty_since.is_some() {
            self.filled(now);
            self.empty_since = Some(now);
        } else if self.busy_since.is_none() {
            self.busy_since = Some(now);
        }
    }

    /// The queue emptied.
    pub(crate) fn emptied(&mut self, now: Instant) {
        self.empty_since = Some(now);
    }

    /// Whether the queue has been busy for an interval, and not empty for
    /// one since.
    pub(crate) fn standing(&self, now: Instant) -> bool {
        let Some(busy) = self.busy_since else {
            return false;
        };
        if now.saturating_duration_since(busy) < self.interval {
            return false;
        }
        self.empty_since
            .is_none_or(|at| now.saturating_duration_since(at) < self.interval)
    }
}

const WAITING: u8 = 0;
const ADMITTED: u8 = 1;
const SHED: u8 = 2;

/// One waiting request, shared by its future and the queue.
#[derive(Debug)]
pub(crate) struct Waiter {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
    pub(crate) enqueued: Instant,
}

/// What became of a waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Waiting,
    /// It holds a place in the limit now.
    Admitted,
    Shed,
}

impl Waiter {
    pub(crate) fn new(enqueued: Instant) -> Self {
        Self {
            state: AtomicU8::new(WAITING),
            waker: Mutex::new(None),
            enqueued,
        }
    }

    pub(crate) fn fate(&self) -> Fate {
        match self.state.load(Ordering::Acquire) {
            WAITING => Fate::Waiting,
            ADMITTED => Fate::Admitted,
            _ => Fate::Shed,
        }
    }

    /// Registers the task to wake when its fate is decided.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn decide(&self, fate: u8) {
        self.state.store(fate, Ordering::Release);
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The queue and its CoDel state, behind the limiter's lock.
#[derive(Debug)]
pub(crate) struct Queue {
    waiters: VecDeque<Arc<Waiter>>,
    pub(crate) codel: Codel,
    /// The most requests that may wait at once; more are shed at once.
    capacity: usize,
}

impl Queue {
    pub(crate) fn new(codel: Codel, capacity: usize) -> Self {
        Self {
            waiters: VecDeque::new(),
            codel,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.waiters.len() >= self.capacity
    }

    pub(crate) fn push(&mut self, waiter: Arc<Waiter>) {
        if self.waiters.is_empty() {
            self.codel.filled(waiter.enqueued);
        }
        self.waiters.push_back(waiter);
    }

    /// The longest-waiting request, if any.
    pub(crate) fn front(&self) -> Option<&Arc<Waiter>> {
        self.waiters.front()
    }

    /// Takes the longest-waiting request out and decides its fate.
    pub(crate) fn pop(&mut self, admitted: bool, now: Instant) {
        if let Some(waiter) = self.waiters.pop_front() {
            waiter.decide(if admitted { ADMITTED } else { SHED });
        }
        if self.waiters.is_empty() {
            self.codel.emptied(now);
        }
    }

    /// Takes `waiter` out, shed (its wait ran out), if it still waits;
    /// answers its fate either way.
    pub(crate) fn give_up(&mut self, waiter: &Arc<Waiter>, now: Instant) -> Fate {
        if waiter.fate() != Fate::Waiting {
            return waiter.fate();
        }
        self.remove(waiter, now);
        waiter.state.store(SHED, Ordering::Release);
        Fate::Shed
    }

    /// Takes `waiter` out without deciding anything (its caller left).
    pub(crate) fn remove(&mut self, waiter: &Arc<Waiter>, now: Instant) {
        if let Some(at) = self.waiters.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            self.waiters.remove(at);
            if self.waiters.is_empty() {
                self.codel.emptied(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_queue_stands_once_busy_for_an_interval_until_empty_for_one() {
        let now = Instant::now();
        let mut codel = Codel::new(MS * 5, MS * 100);
        codel.filled(now);
        assert!(!codel.standing(now + MS * 99));
        assert!(codel.standing(now + MS * 100));
        // Empty for a moment: still standing, and busy again at once.
        codel.emptied(now + MS * 150);
        assert!(codel.standing(now + MS * 160));
        codel.filled(now + MS * 170);
        assert!(codel.standing(now + MS * 300));
        // Requests turned away count as the queue holding them.
        codel.emptied(now + MS * 200);
        codel.turned_away(now + MS * 290);
        assert!(codel.standing(now + MS * 380));
        codel.filled(now + MS * 299);
        // Empty for an interval: over.
        codel.emptied(now + MS * 300);
        assert!(codel.standing(now + MS * 399));
        assert!(!codel.standing(now + MS * 400));
        // Busy again: an interval's allowance again.
        codel.filled(now + MS * 450);
        assert!(!codel.standing(now + MS * 549));
        assert!(codel.standing(now + MS * 550));
    }

    #[test]
    fn waiters_leave_in_arrival_order_with_their_fate() {
        let now = Instant::now();
        let mut queue = Queue::new(Codel::new(MS * 5, MS * 100), 2);
        let (a, b) = (Arc::new(Waiter::new(now)), Arc::new(Waiter::new(now)));
        queue.push(a.clone());
        queue.push(b.clone());
        assert!(queue.is_full());
        queue.pop(true, now + MS);
        assert_eq!((a.fate(), b.fate()), (Fate::Admitted, Fate::Waiting));
        assert_eq!(queue.give_up(&b, now + MS * 100), Fate::Shed);
        assert_eq!(queue.len(), 0);
        // Giving up after being admitted keeps the admission.
        assert_eq!(queue.give_up(&a, now + MS * 100), Fate::Admitted);
    }
}
