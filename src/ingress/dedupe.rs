//! The ingress's bounded memory of recently published dedupe keys.
//!
//! It only spares the broker obvious copies (a sender's retry after a lost 202, a duplicate
//! registration); the authoritative dedupe is the worker's claim in the store. So it can be small,
//! in memory, and per process. Two rules keep it from losing events:
//! - a key is remembered only after its publish was confirmed; a failed publish leaves no trace,
//!   so the sender's retry goes through;
//! - a copy arriving while the first is still being published waits for that outcome, instead of
//!   answering "duplicate" for a publish that may yet fail.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

enum Slot {
    Published(Instant),
    /// Being published; the value turns `Some(confirmed)` when the publish ends.
    InFlight(watch::Receiver<Option<bool>>),
}

/// The keys remembered, and the order they go in.
struct RecentWindow {
    slots: HashMap<String, Slot>,
    /// Publication order, for evicting the oldest; may hold stale entries (checked on eviction).
    order: VecDeque<(String, Instant)>,
}

/// What the caller should do with a delivery's key.
#[derive(Debug)]
pub enum RecentClaim<'a> {
    /// Publish it, then report the outcome through the guard.
    Fresh(PublishGuard<'a>),
    /// Already published recently.
    Duplicate,
    /// Another request is publishing the same key; wait for its outcome.
    Wait(watch::Receiver<Option<bool>>),
}

pub struct RecentKeys {
    inner: Mutex<RecentWindow>,
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
                slots: HashMap::new(),
                order: VecDeque::new(),
            }),
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
        let mut inner = self.lock();
        match inner.slots.get(key) {
            Some(Slot::Published(at)) if at.elapsed() < self.ttl => return RecentClaim::Duplicate,
            Some(Slot::InFlight(rx)) => return RecentClaim::Wait(rx.clone()),
            _ => {}
        }
        let (tx, rx) = watch::channel(None);
        inner.slots.insert(key.to_owned(), Slot::InFlight(rx));
        RecentClaim::Fresh(PublishGuard {
            keys: self,
            key: key.to_owned(),
            tx,
            done: false,
        })
    }

    /// Waits for a claim's outcome; `true` when the other publish was confirmed.
    pub async fn outcome(mut rx: watch::Receiver<Option<bool>>) -> bool {
        match rx.wait_for(Option::is_some).await {
            Ok(value) => value.unwrap_or(false),
            // The guard was dropped without reporting: treat as failed.
            Err(_) => false,
        }
    }

    fn finish(&self, key: &str, published: bool) {
        let mut inner = self.lock();
        if published {
            let now = Instant::now();
            inner.slots.insert(key.to_owned(), Slot::Published(now));
            inner.order.push_back((key.to_owned(), now));
            while inner.slots.len() > self.capacity
                || inner
                    .order
                    .front()
                    .is_some_and(|(_, at)| at.elapsed() >= self.ttl)
            {
                let Some((old, at)) = inner.order.pop_front() else {
                    break;
                };
                if matches!(inner.slots.get(&old), Some(Slot::Published(t)) if *t == at) {
                    inner.slots.remove(&old);
                }
            }
        } else {
            inner.slots.remove(key);
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
    key: String,
    tx: watch::Sender<Option<bool>>,
    done: bool,
}

impl PublishGuard<'_> {
    pub fn finish(mut self, published: bool) {
        self.report(published);
    }

    fn report(&mut self, published: bool) {
        if !self.done {
            self.done = true;
            self.keys.finish(&self.key, published);
            let _ = self.tx.send(Some(published));
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

    #[tokio::test]
    async fn concurrent_copy_waits_for_the_first_outcome() {
        let keys = RecentKeys::new(10, Duration::from_secs(60));
        let RecentClaim::Fresh(guard) = keys.claim("k") else {
            panic!()
        };
        let RecentClaim::Wait(rx) = keys.claim("k") else {
            panic!("second claim must wait")
        };
        drop(guard); // the first publish was abandoned
        assert!(!RecentKeys::outcome(rx).await);
        assert!(matches!(keys.claim("k"), RecentClaim::Fresh(_)));
    }
}
