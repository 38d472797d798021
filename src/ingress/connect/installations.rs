//! Connect installations, read through a short-lived cache so verifying a webhook rarely touches
//! the store, and an unknown `iss` almost never does.
//!
//! Entries expire after a minute, so an uninstall or a secret rotation received by another
//! gatehouse process is honoured here within that time; this process's own writes update the
//! cache at once.
//!
//! Misses are answered from memory too: the set of every installed client key is kept and
//! reloaded at most every [`KNOWN_KEYS_TTL`], so a flood of tokens naming random issuers costs
//! one small store query per interval in all, not one per request.
//!
//! Connect never retries a webhook it got 401 for, so a token the cache refuses is checked once
//! more against the store ([`Installations::reread`]) before it is: a site installed, or
//! re-installed with a new secret, through *another* process is recognized at once instead of
//! after up to a minute of lost webhooks. Re-reads are bounded, so forged tokens cannot turn
//! into store queries: at most one per client key per [`REREAD_INTERVAL`], and at most
//! [`REREADS_PER_SECOND`] in all (beyond that the cache's answer stands, as before).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ttl_cache::TtlCache;
use crate::ingress::limits::TokenBucket;
use crate::store::{Installation, LifecycleApplied, LifecycleChange, SpentToken, Store, StoreError};

const TTL: Duration = Duration::from_secs(60);
/// How long the set of installed client keys is trusted before it is read again.
pub const KNOWN_KEYS_TTL: Duration = Duration::from_secs(10);
/// Bounds memory (only installations that exist are cached).
const MAX_ENTRIES: usize = 10_000;
/// A client key's installation is re-read past the cache at most this often.
pub const REREAD_INTERVAL: Duration = Duration::from_secs(1);
/// Re-reads past the cache, for all client keys together, at most (the burst as well).
pub const REREADS_PER_SECOND: f64 = 10.0;

#[derive(Debug)]
pub struct Installations {
    store: Store,
    cache: TtlCache<Installation>,
    /// Every installed client key, and when it was read.
    known: Mutex<Option<(Instant, Arc<HashSet<String>>)>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    rereads: Rereads,
}

/// How often the cache may be bypassed (see the module docs).
#[derive(Debug)]
struct Rereads {
    /// The client keys re-read in the last [`REREAD_INTERVAL`].
    recent: TtlCache<()>,
    /// Re-reads left for all client keys together.
    budget: TokenBucket,
}

impl Rereads {
    fn new() -> Self {
        Rereads {
            recent: TtlCache::new(REREAD_INTERVAL, MAX_ENTRIES),
            budget: TokenBucket::new(REREADS_PER_SECOND, REREADS_PER_SECOND),
        }
    }

    /// Whether `client_key` may be re-read now (and counts it if so).
    fn admit(&self, client_key: &str) -> bool {
        if !self.recent.claim(client_key, Arc::new(())) {
            return false;
        }
        if self.budget.take().is_err() {
            // Not re-read: the key's next token may still be (a flood of forged issuers spent
            // the budget; a real re-install's webhook must not lose its turn to them).
            self.recent.remove(client_key);
            return false;
        }
        true
    }
}

