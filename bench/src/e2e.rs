//! `e2e`: webhooks at a fixed rate, each deactivating one person in one group; the latency from
//! the webhook's 202 to the last audit record of its plan (the removal, executed).

use std::time::{Duration, Instant};

use clap::Args;
use gatehouse_sim::{Behaviour, Seed, SeedGroup, Simulator};
use serde_json::json;

use crate::Common;
use crate::harness::{Running, Scratch};
use crate::react::{config, failures, inactive_users, send_deactivation};
use crate::report::Results;
use crate::stats::percentiles;

#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Webhooks a second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
}

impl Default for E2eArgs {
    fn default() -> Self {
        E2eArgs {
            rate: 20.0,
            seconds: 15,
        }
    }
}

pub async fn run(common: &Common, args: &E2eArgs, results: &mut Results) -> anyhow::Result<()> {
    for backend in common.backend.backends() {
        let count = (args.rate * args.seconds as f64).round() as usize;
        let accounts: Vec<String> = (0..count).map(|i| format!("p-{i:05}")).collect();
        let users = inactive_users(&accounts);
        let seed = Seed {
            users,
            groups: vec![SeedGroup::new("g-team", "team", accounts.clone())],
            ..Seed::default()
        };
        let sim = Simulator::start(
            seed,
            Behaviour {
                v1_max_limit: 200,
                ..Behaviour::default()
            },
        )
        .await?;
        let scratch = Scratch::new("e2e")?;
        // Atlassian's pace is not what this measures: a limit far above the offered load.
        let running = Running::start(
            common,
            &scratch,
            "serve",
            backend,
            &config(&scratch, &sim, 1_000.0, 100)?,
        )
        .await?;

        let http = reqwest::Client::new();
        let url = running.url("/webhooks/relay");
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let started = Instant::now();
        let mut sends = Vec::with_capacity(count);
        for (i, account) in accounts.iter().enumerate() {
            tokio::time::sleep_until((started + interval * i as u32).into()).await;
            let http = http.clone();
            let url = url.clone();
            let account = account.clone();
            sends.push(tokio::spawn(async move {
                send_deactivation(&http, &url, &account, &format!("e2e-{account}")).await
            }));
        }
        let mut accepted = Vec::with_capacity(count);
        for send in sends {
            accepted.push(send.await??);
        }

        let store = running.store().await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut latencies = Vec::with_capacity(count);
        for (event_id, accepted_at) in &accepted {
            loop {
                let query = ::gatehouse::audit::AuditQuery {
                    event_id: Some(event_id.parse()?),
                    kinds: vec![::gatehouse::audit::AuditKind::Executed],
                    limit: 100,
                    ..Default::default()
                };
                let records = ::gatehouse::audit::query::query(&store, &query).await?;
                if let Some(last) = records.iter().map(|r| r.time).max() {
                    latencies.push((last - *accepted_at).to_std().unwrap_or_default());
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "event {event_id} not executed in time");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        store.close().await;
        let (failed, dead) = failures(&running).await?;
        let rss = running.peak_rss_mib();
        running.stop().await?;
        sim.stop().await;
        let p = percentiles(&mut latencies);
        results.add(
            &format!("e2e ({backend})"),
            vec![
                ("load", format!("{count} webhooks at {} /s", args.rate)),
                ("202 → executed", format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", p.p50_ms, p.p99_ms, p.max_ms)),
                ("failed actions", format!("{failed} (dead letters: {dead})")),
                ("peak RSS", format!("{rss:.1} MiB")),
            ],
            json!({"backend": backend, "count": count, "rate": args.rate, "latency": p, "failed_actions": failed, "dead_letters": dead, "peak_rss_mib": rss}),
        );
    }
    Ok(())
}
