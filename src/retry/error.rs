//! Error types.

use std::fmt;

/// A retry's request body could not be sent again.
///
/// The retry layer does not retry a request whose body it did not keep, so
/// this is rare: it happens only when an earlier attempt, still sending the
/// body after it failed, went past the replay cap (or the body itself
/// failed) after the retry had started.
#[derive(Debug)]
pub struct BodyNotReplayable {
    _priv: (),
}

impl BodyNotReplayable {
    pub(crate) const fn new() -> Self {
        Self { _priv: () }
    }
}

impl fmt::Display for BodyNotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body not replayable")
    }
}

impl std::error::Error for BodyNotReplayable {}
