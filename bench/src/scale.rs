//! `scale`: how gatehouse scales out across processes sharing one queue and one PostgreSQL
//! store.
//!
//! 1. **Reactions** with 1, 2 and 4 worker processes (a fixed concurrency each) against a
//!    simulated tenant whose every call takes `--latency-ms`: first with a rate limit far above
//!    what they can reach (throughput should grow with the processes), then with a tenant-wide
//!    limit below it (`--limit`), told to gatehouse as `tenant_per_second`: the processes split
//!    it (each takes 1/N, counted through leases in the store), so together they reach it and
//!    are refused nothing (429s = 0).
//! 2. **Ingest** with 1 and 2 `gatehouse ingress` processes behind a round robin, on a
//!    three-node RabbitMQ cluster of the bench's own (`--cluster`), with the CPU per message of
//!    the ingresses and of the cluster.
//!
//! Each round runs on a fresh simulator, database and queue prefix, and removes them after.

use std::time::{Duration, Instant};

use clap::Args;
use gatehouse_sim::{Behaviour, BurstPolicy, Fault, Seed, SeedGroup, Simulator};
use serde_json::json;

use crate::Common;
use crate::faults::fleet::{Fleet, FleetConfig};
use crate::faults::services::OwnCluster;
use crate::harness::{PgDatabase, Scratch, cpu_of, own_cpu};
use crate::load::Load;
use crate::react::{config_with, converge, deactivate_via_urls, inactive_users};
use crate::report::Results;
use crate::stats::percentiles;

#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Worker process counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Events each worker process handles at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Leavers deactivated per round (each in `--groups` groups).
    #[arg(long, default_value_t = 160)]
    pub users: usize,
    #[arg(long, default_value_t = 3)]
    pub groups: usize,
    /// How long every simulated Atlassian call takes.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// The tenant-wide limit of the rate-limited rounds, requests a second (every endpoint).
    #[arg(long, default_value_t = 60.0)]
    pub limit: f64,
    /// The simulated tenant's burst at that limit (gatehouse is told half of it: on a shared
    /// 2-core machine the simulator's own stalls bunch requests up).
    #[arg(long, default_value_t = 10)]
    pub limit_burst: u32,
    /// PostgreSQL server for the shared store (a database is created per round and dropped).
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        env = "GATEHOUSE_TEST_PG_URL"
    )]
    pub pg_url: String,
    /// Also measure ingest with 1 and 2 ingress processes on a 3-node cluster of the bench's
    /// own (about a minute more).
    #[arg(long)]
    pub cluster: bool,
    /// Webhooks per ingest round.
    #[arg(long, default_value_t = 10_000)]
    pub requests: usize,
}

/// What one reactions round measured.
struct Round {
    workers: usize,
    limited: bool,
    removals: usize,
    /// Removals a second over the middle 80 % of them (the steady state).
    removals_per_second: f64,
    /// Every answered call a second over the same window.
    calls_per_second: f64,
    throttled: usize,
    /// When each 429 came, in ms after the first call (ramp-up, or the steady state?).
    throttled_at_ms: Vec<i64>,
    seconds: f64,
}

