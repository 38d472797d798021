//! The Atlassian clients against `gatehouse-sim`, started in-process on port 0 for each test.
//!
//! Assertions read what a user would see: the simulator's state after the calls, the requests
//! it received (its log), error kinds, metrics. Time decides nothing
//! except through generous bounds computed from the log itself.

mod cli;
mod confluence;
mod oauth;
mod pagination;
mod rate_limits;
mod scim_admin;
mod secrets;
mod store;

use std::sync::Arc;

use gatehouse::atlassian::{
    AdminClient, AtlassianClients, AtlassianMetrics, ClientDeps, ConfluenceClient, ScimClient,
};
use gatehouse::config::{AtlassianSettings, AuthSettings, Secret};
use gatehouse::store::Store;
use gatehouse_sim::{
    Behaviour, Fault, LoggedRequest, Seed, SeedGroup, SeedUser, SimHandle, Simulator, StateSnapshot,
};
use prometheus_client::registry::Registry;

/// Clients for `settings` with metrics nobody reads: another process on the same store.
pub fn detached_clients(settings: &AtlassianSettings, store: Option<Store>) -> AtlassianClients {
    AtlassianClients::build(settings, ClientDeps::new(store, AtlassianMetrics::detached())).unwrap()
}

/// The API token the default seed accepts for `bot@example.com`.
pub const API_TOKEN: &str = "sim-api-token";

/// A simulator and clients pointed at it.
pub struct SimWorld {
    pub sim: SimHandle,
    pub clients: AtlassianClients,
    registry: Arc<Registry>,
    http: reqwest::Client,
}

/// Settings for `sim`: Basic auth on the site, SCIM and admin configured; fast retries (tests
/// must not sleep seconds) and a pace that never gets in the way unless a test lowers it.
pub fn settings_for(sim: &SimHandle) -> AtlassianSettings {
    let mut settings = AtlassianSettings::new(Some(AuthSettings::Basic {
        email: "bot@example.com".into(),
        token: Secret::new(API_TOKEN),
        cloud_id: None,
        token_expires_at: None,
    }));
    settings.confluence_base_url = Some(sim.site_base_url());
    settings.gateway_base_url = sim.api_base_url();
    settings.scim_base_url = Some(sim.scim_base_url());
    settings.scim_token = Some(Secret::new("sim-scim-token"));
    settings.admin_base_url = sim.api_base_url();
    settings.admin_api_key = Some(Secret::new("sim-admin-key"));
    settings.org_id = Some(sim.org_id());
    quick_and_unpaced(&mut settings);
    settings
}

/// Fast retries (tests must not sleep seconds) and a pace that never gets in the way unless a
/// test lowers it.
pub fn quick_and_unpaced(settings: &mut AtlassianSettings) {
    settings.retry.base_delay_ms = 20;
    settings.retry.max_delay_ms = 200;
    settings.retry.max_wait_ms = 20_000;
    settings.http.request_timeout_ms = 5_000;
    settings.rate_limit.reads_per_second = 1_000.0;
    settings.rate_limit.writes_per_second = 1_000.0;
    settings.rate_limit.burst = 1_000;
}

/// OAuth through the gateway with the default seed's client.
pub fn oauth_settings_for(sim: &SimHandle) -> AtlassianSettings {
    let mut settings = settings_for(sim);
    settings.confluence_base_url = None;
    settings.auth = Some(AuthSettings::Oauth {
        client_id: "sim-client".into(),
        client_secret: Secret::new("sim-client-secret"),
        refresh_token: Secret::new("sim-refresh-0"),
        token_url: sim.token_url(),
        cloud_id: sim.cloud_id(),
    });
    settings
}

impl SimWorld {
    /// A simulator with `seed` and `policy`, and clients from [`settings_for`] adjusted by
    /// `configure`.
    pub async fn start(
        seed: Seed,
        policy: Behaviour,
        configure: impl FnOnce(&mut AtlassianSettings),
    ) -> SimWorld {
        let sim = Simulator::start(seed, policy).await.expect("simulator starts");
        let mut settings = settings_for(&sim);
        configure(&mut settings);
        SimWorld::with_settings(sim, settings, None).await
    }

    pub async fn with_settings(
        sim: SimHandle,
        settings: AtlassianSettings,
        store: Option<Store>,
    ) -> SimWorld {
        let mut registry = Registry::with_prefix("gatehouse");
        let metrics = AtlassianMetrics::register(&mut registry);
        let clients =
            AtlassianClients::build(&settings, ClientDeps::new(store, metrics)).expect("clients build");
        SimWorld {
            sim,
            clients,
            registry: Arc::new(registry),
            http: crate::helpers::http(),
        }
    }

    pub fn confluence(&self) -> &ConfluenceClient {
        self.clients.confluence().unwrap()
    }

    pub fn scim(&self) -> &ScimClient {
        self.clients.scim().unwrap()
    }

    pub fn admin(&self) -> &AdminClient {
        self.clients.admin().unwrap()
    }

    pub async fn requests(&self) -> Vec<LoggedRequest> {
        self.sim.requests()
    }

    pub async fn clear_requests(&self) {
        self.sim.clear_requests()
    }

    pub async fn state(&self) -> StateSnapshot {
        self.sim.state()
    }

    pub async fn fault(&self, fault: Fault) {
        let status = self
            .http
            .post(self.sim.url("/_sim/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }

    /// `POST`/`PUT`/`DELETE` on a control endpoint.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> u16 {
        let mut request = self.http.request(method, self.sim.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// The sum of every series of a metric family (e.g. `gatehouse_atlassian_retries_total`)
    /// whose labels contain all of `labels` (`reason="rate_limited"`).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
            .filter(|line| labels.iter().all(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// `n` accounts `{prefix}-{i}` (zero-padded, so sorting keeps the order), every third with a
/// hidden email.
pub fn accounts(prefix: &str, n: usize) -> Vec<SeedUser> {
    (0..n)
        .map(|i| {
            let user = SeedUser::new(format!("{prefix}-{i:04}"), format!("User {i}"));
            if i % 3 == 0 {
                user
            } else {
                user.with_email(format!("{prefix}{i}@example.com"))
            }
        })
        .collect()
}

/// A seed with `users` and one group per entry of `groups` (id, name, member ids).
pub fn seed(users: Vec<SeedUser>, groups: Vec<(&str, &str, Vec<String>)>) -> Seed {
    Seed {
        users,
        groups: groups
            .into_iter()
            .map(|(id, name, members)| SeedGroup::new(id, name, members))
            .collect(),
        ..Seed::default()
    }
}

/// Requests whose route (template) ends with `suffix`.
pub fn to_route<'a>(requests: &'a [LoggedRequest], suffix: &str) -> Vec<&'a LoggedRequest> {
    requests
        .iter()
        .filter(|r| r.route.as_deref().is_some_and(|route| route.ends_with(suffix)))
        .collect()
}
