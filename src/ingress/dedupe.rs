//! The ingress's bounded memory of recently published dedupe keys.
//!
//! It only spares the broker obvious copies (a sender's retry after a lost 202, a duplicate
//! registration); the authoritative dedupe is the worker's claim in the store. So it can be small,
//! in memory, and per process. Two rules keep it from losing events:
//! - a key is remembered only after its publish was confirmed; a failed publish leaves no trace,
//!   so the sender's retry goes through;
//! - a copy arriving while the first is still being published waits for that outcome, instead of
//!   answering "duplicate" for a publish that may yet fail.
//!
//! **Bounded in bytes.** A key is remembered by a 128-bit fingerprint, a hash keyed with this
//! process's own random keys, not by its text: every entry takes the same few bytes however long
//! the key, and the window reserves its full size up front (so it never grows, and never holds
//! two tables while rehashing). `dedupe_window_size` entries take at most
//! `dedupe_window_size × BYTES_PER_ENTRY` bytes (the default 100,000: at most 12.2 MiB; pages
//! are only touched as keys arrive). Two different keys
//! sharing a fingerprint would make a fresh delivery look like a copy; with 128 bits and keys an
//! outsider cannot know, that takes about 2^64 keys, not a crafted pair.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The most memory one remembered key takes: its bucket in the map (fingerprint, slot and a
/// control byte; a map reserved for `n` keys has at most `2 × 8/7 × n` buckets) and its place
/// in the eviction order (a test checks the sum).
pub const BYTES_PER_ENTRY: usize = 128;

/// A key's identity in the window: two independent keyed 64-bit hashes of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint(u64, u64);

impl Hash for Fingerprint {
    /// Its first half is already a keyed hash of the key, uniform and unknown to outsiders: the
    /// map takes it as it is rather than hashing it again.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// The map's hasher: passes a [`Fingerprint`]'s first half through (anything else written to it
/// is folded in, so it stays a hasher for any input).
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(32) ^ n;
    }
}

/// This process's hash keys, drawn at random when the window is built.
struct Fingerprinter(RandomState, RandomState);

impl Fingerprinter {
    fn new() -> Self {
        Fingerprinter(RandomState::new(), RandomState::new())
    }

    fn of(&self, key: &str) -> Fingerprint {
        Fingerprint(self.0.hash_one(key), self.1.hash_one(key))
    }
}

enum Slot {
    Published(Instant),
    /// Being published; copies wait on it for the outcome.
    InFlight(Arc<PendingPublish>),
}

/// A publish in progress, which copies of its key wait on. Lighter than a `watch` channel (one
/// `Notify` instead of eight, no version counter), as one is made for every delivery. Only a
/// [`PublishGuard`] makes one, and its drop always ends it, so no copy waits for ever.
#[derive(Debug)]
pub struct PendingPublish {
    /// [`PUBLISHING`], then [`FAILED`] or [`CONFIRMED`].
    outcome: AtomicU8,
    ended: Notify,
}

const PUBLISHING: u8 = 0;
const FAILED: u8 = 1;
const CONFIRMED: u8 = 2;

impl PendingPublish {
    fn new() -> Self {
        PendingPublish {
            outcome: AtomicU8::new(PUBLISHING),
            ended: Notify::new(),
        }
    }

    fn end(&self, published: bool) {
        let outcome = if published { CONFIRMED } else { FAILED };
        self.outcome.store(outcome, Ordering::Release);
        self.ended.notify_waiters();
    }

    /// Waits until the publish ended; `true` when it was confirmed.
    pub async fn outcome(&self) -> bool {
        loop {
            // Registered before the outcome is read, so an end in between still wakes us.
            let ended = self.ended.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            match self.outcome.load(Ordering::Acquire) {
                PUBLISHING => ended.await,
                outcome => return outcome == CONFIRMED,
            }
        }
    }
}

