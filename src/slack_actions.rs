//! `POST /slack/actions`: Slack's interactive callback, where the Approve / Reject clicks on
//! approval messages arrive (`[approvals.slack]`).
//!
//! The signature is checked on the raw body before anything parses it. A click is a decision
//! only when it is signed, fresh, and by one of `approvals.slack.approvers`; it then goes through
//! exactly the path `gatehouse approvals` takes (the approval and its audit record in one
//! transaction, an approved plan performed via the queue). Everything else decides nothing and is
//! recorded as `refused`. Whoever clicked hears back through the click's `response_url`, sent
//! from the outbox: the message is replaced with who decided and the result, or the clicker alone
//! is told why nothing was decided.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use serde::Deserialize;

use crate::audit::{ActionRef, AuditKind, AuditLog, NewRecord, Outcome};
use crate::config::{Settings, SlackSettings};
use crate::ingress::IngressError;
use crate::ingress::body::read_body;
use crate::ingress::limits::TokenBucket;
use crate::ingress::verify::{RequestParts, slack_signature};
use crate::outbound::Outbox;
use crate::outbound::slack::{APPROVE, ClickResult, REJECT, click_update};
use crate::printable::printable;
use crate::queue::Queue;
use crate::reactions::approvals::{Deciders, DecisionError, approve_pending, reject, tenant_of};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{SourceOutcome, SourceReason};

/// The largest interaction read: a click carries the whole message it was on.
const BODY_LIMIT: usize = 256 * 1024;

/// What deciding on a click needs.
#[derive(Debug)]
struct ClickState {
    settings: Arc<Settings>,
    slack: SlackSettings,
    store: Store,
    audit: AuditLog,
    queue: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    unverified: UnverifiedRecords,
    /// What a settlement a click runs into (an expiry) sends to Slack.
    outbox: Outbox,
}

/// How many unverified clicks reach the audit trail (`unverified_records_per_minute`): anyone
/// can post to this route, and the trail keeps every record, so a flood is recorded by count.
#[derive(Debug)]
struct UnverifiedRecords {
    budget: TokenBucket,
    /// Unverified clicks not recorded since the last one that was.
    unrecorded: AtomicU64,
}

