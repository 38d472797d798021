//! `react --tenants N --throttle-one`: one gatehouse serving N simulated tenants, `a` throttled
//! hard by Atlassian and the others (`b`, …) each allowed R requests a second in all, to show
//! that a throttled tenant does not hold up the others.
//!
//! Each tenant has its own site (cloud id, org, directory, scoped API token through the
//! gateway), `--users` deactivated users in `--groups` groups, its own relay source and its own
//! leaver policy; gatehouse gets `tenant_per_second = R` for each. All of `a`'s deactivations
//! are sent first, then the others': without a bound on each tenant's share of the worker's
//! slots, `a`'s events would take every slot and wait out `a`'s pauses while the others queued
//! behind them. The run stops when every other tenant has converged (never waiting for `a`),
//! and reports for each its requests a second over its run relative to its own R, its 429s, its
//! failed actions and its time to converge; for `a` its progress and 429s; and the events the
//! worker postponed (`gatehouse_worker_attempts_total{outcome="postponed"}`).
//!
//! `a`'s throttle is the simulator's tenant-wide bucket at one request every ten seconds, with
//! no `Retry-After`: Atlassian's rate limit at its harshest, where gatehouse retries and backs
//! off inside the event, holding a slot — the case per-tenant slots are for. (An exhausted
//! quota is milder here: its reset lies beyond `retry.max_wait_ms`, so gatehouse fails the call
//! at once without holding the slot.)

use std::time::{Duration, Instant};

use gatehouse_sim::{Behaviour, BurstPolicy, LoggedRequest, Seed, SeedGroup, SimHandle, Simulator};
use serde_json::{Value, json};

use crate::Common;
use crate::harness::{Running, Scratch, leftover_queues, metric_sum};
use crate::react::{ReactArgs, WHSEC, deactivate_via, failures_of, inactive_users};
use crate::report::Results;

/// The throttled tenant's limit: one request every ten seconds in all, one at once, and no
/// `Retry-After` to go by.
const THROTTLE: BurstPolicy = BurstPolicy {
    capacity: 1,
    per_second: 0.1,
    retry_after_seconds: None,
    near_limit: false,
};

/// What the output says `a`'s throttle is (kept next to [`THROTTLE`]).
const THROTTLE_DESCRIBED: &str = "sim tenant-wide bucket 0.1 req/s, burst 1, 429s without Retry-After";

/// The worker's slots in every gatehouse the bench starts (`crate::gatehouse`), and how long the
/// run gives in-flight events on shutdown: `a`'s, waiting out backoffs of up to 30 s, would
/// otherwise hold the stop for the default 30 s grace.
const CONCURRENCY: usize = 16;
const SHUTDOWN_GRACE_SECONDS: u64 = 5;

fn tenant_name(index: usize) -> String {
    char::from(b'a' + index as u8).to_string()
}

/// Tenant `name`'s site: its own ids and credentials (the simulator tells tenants apart by
/// them), `accounts` deactivated, each in every one of `groups` groups.
fn site(name: &str, accounts: &[String], groups: usize) -> Seed {
    let mut seed = Seed {
        users: inactive_users(accounts),
        groups: (0..groups)
            .map(|g| {
                SeedGroup::new(
                    format!("{name}-g-{g:03}"),
                    format!("team-{g:03}"),
                    accounts.to_vec(),
                )
            })
            .collect(),
        ..Seed::named(name)
    };
    // A scoped token: gatehouse reaches each site through the gateway, by its cloud id.
    for token in &mut seed.credentials.api_tokens {
        token.scoped = true;
    }
    seed
}

/// Tenant `name`'s `[[sources]]`, `[[tenants]]` and `[[policies]]`: a scoped token through the
/// simulator's gateway, gatehouse's pace at R per endpoint and (unless `--no-tenant-budget`) R
/// for the tenant.
fn tenant_config(scratch: &Scratch, sim: &SimHandle, name: &str, args: &ReactArgs) -> anyhow::Result<String> {
    let (rate, burst) = (args.rate, args.burst);
    let budget = if args.no_tenant_budget {
        String::new()
    } else {
        format!("tenant_per_second = {rate}\ntenant_burst = {burst}\n")
    };
    Ok(format!(
        r#"
[[sources]]
name = "relay-{name}"
scheme = "standard-webhooks"
tenant = "{name}"
secrets = [{{ id = "bench", value = "{relay}" }}]

[[tenants]]
name = "{name}"
gateway_base_url = "{gateway}"
auth = {{ kind = "basic", email = "bot@{name}.example", token = "{token}", cloud_id = "{name}-cloud" }}
[tenants.rate_limit]
{budget}reads_per_second = {rate}
writes_per_second = {rate}
burst = {burst}

[[policies]]
name = "leaver-{name}"
tenants = ["{name}"]
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
"#,
        relay = scratch.secret(&format!("relay-{name}"), WHSEC)?,
        token = scratch.secret(&format!("api-token-{name}"), &format!("{name}-api-token"))?,
        gateway = sim.api_base_url(),
    ))
}

