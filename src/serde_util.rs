//! How the handles' snapshots serialize their durations (feature `serde`):
//! as milliseconds, a float, in a field whose name ends in `_ms`. A
//! status page and a dashboard read `"latency_ms": 12.5` at a glance;
//! serde's own form for a `Duration` (`{"secs": 0, "nanos": 12500000}`)
//! is for round trips, and snapshots are only ever read.

use std::time::Duration;

use serde::Serializer;

fn ms(duration: &Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub(crate) fn millis<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms(duration))
}

pub(crate) fn opt_millis<S: Serializer>(
    duration: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => s.serialize_some(&ms(d)),
        None => s.serialize_none(),
    }
}