impl Installations {
    pub fn new(store: Store) -> Self {
        Installations {
            store,
            cache: TtlCache::new(TTL, MAX_ENTRIES),
            known: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            rereads: Rereads::new(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<HashSet<String>>)>> {
        // Replaced whole, never half-written.
        crate::locking::lock(&self.known)
    }

    /// The fresh set of installed client keys, reading it from the store when it is stale
    /// (one reader at a time; the others wait for that read).
    async fn known_keys(&self) -> Result<Arc<HashSet<String>>, StoreError> {
        let fresh = |slot: &Option<(Instant, Arc<HashSet<String>>)>| {
            slot.as_ref()
                .filter(|(at, _)| at.elapsed() < KNOWN_KEYS_TTL)
                .map(|(_, keys)| keys.clone())
        };
        if let Some(keys) = fresh(&self.known()) {
            return Ok(keys);
        }
        let _reloading = self.reloading.lock().await;
        if let Some(keys) = fresh(&self.known()) {
            return Ok(keys);
        }
        let keys: Arc<HashSet<String>> =
            Arc::new(self.store.installation_keys().await?.into_iter().collect());
        *self.known() = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// The installation for `client_key`, if the site installed the app.
    pub async fn get(&self, client_key: &str) -> Result<Option<Arc<Installation>>, StoreError> {
        if let Some(installation) = self.cache.get(client_key) {
            return Ok(Some(installation));
        }
        if !self.known_keys().await?.contains(client_key) {
            return Ok(None);
        }
        let found = self.store.installation(client_key).await?.map(Arc::new);
        match &found {
            Some(installation) => self.cache.insert(client_key, installation.clone()),
            None => self.cache.remove(client_key),
        }
        Ok(found)
    }

    /// The installation for `client_key` read from the store, past the cache (which it then
    /// updates), for a token the cached answer refused: a bad signature against a cached secret,
    /// or an issuer the cached set of keys does not know. `Ok(None)` when there is none, or
    /// when this key or all keys together were re-read too often lately (see the module docs).
    pub async fn reread(&self, client_key: &str) -> Result<Option<Arc<Installation>>, StoreError> {
        if !self.rereads.admit(client_key) {
            return Ok(None);
        }
        let found = self.store.installation(client_key).await?.map(Arc::new);
        match &found {
            Some(installation) => {
                self.cache.insert(client_key, installation.clone());
                self.update_known(|keys| {
                    keys.insert(client_key.to_owned());
                });
            }
            None => {
                self.cache.remove(client_key);
                self.update_known(|keys| {
                    keys.remove(client_key);
                });
            }
        }
        Ok(found)
    }

    /// Applies a verified lifecycle callback's change and spends its token
    /// ([`Store::apply_lifecycle`]); the caches learn of the change at once.
    pub async fn apply(
        &self,
        token: SpentToken<'_>,
        change: LifecycleChange<'_>,
    ) -> Result<LifecycleApplied, StoreError> {
        let applied = self.store.apply_lifecycle(token, change).await?;
        match (applied, change) {
            (LifecycleApplied::Installed, LifecycleChange::Install(installation)) => {
                let key = installation.client_key.as_str();
                self.update_known(|keys| {
                    keys.insert(key.to_owned());
                });
                self.cache.insert(key, Arc::new(installation.clone()));
            }
            (LifecycleApplied::Uninstalled { .. }, LifecycleChange::Uninstall { client_key }) => {
                self.update_known(|keys| {
                    keys.remove(client_key);
                });
                self.cache.remove(client_key);
            }
            _ => {}
        }
        Ok(applied)
    }

    /// Applies this process's own change to the known set, if it is loaded.
    fn update_known(&self, change: impl FnOnce(&mut HashSet<String>)) {
        if let Some((_, keys)) = self.known().as_mut() {
            change(Arc::make_mut(keys));
        }
    }
}

#[async_trait::async_trait]
impl crate::ingress::verify::connect_jwt::InstallationLookup for Installations {
    async fn installation(&self, client_key: &str) -> Result<Option<Arc<Installation>>, StoreError> {
        self.get(client_key).await
    }

    async fn reread(&self, client_key: &str) -> Result<Option<Arc<Installation>>, StoreError> {
        Installations::reread(self, client_key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of tokens (forged, or naming random issuers) cannot turn into store queries: one
    /// re-read per client key per interval, and a budget for all keys together.
    #[test]
    fn rereads_are_bounded_per_client_key_and_in_all() {
        let rereads = Rereads::new();
        assert!(rereads.admit("confluence:a"));
        for _ in 0..100 {
            assert!(!rereads.admit("confluence:a"), "once per interval per key");
        }
        let others = (0..1_000)
            .filter(|n| rereads.admit(&format!("forged:{n}")))
            .count();
        // The rest of the burst, plus what refilled while the loop ran (generous: a few
        // seconds' worth on a slow machine, and still a small share of the thousand).
        let burst = REREADS_PER_SECOND as usize - 1;
        assert!(
            (burst..burst + 50).contains(&others),
            "{others} of 1,000 random keys re-read"
        );
    }
}
