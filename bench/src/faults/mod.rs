//! `faults`: reliability as a measured property. Each scenario puts gatehouse under steady signed
//! load (a fresh delivery id per request, each about a fresh leaver), breaks something, lets it
//! heal, and counts from the outside what was sent, acknowledged, queued, acted on, duplicated,
//! repeated and lost; then checks the invariants (lost = 0, actions repeated ≤ calls in flight
//! at a kill or made while the store was gone, the audit chain verifies, `seq` has no gaps, plus
//! the scenario's own). The run exits non-zero when any invariant is broken.
//!
//! It starts its own RabbitMQ node, PostgreSQL cluster and tmpfs ([`services`]) so that it may
//! kill them; the machine's shared services are never touched. `--quick` runs every scenario in
//! a few seconds (CI); the full run is what RELIABILITY.md reports.

mod atlassian;
mod bed;
mod broker;
mod cluster;
pub mod fleet;
mod ledger;
mod load;
mod processes;
mod sender;
pub mod services;
mod store;

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::Common;
use crate::report::Results;
use bed::{Backing, Run, ScenarioOutcome};

#[derive(Debug, Clone, Args)]
pub struct FaultArgs {
    /// A few seconds per scenario (what CI runs); without it, the figures of RELIABILITY.md.
    #[arg(long)]
    pub quick: bool,
    /// Only these scenarios (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Webhooks a second of the steady load.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long the tenant's quota stays exhausted in the Atlassian scenario (default: 10
    /// minutes, 8 s with --quick).
    #[arg(long)]
    pub quota_seconds: Option<u64>,
    /// A PostgreSQL server where scenarios that share the embedded queue between processes
    /// create a database of their own (and drop it); the server itself is never stopped.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        env = "GATEHOUSE_TEST_PG_URL"
    )]
    pub pg_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// RabbitMQ killed -9 and restarted.
    BrokerKill,
    /// A three-node RabbitMQ cluster, two ingress and three worker processes: the node leading
    /// the queues killed -9 and restarted.
    Cluster,
    /// RabbitMQ frozen with SIGSTOP, then SIGCONT.
    BrokerFreeze,
    /// A RabbitMQ memory alarm blocking publishers.
    BrokerAlarm,
    /// gatehouse's ingress and worker killed -9 mid-plan (both backends).
    GatehouseKill,
    /// One of three workers killed -9 mid-plan and left dead: the others take over (RabbitMQ,
    /// and the embedded queue on PostgreSQL).
    WorkerTakeover,
    /// PostgreSQL stopped and started (embedded backend).
    PostgresDown,
    /// SQLite on a full disk (embedded backend).
    FullDisk,
    /// Atlassian's faults from the simulator, then a replay of the dead letters.
    Atlassian,
    /// Clock skew on the sender and duplicate storms.
    Sender,
}

impl Scenario {
    fn needs_broker(self) -> bool {
        matches!(
            self,
            Scenario::BrokerKill
                | Scenario::BrokerFreeze
                | Scenario::BrokerAlarm
                | Scenario::GatehouseKill
                | Scenario::WorkerTakeover
        )
    }
}

