//! `gatehouse reconcile [--dry-run]`: compare the real state with what events said, now, and
//! queue (or, dry, only print) what no webhook reported.

use std::sync::Mutex;

use anyhow::bail;
use clap::Args;

use super::progress::CommandProgress;
use super::table;
use crate::app::{clients_for, open_queue, open_store};
use crate::config::Settings;
use crate::poll::reconcile::{self, Reconciler};
use crate::telemetry::Metrics;

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Print what would be queued; queue nothing and keep the snapshots as they are.
    #[arg(long)]
    pub dry_run: bool,
    /// The tenant reconciled (default: the only tenant).
    #[arg(long)]
    pub tenant: Option<String>,
}

/// The CLI's progress: one bar (or plain lines) per phase.
struct Phases(Mutex<Option<CommandProgress>>);

impl reconcile::ReconcileProgress for Phases {
    fn phase(&self, name: &str, total: usize) {
        let mut current = crate::locking::lock(&self.0);
        if let Some(previous) = current.take() {
            previous.finish();
        }
        *current = Some(CommandProgress::new(name, total as u64));
    }

    fn step(&self, item: &str) {
        if let Some(progress) = crate::locking::lock(&self.0).as_mut() {
            progress.step(item);
        }
    }
}

pub async fn run(settings: Settings, args: ReconcileArgs) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let queue = if args.dry_run {
        None
    } else {
        Some(open_queue(&settings, &store).await?)
    };
    let metrics = Metrics::new();
    let (tenant, clients) = clients_for(&settings, args.tenant.as_deref(), &store, &metrics)?;
    let Some(clients) = clients else {
        bail!("reconciling reads Atlassian: configure tenant `{tenant}` ([[tenants]] or [atlassian])");
    };
    let reconciler = Reconciler::new(
        &tenant,
        &settings,
        clients.confluence()?.clone(),
        clients.scim().ok().cloned(),
        store,
        queue.clone(),
        metrics.poll.clone(),
    );
    let phases = Phases(Mutex::new(None));
    let result = reconciler.run_once(args.dry_run, &phases).await;
    if let Some(progress) = phases.0.into_inner().unwrap_or_else(|p| p.into_inner()) {
        progress.finish();
    }
    if let Some(queue) = queue {
        queue.close().await;
    }
    let report = result?;
    let rows: Vec<Vec<String>> = report
        .findings
        .iter()
        .map(|f| {
            vec![
                f.event_type.to_string(),
                f.account_id.clone(),
                f.group
                    .as_ref()
                    .and_then(|g| g.name.clone())
                    .unwrap_or_else(|| "-".to_owned()),
                table::truncate(&f.reason, 90),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["WOULD QUEUE", "ACCOUNT", "GROUP", "WHY"].map(|h| if args.dry_run {
                h
            } else {
                h.trim_start_matches("WOULD ")
            }),
            &rows
        )
    );
    for name in &report.baselines {
        eprintln!(
            "protected group `{}`: first snapshot taken, nothing to compare yet",
            super::terminal::safe(name)
        );
    }
    for name in &report.unreadable_groups {
        eprintln!(
            "warning: the members of group `{}` cannot be read (403): its leavers were not looked for",
            super::terminal::safe(name)
        );
    }
    for (name, in_another_case) in &report.kept_groups_not_found {
        let hint = in_another_case
            .as_ref()
            .map(|other| format!("; `{}` differs only in case", super::terminal::safe(other)))
            .unwrap_or_default();
        eprintln!(
            "warning: the group to keep `{}` (reconcile.ignore_groups or a policy's keep_groups) names no group on the site (names are case-sensitive{hint}): leavers are not kept in the group it meant",
            super::terminal::safe(name)
        );
    }
    for account in &report.awaiting_approval {
        eprintln!(
            "deactivated account {account} still holds groups; its plan waits for approval (gatehouse approvals list)"
        );
    }
    eprintln!(
        "{} finding(s) {}; {} group(s) scanned, {} account(s) checked",
        report.findings.len(),
        if args.dry_run {
            "(dry run: nothing queued, snapshots unchanged)"
        } else {
            "queued"
        },
        report.groups_scanned,
        report.accounts_checked
    );
    Ok(())
}
