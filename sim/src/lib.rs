//! gatehouse-sim: a stateful, in-memory stand-in for the parts of Atlassian Cloud gatehouse talks
//! to, for tests and demos. It simulates only Atlassian; nothing here knows gatehouse.
//!
//! What it serves, on one port:
//! - Confluence REST v1 users and groups (id-based endpoints and the deprecated name-based ones)
//!   and v2 `users-bulk`, on the site (`/wiki/...`, `/sites/{cloudId}/wiki/...`) and on the
//!   gateway (`/ex/confluence/{cloudId}/wiki/...`);
//! - SCIM 2.0 users and groups (`/scim/directory/{directoryId}/...`);
//! - the organization events-stream and user-management lifecycle;
//! - the OAuth token endpoint with rotating refresh tokens (`/oauth/token`);
//! - its own control endpoints under `/_sim` (see [`control`] for the table).
//!
//! And the quirks gatehouse must survive: small maximum page sizes that the server lowers
//! silently, mixed pagination that truncates without an error, case-sensitive group names, null
//! emails, SCIM string statuses, burst and quota rate limits with and without `Retry-After`,
//! scripted 5xx and slow answers, and credential checks (a scoped token or an OAuth token on the
//! site URL gets 401).
//!
//! State is coherent across APIs (see [`world`]): deactivating through SCIM or user management
//! shows as `accountStatus: inactive` in Confluence v2 and appends a `user_deactivated` org event.
//!
//! # Tenants
//!
//! One simulator can serve several tenants ([`Simulator::start_tenants`]), each a [`Seed`] (a
//! site, its organization and SCIM directory) with its own [`Behaviour`], rate-limit buckets and
//! quota, scripted faults and state: a 429 storm on one never reaches another. A request reaches
//! the world its path names: the gateway and `/sites/{cloudId}/wiki` by cloud id, SCIM by
//! directory id, the events-stream by org id (an unknown one answers 404 in that API's format);
//! user management by the admin API key it presents and the token endpoint by its `client_id`
//! (an unknown one answers 401). Credentials are checked in that world only, so one tenant's
//! token on another's cloud id gets 401, as on Atlassian. Seeds sharing an identifier or a
//! credential are refused at start ([`StartError::DuplicateTenantKey`]).
//!
//! The first tenant is the one the one-tenant API shows: [`Simulator::start`], `/wiki`, `/_sim`
//! without `?tenant={cloudId}`, and [`SimHandle`]'s methods, except the request log, which is
//! one for the whole port ([`SimHandle::requests`]; each [`LoggedRequest::cloud_id`] says which
//! world served it). [`SimHandle::tenant`] gives a [`TenantView`] of any tenant: its URLs,
//! state, requests, policy and faults.
//!
//! Tests start it in-process with [`Simulator::start`] (or [`Simulator::start_tenants`]) on
//! port 0.

// Handlers return early with a ready axum `Response` as their error; boxing it would buy nothing
// in a test simulator.
#![expect(clippy::result_large_err, reason = "early-return axum responses")]

pub mod api;
pub mod behaviour;
pub mod control;
pub mod log;
pub mod oauth;
mod oauth_grants;
pub mod seed;
pub mod world;

mod admin;
mod confluence;
mod gate;
mod limits;
mod paging;
mod scim;
mod tenant;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use behaviour::{Behaviour, BurstPolicy, Fault, QuotaPolicy};
pub use log::LoggedRequest;
pub use oauth_grants::OAuthStats;
pub use seed::{
    Seed, SeedApiToken, SeedCredentials, SeedError, SeedGroup, SeedOAuthClient, SeedScimGroup,
    SeedScimIdentity, SeedUser, SimAccountStatus,
};
pub use tenant::TenantView;
pub use world::{Account, SimGroup, SimOrgEvent, SimScimGroup, SimScimUser, StateSnapshot};

use crate::log::RequestLog;
use crate::tenant::{SimTenant, Tenants};

/// Locks a mutex, carrying on after a panic in another handler: the simulator's state stays
/// usable for the assertions that follow.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything the handlers share: the worlds, each with its own behaviour, and the one request
/// log of the port they share.
#[derive(Debug)]
pub(crate) struct SimShared {
    tenants: Tenants,
    log: RequestLog,
}

