//! Which keys were stored recently: a fixed table of atomics that lets the
//! request path of a popular key skip storing, and so skip the copy, the
//! allocation and the lock, without looking in the store.
//!
//! Each slot packs a 16-bit tag of a key's hash, a flag saying whether the
//! key's responses vary on request headers, and the time it was last
//! stored, in milliseconds since the table was made. Slots are indexed by
//! the low bits of the hash and tagged with the high bits, so two keys that
//! share a slot only overwrite each other's time: the table is a hint that
//! can make a key be stored more often than needed (never less than once per
//! refresh interval while it is requested), and nothing more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const SLOTS: usize = 4096;
const TIME_BITS: u32 = 47;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const VARIES: u64 = 1 << TIME_BITS;

#[derive(Debug)]
pub(crate) struct Gate {
    slots: Box<[AtomicU64]>,
    epoch: Instant,
    refresh_ms: u64,
}

/// What the table knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recent {
    /// Not stored within the refresh interval (or never).
    No,
    /// Stored within it; its responses vary on nothing.
    Plain,
    /// Stored within it; its responses vary on request headers.
    Varies,
}

impl Gate {
    pub(crate) fn new(refresh: Duration, epoch: Instant) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch,
            refresh_ms: u64::try_from(refresh.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn slot(&self, hash: u64) -> &AtomicU64 {
        &self.slots[hash as usize & (SLOTS - 1)]
    }

    /// Milliseconds since the epoch, plus one so that 0 means "empty".
    fn stamp(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        (u64::try_from(ms).unwrap_or(TIME_MASK - 1) + 1).min(TIME_MASK)
    }

    fn read(&self, word: u64, hash: u64, now: Instant) -> Recent {
        let time = word & TIME_MASK;
        if time == 0 || word >> 48 != hash >> 48 {
            return Recent::No;
        }
        if self.stamp(now).saturating_sub(time) >= self.refresh_ms {
            return Recent::No;
        }
        if word & VARIES != 0 {
            Recent::Varies
        } else {
            Recent::Plain
        }
    }

    /// What the table knows of the key with this hash: one atomic load.
    pub(crate) fn recent(&self, hash: u64, now: Instant) -> Recent {
        self.read(self.slot(hash).load(Ordering::Relaxed), hash, now)
    }

    /// Claims the right to store the key with this hash now: `false` when it
    /// was stored (or claimed) within the refresh interval.
    pub(crate) fn claim(&self, hash: u64, varies: bool, now: Instant) -> bool {
        let slot = self.slot(hash);
        let word = (hash & !(u64::MAX >> 16)) | if varies { VARIES } else { 0 } | self.stamp(now);
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            if self.read(current, hash, now) != Recent::No {
                return false;
            }
            match slot.compare_exchange_weak(current, word, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Records that the key with this hash varies on request headers, so
    /// that its requests keep the headers a lookup needs.
    pub(crate) fn mark_varies(&self, hash: u64, now: Instant) {
        let word = (hash & !(u64::MAX >> 16)) | VARIES | self.stamp(now);
        self.slot(hash).store(word, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 0xabcd_0000_0000_0042;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_key_is_claimed_once_per_refresh_interval() {
        let gate = Gate::new(Duration::from_secs(1), Instant::now());
        assert_eq!(gate.recent(H, Instant::now()), Recent::No);
        assert!(gate.claim(H, false, Instant::now()));
        assert!(!gate.claim(H, false, Instant::now()));
        assert_eq!(gate.recent(H, Instant::now()), Recent::Plain);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!gate.claim(H, false, Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(gate.recent(H, Instant::now()), Recent::No);
        assert!(gate.claim(H, true, Instant::now()));
        assert_eq!(gate.recent(H, Instant::now()), Recent::Varies);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn keys_sharing_a_slot_never_suppress_each_other() {
        let gate = Gate::new(Duration::from_secs(1), Instant::now());
        let other = 0x1234_0000_0000_0042; // same slot, other tag
        assert!(gate.claim(H, false, Instant::now()));
        assert_eq!(gate.recent(other, Instant::now()), Recent::No);
        assert!(gate.claim(other, false, Instant::now()));
        assert_eq!(gate.recent(H, Instant::now()), Recent::No);
        assert!(gate.claim(H, false, Instant::now()));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_zero_interval_never_suppresses() {
        let gate = Gate::new(Duration::ZERO, Instant::now());
        assert!(gate.claim(H, false, Instant::now()));
        assert!(gate.claim(H, false, Instant::now()));
        assert_eq!(gate.recent(H, Instant::now()), Recent::No);
    }
}
