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
//! the key. The window reserves its full size up front and never grows: its map is reserved for
//! twice the keys it holds, because a hash map that removes as many keys as it inserts fills with
//! tombstones, and hashbrown clears those by rehashing in place only while the map is at most
//! half full; fuller, it moves into a table of twice the size. Reserved for just its keys, the
//! window did that once it was full: 11.3 MiB for the default 100,000 instead of the 12.2 it
//! stated, and 15.4 MiB while it held both tables (gatehouse's peak RSS rose to 47.3 MiB of the
//! 48 its benchmark allows: BENCHMARKS.md, "Ninth step"). [`reserved_bytes`] says what a window
//! of `n` keys takes (the default: 8.5 MiB), never more than
//! [`DEDUPE_BYTES_PER_KEY`](crate::config::DEDUPE_BYTES_PER_KEY) a key (the bound the configuration
//! states). Its pages are touched as keys arrive: the order's one by one, the map's (where a key
//! lands at random) all within the first few thousand keys.
//!
//! Two different keys sharing a fingerprint would make a fresh delivery look like a copy; with
//! 128 bits and keys an outsider cannot know, that takes about 2^64 keys, not a crafted pair.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a window of `capacity` keys reserves: its published keys' map (a bucket is a key, its
/// time and a control byte; hashbrown's buckets are the next power of two above 8/7 of what it is
/// reserved for, here twice `capacity`) and its eviction order. The publishes in flight, at most
/// one per request being served, come on top.
pub fn reserved_bytes(capacity: usize) -> usize {
    let capacity = capacity.max(1);
    let buckets = map_buckets(2 * capacity);
    let bucket = std::mem::size_of::<(Fingerprint, Millis)>() + 1;
    buckets * bucket + capacity * std::mem::size_of::<(Fingerprint, Millis)>()
}

/// How many buckets hashbrown gives a map reserved for `keys` (for the even numbers from 2 the
/// window asks for; a test holds it to the map's own capacity).
fn map_buckets(keys: usize) -> usize {
    (keys * 8).div_ceil(7).next_power_of_two()
}

/// A time in the window: milliseconds since it was made (a `u64` where an `Instant` takes 16
/// bytes).
type Millis = u64;

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
    /// Published keys and when; reserved for twice the window's size, so it always rehashes in
    /// place (see the module's comment).
    published: HashMap<Fingerprint, Millis, BuildHasherDefault<FingerprintHasher>>,
    /// Keys being published now, which copies wait on: one per request in flight at most, apart
    /// from the window's size (a key moves to `published` once confirmed).
    in_flight: HashMap<Fingerprint, Arc<PendingPublish>, BuildHasherDefault<FingerprintHasher>>,
    /// Publication order, for evicting the oldest; may hold stale entries (checked on eviction).
    order: VecDeque<(Fingerprint, Millis)>,
}

