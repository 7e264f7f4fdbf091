//! Middleware that answers a failure with the last good copy of a page, or
//! with a fixed response, instead of passing the failure on.
//!
//! When every replica of an upstream is down, retries and balancing have
//! nothing left to try. For the pages most visitors see, the last good
//! answer is usually better than an error: nginx's
//! `proxy_cache_use_stale error timeout http_502` and RFC 5861's
//! `stale-if-error` keep a site up while its origin is down. This module
//! does the same as two layers:
//!
//! * [`StaleIfErrorLayer`] keeps the last good response of each safe,
//!   shareable request and serves it, with its true `Age` and a marker
//!   header, when the inner service fails.
//! * [`FallbackLayer`] answers chosen failures with a response the user
//!   supplies (a static maintenance page, an empty list), as the last
//!   resort below the stale copy.
//!
//! Neither is a general HTTP cache: a request always goes to the inner
//! service first, and a stored copy is only ever used when that failed.
//!
//! # What is stored
//!
//! One rule keeps one user's page from reaching another: **a request that
//! carries `Cookie`, `Authorization` or `Proxy-Authorization` is stored
//! only when the response says it is shareable (`Cache-Control: public`,
//! or `s-maxage`), and a response with no freshness information (no
//! `max-age`, `s-maxage` or `Expires`) is stored only when it says
//! `public`.** A handler that answers a signed-in user with no caching
//! headers at all (the default of most frameworks) is never stored; say
//! `Cache-Control: public, max-age=N` on the pages that everyone may be
//! served during an outage.
//!
//! In full, a response is stored only when every one of these holds; the
//! rules are a shared cache's (RFC 9111), read conservatively:
//!
//! * the request is `GET` or `HEAD`, is not a range request, and does not
//!   say `Cache-Control: no-store`;
//! * the inner service succeeded ([`Classify`]) with a status a cache may
//!   store by default: 200, 203, 204, 300, 301, 308, 404, 405, 410, 414;
//! * its `Cache-Control` says none of `no-store`, `private`, `no-cache`,
//!   `must-revalidate`, `proxy-revalidate` (the last three forbid using the
//!   response without asking the origin, which an outage prevents), nor
//!   `s-maxage` without an explicit `stale-if-error`; a `Cache-Control`
//!   that cannot be read counts as a refusal;
//! * it sets no cookie (`Set-Cookie`);
//! * the request carried no credentials (`Cookie`, `Authorization`,
//!   `Proxy-Authorization`), unless the response is explicitly `public` or
//!   has `s-maxage` (RFC 9111 §3.5);
//! * it says how long it is fresh (`max-age`, `s-maxage` or `Expires`), or
//!   is explicitly `public`;
//! * its `Vary` is not `*` and names none of `Cookie`, `Authorization` and
//!   `Proxy-Authorization`: a page that differs per cookie or per
//!   credential is someone's own, and is not kept in a store shared by
//!   every client;
//! * its whole body fits the per-entry limit and arrives: a body that
//!   fails, is dropped, carries trailers or grows too large is not stored.
//!
//! # Which copy, and how old
//!
//! A copy is found by method, the URI's scheme, authority, path and query,
//! the `Host` header (the authority the upstream is asked for, which tells
//! virtual hosts behind one address apart) and, when the response had a
//! `Vary`, the exact values of the request headers it names: a request
//! whose values differ in any byte does not get that variant.
//!
//! A copy may be served while its age (its `Age` on arrival plus the time
//! since) is at most its freshness (`s-maxage`, `max-age`, or
//! `Expires` − `Date`) plus its allowance: the response's own
//! `stale-if-error=N` when it has one, else the layer's
//! [`max_stale`](StaleIfErrorBuilder::max_stale) (5 minutes). Past that, the
//! failure passes on as it is; with [`ErrorResponseLayer`] above, the client
//! gets the honest `503` + `Retry-After` or `504`.
//!
//! A served copy carries `Age` (whole seconds) and, by default,
//! `Cache-Status: tower-steady; fwd=stale; detail=stale-if-error`
//! (RFC 9211); every one is a `tracing` event (target
//! `tower_steady::fallback`, level debug, "stale copy served").
//!
//! # Memory
//!
//! The store holds at most [`max_bytes`](StaleIfErrorBuilder::max_bytes)
//! (32 MiB) and evicts the least recently used copy to make room; a copy
//! counts what it really holds (its body, kept exactly its size, its
//! headers copied into a map of their own, its key, each allocation's
//! overhead, plus 512 bytes of bookkeeping), so the memory the store keeps
//! stays within its cap. One over
//! [`max_entry_bytes`](StaleIfErrorBuilder::max_entry_bytes) (1 MiB) is
//! not stored. Bodies are copied while they stream to the client: each
//! frame is handed on as soon as it arrives, and the copy is stored when the
//! body ends. Nothing is buffered in front of the client.
//!
//! # What it costs on the request path
//!
//! Storing a copy needs an allocation and the store's lock, so the layer
//! stores each key at most once per [`refresh`](StaleIfErrorBuilder::refresh)
//! interval (1 s). A table of 4096 atomics remembers which keys were stored
//! (or found not storable) recently; for those, a successful request costs
//! a keyed hash of its key, a clock read and one atomic load, and takes no
//! lock and allocates nothing. Requests that
//! will be stored, and requests for a key whose responses have a `Vary`,
//! keep a copy of the request's headers (to store under, or to find, the
//! right variant). Requests that are not `GET` or `HEAD` cost one header
//! lookup. The lock is taken to store a copy and to look one up after a
//! failure, both cold paths. The crate's benchmarks (`benches/`) measure it.
//!
//! # Where it goes
//!
//! In a client or proxy stack, above the retry layer (so a copy is served
//! only once retries are spent) and below the deadline and the error
//! mapping:
//!
//! ```text
//! ErrorResponse → Deadline → Fallback → StaleIfError → Retry → CircuitBreaker → Upstreams → Timeout → client
//! ```
//!
//! A stale copy answers an open circuit breaker or `NoHealthyUpstream` at
//! once, without waiting for an upstream.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_steady::fallback::StaleIfErrorLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_steady::BoxError> {
//! let layer = StaleIfErrorLayer::builder()
//!     .max_stale(Duration::from_secs(60))
//!     .build()?;
//! let handle = layer.handle();
//!
//! // An upstream that answers once, then fails.
//! let calls = Arc::new(AtomicUsize::new(0));
//! let upstream = service_fn(move |_: Request<()>| {
//!     let n = calls.fetch_add(1, Ordering::Relaxed);
//!     async move {
//!         let response = if n == 0 {
//!             Response::builder().header("cache-control", "max-age=10").body(Full::new(Bytes::from("hello")))
//!         } else {
//!             Response::builder().status(StatusCode::BAD_GATEWAY).body(Full::default())
//!         };
//!         Ok::<_, http::Error>(response?)
//!     }
//! });
//! let svc = ServiceBuilder::new().layer(layer).service(upstream);
//!
//! let get = || Request::get("http://example.com/").body(()).unwrap();
//! // The copy is stored as the body streams to its end.
//! let first = svc.clone().oneshot(get()).await?;
//! assert_eq!(first.into_body().collect().await?.to_bytes(), "hello");
//!
//! // The upstream fails: the stored copy answers.
//! let second = svc.clone().oneshot(get()).await?;
//! assert_eq!(second.status(), StatusCode::OK);
//! assert_eq!(second.headers()["age"], "0");
//! assert!(second.headers().contains_key("cache-status"));
//! assert_eq!(second.into_body().collect().await?.to_bytes(), "hello");
//! assert_eq!(handle.stats().stale_served, 1);
//! # Ok(())
//! # }
//! ```
//!
//! [`Classify`]: crate::classify::Classify
//! [`ErrorResponseLayer`]: crate::http::ErrorResponseLayer

mod failures;
mod fixed;
mod stale;

pub mod future {
    //! Future types.
    pub use super::fixed::future::FallbackFuture;
    pub use super::stale::future::StaleIfErrorFuture;
}

pub use self::failures::Failures;
pub use self::fixed::{Fallback, FallbackBuilder, FallbackLayer};
pub use self::stale::{
    StaleIfError, StaleIfErrorBody, StaleIfErrorBuilder, StaleIfErrorHandle, StaleIfErrorLayer,
    StaleIfErrorStats,
};

pub(crate) const TARGET: &str = "tower_steady::fallback";
