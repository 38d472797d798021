//! `react`: M users, each in K groups, all deactivated at once, against a simulator whose burst
//! limit refills R requests a second per endpoint and method (as Atlassian's does). gatehouse's
//! own limiter is set to the same R. Measures the time to converge (no membership left), the
//! removal calls a second as a fraction of R, the 429s received, and the actions that failed.
//!
//! With `--tenant-wide`, the simulator instead allows R requests a second in total, every
//! endpoint together (reads and writes alike), and gatehouse gets `tenant_per_second = R` (or,
//! with `--no-tenant-budget`, only 429s to go by); the fraction reported is of every request.
//!
//! With `--tenants N --throttle-one`, one gatehouse serves N simulated tenants, the first of them
//! throttled hard, and what is measured is whether the others still get their own rate (see
//! [`crate::react_tenants`]).

use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use gatehouse_sim::{
    Behaviour, BurstPolicy, LoggedRequest, Seed, SeedGroup, SeedUser, SimAccountStatus, SimHandle, Simulator,
};
use serde_json::json;

use crate::Common;
use crate::harness::{Running, Scratch, standard_webhooks};
use crate::report::Results;

#[derive(Debug, Clone, Args)]
pub struct ReactArgs {
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// R: the simulator's refill rate per endpoint and method, requests a second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// The simulator's bucket size.
    #[arg(long, default_value_t = 10)]
    pub burst: u32,
    /// One budget of R for every request of the tenant, instead of R per endpoint.
    #[arg(long)]
    pub tenant_wide: bool,
    /// With `--tenant-wide`: do not tell gatehouse the budget (it learns from 429s alone).
    #[arg(long)]
    pub no_tenant_budget: bool,
    /// `Retry-After` the simulator sends with its 429s (none by default).
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Tenants served by one gatehouse, each with its own site, source and policy. More than one
    /// needs `--throttle-one` (it is what several are for).
    #[arg(long, default_value_t = 1)]
    pub tenants: usize,
    /// With `--tenants N`: the first tenant, `a`, is throttled hard by the simulator, the
    /// others allow R requests a second each (tenant-wide); measures the others.
    #[arg(long)]
    pub throttle_one: bool,
}

/// Tenants are named `a`, `b`, … — one letter each.
pub const MAX_TENANTS: usize = 26;

impl ReactArgs {
    /// Refuses combinations that would measure something other than what they say.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.tenants >= 1, "--tenants must be at least 1");
        anyhow::ensure!(
            self.tenants == 1 || self.throttle_one,
            "--tenants {} needs --throttle-one: several tenants are measured with the first one \
             throttled hard (gatehouse-bench react --tenants 2 --throttle-one)",
            self.tenants
        );
        anyhow::ensure!(
            !self.throttle_one || self.tenants >= 2,
            "--throttle-one needs --tenants 2 (or more): one tenant throttled, the others measured"
        );
        anyhow::ensure!(
            self.tenants <= MAX_TENANTS,
            "--tenants {} is more than the {} this bench names (a, b, …)",
            self.tenants,
            MAX_TENANTS
        );
        anyhow::ensure!(
            self.users >= 1 && self.groups >= 1,
            "--users and --groups must be at least 1"
        );
        anyhow::ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "--rate must be a positive number of requests a second"
        );
        anyhow::ensure!(self.burst >= 1, "--burst must be at least 1");
        Ok(())
    }
}

impl Default for ReactArgs {
    fn default() -> Self {
        ReactArgs {
            users: 200,
            groups: 10,
            rate: 50.0,
            burst: 10,
            tenant_wide: false,
            no_tenant_budget: false,
            retry_after: None,
            tenants: 1,
            throttle_one: false,
        }
    }
}

pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The `[[sources]]`, `[atlassian]` and `[[policies]]` sections for gatehouse in front of `sim`.
pub fn config(scratch: &Scratch, sim: &SimHandle, rate: f64, burst: u32) -> anyhow::Result<String> {
    config_with(scratch, sim, rate, burst, None)
}

