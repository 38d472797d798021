//! Atlassian misbehaving, from the simulator, one fault after another under steady load: a 5xx
//! storm, calls that time out, connections reset, 429 storms with and without `Retry-After`, the
//! tenant's quota exhausted, the credentials revoked and restored. Every acknowledged event must
//! end executed or dead-lettered with its reason (none silently dropped), and once the faults
//! clear, the dead letters replay cleanly.

use std::collections::BTreeSet;
use std::time::Duration;

use gatehouse_sim::{Behaviour, Fault, QuotaPolicy};

use super::bed::{Backing, Bed, Run, SETTLE, ScenarioOutcome};
use super::ledger::{self, Check};
use super::load::Sending;

const REMOVALS: &str = "/group/userByGroupId";

/// The faults, in the order they are played, each for a phase.
fn phases() -> Vec<(&'static str, Vec<Fault>)> {
    let untimed = |fault: Fault| Fault { times: None, ..fault };
    vec![
        (
            "5xx storm",
            vec![
                untimed(Fault::status(REMOVALS, 503, 0)),
                untimed(Fault::status("/memberof", 500, 0)),
            ],
        ),
        // Longer than gatehouse's request timeout (1 s here).
        ("timeouts", vec![untimed(Fault::delay(REMOVALS, 2_500, 0))]),
        ("connection resets", vec![untimed(Fault::reset(REMOVALS, 0))]),
        (
            "429 storm with Retry-After",
            vec![Fault {
                retry_after_seconds: Some(1),
                ..untimed(Fault::status(REMOVALS, 429, 0))
            }],
        ),
        (
            "429 storm without Retry-After",
            vec![untimed(Fault::status(REMOVALS, 429, 0))],
        ),
        // Every Confluence call refused as unauthenticated.
        (
            "credentials revoked",
            vec![untimed(Fault::status("/wiki/", 401, 0))],
        ),
    ]
}

pub async fn faults(run: &Run, backing: &Backing, quota_for: Duration) -> anyhow::Result<ScenarioOutcome> {
    let phase = run.secs(3.0, 15.0);
    let all = phases();
    let total = phase * (all.len() as u32 + 1) + quota_for;
    let mut bed = Bed::new(run, backing, total, 2_000).await?;
    bed.fleet.start("serve").await?;
    let load = bed.load(run, total, Sending::Once);
    let tenant = bed
        .sim
        .tenant_at(0)
        .ok_or_else(|| anyhow::anyhow!("the simulator has no tenant"))?;
    let mut notes = BTreeSet::new();
    for (name, faults) in all {
        for fault in faults {
            tenant.add_fault(fault);
        }
        tokio::time::sleep(phase).await;
        tenant.clear_faults();
        notes.insert(format!("{name} {} s", phase.as_secs()));
    }
    // The tenant's Confluence quota spent: every call answered 429 with a reset time until the
    // window ends.
    let normal = tenant.policy();
    tenant.set_policy(Behaviour {
        quota: Some(QuotaPolicy {
            requests: 1,
            window_ms: quota_for.as_millis() as u64,
            reason: "confluence-quota-tenant-based".to_owned(),
            retry_after: false,
        }),
        ..normal.clone()
    });
    tokio::time::sleep(quota_for).await;
    tenant.set_policy(normal);
    notes.insert(format!("quota exhausted {} s", quota_for.as_secs()));
    let tally = load.drain(total * 2).await;

    // Before replay: each event executed or parked with its reason.
    let waiting = ledger::settle(&bed.fleet, &bed.sim, &tally, SETTLE, true).await?;
    let store = bed.fleet.store().await?;
    let parked = store.dead_letters(&Default::default()).await?;
    store.close().await;
    let without_reason = parked.iter().filter(|d| d.reason.trim().is_empty()).count();
    let mut reasons: BTreeSet<String> = BTreeSet::new();
    for letter in &parked {
        reasons.insert(letter.reason.chars().take(60).collect());
    }
    for reason in reasons.iter().take(4) {
        notes.insert(format!("dead-letter reason: {reason}"));
    }
    let mut checks = vec![
        Check::new(
            "executed or dead-lettered before replay",
            waiting.is_empty(),
            format!("{} neither", waiting.len()),
        ),
        Check::new(
            "every dead letter has its reason",
            without_reason == 0,
            format!("{} parked, {without_reason} without a reason", parked.len()),
        ),
    ];
    // The faults cleared: replay everything parked; all of it must now be executed.
    if !parked.is_empty() {
        bed.fleet.cli(&["dlq", "replay", "--all"]).await?;
    }
    let still = ledger::settle(&bed.fleet, &bed.sim, &tally, SETTLE, false).await?;
    checks.push(Check::new(
        "dead letters replay cleanly",
        still.is_empty(),
        format!(
            "{} replayed, {} not executed after replay",
            parked.len(),
            still.len()
        ),
    ));
    notes.insert(format!("{} dead-lettered, then replayed", parked.len()));
    let mut outcome = bed.finish("Atlassian faults", &tally, checks, notes).await?;
    // Counted before the replay: after it, none is left parked.
    outcome.counts.dead_lettered = parked.len();
    Ok(outcome)
}
