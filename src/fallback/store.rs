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
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use tokio::time::Instant;

use super::policy::usable_for;

/// What the size of an entry counts besides its body and headers: the
/// bookkeeping of the entry itself, rounded up.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// What identifies a stored response, besides the request headers its
/// `Vary` names: two keyed hashes (SipHash with a key drawn per layer) of
/// the method (`HEAD` or `GET`), the URI and, when the URI has no authority
/// (a server's origin-form request), the `Host` header. 128 bits of a keyed
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

/// Reads the values of `names` from a request's headers.
pub(crate) fn vary_values(names: &[HeaderName], request: &HeaderMap) -> VaryValues {
    names
        .iter()
        .map(|name| {
            (
                name.clone(),
                request.get_all(name).iter().cloned().collect(),
            )
        })
        .collect()
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
    /// For logs (and counted in the size).
    pub(crate) uri: Uri,
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
    /// The bytes this entry counts against the budget.
    pub(crate) fn size(&self) -> usize {
        header_size(&self.headers)
            + self.body.len()
            + self.uri.to_string().len()
            + self
                .vary
                .iter()
                .map(|(n, vs)| n.as_str().len() + vs.iter().map(HeaderValue::len).sum::<usize>())
                .sum::<usize>()
            + ENTRY_OVERHEAD
    }

    /// Its age at `now`: its `Age` on arrival plus the time since.
    pub(crate) fn age_at(&self, now: Instant) -> Duration {
        Duration::from_secs(self.age).saturating_add(now.saturating_duration_since(self.stored_at))
    }
}

/// The bytes a header map counts: names and values, plus 32 per field as
/// HPACK counts them (RFC 7541 §4.1).
pub(crate) fn header_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 32)
        .sum()
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A usable copy, and its age now.
    Hit(Box<Entry>, Duration),
    /// A copy, too old to serve (its age and URI); it has been removed.
    Expired(Duration, Uri),
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
            .or_default()
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
            uri: Uri::try_from(format!("http://example.com/{k}")).unwrap(),
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
