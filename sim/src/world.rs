//! What the simulated organization holds, and the mutations that keep it coherent.
//!
//! One account is one record whatever API shows it: deactivating through SCIM or through user
//! management makes Confluence v2 show `accountStatus: inactive`, and every change an admin
//! would see lands in the organization's event stream. Every HTTP API of the simulator goes
//! through these methods, never around them, so tests can rely on that coherence.
//!
//! Org event actions the simulator emits (Atlassian's real names are unconfirmed; gatehouse maps
//! them in config): `user_created`, `user_deactivated`, `user_reactivated`, `user_closed`,
//! `group_created`, `group_member_added`, `group_member_removed`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::oauth_grants::OAuthState;
use crate::seed::{Seed, SeedCredentials, SeedError, SeedUser, SimAccountStatus};

/// An Atlassian account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub account_id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub account_type: String,
    pub status: SimAccountStatus,
}

/// A Confluence group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimGroup {
    pub id: String,
    pub name: String,
    /// Account ids.
    pub members: BTreeSet<String>,
}

/// A SCIM user record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimScimUser {
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// The account behind it.
    pub account_id: String,
}

/// A SCIM group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimScimGroup {
    pub id: String,
    pub display_name: String,
    /// SCIM user ids.
    pub members: BTreeSet<String>,
    pub confluence_group_id: Option<String>,
}

/// An organization event, as the events-stream shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimOrgEvent {
    /// Position in the stream (0-based); cursors point between positions.
    pub seq: u64,
    pub id: String,
    pub time: DateTime<Utc>,
    pub action: String,
    /// Who did it (a principal description, e.g. `scim-token`).
    pub actor: String,
    pub account_id: Option<String>,
    pub group: Option<(String, String)>,
    /// Served exactly as it is instead of the documented shape, when set: an event a test
    /// injects as it likes (`POST /_sim/events/raw`), well-formed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
}

impl SimOrgEvent {
    /// The JSON:API-style shape of Atlassian's org events (or the injected [`SimOrgEvent::raw`]).
    pub fn to_json(&self, accounts: &BTreeMap<String, Account>) -> Value {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut context = Vec::new();
        if let Some(account_id) = &self.account_id {
            let account = accounts.get(account_id);
            context.push(json!({
                "type": "users",
                "id": account_id,
                "attributes": {
                    "displayName": account.and_then(|a| a.display_name.clone()),
                    "email": account.and_then(|a| a.email.clone()),
                },
            }));
        }
        if let Some((id, name)) = &self.group {
            context.push(json!({"type": "groups", "id": id, "attributes": {"name": name}}));
        }
        json!({
            "id": self.id,
            "type": "events",
            "attributes": {
                "time": crate::limits::iso(self.time),
                "action": self.action,
                "actor": {"id": format!("actor:{}", self.actor), "name": self.actor, "email": null},
                "context": context,
                "container": [{"type": "sites", "id": "sim-site"}],
                "location": {"ip": "127.0.0.1"},
            },
            "message": {"content": self.action.replace('_', " "), "format": "simple"},
        })
    }
}

/// Snapshot of the simulator's state (`GET /_sim/state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    pub accounts: Vec<Account>,
    pub groups: Vec<SimGroup>,
    pub scim_users: Vec<SimScimUser>,
    pub scim_groups: Vec<SimScimGroup>,
    pub events: Vec<SimOrgEvent>,
    pub oauth: crate::oauth_grants::OAuthStats,
}

impl StateSnapshot {
    pub fn account(&self, account_id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.account_id == account_id)
    }

    pub fn group(&self, id: &str) -> Option<&SimGroup> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub fn scim_user_by_name(&self, user_name: &str) -> Option<&SimScimUser> {
        self.scim_users
            .iter()
            .find(|u| u.user_name.eq_ignore_ascii_case(user_name))
    }

    pub fn actions(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.action.as_str()).collect()
    }
}

/// Why a mutation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimRefusal {
    NotFound(String),
    Conflict(String),
    Invalid(String),
}

/// The simulated organization.
#[derive(Debug)]
pub struct World {
    pub cloud_id: String,
    pub org_id: String,
    pub directory_id: String,
    pub credentials: SeedCredentials,
    pub accounts: BTreeMap<String, Account>,
    pub groups: BTreeMap<String, SimGroup>,
    pub scim_users: BTreeMap<String, SimScimUser>,
    pub scim_groups: BTreeMap<String, SimScimGroup>,
    pub events: Vec<SimOrgEvent>,
    pub oauth: OAuthState,
    next_id: u64,
}

