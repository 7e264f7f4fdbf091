use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::{sleep, Sleep};
use tower::discover::Change;

use super::health::TARGET;

// Boxed: a lookup and a timer per interval, on a cold path (the discovery
// task), never on a request's.
type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// A [`Discover`](tower::discover::Discover) that follows a DNS name: it
/// looks the name up again every [`interval`](Self::interval) (default
/// 5 s, Envoy's `dns_refresh_rate`) with [`tokio::net::lookup_host`], and
/// reports the addresses that appeared (with a service made by `make`) and
/// those that went away.
///
/// A failed lookup, or one that finds no address, changes nothing: the set
/// keeps the addresses it had (a DNS outage must not empty a healthy set).
/// `lookup_host` does not report TTLs, so the interval stands in for them.
///
/// ```no_run
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower_steady::upstream::{Dns, SetAuthority, Upstreams};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
/// let dns = Dns::new("api.internal:8080", move |addr| SetAuthority::new(addr, client.clone()))
///     .interval(Duration::from_secs(5))
///     .resolve()
///     .await?;
/// let upstreams = Upstreams::builder().build_discover(dns)?;
/// # Ok(()) }
/// ```
pub struct Dns<F, S> {
    name: String,
    interval: Duration,
    make: F,
    current: Vec<SocketAddr>,
    changes: VecDeque<Change<SocketAddr, S>>,
    state: State,
}

enum State {
    Waiting(Pin<Box<Sleep>>),
    Resolving(Lookup),
}

impl<F, S> Dns<F, S>
where
    F: FnMut(SocketAddr) -> S,
{
    /// Follows `name`, a `host:port` such as `"api.internal:8080"`.
    pub fn new(name: impl Into<String>, make: F) -> Self {
        let name = name.into();
        Self {
            state: State::Resolving(lookup(name.clone())),
            name,
            interval: Duration::from_secs(5),
            make,
            current: Vec::new(),
            changes: VecDeque::new(),
        }
    }

    /// The time between two lookups (default 5 s). Zero is rejected by
    /// [`resolve`](Self::resolve).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Makes the first lookup now, so that
    /// [`build_discover`](super::UpstreamsBuilder::build_discover) starts
    /// with the endpoints it found. Fails if the name does not resolve: a
    /// name that is wrong at start-up is a configuration error.
    pub async fn resolve(mut self) -> io::Result<Self> {
        if self.interval.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                crate::ConfigError::new("dns.interval", "must be greater than zero"),
            ));
        }
        let addrs = lookup(self.name.clone()).await?;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolved to no address", self.name),
            ));
        }
        self.update(addrs);
        // Boxed: a cold path, once per re-resolution interval, never on a
        // request's path.
        self.state = State::Waiting(Box::pin(sleep(self.interval)));
        Ok(self)
    }

    /// Queues the changes from the current set to `addrs`.
    fn update(&mut self, mut addrs: Vec<SocketAddr>) {
        addrs.sort_unstable();
        addrs.dedup();
        for gone in self
            .current
            .iter()
            .filter(|a| addrs.binary_search(a).is_err())
        {
            tracing::info!(target: TARGET, upstream = %self.name, endpoint = %gone, "address gone from DNS");
            self.changes.push_back(Change::Remove(*gone));
        }
        for &new in addrs
            .iter()
            .filter(|a| self.current.binary_search(a).is_err())
        {
            tracing::info!(target: TARGET, upstream = %self.name, endpoint = %new, "address found in DNS");
            let service = (self.make)(new);
            self.changes.push_back(Change::Insert(new, service));
        }
        self.current = addrs;
    }
}

/// A lookup of `name`, boxed: a cold path, once per re-resolution interval
/// (the resolver's future type cannot be named).
fn lookup(name: String) -> Lookup {
    Box::pin(async move { Ok(tokio::net::lookup_host(name).await?.collect()) })
}

// Nothing in a `Dns` is pinned structurally: services and the maker are
// only ever used through `&mut`, the timers are boxed.
impl<F, S> Unpin for Dns<F, S> {}

impl<F, S> Stream for Dns<F, S>
where
    F: FnMut(SocketAddr) -> S,
{
    type Item = Result<Change<SocketAddr, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.changes.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match &mut this.state {
                State::Waiting(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.state = State::Resolving(lookup(this.name.clone()));
                }
                State::Resolving(lookup) => {
                    let result = match lookup.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    };
                    match result {
                        Ok(addrs) if !addrs.is_empty() => this.update(addrs),
                        Ok(_) => tracing::warn!(
                            target: TARGET,
                            upstream = %this.name,
                            "DNS lookup found no address; keeping the current set"
                        ),
                        Err(error) => tracing::warn!(
                            target: TARGET,
                            upstream = %this.name,
                            %error,
                            "DNS lookup failed; keeping the current set"
                        ),
                    }
                    // Never spin: an unresolved `Dns` with a zero interval
                    // waits a millisecond.
                    let wait = this.interval.max(Duration::from_millis(1));
                    this.state = State::Waiting(Box::pin(sleep(wait)));
                }
            }
        }
    }
}

impl<F, S> fmt::Debug for Dns<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("name", &self.name)
            .field("interval", &self.interval)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn drain(dns: &mut Dns<fn(SocketAddr) -> SocketAddr, SocketAddr>) -> Vec<String> {
        dns.changes
            .drain(..)
            .map(|change| match change {
                Change::Insert(key, service) => {
                    assert_eq!(key, service);
                    format!("+{}", key.port())
                }
                Change::Remove(key) => format!("-{}", key.port()),
            })
            .collect()
    }

    #[test]
    fn a_new_answer_becomes_inserts_and_removals() {
        let mut dns: Dns<fn(SocketAddr) -> SocketAddr, SocketAddr> = Dns::new("x:1", |a| a);
        dns.update(vec![addr(2), addr(1), addr(2)]);
        assert_eq!(drain(&mut dns), ["+1", "+2"]);
        dns.update(vec![addr(3), addr(2)]);
        assert_eq!(drain(&mut dns), ["-1", "+3"]);
        dns.update(vec![addr(2), addr(3)]);
        assert!(
            drain(&mut dns).is_empty(),
            "the same answer changes nothing"
        );
    }
}
