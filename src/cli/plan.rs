//! `gatehouse plan --event FILE.json`: what the configured policies would do with an envelope,
//! read against the configured tenant (or a simulator), without performing or queuing anything.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use handlers::{Authority, Envelope, Plan};

use super::terminal::safe;
use crate::app::clients_for;
use crate::config::Settings;
use crate::reactions::Planner;
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// An envelope as JSON (as published on the events exchange).
    #[arg(long)]
    pub event: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    /// Plan as this tenant (its policies, its site). Default: the envelope's own tenant, else
    /// the only tenant.
    #[arg(long)]
    pub tenant: Option<String>,
}

pub async fn run(settings: Settings, args: PlanArgs) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&args.event).with_context(|| format!("reading {}", args.event.display()))?;
    let mut envelope: Envelope = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an envelope", args.event.display()))?;
    // The store holds OAuth tokens the clients may need; nothing is written otherwise.
    let store = crate::app::open_store(&settings).await?;
    let requested = args.tenant.as_deref().or(envelope.tenant.name.as_deref());
    let (tenant, clients) = clients_for(&settings, requested, &store, &Metrics::new())?;
    envelope.tenant.name = Some(tenant.clone());
    let planner = Planner::from_settings(&settings, &tenant, clients.as_deref());
    let plans = planner
        .plans(&envelope)
        .await
        .map_err(|e| anyhow::anyhow!("planning failed: {e}"))?;
    match args.format {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plans)?),
        PlanFormat::Text => {
            println!("{}", authority_line(&envelope));
            if plans.is_empty() {
                println!("no policy handles {}", safe(&envelope.event_type.to_string()));
            }
            for plan in &plans {
                let dry_run = plan.dry_run.unwrap_or(settings.reactions.dry_run);
                print!("{}", render(plan));
                if dry_run {
                    println!("(dry run: this policy records its plans and performs nothing)");
                }
                println!();
            }
        }
    }
    Ok(())
}

/// What an event's authority means for its plans, in a line.
pub fn authority_line(envelope: &Envelope) -> String {
    match envelope.authority {
        Authority::Decision => format!(
            "authority: decision (from {}): acted on whatever Atlassian shows now; a newer decision about the account wins",
            safe(&envelope.source)
        ),
        Authority::Observation => format!(
            "authority: observation (from {}): checked against Atlassian's current state; a newer state wins",
            safe(&envelope.source)
        ),
    }
}

/// A plan for people: its actions with reasons, danger and approval, then warnings. Everything
/// a sender could have influenced (targets, reasons, warnings, notes) is made terminal-safe, so
/// no escape sequence in a payload can hide or forge an `[ORG-WIDE]` flag.
pub fn render(plan: &Plan) -> String {
    let mut out = format!("policy {} for event {}\n", safe(&plan.handler), plan.event_id);
    if let Some(note) = &plan.note {
        out.push_str(&format!("  note: {}\n", safe(note)));
    }
    if plan.actions.is_empty() {
        out.push_str("  nothing to do\n");
    }
    for (i, planned) in plan.actions.iter().enumerate() {
        let mut flags = Vec::new();
        if planned.action.org_wide() {
            flags.push("ORG-WIDE");
        }
        if planned.needs_approval {
            flags.push("needs approval");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flags.join(", "))
        };
        out.push_str(&format!(
            "  {}. {} {}{flags}\n     why: {}\n",
            i + 1,
            planned.action.type_name(),
            safe(&planned.action.target()),
            safe(&planned.reason)
        ));
    }
    for warning in &plan.warnings {
        out.push_str(&format!("  warning: {}\n", safe(warning)));
    }
    out
}