/// The keys remembered, and the order they go in.
struct RecentWindow {
    slots: HashMap<Fingerprint, Slot, BuildHasherDefault<FingerprintHasher>>,
    /// Publication order, for evicting the oldest; may hold stale entries (checked on eviction).
    order: VecDeque<(Fingerprint, Instant)>,
}

impl RecentWindow {
    /// Forgets the oldest published keys until at most `keep` are held, and every expired one.
    /// (Keys being published are not in `order`, and stay.)
    fn evict(&mut self, keep: usize, ttl: Duration) {
        while self.slots.len() > keep
            || self.order.len() > keep
            || self.order.front().is_some_and(|(_, at)| at.elapsed() >= ttl)
        {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if matches!(self.slots.get(&old), Some(Slot::Published(t)) if *t == at) {
                self.slots.remove(&old);
            }
        }
    }
}

/// What the caller should do with a delivery's key.
#[derive(Debug)]
pub enum RecentClaim<'a> {
    /// Publish it, then report the outcome through the guard.
    Fresh(PublishGuard<'a>),
    /// Already published recently.
    Duplicate,
    /// Another request is publishing the same key; wait for its [`PendingPublish::outcome`].
    Wait(Arc<PendingPublish>),
}

pub struct RecentKeys {
    inner: Mutex<RecentWindow>,
    fingerprints: Fingerprinter,
    capacity: usize,
    ttl: Duration,
}

impl std::fmt::Debug for RecentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentKeys")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl RecentKeys {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentKeys {
            inner: Mutex::new(RecentWindow {
                slots: HashMap::with_capacity_and_hasher(capacity.max(1), BuildHasherDefault::default()),
                order: VecDeque::with_capacity(capacity.max(1)),
            }),
            fingerprints: Fingerprinter::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecentWindow> {
        // A panic while holding this lock cannot leave the map inconsistent in a way that matters
        // (worst case: a forgotten key, which the worker's dedupe absorbs).
        crate::locking::lock(&self.inner)
    }

    pub fn claim(&self, key: &str) -> RecentClaim<'_> {
        let key = self.fingerprints.of(key);
        let mut inner = self.lock();
        match inner.slots.get(&key) {
            Some(Slot::Published(at)) if at.elapsed() < self.ttl => return RecentClaim::Duplicate,
            Some(Slot::InFlight(flight)) => return RecentClaim::Wait(flight.clone()),
            _ => {}
        }
        // Room for one more, so the map stays within what it reserved.
        inner.evict(self.capacity.saturating_sub(1), self.ttl);
        let flight = Arc::new(PendingPublish::new());
        inner.slots.insert(key, Slot::InFlight(flight.clone()));
        RecentClaim::Fresh(PublishGuard {
            keys: self,
            key,
            flight,
            done: false,
        })
    }

    fn finish(&self, key: Fingerprint, published: bool) {
        let mut inner = self.lock();
        if published {
            let now = Instant::now();
            inner.slots.insert(key, Slot::Published(now));
            inner.order.push_back((key, now));
            inner.evict(self.capacity, self.ttl);
        } else {
            inner.slots.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reports a publish's outcome; dropping it unreported counts as a failure (e.g. the request was
/// cancelled mid-publish), so the key is not remembered.
#[derive(Debug)]
pub struct PublishGuard<'a> {
    keys: &'a RecentKeys,
    key: Fingerprint,
    flight: Arc<PendingPublish>,
    done: bool,
}

impl PublishGuard<'_> {
    pub fn finish(mut self, published: bool) {
        self.report(published);
    }

    fn report(&mut self, published: bool) {
        if !self.done {
            self.done = true;
            // The window first, then the waiters: a copy woken by a failure claims the key
            // again and must find it free, not this publish still pending.
            self.keys.finish(self.key, published);
            self.flight.end(published);
        }
    }
}