impl World {
    pub fn from_seed(seed: Seed) -> Result<World, SeedError> {
        let mut world = World {
            cloud_id: seed.cloud_id,
            org_id: seed.org_id,
            directory_id: seed.directory_id,
            oauth: OAuthState::new(&seed.credentials.oauth_clients),
            credentials: seed.credentials,
            accounts: BTreeMap::new(),
            groups: BTreeMap::new(),
            scim_users: BTreeMap::new(),
            scim_groups: BTreeMap::new(),
            events: Vec::new(),
            next_id: 1,
        };
        for user in seed.users {
            world.insert_user(user)?;
        }
        for group in seed.groups {
            let id = group.id.unwrap_or_else(|| world.generate_id("group"));
            if world.groups.contains_key(&id) {
                return Err(SeedError::Invalid(format!("group id {id} used twice")));
            }
            if world.groups.values().any(|g| g.name == group.name) {
                return Err(SeedError::Invalid(format!(
                    "group name {} used twice",
                    group.name
                )));
            }
            for member in &group.members {
                if !world.accounts.contains_key(member) {
                    return Err(SeedError::Invalid(format!(
                        "group {} lists unknown account {member}",
                        group.name
                    )));
                }
            }
            world.groups.insert(
                id.clone(),
                SimGroup {
                    id,
                    name: group.name,
                    members: group.members.into_iter().collect(),
                },
            );
        }
        for group in seed.scim_groups {
            let id = group.id.unwrap_or_else(|| world.generate_id("scim-group"));
            let mut members = BTreeSet::new();
            for account_id in &group.members {
                let scim = world
                    .scim_users
                    .values()
                    .find(|u| &u.account_id == account_id)
                    .ok_or_else(|| {
                        SeedError::Invalid(format!(
                            "SCIM group {} lists {account_id}, which has no SCIM identity",
                            group.display_name
                        ))
                    })?;
                members.insert(scim.id.clone());
            }
            if let Some(linked) = &group.confluence_group_id
                && !world.groups.contains_key(linked)
            {
                return Err(SeedError::Invalid(format!(
                    "SCIM group {} is linked to unknown Confluence group {linked}",
                    group.display_name
                )));
            }
            world.scim_groups.insert(
                id.clone(),
                SimScimGroup {
                    id,
                    display_name: group.display_name,
                    members,
                    confluence_group_id: group.confluence_group_id,
                },
            );
        }
        Ok(world)
    }

    /// Adds an account (and its SCIM identity) from seed data.
    pub fn insert_user(&mut self, user: SeedUser) -> Result<(), SeedError> {
        if self.accounts.contains_key(&user.account_id) {
            return Err(SeedError::Invalid(format!(
                "account {} used twice",
                user.account_id
            )));
        }
        if let Some(scim) = &user.scim {
            if self.scim_user_by_user_name(&scim.user_name).is_some() {
                return Err(SeedError::Invalid(format!(
                    "SCIM userName {} used twice",
                    scim.user_name
                )));
            }
            let id = scim.id.clone().unwrap_or_else(|| self.generate_id("scim"));
            self.scim_users.insert(
                id.clone(),
                SimScimUser {
                    id,
                    user_name: scim.user_name.clone(),
                    external_id: scim.external_id.clone(),
                    active: scim.active.unwrap_or(user.status == SimAccountStatus::Active),
                    display_name: user.display_name.clone(),
                    email: user.email.clone().or_else(|| Some(scim.user_name.clone())),
                    account_id: user.account_id.clone(),
                },
            );
        }
        self.accounts.insert(
            user.account_id.clone(),
            Account {
                account_id: user.account_id,
                display_name: user.display_name,
                email: user.email,
                account_type: user.account_type,
                status: user.status,
            },
        );
        Ok(())
    }

