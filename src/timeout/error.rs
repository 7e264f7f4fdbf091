//! Error types.

use std::fmt;

/// The attempt took longer than its timeout.
#[derive(Debug, Default)]
pub struct Elapsed(());

impl Elapsed {
    /// A new `Elapsed` error.
    pub const fn new() -> Self {
        Elapsed(())
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request timed out")
    }
}

impl std::error::Error for Elapsed {}
