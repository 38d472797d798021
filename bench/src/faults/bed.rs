//! A scenario's test bed: a simulated site where every account is a leaver in a few groups, a
//! gatehouse fleet in front of it, and the steps every scenario ends with (settle, count, check,
//! tear down).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_sim::{Behaviour, Seed, SeedGroup, SimHandle, Simulator};

use super::fleet::{Fleet, FleetConfig};
use super::ledger::{self, Check, Counts};
use super::load::{Load, LoadTally, Sending};
use crate::harness::Scratch;
use crate::react::inactive_users;

/// Groups each leaver is in: three removals per event.
pub const GROUPS: usize = 3;

/// How long settling may go without one more acknowledged event acted on (or dead-lettered)
/// before the rest count as lost.
pub const SETTLE: Duration = Duration::from_secs(90);

/// What the run was asked for.
#[derive(Debug, Clone)]
pub struct Run {
    pub binary: PathBuf,
    pub quick: bool,
    /// Webhooks a second.
    pub rate: f64,
}

impl Run {
    /// `quick` seconds in quick mode, `full` otherwise.
    pub fn secs(&self, quick: f64, full: f64) -> Duration {
        Duration::from_secs_f64(if self.quick { quick } else { full })
    }
}

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct ScenarioOutcome {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub counts: Counts,
    pub checks: Vec<Check>,
    pub notes: BTreeSet<String>,
}

impl ScenarioOutcome {
    pub fn held(&self) -> bool {
        self.checks.iter().all(|c| c.held)
    }
}

/// The simulator, the fleet's config and the pool of leavers.
#[derive(Debug)]
pub struct Bed {
    pub sim: SimHandle,
    pub fleet: Fleet,
    accounts: Vec<String>,
    next: usize,
    _scratch: Scratch,
}

/// Where the fleet keeps its queue and store.
#[derive(Debug, Clone)]
pub struct Backing {
    pub backend: &'static str,
    pub amqp_url: String,
    /// `None`: a SQLite file in the bed's scratch folder.
    pub store_url: Option<String>,
    /// `queue.quorum_initial_group_size` (on a cluster).
    pub quorum_initial_group_size: Option<u16>,
}

impl Bed {
    /// A bed with enough leavers for `seconds` of load at the run's rate (and some to spare).
    pub async fn new(
        run: &Run,
        backing: &Backing,
        seconds: Duration,
        publish_timeout_ms: u64,
    ) -> anyhow::Result<Bed> {
        let scratch = Scratch::new("faults")?;
        let store_url = backing
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/gatehouse.db", scratch.0.display()));
        Bed::build(run, backing, seconds, publish_timeout_ms, scratch, store_url).await
    }

    /// Like [`Bed::new`] with the SQLite store at `store_url` (a folder the scenario owns).
    pub async fn build(
        run: &Run,
        backing: &Backing,
        seconds: Duration,
        publish_timeout_ms: u64,
        scratch: Scratch,
        store_url: String,
    ) -> anyhow::Result<Bed> {
        let count = (run.rate * seconds.as_secs_f64() * 1.5) as usize + 50;
        let tag = &ulid::Ulid::generate().to_string()[20..];
        let accounts: Vec<String> = (0..count).map(|i| format!("leaver-{tag}-{i:05}")).collect();
        let groups = (0..GROUPS)
            .map(|g| SeedGroup::new(format!("g-{g}"), format!("team-{g}"), accounts.clone()))
            .collect();
        let sim = Simulator::start(
            Seed {
                users: inactive_users(&accounts),
                groups,
                ..Seed::default()
            },
            Behaviour {
                v1_max_limit: 200,
                ..Behaviour::default()
            },
        )
        .await?;
        let fleet = Fleet::configure(
            run.binary.clone(),
            &scratch,
            &FleetConfig {
                backend: backing.backend,
                amqp_url: backing.amqp_url.clone(),
                store_url,
                // gatehouse's own pace well above the load, so faults alone slow it.
                sections: crate::react::config(&scratch, &sim, 500.0, 50)?,
                publish_timeout_ms,
                request_timeout_ms: 1_000,
                quorum_initial_group_size: backing.quorum_initial_group_size,
                worker_concurrency: 16,
            },
        )?;
        Ok(Bed {
            sim,
            fleet,
            accounts,
            next: 0,
            _scratch: scratch,
        })
    }

    /// Starts load over the next unused leavers (enough for `seconds`), spread round robin over
    /// every ingress process running.
    pub fn load(&mut self, run: &Run, seconds: Duration, sending: Sending) -> Load {
        let wanted = ((run.rate * seconds.as_secs_f64()) as usize).max(1);
        let end = (self.next + wanted).min(self.accounts.len());
        let batch = self.accounts[self.next..end].to_vec();
        self.next = end;
        Load::start(
            self.fleet.ingress_urls("/webhooks/relay"),
            batch,
            run.rate,
            64,
            sending,
        )
    }

    /// Settles, counts and checks, then stops everything; the scenario's outcome.
    pub async fn finish(
        self,
        scenario: &'static str,
        tally: &LoadTally,
        mut extra: Vec<Check>,
        notes: BTreeSet<String>,
    ) -> anyhow::Result<ScenarioOutcome> {
        ledger::settle(&self.fleet, &self.sim, tally, SETTLE, true).await?;
        // Counted with every process stopped, so the store holds still while it is read.
        let logs = self.fleet.log_tails(40);
        let backend = self.fleet.backend;
        let Bed { sim, fleet, .. } = self;
        let fleet = fleet.stop().await;
        let counted = ledger::account(&fleet, &sim, tally).await;
        fleet.forget().await;
        sim.stop().await;
        let (counts, mut checks) = counted?;
        checks.append(&mut extra);
        if !checks.iter().all(|c| c.held) {
            eprintln!("{scenario}: an invariant broke\n{logs}");
        }
        Ok(ScenarioOutcome {
            scenario,
            backend,
            counts,
            checks,
            notes,
        })
    }
}
