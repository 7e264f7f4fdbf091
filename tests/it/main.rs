//! The integration tests, in one binary (as cargo and rust-analyzer keep
//! theirs): one link instead of twenty, and shared helpers in `common`.
//! A module per layer (paused time) and the `e2e_*` modules (real hyper
//! and axum servers and clients on `127.0.0.1`). `tests/allocations.rs`
//! stays a binary of its own for its counting global allocator.

mod common;

mod chaos;
mod circuit_breaker;
mod classify;
mod deadline;
mod e2e_circuit_breaker;
mod e2e_error_response;
mod e2e_fallback;
mod e2e_grpc;
mod e2e_load_shed;
mod e2e_proxy_status;
mod e2e_resilience;
mod e2e_retry;
mod e2e_upstream;
mod error_response;
mod fallback;
mod grpc;
mod load_shed;
mod metrics_recorded;
mod preset;
mod retry;
mod serde_snapshots;
mod timeout;
mod tracing_events;
mod upstream;
