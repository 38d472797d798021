//! `gatehouse approvals`: plans waiting for a person. `approve` performs exactly the recorded
//! plan (a worker picks it up from the queue); `reject` records that nothing is to be done.

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Subcommand;
use handlers::{Envelope, Plan};

use super::{table, terminal};
use crate::app::{clients_for, open_queue, open_store};
use crate::audit::AuditLog;
use crate::config::{Settings, Span};
use crate::outbound::Outbox;
use crate::reactions::approvals::{Deciders, approve, expires_at, reject};
use crate::store::{Approval, ApprovalState};
use crate::telemetry::Metrics;

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Plans waiting for a decision: id, event, policy, actions, age, expiry.
    List {
        /// Show decided ones in this state instead (approved, rejected, executed, expired,
        /// superseded).
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

pub async fn run(settings: Settings, tenant: Option<&str>, command: ApprovalsCommand) -> anyhow::Result<()> {
    let tenant = settings.choose_tenant(tenant).map_err(anyhow::Error::msg)?;
    let store = open_store(&settings).await?;
    match command {
        ApprovalsCommand::List { state } => {
            let name = state.as_deref().unwrap_or("pending");
            let Some(state) = ApprovalState::parse(name) else {
                let states: Vec<&str> = ApprovalState::ALL.iter().map(|s| s.as_str()).collect();
                bail!("unknown state {name} ({})", states.join(", "));
            };
            let mut approvals = store.approvals(state).await?;
            approvals.retain(|a| a.tenant() == tenant);
            print!("{}", list(&approvals, settings.reactions.approval_ttl)?);
            eprintln!(
                "{} {} approval(s) of tenant `{tenant}`",
                approvals.len(),
                state.as_str()
            );
            Ok(())
        }
        ApprovalsCommand::Show { id } => {
            let approval = store
                .approval(&id)
                .await?
                .with_context(|| format!("no approval {id}"))?;
            let of = approval.tenant();
            if of != tenant {
                bail!("approval {id} is for tenant `{of}`, not `{tenant}`");
            }
            print!("{}", show(&approval, settings.reactions.approval_ttl)?);
            print!("{}", atlassian_now(&settings, &tenant, &store, &approval).await);
            Ok(())
        }
        ApprovalsCommand::Approve { id, by } => {
            let queue = open_queue(&settings, &store).await?;
            let audit = AuditLog::from_settings(store, &settings);
            let outbox = Outbox::from_settings(&settings);
            let ttl = settings.reactions.approval_ttl;
            let result = approve(
                Deciders::new(&audit, &outbox),
                queue.as_ref(),
                (&tenant, &id),
                &super::who(by),
                ttl,
            )
            .await;
            queue.close().await;
            let approval = result?;
            eprintln!(
                "approved {} ({}): the plan is queued and will be performed as recorded",
                approval.id, approval.handler
            );
            // The worker's own rule (`Reactor::resume`), read from this config.
            let policy_dry_run =
                approval
                    .event_type
                    .parse::<handlers::EventType>()
                    .ok()
                    .and_then(|event_type| {
                        crate::reactions::Planner::from_settings(&settings, &tenant, None)
                            .dry_run_of(&approval.handler, &event_type)
                    });
            if policy_dry_run.unwrap_or(settings.reactions.dry_run) {
                eprintln!(
                    "warning: dry_run is on for this plan in this config: a worker running with it will \
                     not perform the plan (it dead-letters the event); approve again once dry_run is off"
                );
            }
            Ok(())
        }
        ApprovalsCommand::Reject { id, by, reason } => {
            let audit = AuditLog::from_settings(store, &settings);
            let outbox = Outbox::from_settings(&settings);
            let approval = reject(
                Deciders::new(&audit, &outbox),
                (&tenant, &id),
                &super::who(by),
                reason.as_deref(),
            )
            .await?;
            eprintln!(
                "rejected {} ({}): nothing will be performed",
                approval.id, approval.handler
            );
            Ok(())
        }
    }
}

/// The event's authority, and what Atlassian shows about the account now: both, so a person
/// approving a decision sees that Atlassian still disagrees (which does not cancel it).
async fn atlassian_now(
    settings: &Settings,
    tenant: &str,
    store: &crate::store::Store,
    approval: &Approval,
) -> String {
    let Ok(envelope) = serde_json::from_str::<Envelope>(&approval.envelope) else {
        return String::new();
    };
    let mut out = format!("\n{}\n", super::plan::authority_line(&envelope));
    // Only a decision stands against what Atlassian shows; an observation was checked already.
    let Some(account) = envelope
        .subject
        .account_id
        .as_deref()
        .filter(|_| envelope.authority == handlers::Authority::Decision)
    else {
        return out;
    };
    let clients = match clients_for(settings, Some(tenant), store, &Metrics::new()) {
        Ok((_, Some(clients))) => clients,
        _ => return out,
    };
    let status = match clients.confluence() {
        Ok(confluence) => confluence.status_of(account).await.map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    out.push_str(&match status {
        Ok(Some(status)) => format!(
            "Atlassian shows {} now: {}\n",
            terminal::safe(account),
            status_word(status)
        ),
        Ok(None) => format!("Atlassian does not know {} now\n", terminal::safe(account)),
        Err(error) => format!(
            "Atlassian's view of {} cannot be read now: {}\n",
            terminal::safe(account),
            terminal::safe(&error)
        ),
    });
    out
}

fn status_word(status: handlers::ports::AccountStatus) -> &'static str {
    use handlers::ports::AccountStatus;
    match status {
        AccountStatus::Active => "active",
        AccountStatus::Inactive => "inactive",
        AccountStatus::Closed => "closed",
        AccountStatus::Unknown => "in a status gatehouse does not know",
    }
}

fn plan_of(approval: &Approval) -> anyhow::Result<Plan> {
    serde_json::from_str(&approval.plan)
        .with_context(|| format!("approval {} holds an unreadable plan", approval.id))
}

fn list(approvals: &[Approval], ttl: Span) -> anyhow::Result<String> {
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
            expiry(approval, ttl),
        ]);
    }
    Ok(table::render(
        &["ID", "EVENT", "ACCOUNT", "POLICY", "ACTIONS", "AGE", "EXPIRES"],
        &rows,
    ))
}

