//! `gatehouse-sim`: run the Atlassian simulator on a port, seeded from a file, until Ctrl-C.
//!
//! ```sh
//! cargo run -p gatehouse-sim -- --seed sim/seeds/demo.json --listen 127.0.0.1:8081
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gatehouse_sim::{Policy, Seed, Simulator};

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse-sim",
    version,
    about = "A stateful Atlassian Cloud simulator"
)]
struct Args {
    /// The starting state (JSON, or TOML when the name ends in .toml); empty when absent.
    #[arg(long, env = "GATEHOUSE_SIM_SEED")]
    seed: Option<PathBuf>,
    /// Where to listen.
    #[arg(long, env = "GATEHOUSE_SIM_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Behaviour knobs (JSON, see `Policy`); the defaults when absent. Change them at run time
    /// with `PUT /_sim/policy`.
    #[arg(long)]
    policy: Option<PathBuf>,
}

fn load_policy(path: &PathBuf) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a valid policy: {e}", path.display()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let seed = match &args.seed {
        Some(path) => match Seed::load(path) {
            Ok(seed) => seed,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
        None => Seed::default(),
    };
    let policy = match &args.policy {
        Some(path) => match load_policy(path) {
            Ok(policy) => policy,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
        None => Policy::default(),
    };
    let sim = match Simulator::serve(args.listen, seed, policy).await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("gatehouse-sim listening on http://{}", sim.addr());
    println!("  confluence (site):    {}", sim.site_base_url());
    println!(
        "  confluence (gateway): {}/ex/confluence/{}/wiki",
        sim.api_base_url(),
        sim.cloud_id()
    );
    println!("  scim:                 {}", sim.scim_base_url());
    println!(
        "  org events:           {}/admin/v1/orgs/{}/events-stream",
        sim.api_base_url(),
        sim.org_id()
    );
    println!("  oauth token:          {}", sim.token_url());
    println!(
        "  state, request log:   {}/_sim/state, /_sim/requests",
        sim.api_base_url()
    );
    let _ = tokio::signal::ctrl_c().await;
    sim.stop().await;
    ExitCode::SUCCESS
}