/// Like [`config`], with `tenant_per_second` (and `tenant_burst = burst`) when given.
pub fn config_with(
    scratch: &Scratch,
    sim: &SimHandle,
    rate: f64,
    burst: u32,
    tenant_per_second: Option<f64>,
) -> anyhow::Result<String> {
    let tenant = tenant_per_second.map_or(String::new(), |r| {
        format!("tenant_per_second = {r}\ntenant_burst = {burst}\n")
    });
    Ok(format!(
        r#"
[[sources]]
name = "relay"
scheme = "standard-webhooks"
secrets = [{{ id = "bench", value = "{relay}" }}]

[atlassian]
confluence_base_url = "{site}"
auth = {{ kind = "basic", email = "bot@example.com", token = "{token}" }}
[atlassian.rate_limit]
{tenant}reads_per_second = {rate}
writes_per_second = {rate}
burst = {burst}

[[policies]]
name = "deprovision"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
"#,
        relay = scratch.secret("relay", WHSEC)?,
        token = scratch.secret("api-token", "sim-api-token")?,
        site = sim.site_base_url(),
    ))
}

/// Sends a signed `user.deactivated` for each account, `parallel` at a time; returns the
/// envelope ids in order.
pub async fn deactivate(
    running: &Running,
    accounts: &[String],
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    deactivate_via(running, "relay", accounts, parallel).await
}

/// Like [`deactivate`], through source `source` (signed with [`WHSEC`]).
pub async fn deactivate_via(
    running: &Running,
    source: &str,
    accounts: &[String],
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    deactivate_via_urls(&[running.url(&format!("/webhooks/{source}"))], accounts, parallel).await
}

/// Like [`deactivate`], to the webhook `urls` in turn (several ingress processes behind a round
/// robin).
pub async fn deactivate_via_urls(
    urls: &[String],
    accounts: &[String],
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(!urls.is_empty(), "nowhere to send to");
    let http = reqwest::Client::new();
    let sends = futures_util::stream::iter(accounts.iter().cloned().enumerate().map(|(i, account)| {
        let http = http.clone();
        let url = urls[i % urls.len()].clone();
        async move {
            let (id, _) = send_deactivation(&http, &url, &account, &format!("deact-{account}")).await?;
            Ok(id)
        }
    }));
    sends
        .buffered(parallel)
        .collect::<Vec<anyhow::Result<String>>>()
        .await
        .into_iter()
        .collect()
}

/// Sends one signed relay `user.deactivated` for `account` as delivery `delivery_id`; the
/// envelope id and when the 202 arrived.
pub async fn send_deactivation(
    http: &reqwest::Client,
    url: &str,
    account: &str,
    delivery_id: &str,
) -> anyhow::Result<(String, chrono::DateTime<chrono::Utc>)> {
    let body = json!({"type": "user.deactivated", "timestamp": chrono::Utc::now().to_rfc3339(), "data": {"account_id": account}})
        .to_string()
        .into_bytes();
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.clone());
    for (name, value) in standard_webhooks(WHSEC, delivery_id, &body)? {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let accepted_at = chrono::Utc::now();
    anyhow::ensure!(
        response.status() == 202,
        "webhook for {account} answered {}",
        response.status()
    );
    let answer: serde_json::Value = response.json().await?;
    Ok((answer["id"].as_str().unwrap_or_default().to_owned(), accepted_at))
}

