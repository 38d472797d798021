//! `gatehouse dlq`: list, inspect, replay and purge dead letters (both queue backends keep them
//! in the store).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Subcommand;

use super::progress::CommandProgress;
use super::{table, terminal};
use crate::app::{open_queue, open_store};
use crate::config::Settings;
use crate::queue::replay::replay;
use crate::store::{DeadLetterFilter, DeadLetterRow, Store};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: id, type, subject, attempts, reason, age.
    List {
        /// Only this event type (e.g. user.deactivated).
        #[arg(long = "type")]
        event_type: Option<String>,
    },
    /// Show one dead letter: its envelope and failure history.
    Show { id: String },
    /// Send dead letters back for processing (attempts reset).
    Replay {
        /// Dead letter ids.
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with_all = ["ids", "event_type"])]
        all: bool,
        /// Every dead letter of this event type.
        #[arg(long = "type", conflicts_with = "ids")]
        event_type: Option<String>,
        /// Print what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who replays them (recorded in the audit trail); default: $USER.
        #[arg(long)]
        by: Option<String>,
    },
    /// Delete dead letters for good.
    Purge {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(settings: Settings, tenant: Option<&str>, command: DlqCommand) -> anyhow::Result<()> {
    // Any name goes: letters bound to a tenant no longer (or never) configured must still be
    // reachable to replay or purge.
    let tenant = match tenant {
        Some(name) => name.to_owned(),
        None => settings.choose_tenant(None).map_err(anyhow::Error::msg)?,
    };
    if let DlqCommand::Replay {
        ids, all, event_type, ..
    } = &command
        && ids.is_empty()
        && !all
        && event_type.is_none()
    {
        bail!("name dead letters to replay, or use --all or --type");
    }
    let store = open_store(&settings).await?;
    match command {
        DlqCommand::List { event_type } => {
            let mut letters = store
                .dead_letters(&DeadLetterFilter {
                    event_type,
                    limit: None,
                })
                .await?;
            letters.retain(|letter| letter.tenant() == tenant);
            print!("{}", list(&letters));
            eprintln!("{} dead letter(s) of tenant `{tenant}`", letters.len());
            Ok(())
        }
        DlqCommand::Show { id } => {
            let (letter, still_dead) = store
                .dead_letter(&id)
                .await?
                .with_context(|| format!("no dead letter {id}"))?;
            if letter.tenant() != tenant {
                bail!(
                    "dead letter {id} is tenant `{}`'s, not `{tenant}`'s",
                    letter.tenant()
                );
            }
            print!("{}", show(&letter, still_dead));
            Ok(())
        }
        DlqCommand::Replay {
            ids,
            all: _,
            event_type,
            dry_run,
            by,
        } => {
            let letters = select(&store, &tenant, &ids, event_type).await?;
            if dry_run {
                print!("{}", list(&letters));
                eprintln!("dry run: {} dead letter(s) would be replayed", letters.len());
                return Ok(());
            }
            let queue = open_queue(&settings, &store).await?;
            let audit = crate::audit::AuditLog::from_settings(store.clone(), &settings);
            let by = super::who(by);
            let mut progress = CommandProgress::new("replaying", letters.len() as u64);
            let mut failed = 0;
            for letter in &letters {
                match replay(&audit, queue.as_ref(), letter, &by).await {
                    Ok(()) => progress.step(&format!("{} {} replayed", letter.id, letter.event_type)),
                    Err(error) => {
                        failed += 1;
                        progress.step(&format!("{} FAILED: {error}", letter.id));
                    }
                }
            }
            progress.finish();
            queue.close().await;
            eprintln!("{} replayed, {failed} failed", letters.len() - failed);
            if failed > 0 {
                bail!("{failed} dead letter(s) could not be replayed");
            }
            Ok(())
        }
        DlqCommand::Purge { ids, yes } => {
            let letters = select(&store, &tenant, &ids, None).await?;
            if !yes && !confirm(&format!("Purge {} dead letter(s) for good?", letters.len()))? {
                bail!("not purged (confirm, or pass --yes)");
            }
            let mut progress = CommandProgress::new("purging", letters.len() as u64);
            let mut gone = 0;
            for letter in &letters {
                // Replayed (from the console, or another run) since it was listed: not purged.
                if !store.purge_dead_letter(&letter.id).await? {
                    gone += 1;
                    progress.step(&format!(
                        "{} no longer dead (replayed meanwhile): not purged",
                        letter.id
                    ));
                    continue;
                }
                tracing::info!(dead_letter = %letter.id, event_id = %letter.event_id, "dead letter purged");
                progress.step(&format!("{} purged", letter.id));
            }
            progress.finish();
            eprintln!("{} purged", letters.len() - gone);
            if gone > 0 {
                bail!("{gone} dead letter(s) were replayed meanwhile and not purged");
            }
            Ok(())
        }
    }
}

/// `tenant`'s dead letters named by `ids`, or all of `event_type` (or all) when no ids are
/// given.
async fn select(
    store: &Store,
    tenant: &str,
    ids: &[String],
    event_type: Option<String>,
) -> anyhow::Result<Vec<DeadLetterRow>> {
    if ids.is_empty() {
        let mut letters = store
            .dead_letters(&DeadLetterFilter {
                event_type,
                limit: None,
            })
            .await?;
        letters.retain(|letter| letter.tenant() == tenant);
        return Ok(letters);
    }
    let mut letters = Vec::with_capacity(ids.len());
    for id in ids {
        match store.dead_letter(id).await? {
            Some((letter, _)) if letter.tenant() != tenant => {
                bail!(
                    "dead letter {id} is tenant `{}`'s, not `{tenant}`'s",
                    letter.tenant()
                )
            }
            Some((letter, true)) => letters.push(letter),
            Some((_, false)) => bail!("dead letter {id} was already replayed"),
            None => bail!("no dead letter {id}"),
        }
    }
    Ok(letters)
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn list(letters: &[DeadLetterRow]) -> String {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|l| {
            vec![
                l.id.clone(),
                l.event_type.clone(),
                l.subject.clone().unwrap_or_else(|| "-".to_owned()),
                l.attempts.to_string(),
                table::age((now - l.dead_at).num_seconds()),
                table::truncate(&l.reason, 80),
            ]
        })
        .collect();
    table::render(&["ID", "TYPE", "SUBJECT", "ATTEMPTS", "AGE", "REASON"], &rows)
}

fn show(letter: &DeadLetterRow, still_dead: bool) -> String {
    let envelope = serde_json::from_str::<serde_json::Value>(&letter.body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| letter.body.clone());
    let time = |t: Option<chrono::DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    let mut out = format!(
        "id:             {}\nstate:          {}\nevent:          {} ({})\nrouting key:    {}\nreason:         {}\nattempts:       {}\nfirst failure:  {}\nlast failure:   {}\ndead since:     {}\n\nfailure history:\n",
        letter.id,
        if still_dead { "dead" } else { "replayed" },
        letter.event_id,
        letter.event_type,
        letter.routing_key,
        letter.reason,
        letter.attempts,
        time(letter.first_failure_at),
        time(letter.last_failure_at),
        letter.dead_at.to_rfc3339(),
    );
    if letter.history.is_empty() {
        out.push_str("  (none recorded)\n");
    }
    for failure in &letter.history {
        out.push_str(&format!(
            "  #{} {}  {}\n",
            failure.attempt,
            failure.at.to_rfc3339(),
            failure.error
        ));
    }
    out.push_str("\nenvelope:\n");
    out.push_str(&envelope);
    out.push('\n');
    // Reasons, errors and the payload are outside text: escaped, never obeyed.
    terminal::safe_lines(&out).into_owned()
}
