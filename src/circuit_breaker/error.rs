//! Error types.

pub use crate::error::CircuitOpen;
