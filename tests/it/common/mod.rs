//! Helpers shared by the integration tests: the end-to-end harness
//! (`e2e`) and the per-layer helpers (`layers`), re-exported here.
#![allow(dead_code, unreachable_pub)]

mod e2e;
mod layers;

pub use self::e2e::*;
pub use self::layers::*;