/// Waits until no group of `sim` has a member left; the time since `started`. Fails once
/// `deadline` (since `started`) passed with memberships left.
pub async fn converge(sim: &SimHandle, started: Instant, deadline: Duration) -> anyhow::Result<Duration> {
    loop {
        let left: usize = sim.state().groups.iter().map(|g| g.members.len()).sum();
        if left == 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "{left} memberships left after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deactivated accounts with these ids (the status a `user.deactivated` is checked against).
pub fn inactive_users(accounts: &[String]) -> Vec<SeedUser> {
    accounts
        .iter()
        .map(|id| {
            let mut user = SeedUser::new(id.clone(), id.clone());
            user.status = SimAccountStatus::Inactive;
            user
        })
        .collect()
}

/// Failed actions on the audit trail, and dead letters.
pub async fn failures(running: &Running) -> anyhow::Result<(usize, u64)> {
    failures_of(running, None).await
}

/// Like [`failures`], the audit records counted for `tenant` only when given (dead letters are
/// counted for every tenant).
pub async fn failures_of(running: &Running, tenant: Option<&str>) -> anyhow::Result<(usize, u64)> {
    let store = running.store().await?;
    let query = ::gatehouse::audit::AuditQuery {
        kinds: vec![
            ::gatehouse::audit::AuditKind::Failed,
            ::gatehouse::audit::AuditKind::DeadLettered,
        ],
        tenant: tenant.map(str::to_owned),
        limit: 100_000,
        ..Default::default()
    };
    let failed = ::gatehouse::audit::query::query(&store, &query).await?.len();
    let dead = store.count_dead_letters().await?;
    store.close().await;
    Ok((failed, dead))
}

pub async fn run(common: &Common, args: &ReactArgs, results: &mut Results) -> anyhow::Result<()> {
    args.check()?;
    for backend in common.backend.backends() {
        let accounts: Vec<String> = (0..args.users).map(|i| format!("u-{i:05}")).collect();
        let users = inactive_users(&accounts);
        let groups = (0..args.groups)
            .map(|g| SeedGroup::new(format!("g-{g:03}"), format!("team-{g:03}"), accounts.clone()))
            .collect();
        let bucket = BurstPolicy {
            capacity: args.burst,
            per_second: args.rate,
            retry_after_seconds: args.retry_after,
            near_limit: true,
        };
        let policy = if args.tenant_wide {
            Behaviour {
                v1_max_limit: 200,
                tenant: Some(bucket),
                ..Behaviour::default()
            }
        } else {
            Behaviour {
                v1_max_limit: 200,
                burst: Some(bucket),
                ..Behaviour::default()
            }
        };
        let tenant_budget = (args.tenant_wide && !args.no_tenant_budget).then_some(args.rate);
        let sim = Simulator::start(
            Seed {
                users,
                groups,
                ..Seed::default()
            },
            policy,
        )
        .await?;
        let scratch = Scratch::new("react")?;
        let running = Running::start(
            common,
            &scratch,
            "serve",
            backend,
            &config_with(&scratch, &sim, args.rate, args.burst, tenant_budget)?,
        )
        .await?;

        let memberships = args.users * args.groups;
        let started = Instant::now();
        deactivate(&running, &accounts, 32).await?;
        let deadline = Duration::from_secs_f64(memberships as f64 / args.rate * 3.0 + 60.0);
        let converged = converge(&sim, started, deadline).await?;
        let requests = sim.requests();
        let deletes: Vec<&LoggedRequest> = requests
            .iter()
            .filter(|r| r.method == "DELETE" && r.status == Some(204))
            .collect();
        let throttled = requests.iter().filter(|r| r.status == Some(429)).count();
        // Per endpoint R: the removals a second; tenant-wide R: every answered request a second.
        let counted: Vec<&LoggedRequest> = if args.tenant_wide {
            requests
                .iter()
                .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
                .collect()
        } else {
            deletes.clone()
        };
        let (first, last) = (
            counted.first().map_or(0, |r| r.at_ms),
            counted.last().map_or(0, |r| r.at_ms),
        );
        let window = ((last - first).max(1) as f64) / 1000.0;
        // n calls spread over their first-to-last window make n - 1 intervals.
        let achieved = (counted.len().saturating_sub(1)) as f64 / window;
        let share_429 = throttled as f64 / requests.len().max(1) as f64 * 100.0;
        let (failed, dead) = failures(&running).await?;
        let rss = running.peak_rss_mib();
        running.stop().await?;
        sim.stop().await;
        let (mode, what) = match (args.tenant_wide, tenant_budget) {
            (false, _) => ("per endpoint", "removals/s"),
            (true, Some(_)) => ("tenant-wide, tenant_per_second = R", "requests/s"),
            (true, None) => ("tenant-wide, no budget configured", "requests/s"),
        };
        results.add(
            &format!("react ({backend}, {mode})"),
            vec![
                ("workload", format!("{} users × {} groups = {memberships} removals, R = {} req/s (burst {})", args.users, args.groups, args.rate, args.burst)),
                ("converged in", format!("{:.1} s", converged.as_secs_f64())),
                (what, format!("{achieved:.1} ({:.1} % of R)", achieved / args.rate * 100.0)),
                ("429s received", format!("{throttled} ({share_429:.2} % of {} requests)", requests.len())),
                ("failed actions", format!("{failed} (dead letters: {dead})")),
                ("peak RSS", format!("{rss:.1} MiB")),
            ],
            json!({
                "backend": backend, "users": args.users, "groups": args.groups, "rate": args.rate, "burst": args.burst,
                "mode": mode, "removals": deletes.len(), "requests": requests.len(),
                "converged_seconds": converged.as_secs_f64(), "per_second": achieved,
                "fraction_of_rate": achieved / args.rate, "throttled": throttled, "failed_actions": failed,
                "dead_letters": dead, "peak_rss_mib": rss,
            }),
        );
    }
    Ok(())
}
