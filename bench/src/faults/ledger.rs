//! What a scenario did, counted from the outside: the load's answers, the simulator's state and
//! request log (what was really done to Atlassian), and the store (audit trail, dead letters).
//! Then the invariants every scenario must hold.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use gatehouse_sim::SimHandle;
use serde_json::json;

use super::fleet::Fleet;
use super::load::LoadTally;

/// The counts of one scenario.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub sent: u64,
    /// Answered 202.
    pub accepted: usize,
    /// Answered 5xx (the sender retries later).
    pub unavailable: u64,
    /// Answered 4xx.
    pub refused: u64,
    /// No answer at all (gatehouse down, connection cut).
    pub no_answer: u64,
    /// Copies recognized: at the door (200 `duplicate`) and by workers (`duplicate` records).
    pub duplicates_absorbed: u64,
    /// Acknowledged events a worker received (an audit `received` record) or dead-lettered.
    pub queued: usize,
    /// Acknowledged events whose person has no membership left.
    pub acted: usize,
    /// Acknowledged events parked in the dead-letter queue (not acted on), when counted.
    pub dead_lettered: usize,
    /// Removals the simulator performed more than once (the same membership removed again).
    pub actions_repeated: usize,
    /// Removal calls in flight when a process that acts was killed, or made while the store was
    /// gone (the bound on repeats: calls whose outcome could not be recorded).
    pub in_flight_at_faults: usize,
    /// Acknowledged, but neither acted on nor dead-lettered in the time allowed.
    pub lost: usize,
    /// The slowest answer and the slowest 5xx, milliseconds.
    pub slowest_ms: u128,
    pub slowest_unavailable_ms: u128,
}

/// One invariant's result.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub held: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, held: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            held,
            detail: detail.into(),
        }
    }
}

/// Where an acknowledged event stands, seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Its person has no membership left in the simulator.
    Acted,
    /// Parked in the dead-letter queue (not replayed).
    DeadLettered,
    Waiting,
}

/// The simulator's memberships and the live dead letters' accounts, read once.
#[derive(Debug)]
struct Outside {
    members: HashSet<String>,
    dead: HashSet<String>,
}

impl Outside {
    /// Reads them; dead letters only from `store` when given (when they count as settled).
    async fn read(sim: &SimHandle, store: Option<&::gatehouse::store::Store>) -> anyhow::Result<Outside> {
        let members = sim
            .state()
            .groups
            .iter()
            .flat_map(|g| g.members.iter().cloned())
            .collect();
        let dead = match store {
            Some(store) => store
                .dead_letters(&Default::default())
                .await?
                .into_iter()
                .filter_map(|row| row.subject)
                .collect(),
            None => HashSet::new(),
        };
        Ok(Outside { members, dead })
    }

    fn fate(&self, account: &str) -> Fate {
        if !self.members.contains(account) {
            Fate::Acted
        } else if self.dead.contains(account) {
            Fate::DeadLettered
        } else {
            Fate::Waiting
        }
    }
}