async fn reactions_round(
    common: &Common,
    args: &ScaleArgs,
    workers: usize,
    limited: bool,
) -> anyhow::Result<Round> {
    let binary = crate::harness::gatehouse_binary(common)?;
    let tag = &ulid::Ulid::generate().to_string()[20..];
    let accounts: Vec<String> = (0..args.users).map(|i| format!("leaver-{tag}-{i:05}")).collect();
    let groups = (0..args.groups)
        .map(|g| SeedGroup::new(format!("g-{g}"), format!("team-{g}"), accounts.clone()))
        .collect();
    let behaviour = Behaviour {
        v1_max_limit: 200,
        tenant: limited.then_some(BurstPolicy {
            capacity: args.limit_burst,
            per_second: args.limit,
            retry_after_seconds: None,
            near_limit: true,
        }),
        ..Behaviour::default()
    };
    let sim = Simulator::start(
        Seed {
            users: inactive_users(&accounts),
            groups,
            ..Seed::default()
        },
        behaviour,
    )
    .await?;
    let tenant = sim
        .tenant_at(0)
        .ok_or_else(|| anyhow::anyhow!("the simulator has no tenant"))?;
    tenant.add_fault(Fault {
        times: None,
        ..Fault::delay("/rest/", args.latency_ms, 0)
    });
    let scratch = Scratch::new("scale")?;
    let database = PgDatabase::create(&args.pg_url).await?;
    // gatehouse's own pace: far above what the processes reach, or the tenant's limit (split).
    let (pace, budget) = if limited {
        (args.limit, Some(args.limit))
    } else {
        (10_000.0, None)
    };
    let mut fleet = Fleet::configure(
        binary,
        &scratch,
        &FleetConfig {
            backend: "rabbitmq",
            amqp_url: common.amqp_url.clone(),
            store_url: database.url.clone(),
            sections: config_with(&scratch, &sim, pace, (args.limit_burst / 2).max(1), budget)?,
            publish_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            quorum_initial_group_size: None,
            worker_concurrency: args.concurrency,
        },
    )?;
    let measured = async {
        fleet.start("ingress").await?;
        for _ in 0..workers {
            fleet.start("worker").await?;
        }
        // Each process counts the others when it renews its share (every 5 s): start measuring
        // once every share is known.
        tokio::time::sleep(Duration::from_secs(if limited { 6 } else { 1 })).await;
        let started = Instant::now();
        deactivate_via_urls(&fleet.ingress_urls("/webhooks/relay"), &accounts, 32).await?;
        let memberships = args.users * args.groups;
        let deadline =
            Duration::from_secs_f64(memberships as f64 * 4.0 / args.limit.min(20.0 * workers as f64) + 60.0);
        converge(&sim, started, deadline).await
    }
    .await;
    let fleet = fleet.stop().await;
    fleet.forget().await;
    database.drop_now().await;
    let seconds = measured?.as_secs_f64();
    let requests = sim.requests();
    sim.stop().await;
    let removals: Vec<i64> = requests
        .iter()
        .filter(|r| r.method == "DELETE" && r.status == Some(204))
        .map(|r| r.at_ms)
        .collect();
    let answered: Vec<i64> = requests
        .iter()
        .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
        .map(|r| r.at_ms)
        .collect();
    let (from, to) = steady_window(&removals);
    let window = ((to - from).max(1) as f64) / 1000.0;
    let within = |times: &[i64]| times.iter().filter(|&&t| t >= from && t <= to).count();
    Ok(Round {
        workers,
        limited,
        removals: removals.len(),
        removals_per_second: within(&removals).saturating_sub(1) as f64 / window,
        calls_per_second: within(&answered).saturating_sub(1) as f64 / window,
        throttled: requests.iter().filter(|r| r.status == Some(429)).count(),
        throttled_at_ms: requests
            .iter()
            .filter(|r| r.status == Some(429))
            .map(|r| r.at_ms - requests.first().map_or(0, |first| first.at_ms))
            .collect(),
        seconds,
    })
}

/// The times of the 10th and the 90th percentile of `times` (sorted): the steady state, without
/// the ramp up and the tail.
fn steady_window(times: &[i64]) -> (i64, i64) {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| {
        sorted
            .get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    (at(0.1), at(0.9))
}

/// One ingest round: `ingresses` processes on the cluster, the bodies sent round robin.
async fn ingest_round(
    common: &Common,
    args: &ScaleArgs,
    cluster: &OwnCluster,
    ingresses: usize,
) -> anyhow::Result<serde_json::Value> {
    let binary = crate::harness::gatehouse_binary(common)?;
    let scratch = Scratch::new("scale-ingest")?;
    let database = PgDatabase::create(&args.pg_url).await?;
    let sim = Simulator::start(Seed::default(), Behaviour::default()).await?;
    let sections = format!(
        "{}\n{}",
        crate::ingest::source(&scratch)?,
        config_with(&scratch, &sim, 100.0, 10, None)?
    );
    let mut fleet = Fleet::configure(
        binary,
        &scratch,
        &FleetConfig {
            backend: "rabbitmq",
            amqp_url: cluster.amqp_urls(),
            store_url: database.url.clone(),
            sections,
            publish_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            quorum_initial_group_size: u16::try_from(cluster.nodes.len()).ok(),
            worker_concurrency: 2,
        },
    )?;
    let measured = async {
        for _ in 0..ingresses {
            fleet.start("ingress").await?;
        }
        let urls = fleet.ingress_urls(crate::ingest::WEBHOOK_PATH);
        let warmup: Vec<Vec<u8>> = (0..200).map(|i| crate::ingest::body(5_000_000 + i, 2_048)).collect();
        Load::prepare(crate::ingest::SECRET, &warmup)?.drive(&urls, 64).await?;
        let bodies: Vec<Vec<u8>> = (0..args.requests).map(|i| crate::ingest::body(i, 2_048)).collect();
        let load = Load::prepare(crate::ingest::SECRET, &bodies)?;
        let pids = fleet.pids("ingress");
        let brokers: Vec<u32> = cluster.nodes.iter().filter_map(|n| n.beam_pid()).collect();
        let cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_of(p)).sum::<Duration>();
        let before = (cpu(&pids), cpu(&brokers), own_cpu());
        let driven = load.drive(&urls, 64).await?;
        let per_message = |spent: Duration| spent.as_secs_f64() * 1e6 / args.requests.max(1) as f64;
        let gatehouse_us = per_message(cpu(&pids).saturating_sub(before.0));
        let cluster_us = per_message(cpu(&brokers).saturating_sub(before.1));
        let driver_us = per_message(own_cpu().saturating_sub(before.2));
        let accepted_per_second = driven.accepted_per_second();
        let mut latencies = driven.latencies;
        let p = percentiles(&mut latencies);
        anyhow::Ok(json!({
            "ingresses": ingresses,
            "accepted_per_second": accepted_per_second,
            "not_accepted": driven.failures,
            "latency": p,
            "cpu_us_per_message": {"ingresses": gatehouse_us, "cluster": cluster_us, "load_generator": driver_us},
        }))
    }
    .await;
    let fleet = fleet.stop().await;
    fleet.forget().await;
    database.drop_now().await;
    sim.stop().await;
    measured
}