/// Why the simulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error("no tenant to serve: the simulator needs at least one seed")]
    NoTenants,
    /// Requests pick their world by these, so each must belong to one tenant. The tenants are
    /// named by their position in the list (values are left out: some are credentials).
    #[error("tenants #{first} and #{second} share their {what}; every tenant needs its own")]
    DuplicateTenantKey {
        /// `cloud id`, `org id`, `directory id`, `API token`, `SCIM token`, `admin API key` or
        /// `OAuth client id`.
        what: &'static str,
        first: usize,
        second: usize,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

/// Where [`Simulator::start`] and [`Simulator::start_tenants`] listen: a free port of 127.0.0.1.
const ANY_LOCAL_PORT: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

impl Simulator {
    /// Starts a one-tenant simulator on a free port of 127.0.0.1, in the current tokio runtime.
    pub async fn start(seed: Seed, policy: Behaviour) -> Result<SimHandle, StartError> {
        Simulator::serve(SocketAddr::from(ANY_LOCAL_PORT), seed, policy).await
    }

    /// Starts a one-tenant simulator on `addr`.
    pub async fn serve(addr: SocketAddr, seed: Seed, policy: Behaviour) -> Result<SimHandle, StartError> {
        Simulator::serve_tenants(addr, vec![(seed, policy)]).await
    }

    /// Starts a simulator serving several isolated tenants on a free port of 127.0.0.1, in the
    /// current tokio runtime. The first tenant is the one the one-tenant API shows.
    pub async fn start_tenants(tenants: Vec<(Seed, Behaviour)>) -> Result<SimHandle, StartError> {
        Simulator::serve_tenants(SocketAddr::from(ANY_LOCAL_PORT), tenants).await
    }

    /// Starts a simulator serving several isolated tenants on `addr`. Refuses an empty list and
    /// two seeds sharing a cloud id, org id, directory id or any credential (see
    /// [`StartError::DuplicateTenantKey`]).
    pub async fn serve_tenants(
        addr: SocketAddr,
        tenants: Vec<(Seed, Behaviour)>,
    ) -> Result<SimHandle, StartError> {
        tenant::check_distinct(tenants.iter().map(|(seed, _)| seed))?;
        let tenants = tenants
            .into_iter()
            .map(|(seed, policy)| SimTenant::new(seed, policy).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(SimShared {
            tenants: Tenants::new(tenants).ok_or(StartError::NoTenants)?,
            log: RequestLog::default(),
        });
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                eprintln!("gatehouse-sim: server error: {error}");
            }
        });
        Ok(SimHandle {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// Every route, with the gate (faults, auth, rate limits) after routing and the request log
/// around everything.
fn router(shared: Arc<SimShared>) -> Router {
    let confluence = confluence::router();
    Router::new()
        .nest("/wiki", confluence.clone())
        .nest("/sites/{cloud_id}/wiki", confluence.clone())
        .nest("/ex/confluence/{cloud_id}/wiki", confluence)
        .nest("/scim/directory/{directory_id}", scim::router())
        .merge(admin::router())
        .route("/oauth/token", axum::routing::post(oauth::token))
        .merge(control::router())
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), gate::gate))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), gate::record))
        .with_state(shared)
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<SimShared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The first tenant's Confluence site base (`…/wiki`), for Basic auth with unscoped tokens.
    pub fn site_base_url(&self) -> String {
        self.url("/wiki")
    }

    /// The gateway root standing in for `https://api.atlassian.com` (Confluence through
    /// `/ex/confluence/{cloudId}`, the admin APIs, SCIM).
    pub fn api_base_url(&self) -> String {
        self.url("")
    }

    /// The first tenant's SCIM base, `…/scim/directory/{directoryId}`.
    pub fn scim_base_url(&self) -> String {
        self.first().scim_base_url()
    }

    /// The OAuth token endpoint.
    pub fn token_url(&self) -> String {
        self.url("/oauth/token")
    }

    /// The first tenant's cloud id.
    pub fn cloud_id(&self) -> String {
        self.first().cloud_id().to_owned()
    }

    /// The first tenant's organization id.
    pub fn org_id(&self) -> String {
        self.first().org_id().to_owned()
    }

    /// The first tenant's state, as `GET /_sim/state` answers it.
    pub fn state(&self) -> StateSnapshot {
        self.first().state()
    }

    /// How many tenants this simulator serves (at least one).
    pub fn tenant_count(&self) -> usize {
        self.shared.tenants.len()
    }

    /// The tenant whose site has this cloud id.
    pub fn tenant(&self, cloud_id: &str) -> Option<TenantView<'_>> {
        self.shared
            .tenants
            .by_cloud_id(cloud_id)
            .map(|tenant| self.view(tenant))
    }

    /// The tenant at `index` in the list the simulator was started with (0: the first).
    pub fn tenant_at(&self, index: usize) -> Option<TenantView<'_>> {
        self.shared.tenants.at(index).map(|tenant| self.view(tenant))
    }

    fn first(&self) -> TenantView<'_> {
        self.view(self.shared.tenants.first())
    }

    fn view<'a>(&'a self, tenant: &'a SimTenant) -> TenantView<'a> {
        TenantView { handle: self, tenant }
    }

    /// The API calls received so far by every tenant, oldest first (control calls under `/_sim`
    /// left out); [`LoggedRequest::cloud_id`] says which world served each.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let mut all = self.shared.log.entries();
        all.retain(|r| !r.path.starts_with("/_sim"));
        all
    }

    /// Forgets the calls logged so far, of every tenant.
    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
