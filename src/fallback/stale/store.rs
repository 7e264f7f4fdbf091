//! The stored copies: a map from key to variants, a byte budget, and
//! least-recently-used eviction.
//!
//! Pure: every operation takes `now`, so the budget and the staleness
//! limits are tested with plain `#[test]`s and property tests. The layer
//! keeps the store behind a mutex that only cold paths take: storing a copy
//! (at most once per key per refresh interval) and looking one up after a
//! failure.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use super::policy::usable_for;

/// What an allocation costs besides the bytes asked for: the allocator's
/// own header and rounding (glibc's malloc: 8 to 16 bytes a chunk).
const ALLOCATION_OVERHEAD: usize = 16;

/// What the size of an entry counts besides what it points to: the slot
/// itself (held inline in its key's list), its place in the map of keys
/// and in the list of last uses, rounded up.
pub(crate) const ENTRY_OVERHEAD: usize = 512;

// The slot and its places in the two maps fit the overhead counted.
const _: () = assert!(std::mem::size_of::<Slot>() + 128 <= ENTRY_OVERHEAD);

/// What one place in a header map holds inline: a name, a value, and the
/// map's hash, links and index (about 24 bytes in `http` 1).
const HEADER_SLOT: usize =
    std::mem::size_of::<HeaderName>() + std::mem::size_of::<HeaderValue>() + 24;

/// What identifies a stored response, besides the request headers its
/// `Vary` names: two keyed hashes (SipHash with a key drawn per layer) of
/// the method (`HEAD` or `GET`), the URI's scheme, authority, path and
/// query, and the `Host` header when there is one. 128 bits of a keyed
/// hash: two different requests share an id with a chance of 2^-128, and no
/// client can aim for a collision without the key. The request path keeps
/// only this, no copy of the URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Id {
    /// Indexes the store and the table of recent stores.
    pub(crate) hash: u64,
    pub(crate) check: u64,
}

/// The values of the request headers a stored response varies on, in the
/// order of its `Vary`.
pub(crate) type VaryValues = Vec<(HeaderName, Vec<HeaderValue>)>;

/// Reads the values of `names` from a request's headers, each copied into
/// an allocation of its own (see [`owned`]).
pub(crate) fn vary_values(names: &[HeaderName], request: &HeaderMap) -> VaryValues {
    names
        .iter()
        .map(|name| {
            (
                name.clone(),
                request.get_all(name).iter().map(owned).collect(),
            )
        })
        .collect()
}

/// A copy of `value` in an allocation of its own, exactly its size.
///
/// hyper parses a message's head into one buffer and hands out header
/// values (and the URI) as slices of it: a stored slice would keep that
/// whole buffer (8 KiB or more, the connection's read buffer) alive for
/// as long as the copy is stored, which the byte budget cannot see.
pub(crate) fn owned(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
        .unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// A copy of `headers` without the ones `skip` names, every value in an
/// allocation of its own ([`owned`]) and the map no larger than it needs.
pub(crate) fn owned_headers(headers: &HeaderMap, skip: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.keys_len());
    for (name, value) in headers {
        if !skip(name) {
            copy.append(name.clone(), owned(value));
        }
    }
    copy
}

/// Whether `request` carries exactly the values a stored response was
/// selected with. Byte-for-byte: no normalisation, so a doubtful match is a
/// miss, never the wrong variant.
fn vary_matches(stored: &VaryValues, request: &HeaderMap) -> bool {
    stored
        .iter()
        .all(|(name, values)| request.get_all(name).iter().eq(values.iter()))
}

/// A response as stored.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: Id,
    /// For logs (and counted in the size); a string of its own, not the
    /// request's URI, which may be a slice of a connection's buffer.
    pub(crate) uri: Box<str>,
    pub(crate) vary: VaryValues,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) stored_at: Instant,
    /// The response's `Age` when it arrived.
    pub(crate) age: u64,
    pub(crate) fresh: u64,
    pub(crate) stale_if_error: Option<u64>,
}