/// Waits until every acknowledged event was acted on, or dead-lettered when `dead_counts`, or
/// until `stalled` passed without one more settling (a backlog of thousands takes as long as it
/// takes; an event that never settles is lost); the accounts still waiting.
pub async fn settle(
    fleet: &Fleet,
    sim: &SimHandle,
    tally: &LoadTally,
    stalled: Duration,
    dead_counts: bool,
) -> anyhow::Result<Vec<String>> {
    let store = if dead_counts {
        Some(fleet.store().await?)
    } else {
        None
    };
    let mut last_progress = Instant::now();
    let mut fewest = usize::MAX;
    let waiting = loop {
        // A read refused under load (a busy store) is tried again at the next poll.
        let Ok(outside) = Outside::read(sim, store.as_ref()).await else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let waiting: Vec<String> = tally
            .accepted
            .iter()
            .filter(|a| outside.fate(&a.account) == Fate::Waiting)
            .map(|a| a.account.clone())
            .collect();
        if waiting.len() < fewest {
            fewest = waiting.len();
            last_progress = Instant::now();
        }
        if waiting.is_empty() || last_progress.elapsed() > stalled {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if let Some(store) = store {
        store.close().await;
    }
    Ok(waiting)
}

/// Counts the scenario and checks the invariants every scenario holds: nothing lost (acted on
/// or dead-lettered), no action repeated beyond the calls in flight at a kill or made while the
/// store was gone, the audit chain intact to its head, and `seq` without gaps. Call after
/// [`settle`], with the fleet stopped.
pub async fn account(
    fleet: &Fleet,
    sim: &SimHandle,
    tally: &LoadTally,
) -> anyhow::Result<(Counts, Vec<Check>)> {
    let store = fleet.store().await?;
    let outside = Outside::read(sim, Some(&store)).await?;
    let records = ::gatehouse::audit::query::query(
        &store,
        &::gatehouse::audit::AuditQuery {
            limit: 0,
            ..Default::default()
        },
    )
    .await?;
    let report = ::gatehouse::audit::verify::verify(&store, 1, |_| {}).await?;
    store.close().await;

    let received: HashSet<String> = records
        .iter()
        .filter(|r| r.record.kind == ::gatehouse::audit::AuditKind::Received)
        .map(|r| r.record.event_id.to_string())
        .collect();
    let worker_duplicates = records
        .iter()
        .filter(|r| r.record.kind == ::gatehouse::audit::AuditKind::Duplicate)
        .count() as u64;
    let mut counts = Counts {
        sent: tally.sent,
        accepted: tally.accepted.len(),
        unavailable: tally.unavailable,
        refused: tally.refused,
        no_answer: tally.no_answer,
        duplicates_absorbed: tally.duplicates + worker_duplicates,
        slowest_ms: tally.slowest.as_millis(),
        slowest_unavailable_ms: tally.slowest_unavailable.as_millis(),
        ..Counts::default()
    };
    for accepted in &tally.accepted {
        let fate = outside.fate(&accepted.account);
        if fate != Fate::Waiting || received.contains(&accepted.event_id) {
            counts.queued += 1;
        }
        match fate {
            Fate::Acted => counts.acted += 1,
            Fate::DeadLettered => counts.dead_lettered += 1,
            Fate::Waiting => counts.lost += 1,
        }
    }

    // What Atlassian saw: each membership removal performed, by group and account.
    let requests = sim.requests();
    let mut removals: BTreeMap<(String, String), usize> = BTreeMap::new();
    for request in requests
        .iter()
        .filter(|r| is_removal(r) && r.status.is_some_and(|s| (200..300).contains(&s)))
    {
        let key = (
            request.query_param("groupId").unwrap_or_default().to_owned(),
            request.query_param("accountId").unwrap_or_default().to_owned(),
        );
        *removals.entry(key).or_default() += 1;
    }
    counts.actions_repeated = removals.values().map(|n| n - 1).sum();
    counts.in_flight_at_faults = requests
        .iter()
        .filter(|r| {
            is_removal(r)
                && fleet.interruptions_ms.iter().any(|&(from, to)| {
                    r.at_ms <= to && r.done_ms.is_none_or(|done| done >= from - IN_FLIGHT_GRACE_MS)
                })
        })
        .count();

    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    let gapless = seqs.iter().enumerate().all(|(i, &seq)| seq == i as u64 + 1);
    let checks = vec![
        Check::new(
            "lost = 0",
            counts.lost == 0,
            format!(
                "{} of {} acknowledged neither acted on nor dead-lettered",
                counts.lost, counts.accepted
            ),
        ),
        Check::new(
            "repeated ≤ in flight at faults",
            counts.actions_repeated <= counts.in_flight_at_faults,
            format!(
                "{} repeated, {} in flight",
                counts.actions_repeated, counts.in_flight_at_faults
            ),
        ),
        Check::new(
            "audit chain verifies",
            report.is_intact(),
            format!("{} records checked to head {}", report.checked, report.head_seq),
        ),
        Check::new(
            "seq without gaps",
            gapless && seqs.last().copied().unwrap_or(0) == report.head_seq,
            format!("{} records, head {}", seqs.len(), report.head_seq),
        ),
    ];
    Ok((counts, checks))
}

/// A removal a worker may still not have recorded when killed (or the store went): answered
/// this long before or later.
const IN_FLIGHT_GRACE_MS: i64 = 250;

fn is_removal(request: &gatehouse_sim::LoggedRequest) -> bool {
    request.method == "DELETE" && request.path.contains("/group/")
}

/// The JSON form of a scenario's figures.
pub fn to_json(
    scenario: &str,
    backend: &str,
    counts: &Counts,
    checks: &[Check],
    notes: &BTreeSet<String>,
) -> serde_json::Value {
    json!({
        "scenario": scenario, "backend": backend,
        "sent": counts.sent, "accepted": counts.accepted, "unavailable_5xx": counts.unavailable,
        "refused_4xx": counts.refused, "no_answer": counts.no_answer,
        "queued": counts.queued, "acted": counts.acted, "dead_lettered": counts.dead_lettered,
        "duplicates_absorbed": counts.duplicates_absorbed, "actions_repeated": counts.actions_repeated,
        "in_flight_at_faults": counts.in_flight_at_faults, "lost": counts.lost,
        "slowest_ms": counts.slowest_ms, "slowest_5xx_ms": counts.slowest_unavailable_ms,
        "checks": checks.iter().map(|c| json!({"name": c.name, "held": c.held, "detail": c.detail})).collect::<Vec<_>>(),
        "notes": notes,
    })
}
