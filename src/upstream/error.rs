//! Error types.

pub use crate::error::{NoHealthyUpstream, UnsupportedTarget};
