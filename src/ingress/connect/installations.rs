//! Connect installations, read through a short-lived cache so verifying a webhook rarely touches
//! the store.
//!
//! Entries expire after a minute, so an uninstall or a secret rotation received by another
//! gatehouse process is honoured here within that time; this process's own writes update the
//! cache at once.

use std::sync::Arc;
use std::time::Duration;

use super::ttl_cache::TtlCache;
use crate::store::{Installation, Store, StoreError};

const TTL: Duration = Duration::from_secs(60);
/// Bounds memory (only installations that exist are cached).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub struct Installations {
    store: Store,
    cache: TtlCache<Installation>,
}

impl Installations {
    pub fn new(store: Store) -> Self {
        Installations {
            store,
            cache: TtlCache::new(TTL, MAX_ENTRIES),
        }
    }

    /// The installation for `client_key`, if the site installed the app.
    pub async fn get(&self, client_key: &str) -> Result<Option<Arc<Installation>>, StoreError> {
        if let Some(installation) = self.cache.get(client_key) {
            return Ok(Some(installation));
        }
        let found = self.store.installation(client_key).await?.map(Arc::new);
        match &found {
            Some(installation) => self.cache.insert(client_key, installation.clone()),
            None => self.cache.remove(client_key),
        }
        Ok(found)
    }

    pub async fn put(&self, installation: Installation) -> Result<(), StoreError> {
        self.store.upsert_installation(&installation).await?;
        let key = installation.client_key.clone();
        self.cache.insert(&key, Arc::new(installation));
        Ok(())
    }

    pub async fn remove(&self, client_key: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete_installation(client_key).await?;
        self.cache.remove(client_key);
        Ok(existed)
    }
}
