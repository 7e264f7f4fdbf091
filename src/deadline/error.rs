//! Error types.

pub use crate::error::DeadlineExceeded;
