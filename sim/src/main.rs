//! `gatehouse-sim`: run the Atlassian simulator on a port, seeded from files, until Ctrl-C.
//! Each `--seed` is one tenant (site, org and SCIM directory); the first is also served on the
//! one-tenant paths (`/wiki`, `/_sim` without `?tenant=`).
//!
//! ```sh
//! cargo run -p gatehouse-sim -- --seed sim/seeds/demo.json --listen 127.0.0.1:8081
//! cargo run -p gatehouse-sim -- --seed site-a.json --seed site-b.toml
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gatehouse_sim::{Behaviour, Seed, Simulator};

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse-sim",
    version,
    about = "A stateful Atlassian Cloud simulator"
)]
struct Args {
    /// A tenant's starting state (JSON, or TOML when the name ends in .toml). Repeat it for
    /// several tenants, each with its own cloud id, org id, directory id and credentials; one
    /// empty tenant when absent.
    #[arg(long, env = "GATEHOUSE_SIM_SEED")]
    seed: Vec<PathBuf>,
    /// Where to listen.
    #[arg(long, env = "GATEHOUSE_SIM_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Behaviour knobs (JSON, see `Behaviour`) every tenant starts with; the defaults when absent.
    /// Change them at run time with `PUT /_sim/policy?tenant={cloudId}`.
    #[arg(long)]
    policy: Option<PathBuf>,
}

fn load_policy(path: &PathBuf) -> Result<Behaviour, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a valid policy: {e}", path.display()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut seeds = Vec::new();
    for path in &args.seed {
        match Seed::load(path) {
            Ok(seed) => seeds.push(seed),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        }
    }
    if seeds.is_empty() {
        seeds.push(Seed::default());
    }
    let policy = match &args.policy {
        Some(path) => match load_policy(path) {
            Ok(policy) => policy,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
        None => Behaviour::default(),
    };
    let tenants = seeds.into_iter().map(|seed| (seed, policy.clone())).collect();
    let sim = match Simulator::serve_tenants(args.listen, tenants).await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "gatehouse-sim listening on http://{} with {} tenant(s)",
        sim.addr(),
        sim.tenant_count()
    );
    println!("  confluence (site of the first tenant): {}", sim.site_base_url());
    println!("  oauth token:          {}", sim.token_url());
    println!(
        "  state, request log:   {}/_sim/state, /_sim/requests (?tenant={{cloudId}} for another tenant)",
        sim.api_base_url()
    );
    for tenant in (0..sim.tenant_count()).filter_map(|index| sim.tenant_at(index)) {
        println!(
            "tenant: cloud id {}, org id {}",
            tenant.cloud_id(),
            tenant.org_id()
        );
        println!("  confluence (site):    {}", tenant.site_base_url());
        println!("  confluence (gateway): {}", tenant.gateway_base_url());
        println!("  scim:                 {}", tenant.scim_base_url());
        println!(
            "  org events:           {}/admin/v1/orgs/{}/events-stream",
            sim.api_base_url(),
            tenant.org_id()
        );
    }
    let _ = tokio::signal::ctrl_c().await;
    sim.stop().await;
    ExitCode::SUCCESS
}
