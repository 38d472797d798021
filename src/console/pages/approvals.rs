//! Pending approvals: each plan with who it is about, its policy, each action (organization-wide
//! ones marked), its warnings, its age and expiry; Approve and Reject (with a reason), decided
//! through `reactions::approvals` exactly as `gatehouse approvals` does, attributed to
//! `console:{operator}`.

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
use crate::reactions::approvals::{
    Deciders, approve_pending as approve_plan, expires_at, reject as reject_plan, tenant_of,
};
use crate::store::{Approval, ApprovalState};

/// The longest rejection reason kept.
const MAX_REASON: usize = 1_000;

#[derive(Debug, Serialize)]
struct ActionView {
    action_type: &'static str,
    target: String,
    reason: String,
    org_wide: bool,
    needs_approval: bool,
}

#[derive(Debug, Serialize)]
struct ApprovalView {
    id: String,
    tenant: String,
    event_type: String,
    event_id: String,
    /// The event's records in the audit view.
    audit_link: String,
    account: Option<String>,
    policy: String,
    created: String,
    age: String,
    expires: String,
    overdue: bool,
    actions: Vec<ActionView>,
    warnings: Vec<String>,
    note: Option<String>,
    /// The plan could not be read: shown, but it cannot be judged here.
    unreadable: bool,
}

fn view(approval: &Approval, ttl: crate::config::Span) -> ApprovalView {
    let now = Utc::now();
    let expiry = expires_at(approval.created_at, ttl);
    let plan = serde_json::from_str::<handlers::Plan>(&approval.plan).ok();
    let actions = plan
        .as_ref()
        .map(|plan| {
            plan.actions
                .iter()
                .map(|planned| ActionView {
                    action_type: planned.action.type_name(),
                    target: planned.action.target(),
                    reason: planned.reason.clone(),
                    org_wide: planned.action.org_wide(),
                    needs_approval: planned.needs_approval,
                })
                .collect()
        })
        .unwrap_or_default();
    ApprovalView {
        id: approval.id.clone(),
        tenant: approval.tenant(),
        event_type: approval.event_type.clone(),
        event_id: approval.event_id.clone(),
        audit_link: format!(
            "/console/audit?since=&{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("account_id", approval.account_id.as_deref().unwrap_or_default())
                .finish()
        ),
        account: approval.account_id.clone(),
        policy: approval.handler.clone(),
        created: time(approval.created_at),
        age: span((now - approval.created_at).num_seconds()),
        expires: time(expiry),
        overdue: expiry <= now,
        actions,
        warnings: plan.as_ref().map(|p| p.warnings.clone()).unwrap_or_default(),
        note: plan.as_ref().and_then(|p| p.note.clone()),
        unreadable: plan.is_none(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DecidedNotice {
    /// The approval just decided, and how (to say so at the top of the page).
    decided: Option<String>,
    result: Option<String>,
}

/// `GET /console/approvals`.
pub async fn list(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Query(done): Query<DecidedNotice>,
) -> Result<Response, ConsoleError> {
    let ttl = state.settings.reactions.approval_ttl;
    let pending: Vec<ApprovalView> = state
        .store
        .approvals(ApprovalState::Pending)
        .await?
        .iter()
        .map(|a| view(a, ttl))
        .collect();
    let notice = decided_notice(&done);
    page(
        &operator,
        "approvals.html",
        serde_json::json!({
            "frame": Frame::new(&operator, "approvals"),
            "pending": pending,
            "notice": notice,
            "ttl": ttl.to_string(),
        }),
    )
}

/// What the page says about the decision just made, if it was told of one.
fn decided_notice(done: &DecidedNotice) -> Option<String> {
    let result = match done.result.as_deref()? {
        "approved" => "approved: the plan is queued and will be performed as recorded",
        "rejected" => "rejected: nothing of it will be performed",
        _ => return None,
    };
    // Only an approval id is echoed (a link cannot make the page say anything else).
    let id: ulid::Ulid = done.decided.as_deref()?.parse().ok()?;
    Some(format!("Approval {id} {result}."))
}

/// `POST /console/approvals/{id}/approve`.
pub async fn approve(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    csrf::check(&operator, &Form::parse(&body))?;
    operator.require(operator.role.may_decide_approvals(), "approve plans")?;
    let tenant = tenant_of(&state.store, &id).await?;
    let by = operator.attributed();
    // A form sent twice, or a second operator's click, decides nothing (409); queuing a plan
    // again on purpose is the CLI's (`gatehouse approvals approve`).
    let approval = approve_plan(
        Deciders::new(&state.audit, &state.outbox),
        state.queue.as_ref(),
        (&tenant, &id),
        &by,
        state.settings.reactions.approval_ttl,
    )
    .await?;
    tracing::info!(approval = %approval.id, handler = %approval.handler, %by, "console: approved");
    Ok(operator.respond(Redirect::to(&format!(
        "/console/approvals?decided={}&result=approved",
        approval.id
    ))))
}

/// `POST /console/approvals/{id}/reject`, with an optional `reason`.
pub async fn reject(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let form = Form::parse(&body);
    csrf::check(&operator, &form)?;
    operator.require(operator.role.may_decide_approvals(), "reject plans")?;
    let reason = form
        .get("reason")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(MAX_REASON).collect::<String>());
    let tenant = tenant_of(&state.store, &id).await?;
    let by = operator.attributed();
    let approval = reject_plan(
        Deciders::new(&state.audit, &state.outbox),
        (&tenant, &id),
        &by,
        reason.as_deref(),
    )
    .await?;
    tracing::info!(approval = %approval.id, handler = %approval.handler, %by, "console: rejected");
    Ok(operator.respond(Redirect::to(&format!(
        "/console/approvals?decided={}&result=rejected",
        approval.id
    ))))
}
