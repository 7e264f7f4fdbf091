//! Error types.

pub use crate::error::Elapsed;