/// Memberships left on tenant `name`'s site.
fn memberships_left(sim: &SimHandle, name: &str) -> anyhow::Result<usize> {
    let view = sim
        .tenant(&format!("{name}-cloud"))
        .ok_or_else(|| anyhow::anyhow!("the simulator has no tenant {name}"))?;
    Ok(view.state().groups.iter().map(|g| g.members.len()).sum())
}

/// Tenant `name`'s calls, as its world logged them.
fn requests_of(sim: &SimHandle, name: &str) -> anyhow::Result<Vec<LoggedRequest>> {
    let view = sim
        .tenant(&format!("{name}-cloud"))
        .ok_or_else(|| anyhow::anyhow!("the simulator has no tenant {name}"))?;
    Ok(view.requests())
}

/// One measured (unthrottled) tenant.
#[derive(Debug)]
struct Measured {
    name: String,
    memberships: usize,
    converged: Duration,
    first_call_after: Option<Duration>,
    requests: usize,
    answered_2xx: usize,
    per_second: f64,
    throttled: usize,
    failed: usize,
    postponed: f64,
}

pub async fn run(common: &Common, args: &ReactArgs, results: &mut Results) -> anyhow::Result<()> {
    args.check()?;
    let names: Vec<String> = (0..args.tenants).map(tenant_name).collect();
    let memberships = args.users * args.groups;
    for backend in common.backend.backends() {
        let accounts =
            |name: &str| -> Vec<String> { (0..args.users).map(|i| format!("{name}-u-{i:05}")).collect() };
        let measured_limit = BurstPolicy {
            capacity: args.burst,
            per_second: args.rate,
            retry_after_seconds: args.retry_after,
            near_limit: true,
        };
        let worlds = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let limit = if i == 0 { THROTTLE } else { measured_limit.clone() };
                let policy = Behaviour {
                    v1_max_limit: 200,
                    tenant: Some(limit),
                    ..Behaviour::default()
                };
                (site(name, &accounts(name), args.groups), policy)
            })
            .collect();
        let sim = Simulator::start_tenants(worlds).await?;
        let scratch = Scratch::new("react-tenants")?;
        let mut extra = String::new();
        for name in &names {
            extra.push_str(&tenant_config(&scratch, &sim, name, args)?);
        }
        let running = Running::start_with(
            common,
            &scratch,
            "serve",
            backend,
            &format!("shutdown_grace_seconds = {SHUTDOWN_GRACE_SECONDS}"),
            &extra,
        )
        .await?;
        let per_tenant_slots = ::gatehouse::config::WorkerSettings {
            concurrency: CONCURRENCY,
            ..Default::default()
        }
        .effective_tenant_concurrency(names.len());

        // a's deactivations first, then each other tenant's; each measured from its first send.
        let started = Instant::now();
        let mut sent_at = Vec::new();
        for name in &names {
            sent_at.push((Instant::now(), chrono::Utc::now().timestamp_millis()));
            deactivate_via(&running, &format!("relay-{name}"), &accounts(name), 32).await?;
        }
        let sending = started.elapsed();
        let measured = &names[1..];
        let deadline =
            Duration::from_secs_f64((memberships * measured.len()) as f64 / args.rate * 3.0 + 60.0);
        let mut converged: Vec<Option<Duration>> = vec![None; names.len()];
        loop {
            for (i, name) in names.iter().enumerate().skip(1) {
                if converged[i].is_none() && memberships_left(&sim, name)? == 0 {
                    converged[i] = Some(sent_at[i].0.elapsed());
                }
            }
            if converged.iter().skip(1).all(Option::is_some) {
                break;
            }
            if started.elapsed() >= deadline {
                let left: Vec<String> = measured
                    .iter()
                    .map(|name| Ok(format!("{name}: {}", memberships_left(&sim, name)?)))
                    .collect::<anyhow::Result<_>>()?;
                // Still stop gatehouse and clean the broker before failing.
                let _ = running.stop().await;
                sim.stop().await;
                anyhow::bail!(
                    "memberships left after {:?}: {} (the throttled tenant must not hold the others up)",
                    started.elapsed(),
                    left.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all_converged = started.elapsed();

        // Read everything before stopping: the metrics live in the process.
        let metrics = reqwest::get(running.url("/metrics")).await?.text().await?;
        let postponed = |name: &str| {
            metric_sum(
                &metrics,
                "gatehouse_worker_attempts_total",
                &[&format!("tenant=\"{name}\""), "outcome=\"postponed\""],
            )
        };
        let mut rows = Vec::new();
        for (i, name) in measured.iter().enumerate() {
            let i = i + 1;
            let requests = requests_of(&sim, name)?;
            let ok: Vec<&LoggedRequest> = requests
                .iter()
                .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
                .collect();
            let (first, last) = (
                ok.first().map_or(0, |r| r.at_ms),
                ok.last().map_or(0, |r| r.at_ms),
            );
            let window = ((last - first).max(1) as f64) / 1000.0;
            // n calls spread over their first-to-last window make n - 1 intervals.
            let per_second = ok.len().saturating_sub(1) as f64 / window;
            let first_call_after = requests
                .first()
                .map(|r| Duration::from_millis(u64::try_from(r.at_ms - sent_at[i].1).unwrap_or(0)));
            rows.push(Measured {
                name: name.clone(),
                memberships,
                converged: converged[i].unwrap_or_default(),
                first_call_after,
                requests: requests.len(),
                answered_2xx: ok.len(),
                per_second,
                throttled: requests.iter().filter(|r| r.status == Some(429)).count(),
                failed: failures_of(&running, Some(name)).await?.0,
                postponed: postponed(name),
            });
        }
        let a = &names[0];
        let a_requests = requests_of(&sim, a)?;
        let a_throttled = a_requests.iter().filter(|r| r.status == Some(429)).count();
        // How hard gatehouse pressed the throttled tenant: its calls a second while measured.
        let a_per_second = match (a_requests.first(), a_requests.last()) {
            (Some(first), Some(last)) if last.at_ms > first.at_ms => {
                a_requests.len().saturating_sub(1) as f64 / ((last.at_ms - first.at_ms) as f64 / 1000.0)
            }
            _ => 0.0,
        };
        let a_removed = memberships - memberships_left(&sim, a)?;
        let a_failed = failures_of(&running, Some(a)).await?.0;
        let a_postponed = postponed(a);
        let a_attempts: Vec<(String, f64)> = ["ok", "retried", "dead_lettered", "busy", "released"]
            .iter()
            .map(|outcome| {
                let n = metric_sum(
                    &metrics,
                    "gatehouse_worker_attempts_total",
                    &[&format!("tenant=\"{a}\""), &format!("outcome=\"{outcome}\"")],
                );
                ((*outcome).to_owned(), n)
            })
            .filter(|(_, n)| *n > 0.0)
            .collect();
        let (_, dead) = failures_of(&running, None).await?;
        let rss = running.peak_rss_mib();
        let prefix = running.prefix.clone();
        let stopped = running.stop_timed().await?;
        sim.stop().await;
        let left_on_broker = if backend == "rabbitmq" {
            Some(leftover_queues(&common.amqp_url, &prefix).await?)
        } else {
            None
        };

        let budget = if args.no_tenant_budget {
            "no tenant_per_second"
        } else {
            "tenant_per_second = R"
        };
        let mut fields = vec![
            (
                "workload".to_owned(),
                format!(
                    "{} tenants × {} users × {} groups = {memberships} removals each; a's sent first, then {}",
                    names.len(),
                    args.users,
                    args.groups,
                    measured.join(", ")
                ),
            ),
            (
                "limits".to_owned(),
                format!(
                    "a: {THROTTLE_DESCRIBED}; others: sim tenant-wide R = {} req/s (burst {}{}), {budget} each",
                    args.rate,
                    args.burst,
                    args.retry_after
                        .map_or(String::new(), |s| format!(", Retry-After {s}"))
                ),
            ),
            (
                "worker slots".to_owned(),
                format!(
                    "{CONCURRENCY} in all, {per_tenant_slots} per tenant (worker.tenant_concurrency default)"
                ),
            ),
            (
                "sending".to_owned(),
                format!("{:.1} s for all tenants' webhooks", sending.as_secs_f64()),
            ),
        ];
        for row in &rows {
            let n = &row.name;
            fields.push((
                format!("{n} converged in"),
                format!(
                    "{:.1} s from its first webhook (first call {} after it)",
                    row.converged.as_secs_f64(),
                    row.first_call_after
                        .map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
                ),
            ));
            fields.push((
                format!("{n} requests/s"),
                format!(
                    "{:.1} ({:.1} % of its R) over its {} answered requests",
                    row.per_second,
                    row.per_second / args.rate * 100.0,
                    row.answered_2xx
                ),
            ));
            fields.push((
                format!("{n} 429s received"),
                format!(
                    "{} ({:.2} % of {} requests)",
                    row.throttled,
                    row.throttled as f64 / row.requests.max(1) as f64 * 100.0,
                    row.requests
                ),
            ));
            fields.push((format!("{n} failed actions"), row.failed.to_string()));
            fields.push((format!("{n} postponed"), format!("{}", row.postponed)));
        }
        let a_outcomes = if a_attempts.is_empty() {
            "none settled".to_owned()
        } else {
            a_attempts
                .iter()
                .map(|(outcome, n)| format!("{outcome} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        fields.extend([
            (
                "a progress".to_owned(),
                format!(
                    "{a_removed} of {memberships} removals done, {a_throttled} × 429 of {} requests \
                     ({a_per_second:.1} requests/s sent), {a_failed} failed actions",
                    a_requests.len()
                ),
            ),
            (
                "a postponed".to_owned(),
                format!("{a_postponed} (attempts settled: {a_outcomes})"),
            ),
            ("dead letters".to_owned(), dead.to_string()),
            (
                "all converged in".to_owned(),
                format!("{:.1} s from the first webhook", all_converged.as_secs_f64()),
            ),
            ("gatehouse stopped".to_owned(), stopped.describe()),
            (
                "queues left".to_owned(),
                match &left_on_broker {
                    None => "n/a (embedded)".to_owned(),
                    Some(left) if left.is_empty() => "0 (every queue of the run deleted)".to_owned(),
                    Some(left) => format!("{}: {}", left.len(), left.join(", ")),
                },
            ),
            ("peak RSS".to_owned(), format!("{rss:.1} MiB")),
        ]);
        let tenants_json: Vec<Value> = rows
            .iter()
            .map(|row| {
                json!({
                    "tenant": row.name, "removals": row.memberships,
                    "converged_seconds": row.converged.as_secs_f64(),
                    "first_call_after_seconds": row.first_call_after.map(|d| d.as_secs_f64()),
                    "requests": row.requests, "answered_2xx": row.answered_2xx,
                    "per_second": row.per_second, "fraction_of_rate": row.per_second / args.rate,
                    "throttled": row.throttled, "failed_actions": row.failed, "postponed": row.postponed,
                })
            })
            .collect();
        let name = format!("react ({backend}, {} tenants, a throttled)", names.len());
        results.add(
            &name,
            fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect(),
            json!({
                "backend": backend, "tenants": names.len(), "users": args.users, "groups": args.groups,
                "rate": args.rate, "burst": args.burst, "retry_after": args.retry_after,
                "mode": format!("{} tenants, a throttled, {budget}", names.len()),
                "throttle": THROTTLE_DESCRIBED,
                "worker_concurrency": CONCURRENCY, "tenant_concurrency": per_tenant_slots,
                "measured": tenants_json,
                "throttled_tenant": {
                    "tenant": a, "removals_done": a_removed, "removals": memberships,
                    "requests": a_requests.len(), "requests_per_second": a_per_second, "throttled": a_throttled,
                    "failed_actions": a_failed, "postponed": a_postponed,
                },
                "dead_letters": dead, "all_converged_seconds": all_converged.as_secs_f64(),
                "stopped_cleanly": stopped.clean(), "stop_seconds": stopped.took.as_secs_f64(),
                "queues_left": left_on_broker, "peak_rss_mib": rss,
            }),
        );
    }
    Ok(())
}