/// `in 3d` for a pending approval (`overdue` once past), `-` for a decided one.
fn expiry(approval: &Approval, ttl: Span) -> String {
    if approval.state != ApprovalState::Pending {
        return "-".to_owned();
    }
    let left = (expires_at(approval.created_at, ttl) - Utc::now()).num_seconds();
    if left <= 0 {
        "overdue".to_owned()
    } else {
        format!("in {}", table::age(left))
    }
}

fn show(approval: &Approval, ttl: Span) -> anyhow::Result<String> {
    let plan = plan_of(approval)?;
    let mut out = format!(
        "approval:  {}\nstate:     {}\nevent:     {} ({})\npolicy:    {}\ncreated:   {}\n",
        approval.id,
        approval.state.as_str(),
        approval.event_id,
        terminal::safe(&approval.event_type),
        terminal::safe(&approval.handler),
        approval.created_at.to_rfc3339(),
    );
    if approval.state == ApprovalState::Pending {
        out.push_str(&format!(
            "expires:   {} ({})\n",
            expires_at(approval.created_at, ttl).to_rfc3339(),
            expiry(approval, ttl)
        ));
    }
    if let Some(by) = &approval.decided_by {
        out.push_str(&format!("decided:   by {}", terminal::safe(by)));
        if let Some(at) = approval.decided_at {
            out.push_str(&format!(" at {}", at.to_rfc3339()));
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&super::plan::render(&plan));
    Ok(out)
}
