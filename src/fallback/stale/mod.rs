//! Stale-if-error: the layer, its store of copies and the rules for what
//! may be stored and served.

mod body;
pub(crate) mod future;
mod gate;
mod handle;
mod layer;
mod policy;
mod store;

pub use self::body::StaleIfErrorBody;
pub use self::handle::{StaleIfErrorHandle, StaleIfErrorStats};
pub use self::layer::{StaleIfErrorBuilder, StaleIfErrorLayer};

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderValue, Method, Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use self::future::StaleIfErrorFuture;
use self::gate::{Gate, Recent};
use self::store::{Entry, Id, Lookup, Store, VaryValues};
use super::{Failures, TARGET};
use crate::classify::{FailureKind, HttpClassifier};
use crate::BoxError;

/// Answers a failed safe request with the last good copy of its response.
/// See [`StaleIfErrorLayer`](crate::fallback::StaleIfErrorLayer).
#[derive(Debug)]
pub struct StaleIfError<S, C = HttpClassifier> {
    inner: S,
    classifier: C,
    shared: Arc<Shared>,
}

impl<S: Clone, C: Clone> Clone for StaleIfError<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> StaleIfError<S, C> {
    pub(crate) fn new(inner: S, classifier: C, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            classifier,
            shared,
        }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for StaleIfError<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body,
    C: crate::classify::Classify + Clone,
{
    type Response = Response<StaleIfErrorBody<ResBody>>;
    type Error = BoxError;
    type Future = StaleIfErrorFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !policy::request_is_cacheable(request.method(), request.headers()) {
            return StaleIfErrorFuture::new(
                self.inner.call(request),
                None,
                self.classifier.clone(),
            );
        }
        let head = request.method() == Method::HEAD;
        // The key holds the `Host` header whenever there is one, beside the
        // URI's own authority: what the upstream is told to serve is the
        // `Host` (virtual hosts behind one address, an absolute-form URI
        // that names the address), so two hosts never share a copy.
        let host = request.headers().get(header::HOST);
        let id = self.shared.id(head, request.uri(), host);
        // A key stored within the refresh interval, whose responses vary on
        // nothing, needs nothing more kept: this request will not be
        // stored, and a lookup after a failure needs only the id. Any other
        // keeps the request's URI and headers, to store the response under
        // its `Vary` or to find the right variant after a failure.
        let now = crate::time::now();
        let keep = match self.shared.gate.recent(id.hash, now) {
            Recent::Plain => Keep::Light,
            // Boxed, so that the futures of the other requests stay small:
            // this path copies the headers anyway.
            Recent::No | Recent::Varies => Keep::Capture(Box::new(Captured {
                credentialed: policy::request_is_credentialed(request.headers()),
                uri: request.uri().clone(),
                headers: request.headers().clone(),
            })),
        };
        let ctx = Ctx {
            shared: self.shared.clone(),
            id,
            keep,
        };
        let _now = crate::time::scope(now);
        StaleIfErrorFuture::new(self.inner.call(request), Some(ctx), self.classifier.clone())
    }
}

/// What a response future keeps of a cacheable request.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: Id,
    pub(crate) keep: Keep,
}

#[derive(Debug)]
pub(crate) enum Keep {
    /// Only the id.
    Light,
    /// The id, the request's URI and headers.
    Capture(Box<Captured>),
}

#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) uri: http::Uri,
    pub(crate) headers: http::HeaderMap,
    /// Whether the request carried `Cookie`, `Authorization` or
    /// `Proxy-Authorization`.
    pub(crate) credentialed: bool,
}

/// Settings, validated by the builder.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_stale: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) max_entry_bytes: usize,
    pub(crate) refresh: Duration,
    pub(crate) failures: Failures,
    pub(crate) marker: Option<(HeaderName, HeaderValue)>,
    /// The store's name: the `store` label of its metrics.
    pub(crate) name: Arc<str>,
}

/// What every clone of the service shares: the store, the table of recent
/// stores, the counters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) gate: Gate,
    store: Mutex<Store>,
    hasher: RandomState,
    pub(crate) counters: Counters,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) stored: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) served: AtomicU64,
}

/// What the handle reads under the store's lock.
pub(crate) struct Sizes {
    pub(crate) entries: usize,
    pub(crate) bytes: usize,
}

impl Shared {
    pub(crate) fn new(settings: Settings) -> Self {
        crate::observability::emit::stale_store_built(&settings.name);
        Self {
            gate: Gate::new(settings.refresh, Instant::now()),
            store: Mutex::new(Store::new(settings.max_bytes, settings.max_entry_bytes)),
            hasher: RandomState::new(),
            counters: Counters::default(),
            settings,
        }
    }

    /// The id of a request's key: one keyed SipHash over the method, the
    /// URI's scheme, authority, path and query, and the `Host` header,
    /// finished twice (the second time with one more byte) for 128 bits.
    ///
    /// Asked of every safe request. Each `write` to SipHash has a fixed cost
    /// besides its bytes, so a key that fits 256 bytes (the usual URI) is
    /// written in one (see [`write_key`]).
    fn id(&self, head: bool, uri: &http::Uri, host: Option<&HeaderValue>) -> Id {
        let parts: [&[u8]; 5] = [
            uri.scheme_str().unwrap_or("").as_bytes(),
            uri.authority().map_or("", |a| a.as_str()).as_bytes(),
            uri.path().as_bytes(),
            uri.query().unwrap_or("").as_bytes(),
            host.map_or(&b""[..], HeaderValue::as_bytes),
        ];
        let mut h = self.hasher.build_hasher();
        write_key(&mut h, u8::from(head), parts, &mut [0; 256]);
        let hash = h.finish();
        h.write_u8(0xff);
        Id {
            hash,
            check: h.finish(),
        }
    }

