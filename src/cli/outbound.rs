//! `gatehouse outbound`: the outbox of signed deliveries (`[[outbound]]`) and Slack messages.
//! `list` shows what waits, was delivered or is dead; `show` one delivery with every attempt;
//! `replay` sends dead (or delivered) deliveries again from the first rung of their ladder.

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Subcommand;

use super::table;
use crate::app::open_store;
use crate::config::{SLACK_OUTBOX, Settings};
use crate::outbound::slack;
use crate::store::outbox::{DeliveryState, OutboundDelivery};

#[derive(Debug, Subcommand)]
pub enum OutboundCommand {
    /// Deliveries, newest first: id, endpoint, type, state, attempts, last error.
    List {
        /// Only this endpoint's (`[[outbound]] name`, or `slack`).
        #[arg(long)]
        endpoint: Option<String>,
        /// Only deliveries in this state (pending, delivered, dead).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One delivery, with each attempt's time, status and error, and its payload.
    Show { id: String },
    /// Send deliveries again from the first rung: the ids given, or every dead one (`--dead`).
    Replay {
        ids: Vec<String>,
        /// Every dead delivery (of `--endpoint`, when given).
        #[arg(long)]
        dead: bool,
        #[arg(long)]
        endpoint: Option<String>,
    },
}

pub async fn run(settings: Settings, command: OutboundCommand) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    match command {
        OutboundCommand::List {
            endpoint,
            state,
            limit,
        } => {
            let state = state.as_deref().map(parse_state).transpose()?;
            let deliveries = store
                .outbound_deliveries(endpoint.as_deref(), state, limit)
                .await?;
            print!("{}", list(&deliveries));
            eprintln!("{} deliveries", deliveries.len());
        }
        OutboundCommand::Show { id } => {
            let (delivery, attempts) = store
                .outbound_delivery(&id)
                .await?
                .with_context(|| format!("no outbound delivery {id}"))?;
            println!(
                "delivery:  {}\nendpoint:  {}\ntype:      {}\ncarries:   {}\nstate:     {}\ncreated:   {}",
                delivery.id,
                delivery.endpoint,
                delivery.message_type,
                delivery.source_key,
                delivery.state.as_str(),
                delivery.created_at.to_rfc3339()
            );
            if delivery.state == DeliveryState::Pending {
                println!("next:      {}", delivery.next_attempt_at.to_rfc3339());
            }
            let rows: Vec<Vec<String>> = attempts
                .iter()
                .map(|a| {
                    vec![
                        a.attempt.to_string(),
                        a.at.to_rfc3339(),
                        format!("{} ms", a.millis),
                        a.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                        a.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!();
            print!(
                "{}",
                table::render(&["attempt", "at", "took", "status", "error"], &rows)
            );
            println!("\n{}", super::terminal::safe(&delivery.payload));
        }
        OutboundCommand::Replay { ids, dead, endpoint } => {
            let ids = match (dead, ids.is_empty()) {
                (true, true) => store
                    .outbound_deliveries(endpoint.as_deref(), Some(DeliveryState::Dead), u32::MAX)
                    .await?
                    .into_iter()
                    .map(|d| d.id)
                    .collect(),
                (false, false) => ids,
                (true, false) => bail!("give ids or --dead, not both"),
                (false, true) => bail!("give the ids to replay, or --dead for every dead delivery"),
            };
            let mut replayed = 0;
            for id in &ids {
                let posted = posted_request(&store, id).await?;
                if store.replay_outbound(id, posted.as_deref()).await? {
                    if let Some(approval) = posted {
                        eprintln!(
                            "{id}: approval {approval}'s request is posted to Slack again; an earlier \
                             message keeps its buttons (with a bot token, a settlement replaces the new one)"
                        );
                    }
                    replayed += 1;
                } else {
                    eprintln!("{id}: no such delivery, or it is still pending");
                }
            }
            eprintln!("{replayed} of {} deliveries will be sent again", ids.len());
            if replayed < ids.len() {
                bail!("{} could not be replayed", ids.len() - replayed);
            }
        }
    }
    Ok(())
}

/// The approval whose Slack request delivery `id` is, when it was sent (not pending): replayed,
/// it is posted again on purpose (the message was lost or deleted), so where the earlier post
/// went is forgotten with the replay.
async fn posted_request(store: &crate::store::Store, id: &str) -> anyhow::Result<Option<String>> {
    let Some((delivery, _)) = store.outbound_delivery(id).await? else {
        return Ok(None);
    };
    let request = delivery.endpoint == SLACK_OUTBOX
        && delivery.message_type == slack::REQUEST
        && delivery.state != DeliveryState::Pending;
    Ok(request
        .then(|| slack::approval_of(&delivery.source_key).map(str::to_owned))
        .flatten())
}

fn parse_state(name: &str) -> anyhow::Result<DeliveryState> {
    DeliveryState::parse(name).with_context(|| {
        let states: Vec<&str> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {name} ({})", states.join(", "))
    })
}

fn list(deliveries: &[OutboundDelivery]) -> String {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.endpoint.clone(),
                d.message_type.clone(),
                d.state.as_str().to_owned(),
                d.attempts.to_string(),
                table::age((now - d.created_at).num_seconds()),
                table::truncate(d.last_error.as_deref().unwrap_or(""), 80),
            ]
        })
        .collect();
    table::render(
        &["id", "endpoint", "type", "state", "attempts", "age", "last error"],
        &rows,
    )
}