pub async fn run(common: &Common, args: &FaultArgs, results: &mut Results) -> anyhow::Result<()> {
    let scenarios = if args.scenario.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenario.clone()
    };
    let binary = crate::harness::gatehouse_binary(common)?;
    anyhow::ensure!(
        binary.exists(),
        "no gatehouse binary at {} (build it, or pass --gatehouse)",
        binary.display()
    );
    let run = Run {
        binary,
        quick: args.quick,
        rate: args.rate.unwrap_or(if args.quick { 25.0 } else { 50.0 }),
    };
    let quota_for = Duration::from_secs(args.quota_seconds.unwrap_or(if args.quick { 8 } else { 600 }));
    let mut broker = if scenarios.iter().any(|s| s.needs_broker()) {
        eprintln!("starting a RabbitMQ node of the suite's own");
        Some(services::OwnBroker::start().await?)
    } else {
        None
    };
    // The embedded backend never connects to it; the config still names a URL.
    let amqp_url = broker
        .as_ref()
        .map_or_else(|| common.amqp_url.clone(), services::OwnBroker::amqp_url);
    let embedded = Backing {
        backend: "embedded",
        amqp_url: amqp_url.clone(),
        store_url: None,
        quorum_initial_group_size: None,
    };
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        let started = Instant::now();
        eprintln!("scenario {scenario:?}…");
        let mut ran = Vec::new();
        match (scenario, broker.as_mut()) {
            (Scenario::BrokerKill, Some(broker)) => ran.push(broker::kill(&run, broker).await),
            (Scenario::Cluster, _) => {
                eprintln!("starting a RabbitMQ cluster of the suite's own (3 nodes)");
                let mut nodes = services::OwnCluster::start(3).await?;
                ran.push(cluster::leader_killed(&run, &mut nodes).await);
                nodes.stop().await;
            }
            (Scenario::BrokerFreeze, Some(broker)) => ran.push(broker::freeze(&run, broker).await),
            (Scenario::BrokerAlarm, Some(broker)) => ran.push(broker::memory_alarm(&run, broker).await),
            (Scenario::GatehouseKill, Some(broker)) => {
                let rabbitmq = own_broker(broker);
                ran.push(processes::kill_gatehouse(&run, &rabbitmq).await);
                ran.push(processes::kill_gatehouse(&run, &embedded).await);
            }
            (Scenario::WorkerTakeover, Some(broker)) => {
                let rabbitmq = own_broker(broker);
                ran.push(processes::worker_taken_over(&run, &rabbitmq).await);
                // Several processes share the embedded queue on PostgreSQL, as they would.
                let database = crate::harness::PgDatabase::create(&args.pg_url).await?;
                let on_postgres = Backing {
                    store_url: Some(database.url.clone()),
                    ..embedded.clone()
                };
                ran.push(processes::worker_taken_over(&run, &on_postgres).await);
                database.drop_now().await;
            }
            (Scenario::PostgresDown, _) => ran.push(store::postgres_down(&run, &amqp_url).await),
            (Scenario::FullDisk, _) => ran.push(store::sqlite_full_disk(&run, &amqp_url).await),
            (Scenario::Atlassian, _) => ran.push(atlassian::faults(&run, &embedded, quota_for).await),
            (Scenario::Sender, _) => ran.push(sender::skew_and_duplicates(&run, &embedded).await),
            (_, None) => anyhow::bail!("{scenario:?} needs the suite's RabbitMQ node"),
        }
        for outcome in ran {
            let outcome = outcome.map_err(|e| e.context(format!("scenario {scenario:?}")))?;
            eprintln!(
                "  {} ({}): {} in {:.0} s",
                outcome.scenario,
                outcome.backend,
                if outcome.held() { "held" } else { "BROKEN" },
                started.elapsed().as_secs_f64()
            );
            outcomes.push(outcome);
        }
    }
    if let Some(broker) = broker {
        broker.stop().await;
    }
    report(&outcomes, results);
    let broken: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.checks
                .iter()
                .filter(|c| !c.held)
                .map(move |c| format!("{} ({}): {} — {}", o.scenario, o.backend, c.name, c.detail))
        })
        .collect();
    if !broken.is_empty() {
        // The figures of a broken run are kept too: they are what to look at.
        results.print();
        results.write(&common.out)?;
        anyhow::bail!("invariants broken:\n  {}", broken.join("\n  "));
    }
    Ok(())
}

/// The fleet on the suite's own RabbitMQ node.
fn own_broker(broker: &services::OwnBroker) -> Backing {
    Backing {
        backend: "rabbitmq",
        amqp_url: broker.amqp_url(),
        store_url: None,
        quorum_initial_group_size: None,
    }
}

fn report(outcomes: &[ScenarioOutcome], results: &mut Results) {
    for outcome in outcomes {
        let c = &outcome.counts;
        let mut rows = vec![
            (
                "sent / 202 / 5xx",
                format!("{} / {} / {}", c.sent, c.accepted, c.unavailable),
            ),
            ("4xx / unanswered", format!("{} / {}", c.refused, c.no_answer)),
            (
                "queued / acted / dead-lettered",
                format!("{} / {} / {}", c.queued, c.acted, c.dead_lettered),
            ),
            ("duplicates absorbed", c.duplicates_absorbed.to_string()),
            (
                "actions repeated (in flight at faults)",
                format!("{} ({})", c.actions_repeated, c.in_flight_at_faults),
            ),
            ("lost", c.lost.to_string()),
            (
                "slowest answer / 5xx",
                format!("{} ms / {} ms", c.slowest_ms, c.slowest_unavailable_ms),
            ),
        ];
        for note in &outcome.notes {
            rows.push(("note", note.clone()));
        }
        for check in &outcome.checks {
            rows.push((
                if check.held { "held" } else { "BROKEN" },
                format!("{}: {}", check.name, check.detail),
            ));
        }
        results.add(
            &format!("faults: {} ({})", outcome.scenario, outcome.backend),
            rows,
            ledger::to_json(
                outcome.scenario,
                outcome.backend,
                c,
                &outcome.checks,
                &outcome.notes,
            ),
        );
    }
}
