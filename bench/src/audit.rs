//! `audit`: the audit trail's append cost (one writer, several writers: appends are serialized by
//! design, so more writers do not add throughput) and the speed of `verify`, on SQLite and, when
//! given, PostgreSQL.

use std::time::Instant;

use ::gatehouse::audit::{ActionRef, AuditKind, AuditLog, NewRecord, Outcome, verify};
use ::gatehouse::config::{AuditSettings, SensitiveUrl, StoreSettings};
use ::gatehouse::store::Store;
use clap::Args;
use serde_json::json;

use crate::harness::Scratch;
use crate::report::Results;

#[derive(Debug, Clone, Args)]
pub struct AuditBenchArgs {
    /// A PostgreSQL database to measure too (it gets an audit table; use a scratch database).
    #[arg(long)]
    pub pg_url: Option<String>,
    #[arg(long, default_value_t = 2_000)]
    pub sequential: usize,
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    #[arg(long, default_value_t = 250)]
    pub per_writer: usize,
    /// Records bulk-loaded before the verify walk.
    #[arg(long, default_value_t = 50_000)]
    pub bulk: usize,
}

impl Default for AuditBenchArgs {
    fn default() -> Self {
        AuditBenchArgs {
            pg_url: None,
            sequential: 2_000,
            writers: 8,
            per_writer: 250,
            bulk: 50_000,
        }
    }
}

fn record(i: usize) -> NewRecord {
    let mut record = NewRecord::new(
        ulid::Ulid::generate(),
        if i.is_multiple_of(2) {
            AuditKind::Planned
        } else {
            AuditKind::Executed
        },
    );
    record.account_id = Some(format!("557058:acc-{}", i % 97));
    record.handler = Some("deprovision".to_owned());
    record.action = Some(ActionRef {
        action_type: "confluence.remove_member".to_owned(),
        target: format!("group:g-{}/account:557058:acc-{}", i % 13, i % 97),
        org_wide: false,
    });
    record.outcome = Outcome::ok();
    record
}

pub async fn run(args: &AuditBenchArgs, results: &mut Results) -> anyhow::Result<()> {
    let scratch = Scratch::new("audit")?;
    let mut targets = vec![("sqlite", format!("sqlite://{}/audit.db", scratch.0.display()))];
    if let Some(url) = &args.pg_url {
        targets.push(("postgres", url.clone()));
    }
    for (name, url) in targets {
        let store = Store::connect(&StoreSettings {
            url: SensitiveUrl::new(url),
            max_connections: 8,
            encryption_key: None,
            retired_encryption_keys: Vec::new(),
        })
        .await?;
        let log = AuditLog::new(store.clone(), &AuditSettings::default());

        let started = Instant::now();
        for i in 0..args.sequential {
            log.append(record(i)).await?;
        }
        let sequential = started.elapsed();

        let started = Instant::now();
        let writers: Vec<_> = (0..args.writers)
            .map(|w| {
                let log = log.clone();
                let per_writer = args.per_writer;
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        log.append(record(w * per_writer + i)).await?;
                    }
                    Ok::<(), ::gatehouse::audit::AuditError>(())
                })
            })
            .collect();
        for writer in writers {
            writer.await??;
        }
        let concurrent = started.elapsed();

        for chunk in 0..args.bulk / 500 {
            log.append_all((0..500).map(|i| record(chunk * 500 + i)).collect())
                .await?;
        }
        let started = Instant::now();
        let report = verify(&store, 1, |_| {}).await?;
        let walk = started.elapsed();
        anyhow::ensure!(report.is_intact(), "the chain is broken: {report:?}");
        store.close().await;

        let one = args.sequential as f64 / sequential.as_secs_f64();
        let many = (args.writers * args.per_writer) as f64 / concurrent.as_secs_f64();
        let verified = report.checked as f64 / walk.as_secs_f64();
        results.add(
            &format!("audit ({name})"),
            vec![
                ("append, 1 writer", format!("{one:.0}/s ({:.2} ms each)", 1000.0 / one)),
                ("append, writers", format!("{many:.0}/s with {} writers", args.writers)),
                ("verify", format!("{verified:.0} records/s ({} records)", report.checked)),
            ],
            json!({"store": name, "append_one_writer_per_second": one, "append_concurrent_per_second": many, "writers": args.writers, "verify_per_second": verified, "records": report.checked}),
        );
    }
    Ok(())
}
