//! `gatehouse-bench`: performance claims, measured side by side in one run.
//!
//! - `ingest`: signed webhooks against a running gatehouse ingress, and, in the same run, the
//!   least a relay can do (on RabbitMQ: [`relay`], HMAC check and confirmed publish, nothing
//!   else) and the raw ceiling of the queue underneath (confirmed publishes of the same bodies,
//!   same queue type, same number in flight); the ratios say what gatehouse costs.
//! - `react`: every user deactivated at once against a simulator with a burst limit of R requests
//!   a second: time to converge, calls a second as a fraction of R, 429s received, failed actions.
//!   With `--tenants 2 --throttle-one`, one gatehouse serves two tenants, one throttled hard:
//!   whether the other still gets its own R.
//! - `e2e`: from a webhook's 202 to the last audit record of its plan, at a fixed rate.
//! - `audit`: the audit trail's append cost and `verify` speed.
//! - `faults`: reliability under faults, counted (see [`faults`]; RELIABILITY.md).
//! - `parse`: the memory and time of reading a hostile 1 MiB body, next to building a
//!   `serde_json::Value` of it.
//!
//! Each runs gatehouse as a child process (the release binary next to this one), so its peak RSS
//! is its own. Results print as a table and are written as JSON (`--out`).

mod audit;
mod e2e;
mod faults;
mod harness;
mod ingest;
mod load;
mod parse;
mod react;
mod react_tenants;
mod relay;
mod report;
mod scale;
mod stats;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "gatehouse-bench", about = "Measure gatehouse against its ceilings")]
struct BenchCli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Measurement,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The gatehouse binary to run (default: next to this one).
    #[arg(long, global = true)]
    gatehouse: Option<PathBuf>,
    /// RabbitMQ for the `rabbitmq` backend and the raw ceiling.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_BENCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Which queue backends to measure.
    #[arg(long, global = true, value_enum, default_value = "both")]
    backend: BackendChoice,
    /// Where the JSON results go.
    #[arg(long, global = true, default_value = "bench-results.json")]
    out: PathBuf,
    /// gatehouse's `log.level` in the processes `ingest`, `react` and `e2e` start (`scale` and
    /// the fault suite run theirs at `warn`). `warn` by default, which leaves out the delivery's
    /// span that gatehouse's own default (`info`) keeps: `--log-level info` measures the default
    /// configuration.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Rabbitmq,
    Embedded,
    Both,
}

impl BackendChoice {
    pub fn backends(self) -> Vec<&'static str> {
        match self {
            BackendChoice::Rabbitmq => vec!["rabbitmq"],
            BackendChoice::Embedded => vec!["embedded"],
            BackendChoice::Both => vec!["rabbitmq", "embedded"],
        }
    }
}

#[derive(Debug, Subcommand)]
enum Measurement {
    Ingest(ingest::IngestArgs),
    React(react::ReactArgs),
    E2e(e2e::E2eArgs),
    Audit(audit::AuditBenchArgs),
    Parse(parse::ParseArgs),
    /// Scaling out: reactions with 1, 2 and 4 worker processes (below and at the tenant's
    /// limit), ingest with 1 and 2 ingress processes on a cluster (`--cluster`).
    Scale(scale::ScaleArgs),
    /// Faults with counted outcomes: brokers, stores and gatehouse killed, Atlassian failing,
    /// senders misbehaving; exits non-zero when an invariant breaks.
    Faults(faults::FaultArgs),
    /// One parse, in this process (what `parse` runs in a child for each measurement).
    #[command(hide = true)]
    ParseProbe {
        #[arg(long)]
        reader: parse::Reader,
        #[arg(long)]
        shape: parse::Shape,
        #[arg(long)]
        body_bytes: usize,
    },
    /// The minimal relay `ingest` measures gatehouse against (run by `ingest` as a child).
    #[command(hide = true)]
    Relay(relay::RelayArgs),
    /// All of them with their defaults.
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ::gatehouse::app::install_crypto_provider();
    let cli = BenchCli::parse();
    let common = cli.common;
    let mut results = report::Results::default();
    match cli.command {
        Measurement::Ingest(args) => ingest::run(&common, &args, &mut results).await?,
        Measurement::React(args) if args.throttle_one => {
            react_tenants::run(&common, &args, &mut results).await?
        }
        Measurement::React(args) => react::run(&common, &args, &mut results).await?,
        Measurement::E2e(args) => e2e::run(&common, &args, &mut results).await?,
        Measurement::Audit(args) => audit::run(&args, &mut results).await?,
        Measurement::Parse(args) => parse::run(&args, &mut results)?,
        Measurement::Relay(args) => return relay::serve(args).await,
        Measurement::Faults(args) => faults::run(&common, &args, &mut results).await?,
        Measurement::Scale(args) => scale::run(&common, &args, &mut results).await?,
        Measurement::ParseProbe {
            reader,
            shape,
            body_bytes,
        } => return parse::probe(reader, shape, body_bytes),
        Measurement::All => {
            ingest::run(&common, &ingest::IngestArgs::default(), &mut results).await?;
            react::run(&common, &react::ReactArgs::default(), &mut results).await?;
            e2e::run(&common, &e2e::E2eArgs::default(), &mut results).await?;
            audit::run(&audit::AuditBenchArgs::default(), &mut results).await?;
            parse::run(&parse::ParseArgs::default(), &mut results)?;
        }
    }
    results.print();
    results.write(&common.out)?;
    eprintln!("results written to {}", common.out.display());
    Ok(())
}
