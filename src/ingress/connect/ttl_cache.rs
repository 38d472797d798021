//! A small map whose entries expire, shared by the installation and key caches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TtlCache<T> {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, (Arc<T>, Instant)>>,
}

impl<T> TtlCache<T> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<T>, Instant)>> {
        // Entries are replaced whole, so a panic elsewhere cannot leave one half-written.
        crate::locking::lock(&self.entries)
    }

    /// The live entry for `key`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        let entries = self.entries();
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(value, _)| value.clone())
    }

    /// The entry for `key` even if it has expired (until it is evicted): better than nothing
    /// when it cannot be refreshed.
    pub fn get_stale(&self, key: &str) -> Option<Arc<T>> {
        self.entries().get(key).map(|(value, _)| value.clone())
    }

    pub fn insert(&self, key: &str, value: Arc<T>) {
        self.put(&mut self.entries(), key, value);
    }

    /// Inserts `value` for `key` unless a live entry is there already; whether it did. One
    /// check under one lock: of callers racing for the same key, one wins.
    pub fn claim(&self, key: &str, value: Arc<T>) -> bool {
        let mut entries = self.entries();
        if entries.get(key).is_some_and(|(_, at)| at.elapsed() < self.ttl) {
            return false;
        }
        self.put(&mut entries, key, value);
        true
    }

    /// Inserts into `entries` (held locked), making room first when the map is full: expired
    /// entries go, then, if that was not enough, all of them.
    fn put(&self, entries: &mut HashMap<String, (Arc<T>, Instant)>, key: &str, value: Arc<T>) {
        if entries.len() >= self.max_entries {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(key.to_owned(), (value, Instant::now()));
    }

    pub fn remove(&self, key: &str) {
        self.entries().remove(key);
    }
}