impl Drop for PublishGuard<'_> {
    fn drop(&mut self) {
        self.report(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_confirmed_keys() {
        let keys = RecentKeys::new(10, Duration::from_secs(60));
        match keys.claim("a") {
            RecentClaim::Fresh(guard) => guard.finish(false),
            _ => panic!("first claim must be fresh"),
        }
        match keys.claim("a") {
            RecentClaim::Fresh(guard) => guard.finish(true),
            _ => panic!("a failed publish must not be remembered"),
        }
        assert!(matches!(keys.claim("a"), RecentClaim::Duplicate));
    }

    #[test]
    fn bounded_by_capacity_and_ttl() {
        let keys = RecentKeys::new(2, Duration::from_secs(60));
        for k in ["a", "b", "c"] {
            if let RecentClaim::Fresh(g) = keys.claim(k) {
                g.finish(true);
            }
        }
        assert_eq!(keys.len(), 2);
        assert!(matches!(keys.claim("a"), RecentClaim::Fresh(_)));
        let short = RecentKeys::new(10, Duration::from_millis(0));
        if let RecentClaim::Fresh(g) = short.claim("x") {
            g.finish(true);
        }
        assert!(matches!(short.claim("x"), RecentClaim::Fresh(_)));
    }

    #[test]
    fn an_entry_takes_at_most_the_bytes_stated() {
        let bucket = std::mem::size_of::<(Fingerprint, Slot)>() + 1;
        let order = std::mem::size_of::<(Fingerprint, Instant)>();
        // At most 2 × 8/7 buckets per reserved key (the next power of two above 8/7 of it).
        assert!(bucket * 16 / 7 + order <= BYTES_PER_ENTRY, "{bucket} + {order}");
    }

    #[test]
    fn the_window_never_outgrows_what_it_reserved() {
        let keys = RecentKeys::new(1_000, Duration::from_secs(60));
        let (slots, order) = {
            let inner = keys.lock();
            (inner.slots.capacity(), inner.order.capacity())
        };
        for i in 0..5_000 {
            // Long keys cost no more than short ones.
            if let RecentClaim::Fresh(g) = keys.claim(&format!("{i}:{}", "k".repeat(i % 300))) {
                g.finish(true);
            }
        }
        let inner = keys.lock();
        assert_eq!(inner.slots.len(), 1_000);
        // Tombstones lower the map's free room until it rehashes in place; it never grows.
        assert!(
            inner.slots.capacity() <= slots,
            "{} > {slots}",
            inner.slots.capacity()
        );
        assert_eq!(inner.order.capacity(), order);
    }

    #[tokio::test]
    async fn concurrent_copy_waits_for_the_first_outcome() {
        let keys = RecentKeys::new(10, Duration::from_secs(60));
        let RecentClaim::Fresh(guard) = keys.claim("k") else {
            panic!()
        };
        let RecentClaim::Wait(flight) = keys.claim("k") else {
            panic!("second claim must wait")
        };
        drop(guard); // the first publish was abandoned
        assert!(!flight.outcome().await);
        assert!(matches!(keys.claim("k"), RecentClaim::Fresh(_)));
    }

    #[tokio::test]
    async fn every_copy_already_waiting_is_woken_with_the_outcome() {
        for published in [true, false] {
            let keys = RecentKeys::new(10, Duration::from_secs(60));
            let RecentClaim::Fresh(guard) = keys.claim("k") else {
                panic!()
            };
            let waiting: Vec<_> = (0..3)
                .map(|_| {
                    let RecentClaim::Wait(flight) = keys.claim("k") else {
                        panic!("copies must wait")
                    };
                    tokio::spawn(async move { flight.outcome().await })
                })
                .collect();
            // Let each copy get as far as waiting before the publish ends.
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            assert!(waiting.iter().all(|copy| !copy.is_finished()));
            guard.finish(published);
            for copy in waiting {
                let outcome = tokio::time::timeout(Duration::from_secs(10), copy).await;
                assert_eq!(outcome.expect("a waiting copy was not woken").unwrap(), published);
            }
            let after = keys.claim("k");
            assert_eq!(matches!(after, RecentClaim::Duplicate), published, "{after:?}");
        }
    }
}