    /// A fresh id with a recognizable prefix.
    pub fn generate_id(&mut self, prefix: &str) -> String {
        let id = format!("{prefix}-{:04}", self.next_id);
        self.next_id += 1;
        id
    }

    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            accounts: self.accounts.values().cloned().collect(),
            groups: self.groups.values().cloned().collect(),
            scim_users: self.scim_users.values().cloned().collect(),
            scim_groups: self.scim_groups.values().cloned().collect(),
            events: self.events.clone(),
            oauth: self.oauth.stats(),
        }
    }

    /// Appends an org event.
    /// Appends an org event; `group` is the group's (id, name).
    pub fn emit(
        &mut self,
        action: &str,
        actor: &str,
        account_id: Option<&str>,
        group: Option<(String, String)>,
    ) {
        let seq = self.events.len() as u64;
        self.events.push(SimOrgEvent {
            seq,
            id: ulid::Ulid::generate().to_string().to_lowercase(),
            time: Utc::now(),
            action: action.to_owned(),
            actor: actor.to_owned(),
            account_id: account_id.map(str::to_owned),
            group,
            raw: None,
        });
    }

    /// Appends an org event served exactly as `raw` (its `id` and `attributes.action`, when
    /// strings, are what the state shows; it is timed now, for `from`/`to`).
    pub fn emit_raw(&mut self, raw: Value) {
        let seq = self.events.len() as u64;
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        self.events.push(SimOrgEvent {
            seq,
            id: text(raw.get("id")).unwrap_or_else(|| ulid::Ulid::generate().to_string().to_lowercase()),
            time: Utc::now(),
            action: text(raw.get("attributes").and_then(|a| a.get("action"))).unwrap_or_default(),
            actor: String::new(),
            account_id: None,
            group: None,
            raw: Some(raw),
        });
    }

    pub fn scim_user_by_user_name(&self, user_name: &str) -> Option<&SimScimUser> {
        // SCIM `userName` is not case-exact.
        self.scim_users
            .values()
            .find(|u| u.user_name.eq_ignore_ascii_case(user_name))
    }

    /// Sets an account's status; emits the matching event when it changed. The SCIM record, if
    /// any, is left alone: it is the IdP's view, which user management does not rewrite.
    pub fn set_account_status(
        &mut self,
        account_id: &str,
        status: SimAccountStatus,
        actor: &str,
    ) -> Result<bool, SimRefusal> {
        let account = self
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| SimRefusal::NotFound(format!("account {account_id} does not exist")))?;
        if account.status == status {
            return Ok(false);
        }
        account.status = status;
        let action = match status {
            SimAccountStatus::Active => "user_reactivated",
            SimAccountStatus::Inactive => "user_deactivated",
            SimAccountStatus::Closed => "user_closed",
        };
        self.emit(action, actor, Some(account_id), None);
        Ok(true)
    }

    /// SCIM `active`: changes the record and the account behind it.
    pub fn set_scim_active(&mut self, scim_id: &str, active: bool, actor: &str) -> Result<(), SimRefusal> {
        let user = self
            .scim_users
            .get_mut(scim_id)
            .ok_or_else(|| SimRefusal::NotFound(format!("SCIM user {scim_id} does not exist")))?;
        user.active = active;
        let account_id = user.account_id.clone();
        let status = if active {
            SimAccountStatus::Active
        } else {
            SimAccountStatus::Inactive
        };
        self.set_account_status(&account_id, status, actor).map(|_| ())
    }

    pub fn add_member(&mut self, group_id: &str, account_id: &str, actor: &str) -> Result<bool, SimRefusal> {
        if !self.accounts.contains_key(account_id) {
            return Err(SimRefusal::NotFound(format!(
                "account {account_id} does not exist"
            )));
        }
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or_else(|| SimRefusal::NotFound(format!("group {group_id} does not exist")))?;
        let added = group.members.insert(account_id.to_owned());
        if added {
            let named = (group.id.clone(), group.name.clone());
            self.emit("group_member_added", actor, Some(account_id), Some(named));
        }
        Ok(added)
    }

    pub fn remove_member(
        &mut self,
        group_id: &str,
        account_id: &str,
        actor: &str,
    ) -> Result<bool, SimRefusal> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or_else(|| SimRefusal::NotFound(format!("group {group_id} does not exist")))?;
        let removed = group.members.remove(account_id);
        if removed {
            let named = (group.id.clone(), group.name.clone());
            self.emit("group_member_removed", actor, Some(account_id), Some(named));
        }
        Ok(removed)
    }

    pub fn create_group(
        &mut self,
        id: Option<String>,
        name: &str,
        actor: &str,
    ) -> Result<SimGroup, SimRefusal> {
        if self.groups.values().any(|g| g.name == name) {
            return Err(SimRefusal::Conflict(format!("a group named {name} exists")));
        }
        let id = id.unwrap_or_else(|| self.generate_id("group"));
        if self.groups.contains_key(&id) {
            return Err(SimRefusal::Conflict(format!("group id {id} exists")));
        }
        let group = SimGroup {
            id: id.clone(),
            name: name.to_owned(),
            members: BTreeSet::new(),
        };
        self.groups.insert(id.clone(), group.clone());
        self.emit("group_created", actor, None, Some((id, name.to_owned())));
        Ok(group)
    }

    /// SCIM group membership; mirrored to the linked Confluence group, if any.
    pub fn scim_group_member(
        &mut self,
        group_id: &str,
        scim_user_id: &str,
        add: bool,
        actor: &str,
    ) -> Result<(), SimRefusal> {
        let account_id = self
            .scim_users
            .get(scim_user_id)
            .map(|u| u.account_id.clone())
            .ok_or_else(|| SimRefusal::Invalid(format!("SCIM user {scim_user_id} does not exist")))?;
        let group = self
            .scim_groups
            .get_mut(group_id)
            .ok_or_else(|| SimRefusal::NotFound(format!("SCIM group {group_id} does not exist")))?;
        let changed = if add {
            group.members.insert(scim_user_id.to_owned())
        } else {
            group.members.remove(scim_user_id)
        };
        let linked = group.confluence_group_id.clone();
        let named = (group.id.clone(), group.display_name.clone());
        match linked {
            Some(confluence_group) if add => {
                self.add_member(&confluence_group, &account_id, actor)?;
            }
            Some(confluence_group) => {
                self.remove_member(&confluence_group, &account_id, actor)?;
            }
            None if changed => {
                let action = if add {
                    "group_member_added"
                } else {
                    "group_member_removed"
                };
                self.emit(action, actor, Some(&account_id), Some(named));
            }
            None => {}
        }
        Ok(())
    }
}
