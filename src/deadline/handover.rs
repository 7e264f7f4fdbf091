//! A deadline layer handing its request's [`Deadline`] and header to the
//! retry layer below it, in the client preset.
//!
//! A retry keeps a copy of each request's head for its later attempts, and
//! gives every later attempt its own `Deadline` and a fresh header anyway.
//! What a deadline layer above it wrote into the request is copied into
//! that head and dropped with it, for every request: the `Deadline`, a
//! boxed entry of the extension map, is one more allocation in the copy
//! and one more free, and the header one more entry. So when the preset
//! builds the two together ([`DeadlineLayer::above_retry`]) and the
//! request carries no deadline of its own (no outer layer set one), the
//! deadline layer writes neither: it hands both to the retry, for the
//! length of its inner service's `call`, and the retry writes them into
//! the first attempt after it has copied the head.
//!
//! Between the two layers the preset puts only stale-if-error, which reads
//! neither and calls its inner service from its own `call`; the retry's
//! `call` takes the hand-over there, so no other layer, above or below,
//! ever sees it. A request that already has a `Deadline` (a proxy's,
//! set by its server stack) is written as without the retry, and so is
//! any other stack: the hand-over exists only inside the preset.
//!
//! [`DeadlineLayer::above_retry`]: super::DeadlineLayer

use std::cell::Cell;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::header::AttemptBudget;
use super::Deadline;

/// What a deadline layer leaves to the retry below it.
#[derive(Debug, Clone, Copy)]
// Read by the retry layer, when compiled.
#[cfg_attr(not(feature = "retry"), allow(dead_code))]
pub(crate) struct Handover {
    /// The request's deadline, to insert into the first attempt.
    pub(crate) deadline: Deadline,
    /// The header, when its value is the layer's whole budget (made once,
    /// when the layer was built) and the request is not a gRPC call
    /// (whose two headers the deadline layer writes itself).
    pub(crate) header: Option<WholeHeader>,
}

/// A deadline header whose value was made when its layer was built.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "retry"), allow(dead_code))]
pub(crate) struct WholeHeader {
    name: &'static HeaderName,
    value: &'static HeaderValue,
    /// What the value says, for the later attempts' headers.
    budget: Duration,
}

impl WholeHeader {
    pub(crate) fn new(
        name: &'static HeaderName,
        value: &'static HeaderValue,
        budget: Duration,
    ) -> Self {
        Self {
            name,
            value,
            budget,
        }
    }

    /// Writes the header into the first attempt's `headers`; what each
    /// later attempt refreshes.
    #[inline]
    #[cfg_attr(not(feature = "retry"), allow(dead_code))]
    pub(crate) fn write(self, headers: &mut HeaderMap) -> AttemptBudget {
        headers.insert(self.name.clone(), self.value.clone());
        AttemptBudget::new(self.name, self.budget)
    }
}

thread_local! {
    /// What a deadline layer handed over, while its `call` calls its inner
    /// service.
    static HANDED: Cell<Option<Handover>> = const { Cell::new(None) };
    /// Whether `HANDED` holds one: what every retry's `call` asks, one
    /// byte where the hand-over is several words.
    static GIVEN: Cell<bool> = const { Cell::new(false) };
}

/// While it lives, the hand-over is there for the retry below to take;
/// dropped, what was there before is back (nothing, but for a stack
/// called from within another's `call`).
#[must_use = "the hand-over lasts only while the guard lives"]
pub(crate) struct Given(Option<Handover>);

impl Drop for Given {
    #[inline]
    fn drop(&mut self) {
        GIVEN.set(self.0.is_some());
        HANDED.set(self.0);
    }
}

impl Handover {
    /// Hands this over to the retry layer below for the length of the
    /// inner service's `call`, within which the retry's own `call` runs.
    #[inline]
    pub(crate) fn give(self) -> Given {
        GIVEN.set(true);
        Given(HANDED.replace(Some(self)))
    }

    /// What the deadline layer above handed over, taken: a retry layer
    /// further down finds nothing.
    #[inline]
    #[cfg_attr(not(feature = "retry"), allow(dead_code))]
    pub(crate) fn take() -> Option<Self> {
        if !GIVEN.get() {
            return None;
        }
        GIVEN.set(false);
        HANDED.take()
    }
}
