//! The store failing under the embedded backend (where it is also the queue): PostgreSQL stopped
//! and started, and SQLite on a disk that fills up. While it is gone the ingress answers 503 and
//! the worker neither acts nor acknowledges; afterwards everything resumes and nothing is
//! corrupted.

use std::collections::BTreeSet;
use std::time::Duration;

use super::bed::{Backing, Bed, Run, ScenarioOutcome};
use super::ledger::Check;
use super::load::Sending;
use super::services::{OwnPostgres, SmallDisk};
use crate::harness::Scratch;

/// The longest a request may wait for the store: its pool's acquire timeout (5 s), and the
/// answer's way back on a busy machine.
const STORE_WAIT: Duration = Duration::from_millis(6_500);

/// PostgreSQL stopped (fast shutdown, clients cut) for a while under load, then started.
pub async fn postgres_down(run: &Run, amqp_url: &str) -> anyhow::Result<ScenarioOutcome> {
    let postgres = OwnPostgres::start().await?;
    // Longer than the store's acquire timeout (5 s), so requests meet the outage, not a wait.
    let down_for = run.secs(8.0, 20.0);
    let total = down_for + run.secs(8.0, 20.0);
    let backing = Backing {
        backend: "embedded",
        amqp_url: amqp_url.to_owned(),
        store_url: Some(postgres.url()),
        quorum_initial_group_size: None,
    };
    let mut bed = Bed::new(run, &backing, total, 2_000).await?;
    bed.fleet.start("ingress").await?;
    bed.fleet.start("worker").await?;
    let load = bed.load(run, total, Sending::Once);
    tokio::time::sleep(run.secs(3.0, 5.0)).await;
    let down_at = chrono::Utc::now().timestamp_millis();
    postgres.stop().await?;
    tokio::time::sleep(down_for).await;
    postgres.start_again().await?;
    bed.fleet
        .interruptions_ms
        .push((down_at, chrono::Utc::now().timestamp_millis()));
    let tally = load.drain(total * 2).await;
    let mut notes = BTreeSet::new();
    notes.insert(format!("PostgreSQL down {} s", down_for.as_secs()));
    let checks = vec![
        Check::new(
            "refused while the store was down",
            tally.unavailable > 0,
            format!(
                "{} answered 5xx, {} unanswered",
                tally.unavailable, tally.no_answer
            ),
        ),
        Check::new(
            "no answer waited past the acquire timeout",
            tally.slowest <= STORE_WAIT,
            format!("slowest answer {} ms", tally.slowest.as_millis()),
        ),
    ];
    let outcome = bed
        .finish("PostgreSQL stopped, started", &tally, checks, notes)
        .await;
    drop(postgres);
    outcome
}

/// SQLite on a small tmpfs that is filled up under load, then freed.
pub async fn sqlite_full_disk(run: &Run, amqp_url: &str) -> anyhow::Result<ScenarioOutcome> {
    let disk = SmallDisk::mount(16)?;
    let full_for = run.secs(4.0, 20.0);
    let total = full_for + run.secs(8.0, 20.0);
    let backing = Backing {
        backend: "embedded",
        amqp_url: amqp_url.to_owned(),
        store_url: None,
        quorum_initial_group_size: None,
    };
    let store_url = format!("sqlite://{}/gatehouse.db", disk.path().display());
    let mut bed = Bed::build(run, &backing, total, 2_000, Scratch::new("faults")?, store_url).await?;
    bed.fleet.start("serve").await?;
    let load = bed.load(run, total, Sending::Once);
    tokio::time::sleep(run.secs(3.0, 5.0)).await;
    let full_at = chrono::Utc::now().timestamp_millis();
    let filled = disk.fill()?;
    tokio::time::sleep(full_for).await;
    disk.free()?;
    bed.fleet
        .interruptions_ms
        .push((full_at, chrono::Utc::now().timestamp_millis()));
    let tally = load.drain(total * 2).await;
    // Checked once everything settled, the worker still writing.
    super::ledger::settle(&bed.fleet, &bed.sim, &tally, super::bed::SETTLE, true).await?;
    let integrity = integrity(&bed).await;
    let mut notes = BTreeSet::new();
    notes.insert(format!(
        "disk full {} s ({} KiB filler)",
        full_for.as_secs(),
        filled / 1024
    ));
    let checks = vec![
        Check::new(
            "refused while the disk was full",
            tally.unavailable > 0,
            format!("{} answered 5xx", tally.unavailable),
        ),
        Check::new(
            "SQLite integrity_check ok",
            integrity.as_deref().is_ok_and(|r| r == "ok"),
            format!("{integrity:?}"),
        ),
    ];
    let outcome = bed.finish("SQLite on a full disk", &tally, checks, notes).await;
    drop(disk);
    outcome
}

async fn integrity(bed: &Bed) -> anyhow::Result<String> {
    use sqlx::Row;
    let store = bed.fleet.store().await?;
    let row = sqlx::query("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await?;
    let result: String = row.try_get(0)?;
    store.close().await;
    Ok(result)
}
