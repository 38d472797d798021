//! The sender misbehaving: a clock off by nearly the tolerance (accepted) and by more than it
//! (refused, never acknowledged), and a duplicate storm where every delivery arrives three
//! times at once (acted on once).

use std::collections::BTreeSet;

use super::bed::{Backing, Bed, Run, ScenarioOutcome};
use super::ledger::Check;
use super::load::Sending;

/// The Standard Webhooks source's timestamp tolerance (gatehouse's default for the scheme).
const TOLERANCE_SECONDS: i64 = 300;

pub async fn skew_and_duplicates(run: &Run, backing: &Backing) -> anyhow::Result<ScenarioOutcome> {
    let each = run.secs(2.0, 10.0);
    let mut bed = Bed::new(run, backing, each * 5, 2_000).await?;
    bed.fleet.start("serve").await?;
    let mut notes = BTreeSet::new();
    let mut checks = Vec::new();
    let mut all = super::load::LoadTally::default();
    let within = TOLERANCE_SECONDS - 60;
    let beyond = TOLERANCE_SECONDS + 60;
    for (skew, inside) in [(-within, true), (within, true), (-beyond, false), (beyond, false)] {
        let tally = bed.load(run, each, Sending::Skewed(skew)).drain(each * 4).await;
        let held = if inside {
            tally.refused == 0 && tally.accepted.len() as u64 + tally.unavailable == tally.sent
        } else {
            tally.accepted.is_empty() && tally.refused == tally.sent
        };
        checks.push(Check::new(
            if inside {
                "skew within tolerance accepted"
            } else {
                "skew beyond tolerance refused"
            },
            held,
            format!(
                "clock {skew:+} s: {} sent, {} accepted, {} refused",
                tally.sent,
                tally.accepted.len(),
                tally.refused
            ),
        ));
        notes.insert(format!(
            "clock {skew:+} s: {} accepted of {}",
            tally.accepted.len(),
            tally.sent
        ));
        all.merge(tally);
    }
    let storm = bed.load(run, each, Sending::Thrice).drain(each * 4).await;
    let unique = storm.sent / 3;
    checks.push(Check::new(
        "each copy of a storm after the first absorbed",
        storm.accepted.len() as u64 == unique && storm.duplicates == unique * 2,
        format!(
            "{unique} deliveries × 3: {} accepted, {} answered duplicate",
            storm.accepted.len(),
            storm.duplicates
        ),
    ));
    notes.insert(format!("duplicate storm: {unique} deliveries sent 3× each"));
    all.merge(storm);
    bed.finish("sender clock skew, duplicate storm", &all, checks, notes)
        .await
}
