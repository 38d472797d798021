//! Tenants: the several Atlassian worlds one simulator serves at once, and how a request finds
//! its world.
//!
//! A tenant is one site with its organization and SCIM directory (one [`Seed`]), together with
//! everything Atlassian keeps per tenant: the simulator's [`Behaviour`], its rate-limit buckets and
//! quota, its scripted faults and its listing counter. Nothing is shared between tenants but the
//! port and the request log, so a 429 storm on one never touches another.
//!
//! A request picks its world by what its path names (cloud id, directory id, org id) or, on
//! routes that name none (user management, the OAuth token endpoint), by the credential it
//! presents. That is why two tenants may share neither an identifier nor a credential:
//! [`check_distinct`] refuses such a list before anything starts.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::behaviour::{Behaviour, Fault};
use crate::limits::SimLimits;
use crate::log::LoggedRequest;
use crate::seed::{Seed, SeedCredentials};
use crate::world::{StateSnapshot, World};
use crate::{SimHandle, StartError, lock};

/// One simulated world and its behaviour.
#[derive(Debug)]
pub(crate) struct SimTenant {
    /// Copied from the seed and never changed: routing reads them without locking the world.
    pub cloud_id: String,
    pub org_id: String,
    pub directory_id: String,
    pub credentials: SeedCredentials,
    pub world: Mutex<World>,
    pub policy: Mutex<Behaviour>,
    pub limits: Mutex<SimLimits>,
    pub faults: Mutex<Vec<Fault>>,
    /// Listing responses served so far (drives the policy's page-size cycle).
    pub listings: AtomicU64,
}

impl SimTenant {
    pub fn new(seed: Seed, policy: Behaviour) -> Result<SimTenant, StartError> {
        Ok(SimTenant {
            cloud_id: seed.cloud_id.clone(),
            org_id: seed.org_id.clone(),
            directory_id: seed.directory_id.clone(),
            credentials: seed.credentials.clone(),
            world: Mutex::new(World::from_seed(seed)?),
            policy: Mutex::new(policy),
            limits: Mutex::new(SimLimits::default()),
            faults: Mutex::new(Vec::new()),
            listings: AtomicU64::new(0),
        })
    }

    /// Replaces the policy and starts rate limiting afresh.
    pub fn set_policy(&self, policy: Behaviour) {
        *lock(&self.policy) = policy;
        *lock(&self.limits) = SimLimits::default();
    }

    /// Whether `client_id` is one of this tenant's OAuth apps.
    pub fn has_oauth_client(&self, client_id: &str) -> bool {
        self.credentials
            .oauth_clients
            .iter()
            .any(|client| client.client_id == client_id)
    }
}

/// What picks a world, per tenant: the identifiers in paths, then every credential. Each kind
/// is named as [`StartError::DuplicateTenantKey`] shows it.
fn routing_keys(seed: &Seed) -> Vec<(&'static str, &str)> {
    let credentials = &seed.credentials;
    let mut keys = vec![
        ("cloud id", seed.cloud_id.as_str()),
        ("org id", seed.org_id.as_str()),
        ("directory id", seed.directory_id.as_str()),
        ("SCIM token", credentials.scim_token.as_str()),
        ("admin API key", credentials.admin_api_key.as_str()),
    ];
    keys.extend(
        credentials
            .api_tokens
            .iter()
            .map(|token| ("API token", token.token.as_str())),
    );
    keys.extend(
        credentials
            .oauth_clients
            .iter()
            .map(|client| ("OAuth client id", client.client_id.as_str())),
    );
    keys
}