    /// The hash of one variant of a key, for the table of recent stores.
    pub(crate) fn variant_hash(&self, id: Id, vary: &VaryValues) -> u64 {
        self.hasher.hash_one((id, vary))
    }

    pub(crate) fn sizes(&self) -> Sizes {
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        Sizes {
            entries: store.entries(),
            bytes: store.bytes(),
        }
    }

    /// Stores a complete response (cold path: once per key per refresh
    /// interval).
    pub(crate) fn store(&self, entry: Entry) {
        let (status, uri, len) = (entry.status, entry.uri.clone(), entry.body.len());
        let stored = {
            let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            store.insert(entry)
        };
        if stored {
            self.counters.stored.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(target: TARGET, %uri, status = status.as_u16(), body_bytes = len, "response stored");
        } else {
            tracing::debug!(target: TARGET, %uri, status = status.as_u16(), body_bytes = len, "response not stored: over the per-entry limit");
        }
    }

    /// The stored copy for a failed request, as a response, if one is
    /// usable (cold path: after a failure).
    pub(crate) fn serve<B>(
        &self,
        ctx: &Ctx,
        kind: FailureKind,
    ) -> Option<Response<StaleIfErrorBody<B>>> {
        let headers = match &ctx.keep {
            Keep::Light => None,
            Keep::Capture(captured) => Some(&captured.headers),
        };
        let lookup = {
            let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            store.lookup(ctx.id, headers, self.settings.max_stale, Instant::now())
        };
        let (entry, age) = match lookup {
            Lookup::Hit(entry, age) => (entry, age),
            Lookup::Expired(age, uri) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    target: TARGET,
                    %uri,
                    kind = kind.as_str(),
                    age_secs = age.as_secs(),
                    "stored copy too old to serve; failure passed on"
                );
                return None;
            }
            Lookup::Miss => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(target: TARGET, kind = kind.as_str(), "no stored copy; failure passed on");
                return None;
            }
        };
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        self.counters.served.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            target: TARGET,
            uri = %entry.uri,
            kind = kind.as_str(),
            status = entry.status.as_u16(),
            age_secs = age.as_secs(),
            "stale copy served"
        );
        crate::observability::emit::stale_served(&self.settings.name, kind.as_str());
        let Entry {
            status,
            mut headers,
            body,
            ..
        } = *entry;
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        if let Some((name, value)) = &self.settings.marker {
            headers.insert(name.clone(), value.clone());
        }
        let mut response = Response::new(StaleIfErrorBody::stored(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
            .extensions_mut()
            .insert(crate::http::Substituted::new(kind));
        Some(response)
    }
}

/// The response's headers as they are stored: a copy of their own
/// ([`owned_headers`](self::store::owned_headers)), without the headers that
/// belong to one connection, not to the response (RFC 9110 §7.6.1), and
/// without `Age`, which is recomputed when the copy is served.
pub(crate) fn headers_for_storage(headers: &http::HeaderMap) -> http::HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    self::store::owned_headers(headers, |name| {
        named.contains(name)
            || [
                header::CONNECTION,
                header::TRANSFER_ENCODING,
                header::TE,
                header::TRAILER,
                header::UPGRADE,
                header::PROXY_AUTHENTICATE,
                header::AGE,
            ]
            .contains(name)
            || name == "keep-alive"
            || name == "proxy-connection"
    })
}

/// Writes `first`, then `parts` with a zero byte between each two, to `h`:
/// in one `write` through `buf` (zeroed) when they fit it, else piece by
/// piece. Both give the same hash: SipHash's writes concatenate.
fn write_key(h: &mut impl Hasher, first: u8, parts: [&[u8]; 5], buf: &mut [u8]) {
    let len = 1 + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    if len <= buf.len() {
        buf[0] = first;
        let mut at = 1;
        for part in parts {
            buf[at..at + part.len()].copy_from_slice(part);
            // The separator after it is already zero.
            at += part.len() + 1;
        }
        h.write(&buf[..len - 1]);
    } else {
        h.write_u8(first);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                h.write_u8(0);
            }
            h.write(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hashes_the_same_written_whole_or_in_parts() {
        let state = RandomState::new();
        let parts: [&[u8]; 5] = [
            b"http",
            b"example.com:8080",
            b"/a/b",
            b"q=1",
            b"example.com",
        ];
        let hash = |buf: &mut [u8]| {
            let mut h = state.build_hasher();
            write_key(&mut h, 1, parts, buf);
            h.finish()
        };
        let whole = hash(&mut [0; 256]);
        assert_eq!(
            whole,
            hash(&mut [0; 8]),
            "too long for the buffer: in parts"
        );
        // The separators keep parts apart: moving a byte across one changes the key.
        let mut h = state.build_hasher();
        write_key(
            &mut h,
            1,
            [
                b"http",
                b"example.com:808",
                b"0/a/b",
                b"q=1",
                b"example.com",
            ],
            &mut [0; 256],
        );
        assert_ne!(whole, h.finish());
    }
}