impl Entry {
    /// The bytes this entry holds, as it counts against the budget: what
    /// its allocations really take (a header map's spare places, each
    /// value's allocation, the allocator's overhead), not only the bytes
    /// of its body. The body and the URI are exactly their size (see
    /// [`StaleIfErrorBody`](crate::fallback::StaleIfErrorBody)), and the headers are
    /// copied into a map of their own ([`owned_headers`]).
    pub(crate) fn size(&self) -> usize {
        let allocation = |len: usize| {
            if len == 0 {
                0
            } else {
                len + ALLOCATION_OVERHEAD
            }
        };
        let vary = allocation(
            self.vary.capacity() * std::mem::size_of::<(HeaderName, Vec<HeaderValue>)>(),
        ) + self
            .vary
            .iter()
            .map(|(n, vs)| {
                custom_name_size(n)
                    + allocation(vs.capacity() * std::mem::size_of::<HeaderValue>())
                    + vs.iter().map(|v| allocation(v.len())).sum::<usize>()
            })
            .sum::<usize>();
        header_size(&self.headers)
            + allocation(self.body.len())
            + allocation(self.uri.len())
            + vary
            + ENTRY_OVERHEAD
    }

    /// Its age at `now`: its `Age` on arrival plus the time since.
    pub(crate) fn age_at(&self, now: Instant) -> Duration {
        Duration::from_secs(self.age).saturating_add(now.saturating_duration_since(self.stored_at))
    }
}

/// The bytes a header map of [`owned_headers`] holds: its places (taken or
/// spare), each value's allocation, each name, and the list that holds a
/// name's second and later values.
pub(crate) fn header_size(headers: &HeaderMap) -> usize {
    let places = headers.capacity() * HEADER_SLOT;
    let extra_values = headers.len() - headers.keys_len();
    let fields: usize = headers
        .iter()
        .map(|(_, v)| v.len() + ALLOCATION_OVERHEAD)
        .sum();
    let names: usize = headers.keys().map(custom_name_size).sum();
    places + 2 * ALLOCATION_OVERHEAD + extra_values * (HEADER_SLOT + 16) + fields + names
}

/// A header name outside `http`'s standard ones is an allocation of its
/// own; a standard one is a constant, which `http` does not let us tell
/// apart, so every name is counted as an allocation (an overcount of a few
/// bytes a header, on the safe side).
fn custom_name_size(name: &HeaderName) -> usize {
    name.as_str().len() + ALLOCATION_OVERHEAD
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A usable copy, and its age now.
    Hit(Box<Entry>, Duration),
    /// A copy, too old to serve (its age and URI); it has been removed.
    Expired(Duration, Box<str>),
    Miss,
}

#[derive(Debug)]
struct Slot {
    /// Its place in `lru`.
    tick: u64,
    size: usize,
    entry: Entry,
}

fn same_names(a: &VaryValues, b: &VaryValues) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0)
}

/// The store. Every entry is in `by_key` (under its key's hash) and in
/// `lru` (under its last use); `bytes` is the sum of their sizes and never
/// exceeds `max_bytes`.
#[derive(Debug)]
pub(crate) struct Store {
    max_bytes: usize,
    max_entry_bytes: usize,
    by_key: HashMap<u64, Vec<Slot>>,
    lru: BTreeMap<u64, u64>,
    tick: u64,
    bytes: usize,
    entries: usize,
}