pub async fn run(common: &Common, args: &ScaleArgs, results: &mut Results) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.workers.is_empty() && args.workers.iter().all(|&w| (1..=16).contains(&w)),
        "--workers takes counts between 1 and 16"
    );
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.limit.is_finite() && args.limit > 0.0,
        "--limit must be a positive number of requests a second"
    );
    anyhow::ensure!(args.limit_burst >= 1, "--limit-burst must be at least 1");
    let mut rounds = Vec::new();
    for limited in [false, true] {
        for &workers in &args.workers {
            eprintln!(
                "scale: {workers} worker process(es), {}",
                if limited {
                    "tenant limit"
                } else {
                    "no limit in reach"
                }
            );
            rounds.push(reactions_round(common, args, workers, limited).await?);
        }
    }
    for limited in [false, true] {
        let of_kind: Vec<&Round> = rounds.iter().filter(|r| r.limited == limited).collect();
        let base = of_kind
            .first()
            .map_or(1.0, |r| r.removals_per_second.max(f64::MIN_POSITIVE));
        let mut rows = vec![(
            "setup",
            format!(
                "{} leavers × {} groups, every call {} ms, {} events at once per process{}",
                args.users,
                args.groups,
                args.latency_ms,
                args.concurrency,
                if limited {
                    format!(
                        "; tenant limit {:.0} requests/s (burst {}; gatehouse told {}), split between the processes",
                        args.limit,
                        args.limit_burst,
                        (args.limit_burst / 2).max(1)
                    )
                } else {
                    String::new()
                }
            ),
        )];
        let mut json_rounds = Vec::new();
        for round in &of_kind {
            rows.push((
                if round.workers == 1 { "1 worker" } else { "workers" },
                format!(
                    "{} process(es): {:.1} removals/s ({:.2}× one), {:.1} calls/s, 429s {}, {} removals in {:.1} s",
                    round.workers,
                    round.removals_per_second,
                    round.removals_per_second / base,
                    round.calls_per_second,
                    round.throttled,
                    round.removals,
                    round.seconds
                ),
            ));
            json_rounds.push(json!({
                "workers": round.workers, "removals": round.removals,
                "removals_per_second": round.removals_per_second, "speedup": round.removals_per_second / base,
                "calls_per_second": round.calls_per_second, "throttled": round.throttled,
                "throttled_at_ms": round.throttled_at_ms, "seconds": round.seconds,
            }));
        }
        results.add(
            if limited {
                "scale: reactions at the tenant's limit"
            } else {
                "scale: reactions below the tenant's limit"
            },
            rows,
            json!({
                "users": args.users, "groups": args.groups, "latency_ms": args.latency_ms,
                "concurrency_per_process": args.concurrency, "limit": limited.then_some(args.limit),
                "rounds": json_rounds,
            }),
        );
    }
    if args.cluster {
        eprintln!("scale: starting a 3-node RabbitMQ cluster for the ingest rounds");
        let cluster = OwnCluster::start(3).await?;
        let mut ingest = Vec::new();
        for ingresses in [1, 2] {
            match ingest_round(common, args, &cluster, ingresses).await {
                Ok(round) => ingest.push(round),
                Err(error) => {
                    cluster.stop().await;
                    return Err(error);
                }
            }
        }
        cluster.stop().await;
        let mut rows = vec![(
            "setup",
            format!(
                "{} × 2 KiB webhooks at 64 in flight, round robin over the ingresses, 3-node cluster, quorum queues on 3 nodes",
                args.requests
            ),
        )];
        for round in &ingest {
            let cpu = &round["cpu_us_per_message"];
            rows.push((
                "ingresses",
                format!(
                    "{}: {:.0} accepted/s, p99 {:.1} ms, {} not accepted; CPU per message: ingresses {:.0} µs, cluster {:.0} µs, load generator {:.0} µs",
                    round["ingresses"],
                    round["accepted_per_second"].as_f64().unwrap_or(0.0),
                    round["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
                    round["not_accepted"],
                    cpu["ingresses"].as_f64().unwrap_or(0.0),
                    cpu["cluster"].as_f64().unwrap_or(0.0),
                    cpu["load_generator"].as_f64().unwrap_or(0.0),
                ),
            ));
        }
        results.add(
            "scale: ingest on a 3-node cluster",
            rows,
            json!({"requests": args.requests, "rounds": ingest}),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::steady_window;

    #[test]
    fn the_steady_window_leaves_out_the_ramp_and_the_tail() {
        let times: Vec<i64> = (0..=100).collect();
        assert_eq!(steady_window(&times), (10, 90));
        assert_eq!(steady_window(&[]), (0, 0));
    }
}