impl UnverifiedRecords {
    fn per_minute(records: u32) -> Self {
        let records = f64::from(records.max(1));
        UnverifiedRecords {
            budget: TokenBucket::new(records / 60.0, records),
            unrecorded: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this click is to be recorded, `n` the clicks left unrecorded before it;
    /// `None` when it is only counted.
    fn admit(&self) -> Option<u64> {
        match self.budget.take() {
            Ok(()) => Some(self.unrecorded.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.unrecorded.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// A record that could not be written: its click and those before it count as unrecorded.
    fn not_written(&self, skipped: u64) {
        self.unrecorded.fetch_add(skipped + 1, Ordering::Relaxed);
    }
}

/// `POST /slack/actions` when `[approvals.slack]` is configured (an empty router otherwise).
pub fn router(
    settings: Arc<Settings>,
    (store, audit): (Store, AuditLog),
    queue: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
) -> Router {
    let Some(slack) = settings.approvals.slack.clone() else {
        return Router::new();
    };
    let state = Arc::new(ClickState {
        unverified: UnverifiedRecords::per_minute(slack.unverified_records_per_minute),
        outbox: Outbox::from_settings(&settings),
        settings,
        slack,
        store,
        audit,
        queue,
        metrics,
    });
    Router::new()
        // Bodies are limited while they are read (`read_body`, in the handler's timeout).
        .route("/slack/actions", post(actions))
        .with_state(state)
}

/// The metrics' and the audit trail's name for these requests.
const SOURCE: &str = "slack";

/// The parts of a `block_actions` payload a decision needs.
#[derive(Debug, Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<SlackAction>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlackAction {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    action_ts: Option<String>,
}

async fn actions(State(state): State<Arc<ClickState>>, headers: HeaderMap, body: Body) -> Response {
    let timeout = Duration::from_secs(state.settings.server.request_timeout_seconds);
    // The body is read inside the timeout: anyone can post here, and a click announcing a body
    // it never sends would otherwise hold its connection (and this task) for ever.
    let outcome = tokio::time::timeout(timeout, async {
        let body = read_body(body, &headers, BODY_LIMIT).await?;
        handle(&state, &headers, &body).await
    })
    .await
    .unwrap_or(Err(IngressError::Timeout));
    let label = match &outcome {
        Ok(word) => word,
        Err(error) => error.outcome(),
    };
    state
        .metrics
        .ingress_requests
        .get_or_create(&SourceOutcome {
            source: SOURCE.to_owned(),
            outcome: label,
        })
        .inc();
    match outcome {
        // Slack wants a quick empty 200; what the clicker sees comes through the response_url.
        Ok(_) => StatusCode::OK.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn handle(state: &ClickState, headers: &HeaderMap, body: &[u8]) -> Result<&'static str, IngressError> {
    let (slack, audit) = (&state.slack, &state.audit);
    let request = RequestParts {
        method: &Method::POST,
        path: "/slack/actions",
        query: None,
        headers,
        body,
    };
    if let Err(error) = slack_signature::verify(
        &slack.signing_secret,
        slack.tolerance_seconds,
        &request,
        Utc::now(),
    ) {
        state
            .metrics
            .verification_failures
            .get_or_create(&SourceReason {
                source: SOURCE.to_owned(),
                reason: error.reason(),
            })
            .inc();
        tracing::warn!(reason = error.reason(), "Slack click refused: {error}");
        if let Some(skipped) = state.unverified.admit() {
            let mut why = format!("verification failed: {error}");
            if skipped > 0 {
                why.push_str(&format!(
                    "; {skipped} more unverified clicks before this one were not recorded (approvals.slack.unverified_records_per_minute)"
                ));
            }
            if let Err(failed) = record(audit, refusal("slack.click", "unverified", 401, why)).await {
                state.unverified.not_written(skipped);
                return Err(failed);
            }
        }
        return Err(IngressError::Unauthorized(error));
    }
    let interaction = parse(body)?;
    if interaction.kind != "block_actions" {
        return Ok("ignored");
    }
    let Some(action) = interaction
        .actions
        .iter()
        .find(|a| a.action_id == APPROVE || a.action_id == REJECT)
    else {
        return Ok("ignored");
    };
    let approval_id = action
        .value
        .as_deref()
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .ok_or_else(|| IngressError::Malformed("the button carries no approval id".into()))?;
    let user = printable(&interaction.user.id, 32);
    let click = action
        .action_ts
        .as_deref()
        .map(|ts| printable(ts, 32))
        .unwrap_or_else(|| ulid::Ulid::generate().to_string());
    let result = if !slack.is_approver(&interaction.user.id) {
        let why = format!("Slack user {user} is not in approvals.slack.approvers");
        tracing::warn!(
            approval = approval_id,
            user,
            "a Slack click by someone who may not decide: nothing decided"
        );
        let mut refused = refusal(
            &format!("slack.{}", action.action_id),
            &format!("approval:{}", printable(approval_id, 64)),
            403,
            why.clone(),
        );
        if let Ok(Some(approval)) = state.store.approval(approval_id).await {
            refused.event_id = approval.event_id.parse().unwrap_or(refused.event_id);
            refused.account_id = approval.account_id.clone();
            refused.tenant = Some(approval.tenant());
        }
        record(audit, refused).await?;
        ClickResult::Refused("you are not one of the approvers".into())
    } else {
        decide(state, audit, approval_id, &action.action_id, &interaction.user).await?
    };
    if let Some(url) = &interaction.response_url {
        if slack.is_response_url(url) {
            let update = click_update(url, approval_id, &click, &result)
                .map_err(|e| IngressError::Unavailable(format!("cannot write the Slack update: {e}")))?;
            state
                .store
                .enqueue_outbound(&[update])
                .await
                .map_err(|e| IngressError::Unavailable(format!("cannot queue the Slack update: {e}")))?;
        } else {
            tracing::warn!(
                "a Slack click's response_url is not under approvals.slack.hooks_url; not answered"
            );
        }
    }
    Ok(match result {
        ClickResult::Decided { .. } => "decided",
        ClickResult::Refused(_) => "refused",
    })
}

/// The decision itself, through the path the CLI takes.
async fn decide(
    state: &ClickState,
    audit: &AuditLog,
    approval_id: &str,
    action: &str,
    user: &SlackUser,
) -> Result<ClickResult, IngressError> {
    let tenant = match tenant_of(&state.store, approval_id).await {
        Ok(tenant) => tenant,
        Err(error @ DecisionError::Unknown(_)) => return Ok(ClickResult::Refused(error.to_string())),
        Err(error) => return Err(IngressError::Unavailable(error.to_string())),
    };
    let by = match &user.username {
        Some(name) => format!("slack:{} ({})", printable(&user.id, 32), printable(name, 64)),
        None => format!("slack:{}", printable(&user.id, 32)),
    };
    let ttl = state.settings.reactions.approval_ttl;
    let deciders = Deciders::clicked(audit, &state.outbox);
    let decided = if action == APPROVE {
        approve_pending(deciders, state.queue.as_ref(), (&tenant, approval_id), &by, ttl)
            .await
            .map(|_| "approved")
    } else {
        reject(deciders, (&tenant, approval_id), &by, Some("rejected in Slack"))
            .await
            .map(|_| "rejected")
    };
    match decided {
        Ok(decision) => {
            tracing::info!(approval = approval_id, %by, decision, "decided in Slack");
            Ok(ClickResult::Decided {
                decision,
                by: user.id.clone(),
            })
        }
        Err(
            error @ (DecisionError::Unknown(_)
            | DecisionError::AlreadyDecided { .. }
            | DecisionError::Expired { .. }
            | DecisionError::OtherTenant { .. }),
        ) => Ok(ClickResult::Refused(error.to_string())),
        // Our own trouble: Slack shows the clicker that it failed, and a click later retries.
        Err(error) => Err(IngressError::Unavailable(error.to_string())),
    }
}

/// Slack posts `payload=<JSON>` form-encoded.
fn parse(body: &[u8]) -> Result<Interaction, IngressError> {
    let payload = url::form_urlencoded::parse(body)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| value)
        .ok_or_else(|| IngressError::Malformed("no `payload` field".into()))?;
    serde_json::from_str(&payload).map_err(|e| IngressError::Malformed(format!("payload: {e}")))
}

fn refusal(action_type: &str, target: &str, status: u16, why: String) -> NewRecord {
    let mut record = NewRecord::new(ulid::Ulid::generate(), AuditKind::Refused);
    record.action = Some(ActionRef {
        action_type: action_type.to_owned(),
        target: target.to_owned(),
        org_wide: false,
    });
    record.outcome = Outcome {
        status: "refused".to_owned(),
        http_status: Some(status),
        error: Some(why),
    };
    record
}

async fn record(audit: &AuditLog, record: NewRecord) -> Result<(), IngressError> {
    audit
        .append(record)
        .await
        .map(|_| ())
        .map_err(|e| IngressError::Unavailable(format!("cannot record the refused click: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_clicks_beyond_the_budget_are_counted_into_the_next_record() {
        // Two a minute: a burst of two, then one every 30 s.
        let records = UnverifiedRecords::per_minute(2);
        assert_eq!(records.admit(), Some(0));
        assert_eq!(records.admit(), Some(0));
        assert_eq!(records.admit(), None);
        assert_eq!(records.admit(), None);
        assert_eq!(records.unrecorded.load(Ordering::Relaxed), 2);
        // A record that could not be written gives its clicks back to the count.
        records.not_written(2);
        assert_eq!(records.unrecorded.load(Ordering::Relaxed), 5);
        // Once a record is allowed again, it carries the count.
        let refilled = UnverifiedRecords::per_minute(60 * 60);
        refilled.unrecorded.store(7, Ordering::Relaxed);
        assert_eq!(refilled.admit(), Some(7));
        assert_eq!(refilled.admit(), Some(0));
    }
}