impl Store {
    pub(crate) fn new(max_bytes: usize, max_entry_bytes: usize) -> Self {
        Self {
            max_bytes,
            max_entry_bytes,
            by_key: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            entries: 0,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    /// Stores `entry` under its id, replacing the copy
    /// of the same variant and any variant selected by other `Vary` names
    /// (the origin changed its `Vary`), then evicting the least recently
    /// used until it fits. Returns `false`, storing nothing, when the entry
    /// alone is over the per-entry limit.
    pub(crate) fn insert(&mut self, entry: Entry) -> bool {
        let hash = entry.id.hash;
        let size = entry.size();
        if size > self.max_entry_bytes || size > self.max_bytes {
            return false;
        }
        if let Some(variants) = self.by_key.get(&hash) {
            let replaced: Vec<u64> = variants
                .iter()
                .filter(|s| {
                    s.entry.id == entry.id
                        && (!same_names(&s.entry.vary, &entry.vary) || s.entry.vary == entry.vary)
                })
                .map(|s| s.tick)
                .collect();
            for tick in replaced {
                self.remove(hash, tick);
            }
        }
        while self.bytes + size > self.max_bytes {
            let Some((&tick, &victim)) = self.lru.iter().next() else {
                break;
            };
            self.remove(victim, tick);
        }
        self.tick += 1;
        let tick = self.tick;
        self.by_key
            .entry(hash)
            // Most keys have one variant: a list of one, not of four.
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Slot { tick, size, entry });
        self.lru.insert(tick, hash);
        self.bytes += size;
        self.entries += 1;
        true
    }

    /// Finds the copy for `id` whose `Vary` values match `request` (`None`
    /// when the request's headers were not kept: then only a copy that
    /// varies on nothing matches). A usable copy is marked as used; one too
    /// old to serve is removed.
    pub(crate) fn lookup(
        &mut self,
        id: Id,
        request: Option<&HeaderMap>,
        max_stale: Duration,
        now: Instant,
    ) -> Lookup {
        let hash = id.hash;
        let Some(variants) = self.by_key.get(&hash) else {
            return Lookup::Miss;
        };
        let found = variants.iter().find(|s| {
            s.entry.id == id
                && match request {
                    Some(headers) => vary_matches(&s.entry.vary, headers),
                    None => s.entry.vary.is_empty(),
                }
        });
        let Some(Slot { tick, entry, .. }) = found else {
            return Lookup::Miss;
        };
        let tick = *tick;
        let age = entry.age_at(now);
        if usable_for(entry.fresh, entry.stale_if_error, max_stale, age).is_none() {
            let uri = entry.uri.clone();
            self.remove(hash, tick);
            return Lookup::Expired(age, uri);
        }
        let entry = Box::new(entry.clone());
        self.touch(hash, tick);
        Lookup::Hit(entry, age)
    }

    fn touch(&mut self, hash: u64, tick: u64) {
        self.tick += 1;
        let new = self.tick;
        self.lru.remove(&tick);
        self.lru.insert(new, hash);
        if let Some(variants) = self.by_key.get_mut(&hash) {
            if let Some(slot) = variants.iter_mut().find(|s| s.tick == tick) {
                slot.tick = new;
            }
        }
    }

    fn remove(&mut self, hash: u64, tick: u64) {
        self.lru.remove(&tick);
        let Some(variants) = self.by_key.get_mut(&hash) else {
            return;
        };
        if let Some(at) = variants.iter().position(|s| s.tick == tick) {
            let slot = variants.swap_remove(at);
            self.bytes -= slot.size;
            self.entries -= 1;
        }
        if variants.is_empty() {
            self.by_key.remove(&hash);
        }
    }

    /// Checks the invariants (tests only).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let counted: usize = self
            .by_key
            .values()
            .flat_map(|v| v.iter().map(|s| s.entry.size()))
            .sum();
        let n: usize = self.by_key.values().map(Vec::len).sum();
        assert_eq!(counted, self.bytes);
        assert_eq!(n, self.entries);
        assert_eq!(n, self.lru.len());
        assert!(
            self.bytes <= self.max_bytes,
            "{} > {}",
            self.bytes,
            self.max_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Key `i`; keys 0, 5, 10 (and so on) share a hash and differ in
    /// their check.
    fn key(i: u8) -> Id {
        Id {
            hash: u64::from(i % 5),
            check: u64::from(i),
        }
    }

    fn entry(k: u8, accept: Option<&'static str>, body: usize, now: Instant) -> Entry {
        let vary = match accept {
            Some(v) => vec![(http::header::ACCEPT, vec![HeaderValue::from_static(v)])],
            None => Vec::new(),
        };
        Entry {
            id: key(k),
            uri: format!("http://example.com/{k}").into(),
            vary,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            stored_at: now,
            age: 0,
            fresh: 0,
            stale_if_error: None,
        }
    }

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn evicts_the_least_recently_used_to_make_room() {
        let now = Instant::now();
        let one = entry(0, None, 1000, now).size();
        let mut store = Store::new(3 * one, one);
        for k in 0..3 {
            assert!(store.insert(entry(k, None, 1000, now)));
        }
        // Using 0 makes 1 the least recently used.
        assert!(matches!(
            store.lookup(key(0), None, MINUTE, now),
            Lookup::Hit(..)
        ));
        assert!(store.insert(entry(3, None, 1000, now)));
        store.check();
        assert_eq!(store.entries(), 3);
        assert!(matches!(
            store.lookup(key(1), None, MINUTE, now),
            Lookup::Miss
        ));
        for k in [0, 2, 3] {
            assert!(matches!(
                store.lookup(key(k), None, MINUTE, now),
                Lookup::Hit(..)
            ));
        }
    }

    #[test]
    fn an_entry_over_the_limit_is_refused_and_evicts_nothing() {
        let now = Instant::now();
        let mut store = Store::new(10_000, 2_000);
        assert!(store.insert(entry(0, None, 1000, now)));
        assert!(!store.insert(entry(1, None, 2000, now)));
        assert_eq!(store.entries(), 1);
        store.check();
    }

    #[test]
    fn variants_are_kept_apart_and_replaced_one_by_one() {
        let now = Instant::now();
        let mut store = Store::new(100_000, 10_000);
        assert!(store.insert(entry(0, Some("text/html"), 10, now)));
        assert!(store.insert(entry(0, Some("application/json"), 20, now)));
        assert!(store.insert(entry(0, Some("text/html"), 30, now)));
        assert_eq!(store.entries(), 2);
        let Lookup::Hit(e, _) = store.lookup(key(0), Some(&accept("text/html")), MINUTE, now)
        else {
            panic!("html variant")
        };
        assert_eq!(e.body.len(), 30);
        let Lookup::Hit(e, _) =
            store.lookup(key(0), Some(&accept("application/json")), MINUTE, now)
        else {
            panic!("json variant")
        };
        assert_eq!(e.body.len(), 20);
        assert!(matches!(
            store.lookup(key(0), Some(&accept("text/plain")), MINUTE, now),
            Lookup::Miss
        ));
        assert!(matches!(
            store.lookup(key(0), Some(&HeaderMap::new()), MINUTE, now),
            Lookup::Miss
        ));
        // Without the request's headers, only a copy that varies on nothing
        // can match.
        assert!(matches!(
            store.lookup(key(0), None, MINUTE, now),
            Lookup::Miss
        ));
        // A response that stops varying replaces every variant.
        assert!(store.insert(entry(0, None, 5, now)));
        assert_eq!(store.entries(), 1);
        store.check();
    }

    #[test]
    fn keys_sharing_a_hash_are_told_apart() {
        let now = Instant::now();
        let mut store = Store::new(100_000, 10_000);
        assert!(store.insert(entry(1, None, 10, now)));
        assert!(store.insert(entry(6, None, 20, now)));
        assert_eq!(store.entries(), 2);
        let Lookup::Hit(e, _) = store.lookup(key(6), None, MINUTE, now) else {
            panic!("key 6")
        };
        assert_eq!(e.body.len(), 20);
        let Lookup::Hit(e, _) = store.lookup(key(1), None, MINUTE, now) else {
            panic!("key 1")
        };
        assert_eq!(e.body.len(), 10);
        assert!(matches!(
            store.lookup(key(11), None, MINUTE, now),
            Lookup::Miss
        ));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            key: u8,
            variant: Option<u8>,
            body: usize,
        },
        Lookup {
            key: u8,
            variant: Option<u8>,
            with_headers: bool,
        },
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let variant = prop::option::of(0u8..3);
        prop_oneof![
            4 => (0u8..12, variant.clone(), 0usize..3000)
                .prop_map(|(key, variant, body)| Op::Insert { key, variant, body }),
            3 => (0u8..12, variant, any::<bool>())
                .prop_map(|(key, variant, with_headers)| Op::Lookup { key, variant, with_headers }),
            1 => (0u64..120).prop_map(Op::Advance),
        ]
    }

    const VARIANTS: [&str; 3] = ["a", "b", "c"];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever is stored, looked up or left to age, in any order, the
        /// bytes counted are the entries' sizes and never exceed the budget.
        #[test]
        fn the_byte_budget_is_never_exceeded(ops in prop::collection::vec(op(), 1..200), budget in 2_000usize..20_000) {
            let start = Instant::now();
            let mut now = start;
            let mut store = Store::new(budget, budget.min(3_500));
            for op in ops {
                match op {
                    Op::Insert { key, variant, body } => {
                        let e = entry(key, variant.map(|v| VARIANTS[v as usize]), body, now);
                        let fits = e.size() <= budget.min(3_500);
                        prop_assert_eq!(store.insert(e), fits);
                    }
                    Op::Lookup { key: k, variant, with_headers } => {
                        let headers = variant.map_or_else(HeaderMap::new, |v| accept(VARIANTS[v as usize]));
                        let headers = with_headers.then_some(&headers);
                        if let Lookup::Hit(e, age) = store.lookup(key(k), headers, MINUTE, now) {
                            prop_assert!(age <= MINUTE);
                            prop_assert_eq!(e.id, key(k));
                        }
                    }
                    Op::Advance(secs) => now += Duration::from_secs(secs),
                }
                store.check();
            }
        }
    }
}
