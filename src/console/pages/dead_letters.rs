//! Dead letters: the list, one letter with its failure history and envelope, and replay (for
//! `admin`s only), through `queue::replay` as `gatehouse dlq replay` does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::super::csrf::{self, Form};
use super::super::session::Operator;
use super::super::{ConsoleError, ConsoleState};
use super::{Frame, page, span, time};
use crate::queue::replay::replay as replay_letter;
use crate::store::{DeadLetterFilter, DeadLetterRow};

/// Letters listed at most.
const LIST_LIMIT: u32 = 500;

#[derive(Debug, Serialize)]
struct LetterView {
    id: String,
    /// The letter's page.
    href: String,
    tenant: String,
    event_type: String,
    event_id: String,
    subject: Option<String>,
    attempts: u32,
    reason: String,
    dead_at: String,
    age: String,
}

fn view(letter: &DeadLetterRow) -> LetterView {
    LetterView {
        id: letter.id.clone(),
        href: format!("/console/dead-letters/{}", path_segment(&letter.id)),
        tenant: letter.tenant(),
        event_type: letter.event_type.clone(),
        event_id: letter.event_id.clone(),
        subject: letter.subject.clone(),
        attempts: letter.attempts,
        reason: letter.reason.clone(),
        dead_at: time(letter.dead_at),
        age: span((Utc::now() - letter.dead_at).num_seconds()),
    }
}

#[derive(Debug, Deserialize)]
pub struct ReplayedNotice {
    replayed: Option<String>,
}

/// `GET /console/dead-letters`.
pub async fn list(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Query(done): Query<ReplayedNotice>,
) -> Result<Response, ConsoleError> {
    let letters: Vec<LetterView> = state
        .store
        .dead_letters(&DeadLetterFilter {
            event_type: None,
            limit: Some(LIST_LIMIT),
        })
        .await?
        .iter()
        .map(view)
        .collect();
    let total = state.store.count_dead_letters().await?;
    // Said only of a letter that was indeed replayed (a link cannot make the page say more).
    let notice = match done.replayed {
        Some(id) => match state.store.dead_letter(&id).await? {
            Some((_, false)) => Some(format!(
                "Dead letter {id} replayed: the event is back on the work queue."
            )),
            _ => None,
        },
        None => None,
    };
    page(
        &operator,
        "dead_letters.html",
        serde_json::json!({
            "frame": Frame::new(&operator, "dead-letters"),
            "letters": letters,
            "total": total,
            "notice": notice,
        }),
    )
}

/// `GET /console/dead-letters/{id}`.
pub async fn show(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let (letter, still_dead) = state
        .store
        .dead_letter(&id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no dead letter {id}")))?;
    let envelope = serde_json::from_str::<serde_json::Value>(&letter.body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| letter.body.clone());
    let history: Vec<(u32, String, String)> = letter
        .history
        .iter()
        .map(|f| (f.attempt, time(f.at), f.error.clone()))
        .collect();
    page(
        &operator,
        "dead_letter.html",
        serde_json::json!({
            "frame": Frame::new(&operator, "dead-letters"),
            "letter": view(&letter),
            "routing_key": letter.routing_key.clone(),
            "still_dead": still_dead,
            "first_failure": letter.first_failure_at.map(time),
            "last_failure": letter.last_failure_at.map(time),
            "history": history,
            "envelope": envelope,
        }),
    )
}

/// `POST /console/dead-letters/{id}/replay` (admins).
pub async fn replay(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    csrf::check(&operator, &Form::parse(&body))?;
    operator.require(operator.role.may_replay_dead_letters(), "replay dead letters")?;
    let (letter, still_dead) = state
        .store
        .dead_letter(&id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no dead letter {id}")))?;
    if !still_dead {
        return Err(ConsoleError::Conflict(format!(
            "dead letter {id} was already replayed"
        )));
    }
    replay_letter(
        &state.audit,
        state.queue.as_ref(),
        &letter,
        &operator.attributed(),
    )
    .await
    .map_err(|error| {
        tracing::warn!(dead_letter = %id, %error, "console: replay failed");
        ConsoleError::Unavailable(error.to_string())
    })?;
    tracing::info!(dead_letter = %id, operator = %operator.name, "console: dead letter replayed");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("replayed", &id);
    Ok(operator.respond(Redirect::to(&format!("/console/dead-letters?{}", query.finish()))))
}

/// `text` as one path segment (ids are usually safe; broker-made ones need not be).
fn path_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
