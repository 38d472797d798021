//! The read-only view of Atlassian that handlers may consult while planning.
//!
//! Handlers never change anything: they read through these traits and return a plan. The runtime
//! implements the traits with rate-limited HTTP clients (and tests with fakes), so the domain stays
//! free of I/O crates. Every listing returned here is complete: implementations page until the
//! end, never returning a truncated first page.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Timeouts, 5xx, 429, 408/409/425, connection trouble: retry later.
    Transient,
    /// Anything retrying will not fix (other 4xx, bad data): park it with its reason.
    Permanent,
}

/// A failed read, classified for the worker's retry logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    pub kind: ErrorKind,
    /// The HTTP status, when the failure was an HTTP answer.
    pub status: Option<u16>,
    /// What went wrong, never containing a credential.
    pub message: String,
}

impl PortError {
    pub fn transient(message: impl Into<String>) -> Self {
        PortError {
            kind: ErrorKind::Transient,
            status: None,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        PortError {
            kind: ErrorKind::Permanent,
            status: None,
            message: message.into(),
        }
    }
}

/// A Confluence group. Names are case-sensitive; ids are the stable handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
}

/// A Confluence user as the REST API shows it. `email` is often hidden (null) by privacy
/// settings: never key on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub account_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// `atlassian`, `app`, `customer`, …
    #[serde(default)]
    pub account_type: Option<String>,
}

/// Where an account stands right now (Confluence v2 `accountStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Inactive,
    Closed,
    /// A value Atlassian added that gatehouse does not know.
    Unknown,
}

/// Confluence reads (REST v1 groups, v2 users).
#[async_trait]
pub trait ConfluenceDirectory: Send + Sync {
    /// Every Confluence group the account is a member of.
    async fn groups_of(&self, account_id: &str) -> Result<Vec<Group>, PortError>;
    /// Every member of the group.
    async fn members_of(&self, group_id: &str) -> Result<Vec<User>, PortError>;
    /// The group whose name is exactly `name` (case-sensitive), if any.
    async fn group_by_name(&self, name: &str) -> Result<Option<Group>, PortError>;
    /// The account's current status, `None` when Confluence does not know the account.
    async fn account_status(&self, account_id: &str) -> Result<Option<AccountStatus>, PortError>;
}

/// A SCIM user in the identity provider's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimUser {
    /// The SCIM resource id (not the Atlassian account id).
    pub id: String,
    pub user_name: String,
    #[serde(default)]
    pub external_id: Option<String>,
    pub active: bool,
    /// The Atlassian account behind it, when the directory says (Atlassian's SCIM extension
    /// `urn:scim:schemas:extension:atlassian-external:1.0`, `atlassianAccountId`).
    #[serde(default)]
    pub atlassian_account_id: Option<String>,
}

/// A SCIM group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimGroup {
    pub id: String,
    pub display_name: String,
}

/// SCIM reads.
#[async_trait]
pub trait ScimDirectory: Send + Sync {
    async fn user_by_user_name(&self, user_name: &str) -> Result<Option<ScimUser>, PortError>;
    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<ScimUser>, PortError>;
    /// The SCIM user linked to an Atlassian account. SCIM cannot filter on it, so
    /// implementations may have to list the directory.
    async fn user_by_account_id(&self, account_id: &str) -> Result<Option<ScimUser>, PortError>;
    async fn group_by_display_name(&self, display_name: &str) -> Result<Option<ScimGroup>, PortError>;
}
