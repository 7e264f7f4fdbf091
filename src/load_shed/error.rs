//! Error types.

pub use crate::error::Overloaded;
