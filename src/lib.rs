//! Tower layers that keep HTTP services from emitting or propagating
//! `502 Bad Gateway`.
//!
//! A gateway answers `502` when it gets no valid answer from an upstream: the
//! upstream is overloaded, crashed, slow, restarting or unreachable, or a
//! retry storm made things worse. `tower-steady` answers each cause with a
//! [tower](https://docs.rs/tower) layer for any `Service<http::Request<B>>`:
//! an axum or hyper server, or a hyper-util client calling upstreams. What
//! fails anyway is answered honestly, `503` with `Retry-After` or `504`,
//! never with a generic `502`.
//!
//! | module | what it does |
//! |---|---|
//! | [`classify`] | decides what an outcome *is* (success, or a failure with a kind and a retry safety), once, for every layer |
//! | [`timeout`] | a per-attempt timeout that costs no timer when the answer is immediate |
//! | [`deadline`] | one total time budget per request, read from and written to the next hop |
//! | [`retry`] | retries what is safe to retry, within a budget, never past the deadline, bodies replayed; optional hedging |
//! | [`circuit_breaker`] | fails fast with `503` + `Retry-After` while an upstream is down, over a window that really slides |
//! | [`load_shed`] | sheds load early with `503` + `Retry-After`: an adaptive concurrency limit for servers, adaptive throttling for clients |
//! | [`fallback`] | answers a failure with the last good copy of a shareable page (stale-if-error), or with a page of your own |
//! | [`preset`] | [`Resilience::client()`] and [`Resilience::server()`]: the layers composed in the documented order, with the documented defaults, each part tunable or removed |
//! | [`upstream`] | balances over an upstream's replicas (p2c + peak-EWMA), ejects the failing ones, probes them back and ramps them up slowly; static, discovered or DNS sets |
//! | [`observability`] | the `tracing` targets, and the metrics every layer reports with the `metrics` feature |
//! | [`http`] | `Retry-After` parsing, and every error turned into an honest response |
//! | [`chaos`] | fault injection for tests, examples and benchmarks |
//!
//! # Example
//!
//! An axum app that answers `504` instead of hanging, and never lets an
//! error turn into a dropped connection:
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower::ServiceBuilder;
//! use tower_steady::{deadline::DeadlineLayer, http::ErrorResponseLayer, timeout::TimeoutLayer};
//!
//! # fn main() -> Result<(), tower_steady::ConfigError> {
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             // Every error below becomes a 503 or a 504 with a short body.
//!             .layer(ErrorResponseLayer::new())
//!             // The caller's remaining budget (x-request-timeout-ms,
//!             // grpc-timeout) or ours, whichever is shorter.
//!             .layer(DeadlineLayer::server().timeout(Duration::from_secs(10)).build()?)
//!             .layer(TimeoutLayer::new(Duration::from_secs(5))),
//!     );
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! One feature per layer, all on by default; turn off default features and
//! pick the ones you need. [`classify`] and [`http`] are always there.
//!
//! | feature | enables |
//! |---|---|
//! | `timeout` | [`timeout`] |
//! | `deadline` | [`deadline`] |
//! | `retry` | [`retry`] (turns on `deadline`) |
//! | `circuit-breaker` | [`circuit_breaker`] |
//! | `load-shed` | [`load_shed`] |
//! | `upstream` | [`upstream`] (adds `tower`'s `discover` and tokio's `rt`, `net`, `sync`; it speaks to a retry layer through `http::Attempt` and `http::Endpoint`, and builds without one) |
//! | `fallback` | [`fallback`] |
//! | `chaos` | [`chaos`] |
//! | `preset` | [`preset`] (turns on `timeout`, `deadline`, `retry`, `circuit-breaker`, `load-shed`, `fallback`) |
//! | `metrics` (off by default) | counters, gauges and histograms through the `metrics` facade ([`observability`]) |
//! | `serde` (off by default) | `serde::Serialize` for the handles' snapshots, to serve them as JSON on a status route |
//! | `hyper` | classifying `hyper::Error` |
//! | `hyper-util` | classifying `hyper_util::client::legacy::Error` (`is_connect()`) |
//!
//! # Time
//!
//! Every layer uses `tokio::time`, never the wall clock, so tests can run
//! under tokio's paused time and are deterministic.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod classify;
pub mod http;
pub mod observability;

#[cfg(feature = "chaos")]
pub mod chaos;
#[cfg(feature = "circuit-breaker")]
pub mod circuit_breaker;
#[cfg(feature = "deadline")]
pub mod deadline;
#[cfg(feature = "fallback")]
pub mod fallback;
#[cfg(feature = "load-shed")]
pub mod load_shed;
#[cfg(feature = "retry")]
pub mod retry;
#[cfg(feature = "timeout")]
pub mod timeout;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(feature = "upstream")]
pub mod upstream;

#[cfg(feature = "preset")]
pub mod preset;
#[cfg(feature = "preset")]
pub use preset::Resilience;

pub mod error;
#[cfg(any(
    feature = "chaos",
    feature = "circuit-breaker",
    feature = "load-shed",
    feature = "retry",
    feature = "upstream"
))]
mod rng;
// Used by whichever layers are on; with `serde` alone, by none.
#[cfg(feature = "serde")]
#[allow(dead_code)]
mod serde_util;
#[cfg(any(
    feature = "timeout",
    feature = "deadline",
    feature = "retry",
    feature = "circuit-breaker",
    feature = "load-shed",
    feature = "fallback",
    feature = "upstream"
))]
mod time;

pub use crate::error::{BoxError, ConfigError};

// The README's examples are compiled and run as doctests, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod architecture {
    //! The shared decisions depend on the vocabulary only: `classify` and
    //! `error` name no layer module, so there is no import circle between
    //! them and the layers, and any layer builds alone.

    const LAYERS: [&str; 9] = [
        "timeout",
        "deadline",
        "retry",
        "circuit_breaker",
        "load_shed",
        "upstream",
        "fallback",
        "chaos",
        "preset",
    ];

    const SHARED: [(&str, &str); 4] = [
        ("src/error.rs", include_str!("error.rs")),
        ("src/classify/mod.rs", include_str!("classify/mod.rs")),
        (
            "src/classify/idempotency.rs",
            include_str!("classify/idempotency.rs"),
        ),
        ("src/classify/grpc.rs", include_str!("classify/grpc.rs")),
    ];

    #[test]
    fn the_vocabulary_and_classify_import_no_layer() {
        for (file, text) in SHARED {
            // Code only: a doc comment's link to a layer is not an import.
            let code = text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim_start().starts_with("//"));
            for (n, line) in code {
                for layer in LAYERS {
                    assert!(
                        !line.contains(&format!("crate::{layer}")),
                        "{file}:{}: names the {layer} layer: {line}",
                        n + 1
                    );
                }
                assert!(
                    !line.contains("feature = \"") || line.contains("feature = \"hyper"),
                    "{file}:{}: depends on a layer's feature: {line}",
                    n + 1
                );
            }
        }
    }
}
