//! The simulator's starting state: accounts, Confluence groups, SCIM identities and groups, and the
//! credentials it accepts. Read from a JSON or TOML file (`--seed FILE`) or built in code by tests.
//!
//! Everything has a default, so `{}` is a valid seed: an empty site whose credentials are the
//! documented demo values ([`SeedCredentials::default`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The whole seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Seed {
    /// The site's cloud id: the gateway path is `/ex/confluence/{cloud_id}/wiki/...`.
    pub cloud_id: String,
    /// The organization: `/admin/v1/orgs/{org_id}/events-stream`.
    pub org_id: String,
    /// The SCIM directory: `/scim/directory/{directory_id}/...`.
    pub directory_id: String,
    pub credentials: SeedCredentials,
    pub users: Vec<SeedUser>,
    pub groups: Vec<SeedGroup>,
    pub scim_groups: Vec<SeedScimGroup>,
}

impl Default for Seed {
    fn default() -> Self {
        Seed {
            cloud_id: "sim-cloud".to_owned(),
            org_id: "sim-org".to_owned(),
            directory_id: "sim-directory".to_owned(),
            credentials: SeedCredentials::default(),
            users: Vec::new(),
            groups: Vec::new(),
            scim_groups: Vec::new(),
        }
    }
}

/// The credentials the simulator accepts. They are test values, never real secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedCredentials {
    /// API tokens for Basic auth (`email:token`).
    pub api_tokens: Vec<SeedApiToken>,
    /// The SCIM directory's bearer token.
    pub scim_token: String,
    /// The organization API key (events-stream, user management).
    pub admin_api_key: String,
    /// OAuth 2.0 (3LO) apps with the refresh token of one grant each.
    pub oauth_clients: Vec<SeedOAuthClient>,
}

impl Default for SeedCredentials {
    fn default() -> Self {
        SeedCredentials {
            api_tokens: vec![SeedApiToken {
                email: "bot@example.com".to_owned(),
                token: "sim-api-token".to_owned(),
                scoped: false,
            }],
            scim_token: "sim-scim-token".to_owned(),
            admin_api_key: "sim-admin-key".to_owned(),
            oauth_clients: vec![SeedOAuthClient {
                client_id: "sim-client".to_owned(),
                client_secret: "sim-client-secret".to_owned(),
                refresh_token: "sim-refresh-0".to_owned(),
            }],
        }
    }
}

/// An API token for Basic auth.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedApiToken {
    pub email: String,
    pub token: String,
    /// A scoped token works only through the gateway (`/ex/confluence/{cloudId}`); on the site
    /// URL it gets 401, as on Atlassian.
    #[serde(default)]
    pub scoped: bool,
}

/// An OAuth app and the first refresh token of its grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOAuthClient {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

/// Where an account stands (Confluence v2 `accountStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimAccountStatus {
    #[default]
    Active,
    Inactive,
    Closed,
}

/// An Atlassian account, optionally with a SCIM identity in the directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub account_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Hidden (null) unless given: Atlassian hides emails by default.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default = "default_account_type")]
    pub account_type: String,
    #[serde(default)]
    pub status: SimAccountStatus,
    #[serde(default)]
    pub scim: Option<SeedScimIdentity>,
}

fn default_account_type() -> String {
    "atlassian".to_owned()
}

impl Seed {
    /// An empty site for tenant `name` whose ids and credentials all carry the name, so that
    /// several can share one simulator: `{name}-cloud`, `{name}-org`, `{name}-directory`; an
    /// (unscoped) API token `{name}-api-token` of `bot@{name}.example`, `{name}-scim-token`,
    /// `{name}-admin-key`, and the OAuth client `{name}-client` (secret `{name}-secret`, first
    /// refresh token `{name}-refresh-0`).
    pub fn named(name: &str) -> Seed {
        Seed {
            cloud_id: format!("{name}-cloud"),
            org_id: format!("{name}-org"),
            directory_id: format!("{name}-directory"),
            credentials: SeedCredentials {
                api_tokens: vec![SeedApiToken {
                    email: format!("bot@{name}.example"),
                    token: format!("{name}-api-token"),
                    scoped: false,
                }],
                scim_token: format!("{name}-scim-token"),
                admin_api_key: format!("{name}-admin-key"),
                oauth_clients: vec![SeedOAuthClient {
                    client_id: format!("{name}-client"),
                    client_secret: format!("{name}-secret"),
                    refresh_token: format!("{name}-refresh-0"),
                }],
            },
            ..Seed::default()
        }
    }
}

impl SeedUser {
    /// An active account with a hidden email and no SCIM identity.
    pub fn new(account_id: impl Into<String>, display_name: impl Into<String>) -> Self {
        SeedUser {
            account_id: account_id.into(),
            display_name: Some(display_name.into()),
            email: None,
            account_type: default_account_type(),
            status: SimAccountStatus::Active,
            scim: None,
        }
    }

    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Gives the account a SCIM identity with this `userName` (the SCIM id is generated).
    pub fn with_scim(mut self, user_name: impl Into<String>, external_id: Option<&str>) -> Self {
        self.scim = Some(SeedScimIdentity {
            id: None,
            user_name: user_name.into(),
            external_id: external_id.map(str::to_owned),
            active: None,
        });
        self
    }
}

/// The SCIM record of an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedScimIdentity {
    /// The SCIM resource id; generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub user_name: String,
    #[serde(default)]
    pub external_id: Option<String>,
    /// Defaults to whether the account is active.
    #[serde(default)]
    pub active: Option<bool>,
}

/// A Confluence group. Names are case-sensitive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroup {
    /// Generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    /// Account ids.
    #[serde(default)]
    pub members: Vec<String>,
}

impl SeedGroup {
    pub fn new(id: impl Into<String>, name: impl Into<String>, members: Vec<String>) -> Self {
        SeedGroup {
            id: Some(id.into()),
            name: name.into(),
            members,
        }
    }
}

/// A SCIM group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedScimGroup {
    /// Generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub display_name: String,
    /// Account ids of members (each must have a SCIM identity).
    #[serde(default)]
    pub members: Vec<String>,
    /// A Confluence group this directory group is synced to: SCIM membership changes are
    /// mirrored there, as when an IdP-synced group is used in Confluence.
    #[serde(default)]
    pub confluence_group_id: Option<String>,
}

/// A seed that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("seed {path} is not valid {format}: {message}")]
    Parse {
        path: String,
        format: &'static str,
        message: String,
    },
    #[error("seed is inconsistent: {0}")]
    Invalid(String),
}

impl Seed {
    /// Reads a seed file: TOML when the name ends in `.toml`, JSON otherwise.
    pub fn load(path: &Path) -> Result<Seed, SeedError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: shown.clone(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| SeedError::Parse {
                path: shown,
                format: "TOML",
                message: e.message().to_owned(),
            })
        } else {
            serde_json::from_str(&text).map_err(|e| SeedError::Parse {
                path: shown,
                format: "JSON",
                message: e.to_string(),
            })
        }
    }
}