impl RecentWindow {
    /// Forgets the oldest published keys until at most `keep` are held, and every one published
    /// at `expired_at` or before.
    fn evict(&mut self, keep: usize, expired_at: Option<Millis>) {
        while self.published.len() > keep
            || self.order.len() > keep
            || self.order.front().is_some_and(|(_, at)| Some(*at) <= expired_at)
        {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.published.get(&old) == Some(&at) {
                self.published.remove(&old);
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
    /// What [`Millis`] count from.
    epoch: Instant,
    capacity: usize,
    /// How long a published key is remembered.
    ttl: Millis,
}

impl std::fmt::Debug for RecentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentKeys")
            .field("capacity", &self.capacity)
            .field("ttl_ms", &self.ttl)
            .finish()
    }
}

impl RecentKeys {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = capacity.max(1);
        RecentKeys {
            inner: Mutex::new(RecentWindow {
                published: HashMap::with_capacity_and_hasher(2 * capacity, BuildHasherDefault::default()),
                in_flight: HashMap::default(),
                order: VecDeque::with_capacity(capacity),
            }),
            fingerprints: Fingerprinter::new(),
            epoch: Instant::now(),
            capacity,
            ttl: Millis::try_from(ttl.as_millis()).unwrap_or(Millis::MAX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecentWindow> {
        // A panic while holding this lock cannot leave the map inconsistent in a way that matters
        // (worst case: a forgotten key, which the worker's dedupe absorbs).
        crate::locking::lock(&self.inner)
    }

    fn now(&self) -> Millis {
        Millis::try_from(self.epoch.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    /// The latest time a key published then is forgotten by now; `None` before one ttl passed.
    fn expired_at(&self, now: Millis) -> Option<Millis> {
        now.checked_sub(self.ttl)
    }

    pub fn claim(&self, key: &str) -> RecentClaim<'_> {
        let key = self.fingerprints.of(key);
        let expired_at = self.expired_at(self.now());
        let mut inner = self.lock();
        if let Some(flight) = inner.in_flight.get(&key) {
            return RecentClaim::Wait(flight.clone());
        }
        if inner.published.get(&key).is_some_and(|at| Some(*at) > expired_at) {
            return RecentClaim::Duplicate;
        }
        let flight = Arc::new(PendingPublish::new());
        inner.in_flight.insert(key, flight.clone());
        RecentClaim::Fresh(PublishGuard {
            keys: self,
            key,
            flight,
            done: false,
        })
    }

    fn finish(&self, key: Fingerprint, published: bool) {
        let now = self.now();
        let mut inner = self.lock();
        inner.in_flight.remove(&key);
        if published {
            // Room for one more, so the map and the order stay within what they reserved.
            inner.evict(self.capacity - 1, self.expired_at(now));
            inner.published.insert(key, now);
            inner.order.push_back((key, now));
        }
    }

    /// What this window reserved ([`reserved_bytes`] of its size).
    pub fn reserved_bytes(&self) -> usize {
        reserved_bytes(self.capacity)
    }

    /// Keys remembered as published.
    pub fn len(&self) -> usize {
        self.lock().published.len()
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
    use crate::config::DEDUPE_BYTES_PER_KEY;

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
        let mut worst = 0.0_f64;
        for capacity in (1..=1_000_000)
            .step_by(997)
            .chain([1, 7, 8, 57, 100_000, 1_000_000])
        {
            let bytes = reserved_bytes(capacity);
            assert!(bytes <= capacity * DEDUPE_BYTES_PER_KEY, "{capacity}: {bytes}");
            worst = worst.max(bytes as f64 / capacity as f64);
        }
        assert!(
            worst > (DEDUPE_BYTES_PER_KEY - 10) as f64,
            "the bound is loose: {worst}"
        );
        // The default, as config/default.toml states it, and the most allowed.
        assert_eq!(reserved_bytes(100_000), 8_953_600);
        assert_eq!(reserved_bytes(crate::config::MAX_DEDUPE_WINDOW), 1_078_860_800);
    }

    #[test]
    fn a_key_is_forgotten_after_its_time_and_remembered_again_when_published_again() {
        let keys = RecentKeys::new(10, Duration::from_millis(30));
        for _ in 0..2 {
            let RecentClaim::Fresh(guard) = keys.claim("a") else {
                panic!("a key not seen for its time is fresh")
            };
            guard.finish(true);
            assert!(matches!(keys.claim("a"), RecentClaim::Duplicate));
            std::thread::sleep(Duration::from_millis(40));
        }
        // Publishing it again evicted its first, expired, place in the order, not the new one.
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.lock().order.len(), 1);
    }

    #[test]
    fn the_map_gets_the_buckets_reserved_bytes_counts() {
        for capacity in [1, 3, 100, 1_700, 100_000] {
            let keys = RecentKeys::new(capacity, Duration::from_secs(60));
            let usable = keys.lock().published.capacity();
            // hashbrown uses 7/8 of its buckets (all of them below eight).
            let buckets = map_buckets(2 * capacity);
            let expected = if buckets <= 8 {
                buckets - 1
            } else {
                buckets / 8 * 7
            };
            assert_eq!(usable, expected, "capacity {capacity}");
            assert!(usable >= 2 * capacity);
        }
    }

    #[test]
    fn the_window_never_outgrows_what_it_reserved() {
        // 1,700 keys fill 83 % of the buckets a map reserved for just them gets: the size at which
        // tombstones made it move into a table of twice the size.
        for capacity in [1_000, 1_700] {
            let keys = RecentKeys::new(capacity, Duration::from_secs(60));
            let (published, order) = {
                let inner = keys.lock();
                (inner.published.capacity(), inner.order.capacity())
            };
            for i in 0..20 * capacity {
                // Long keys cost no more than short ones.
                if let RecentClaim::Fresh(g) = keys.claim(&format!("{i}:{}", "k".repeat(i % 300))) {
                    g.finish(true);
                }
            }
            let inner = keys.lock();
            assert_eq!(inner.published.len(), capacity);
            assert!(inner.in_flight.is_empty());
            // Tombstones lower the map's free room until it rehashes in place; it never grows.
            assert!(
                inner.published.capacity() <= published,
                "{capacity}: {} > {published}",
                inner.published.capacity()
            );
            assert_eq!(inner.order.capacity(), order);
        }
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