/// Refuses an empty list, and two seeds sharing an identifier or a credential: either would
/// leave some request without one world to answer it.
pub(crate) fn check_distinct<'a>(seeds: impl IntoIterator<Item = &'a Seed>) -> Result<(), StartError> {
    let mut owners: HashMap<(&'static str, &str), usize> = HashMap::new();
    let mut count = 0;
    for (index, seed) in seeds.into_iter().enumerate() {
        count += 1;
        for key in routing_keys(seed) {
            // One seed may list a credential twice (two emails, one token): still one tenant.
            if let Some(&first) = owners.get(&key)
                && first != index
            {
                return Err(StartError::DuplicateTenantKey {
                    what: key.0,
                    first,
                    second: index,
                });
            }
            owners.insert(key, index);
        }
    }
    if count == 0 {
        return Err(StartError::NoTenants);
    }
    Ok(())
}

/// Every tenant, in the order they were given; the first one also answers the routes that
/// existed before there were several (`/wiki`, `/_sim` without `?tenant=`).
#[derive(Debug)]
pub(crate) struct Tenants {
    first: Arc<SimTenant>,
    all: Vec<Arc<SimTenant>>,
}

impl Tenants {
    /// `None` for an empty list ([`check_distinct`] has said why by then).
    pub fn new(all: Vec<Arc<SimTenant>>) -> Option<Tenants> {
        let first = all.first()?.clone();
        Some(Tenants { first, all })
    }

    pub fn first(&self) -> &Arc<SimTenant> {
        &self.first
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn at(&self, index: usize) -> Option<&Arc<SimTenant>> {
        self.all.get(index)
    }

    fn find(&self, matches: impl Fn(&SimTenant) -> bool) -> Option<&Arc<SimTenant>> {
        self.all.iter().find(|tenant| matches(tenant))
    }

    pub fn by_cloud_id(&self, cloud_id: &str) -> Option<&Arc<SimTenant>> {
        self.find(|t| t.cloud_id == cloud_id)
    }

    pub fn by_org_id(&self, org_id: &str) -> Option<&Arc<SimTenant>> {
        self.find(|t| t.org_id == org_id)
    }

    pub fn by_directory_id(&self, directory_id: &str) -> Option<&Arc<SimTenant>> {
        self.find(|t| t.directory_id == directory_id)
    }

    pub fn by_admin_api_key(&self, key: &str) -> Option<&Arc<SimTenant>> {
        self.find(|t| t.credentials.admin_api_key == key)
    }

    pub fn by_oauth_client(&self, client_id: &str) -> Option<&Arc<SimTenant>> {
        self.find(|t| t.has_oauth_client(client_id))
    }
}

/// One tenant of a running simulator, seen from the test that started it: its URLs, its state,
/// its share of the request log, and in-process control of its policy and faults (what
/// `/_sim/...?tenant={cloud_id}` offers over HTTP).
#[derive(Debug, Clone, Copy)]
pub struct TenantView<'a> {
    pub(crate) handle: &'a SimHandle,
    pub(crate) tenant: &'a SimTenant,
}

impl TenantView<'_> {
    pub fn cloud_id(&self) -> &str {
        &self.tenant.cloud_id
    }

    pub fn org_id(&self) -> &str {
        &self.tenant.org_id
    }

    pub fn directory_id(&self) -> &str {
        &self.tenant.directory_id
    }

    /// This tenant's Confluence site, `…/sites/{cloudId}/wiki`, for Basic auth with unscoped
    /// tokens (the first tenant is also served on `…/wiki`).
    pub fn site_base_url(&self) -> String {
        self.handle.url(&format!("/sites/{}/wiki", self.tenant.cloud_id))
    }

    /// This tenant's Confluence through the gateway, `…/ex/confluence/{cloudId}/wiki`.
    pub fn gateway_base_url(&self) -> String {
        self.handle
            .url(&format!("/ex/confluence/{}/wiki", self.tenant.cloud_id))
    }

    /// This tenant's SCIM base, `…/scim/directory/{directoryId}`.
    pub fn scim_base_url(&self) -> String {
        self.handle
            .url(&format!("/scim/directory/{}", self.tenant.directory_id))
    }

    /// This tenant's state, as `GET /_sim/state?tenant={cloudId}` answers it.
    pub fn state(&self) -> StateSnapshot {
        lock(&self.tenant.world).snapshot()
    }

    /// The API calls this tenant's world served (or refused), oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let mut mine = self.handle.shared.log.entries();
        mine.retain(|r| r.cloud_id.as_deref() == Some(self.tenant.cloud_id.as_str()));
        mine
    }

    pub fn policy(&self) -> Behaviour {
        lock(&self.tenant.policy).clone()
    }

    /// Replaces this tenant's policy and resets its rate-limit buckets and quota (as
    /// `PUT /_sim/policy`); other tenants are untouched.
    pub fn set_policy(&self, policy: Behaviour) {
        self.tenant.set_policy(policy);
    }

    /// Scripts a fault for this tenant's requests only (as `POST /_sim/faults`).
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.tenant.faults).push(fault);
    }

    /// Forgets this tenant's scripted faults (as `DELETE /_sim/faults`).
    pub fn clear_faults(&self) {
        lock(&self.tenant.faults).clear();
    }
}
