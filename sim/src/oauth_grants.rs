//! OAuth grants as a world keeps them: Atlassian's rotating refresh tokens (every refresh returns
//! a new refresh token and retires the old one; a retired token still works within the reuse
//! leeway, and reusing it after that revokes the whole family, answering 403 `invalid_grant`),
//! the access tokens they issued, and the counters tests read. `oauth.rs` serves the endpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::seed::SeedOAuthClient;

/// Counters tests assert on (`GET /_sim/state` → `oauth`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthStats {
    /// Successful refreshes.
    pub refreshes: u64,
    /// Refreshes that used an already-rotated token within the leeway.
    pub reuse_within_leeway: u64,
    /// Families revoked because a rotated token was reused after the leeway.
    pub families_revoked: u64,
    /// Refused token requests (wrong client secret, unknown or revoked token). A `client_id` no
    /// tenant knows is refused before any world sees it, so it is not counted here.
    pub refused: u64,
    /// The refresh token each client should use next (test values, not secrets).
    pub latest_refresh_tokens: BTreeMap<String, String>,
}

#[derive(Debug)]
struct RefreshToken {
    client_id: String,
    family: u64,
    number: u64,
    retired_at: Option<Instant>,
}

#[derive(Debug)]
struct IssuedAccessToken {
    client_id: String,
    family: u64,
    number: u64,
    expires_at: Instant,
}

/// Every token the endpoint has issued.
#[derive(Debug)]
pub struct OAuthState {
    clients: HashMap<String, String>,
    refresh: HashMap<String, RefreshToken>,
    access: HashMap<String, IssuedAccessToken>,
    revoked: HashSet<u64>,
    next_number: u64,
    stats: OAuthStats,
}

impl OAuthState {
    pub fn new(clients: &[SeedOAuthClient]) -> Self {
        let mut state = OAuthState {
            clients: HashMap::new(),
            refresh: HashMap::new(),
            access: HashMap::new(),
            revoked: HashSet::new(),
            next_number: 1,
            stats: OAuthStats::default(),
        };
        for (family, client) in clients.iter().enumerate() {
            state
                .clients
                .insert(client.client_id.clone(), client.client_secret.clone());
            state.refresh.insert(
                client.refresh_token.clone(),
                RefreshToken {
                    client_id: client.client_id.clone(),
                    family: family as u64,
                    number: 0,
                    retired_at: None,
                },
            );
            state
                .stats
                .latest_refresh_tokens
                .insert(client.client_id.clone(), client.refresh_token.clone());
        }
        state
    }

    pub fn stats(&self) -> OAuthStats {
        self.stats.clone()
    }

    /// Who an access token belongs to (`oauth:{client}:access-{n}`), when it is valid now.
    pub fn access_principal(&self, token: &str, now: Instant) -> Option<String> {
        let access = self.access.get(token)?;
        (access.expires_at > now && !self.revoked.contains(&access.family))
            .then(|| format!("oauth:{}:access-{}", access.client_id, access.number))
    }

    pub(crate) fn refresh(
        &mut self,
        request: &TokenRequest,
        policy_ttl: Duration,
        leeway: Duration,
        now: Instant,
    ) -> Result<(Value, String), (StatusCode, Value, String)> {
        let refused = |status, error: &str, description: &str, principal: String| {
            (
                status,
                json!({"error": error, "error_description": description}),
                principal,
            )
        };
        if request.grant_type != "refresh_token" {
            self.stats.refused += 1;
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only refresh_token is simulated",
                "refresh:?".into(),
            ));
        }
        if self.clients.get(&request.client_id) != Some(&request.client_secret) {
            self.stats.refused += 1;
            return Err(refused(
                StatusCode::UNAUTHORIZED,
                "access_denied",
                "Unauthorized",
                format!("refresh:{}:bad-client", request.client_id),
            ));
        }
        let Some(token) = self.refresh.get_mut(&request.refresh_token) else {
            self.stats.refused += 1;
            return Err(refused(
                StatusCode::FORBIDDEN,
                "invalid_grant",
                "Unknown or invalid refresh token.",
                format!("refresh:{}:unknown", request.client_id),
            ));
        };
        let principal = format!("refresh:{}:rt-{}", token.client_id, token.number);
        if token.client_id != request.client_id || self.revoked.contains(&token.family) {
            self.stats.refused += 1;
            return Err(refused(
                StatusCode::FORBIDDEN,
                "invalid_grant",
                "Unknown or invalid refresh token.",
                principal,
            ));
        }
        let family = token.family;
        match token.retired_at {
            Some(retired) if now.duration_since(retired) > leeway => {
                self.revoked.insert(family);
                self.stats.families_revoked += 1;
                self.stats.refused += 1;
                self.stats.latest_refresh_tokens.remove(&request.client_id);
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "invalid_grant",
                    "Unknown or invalid refresh token.",
                    principal,
                ));
            }
            Some(_) => self.stats.reuse_within_leeway += 1,
            None => token.retired_at = Some(now),
        }
        let number = self.next_number;
        self.next_number += 1;
        let random = || ulid::Ulid::generate().to_string().to_lowercase();
        let refresh_token = format!("sim-rt-{number}-{}", random());
        let access_token = format!("sim-at-{number}-{}", random());
        self.refresh.insert(
            refresh_token.clone(),
            RefreshToken {
                client_id: request.client_id.clone(),
                family,
                number,
                retired_at: None,
            },
        );
        self.access.insert(
            access_token.clone(),
            IssuedAccessToken {
                client_id: request.client_id.clone(),
                family,
                number,
                expires_at: now + policy_ttl,
            },
        );
        self.stats.refreshes += 1;
        self.stats
            .latest_refresh_tokens
            .insert(request.client_id.clone(), refresh_token.clone());
        Ok((
            json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": policy_ttl.as_secs(),
                "refresh_token": refresh_token,
                "scope": "read:confluence-groups write:confluence-groups read:confluence-user offline_access",
            }),
            principal,
        ))
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    refresh_token: String,
}
