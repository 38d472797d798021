//! `gatehouse approvals`: plans waiting for a person. `approve` performs exactly the recorded
//! plan (a worker picks it up from the queue); `reject` records that nothing is to be done.

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Subcommand;
use handlers::Plan;

use super::table;
use crate::app::{open_queue, open_store};
use crate::audit::AuditLog;
use crate::config::Settings;
use crate::reactions::approvals::{approve, reject};
use crate::store::{Approval, ApprovalState};

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Plans waiting for a decision: id, event, policy, actions, age.
    List {
        /// Show decided ones in this state instead (approved, rejected, executed).
        #[arg(long)]
        state: Option<String>,
    },
    /// One plan, action by action, with its warnings.
    Show { id: String },
    /// Approve: the recorded plan is performed, exactly as it was planned.
    Approve {
        id: String,
        /// Who approves (recorded in the audit trail); default: $USER.
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject: nothing of the plan is performed.
    Reject {
        id: String,
        #[arg(long)]
        by: Option<String>,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub async fn run(settings: Settings, command: ApprovalsCommand) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    match command {
        ApprovalsCommand::List { state } => {
            let name = state.as_deref().unwrap_or("pending");
            let Some(state) = ApprovalState::parse(name) else {
                bail!("unknown state {name} (pending, approved, rejected, executed)");
            };
            let approvals = store.approvals(state).await?;
            print!("{}", list(&approvals)?);
            eprintln!("{} {} approval(s)", approvals.len(), state.as_str());
            Ok(())
        }
        ApprovalsCommand::Show { id } => {
            let approval = store
                .approval(&id)
                .await?
                .with_context(|| format!("no approval {id}"))?;
            print!("{}", show(&approval)?);
            Ok(())
        }
        ApprovalsCommand::Approve { id, by } => {
            let queue = open_queue(&settings, &store).await?;
            let audit = AuditLog::from_settings(store, &settings);
            let result = approve(&audit, queue.as_ref(), &id, &who(by)).await;
            queue.close().await;
            let approval = result?;
            eprintln!(
                "approved {} ({}): the plan is queued and will be performed as recorded",
                approval.id, approval.handler
            );
            Ok(())
        }
        ApprovalsCommand::Reject { id, by, reason } => {
            let audit = AuditLog::from_settings(store, &settings);
            let approval = reject(&audit, &id, &who(by), reason.as_deref()).await?;
            eprintln!(
                "rejected {} ({}): nothing will be performed",
                approval.id, approval.handler
            );
            Ok(())
        }
    }
}

fn plan_of(approval: &Approval) -> anyhow::Result<Plan> {
    serde_json::from_str(&approval.plan)
        .with_context(|| format!("approval {} holds an unreadable plan", approval.id))
}

fn list(approvals: &[Approval]) -> anyhow::Result<String> {
    let now = Utc::now();
    let mut rows = Vec::new();
    for approval in approvals {
        let plan = plan_of(approval)?;
        let actions: Vec<String> = plan
            .actions
            .iter()
            .map(|a| a.action.type_name().to_owned())
            .collect();
        rows.push(vec![
            approval.id.clone(),
            approval.event_type.clone(),
            approval.account_id.clone().unwrap_or_else(|| "-".to_owned()),
            approval.handler.clone(),
            table::truncate(&actions.join(", "), 60),
            table::age((now - approval.created_at).num_seconds()),
        ]);
    }
    Ok(table::render(
        &["ID", "EVENT", "ACCOUNT", "POLICY", "ACTIONS", "AGE"],
        &rows,
    ))
}

fn show(approval: &Approval) -> anyhow::Result<String> {
    let plan = plan_of(approval)?;
    let mut out = format!(
        "approval:  {}\nstate:     {}\nevent:     {} ({})\npolicy:    {}\ncreated:   {}\n",
        approval.id,
        approval.state.as_str(),
        approval.event_id,
        approval.event_type,
        approval.handler,
        approval.created_at.to_rfc3339(),
    );
    if let Some(by) = &approval.decided_by {
        out.push_str(&format!("decided:   by {by}"));
        if let Some(at) = approval.decided_at {
            out.push_str(&format!(" at {}", at.to_rfc3339()));
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&super::plan::render(&plan));
    Ok(out)
}
