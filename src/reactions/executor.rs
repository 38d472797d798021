//! The executor: performs a plan once, under the policy's dry-run and approval settings, with
//! everything on the audit trail.
//!
//! For each plan:
//! - nothing to do: a `skipped` record with the plan's note (e.g. a stale event);
//! - dry run: a `planned` record per action, marked `dry_run`; nothing is called;
//! - approval needed and not given: the whole plan is stored as pending (`gatehouse approvals`),
//!   with a `planned` record per action whose outcome is `pending_approval`; unless the same
//!   plan already waits for another copy of the fact: a `skipped` record, nobody asked again;
//! - otherwise: a `planned` record per action, then each action in order. An action whose
//!   idempotency key is already recorded as executed is skipped (a redelivery, a retry after a
//!   partial failure); a performed action is recorded as executed in the same transaction as its
//!   `executed` audit record. A transient failure stops the plan and comes back through the
//!   queue's retry ladder (actions done so far are not repeated); a permanent one is recorded
//!   and the other actions go on (but not those that build on it), and the event is then
//!   dead-lettered naming what failed.

use std::sync::Arc;

use handlers::ports::ErrorKind;
use handlers::{Action, Authority, Envelope, Plan, PlannedAction};

use super::perform::Perform;
use crate::audit::{ActionRef, AuditKind, AuditLog, NewRecord, Outcome};
use crate::config::{Settings, Span};
use crate::outbound::Outbox;
use crate::store::executed_actions::{self, ExecutedAction};
use crate::store::{Approval, ApprovalState, NewApproval, Store, approvals};
use crate::worker::ProcessError;

/// What running a plan came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// Nothing to do (the note says why, if the plan gave one).
    Nothing(Option<String>),
    /// Recorded as planned, nothing called.
    DryRun { actions: usize },
    /// Waiting for a person; the approval's id.
    Pending { approval_id: String },
    /// Performed.
    Done { performed: usize, already_done: usize },
}

#[derive(Clone)]
pub struct Executor {
    store: Store,
    audit: AuditLog,
    performer: Arc<dyn Perform>,
    /// The global dry-run setting (a plan's own setting wins).
    dry_run: bool,
    /// Where people decide hears of a plan that starts waiting (Slack), with the plan.
    outbox: Outbox,
    /// How long a plan waits for a decision (`reactions.approval_ttl`), for the message.
    approval_ttl: Span,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Whether a refusal of `action` stops the plan: what comes after it builds on it (a SCIM
/// user's group memberships need the user created).
fn stops_the_plan(action: &Action) -> bool {
    matches!(action, Action::ScimCreateUser { .. })
}

/// Whether `action` is held back once an earlier action of its plan was refused: a violation
/// notice reports what the plan did ("removed again"), which is no longer true.
fn needs_what_came_before(action: &Action) -> bool {
    matches!(action, Action::Notify { .. })
}

fn audit_error(error: impl std::fmt::Display) -> ProcessError {
    // Fail closed: the audit trail (or the store) refused; do not go on, try again later.
    ProcessError::transient(format!("cannot record in the audit trail: {error}"))
}

impl Executor {
    pub fn new(store: Store, audit: AuditLog, performer: Arc<dyn Perform>, settings: &Settings) -> Self {
        Executor {
            store,
            audit,
            performer,
            dry_run: settings.reactions.dry_run,
            outbox: Outbox::from_settings(settings),
            approval_ttl: settings.reactions.approval_ttl,
        }
    }

    /// Runs a freshly made plan: dry run, approval, or execution.
    pub async fn run(&self, plan: &Plan, envelope: &Envelope, attempt: u32) -> Result<Ran, ProcessError> {
        if plan.is_empty() {
            let mut record = self.record(plan, envelope, AuditKind::Skipped, None, attempt);
            record.outcome = Outcome::status("nothing to do");
            record.outcome.error = plan.note.clone();
            record.warnings = plan.warnings.clone();
            self.audit.append(record).await.map_err(audit_error)?;
            return Ok(Ran::Nothing(plan.note.clone()));
        }
        if plan.dry_run.unwrap_or(self.dry_run) {
            self.record_dry_run(plan, envelope, attempt).await?;
            return Ok(Ran::DryRun {
                actions: plan.actions.len(),
            });
        }
        if plan.needs_approval() {
            return self.request_approval(plan, envelope, attempt).await;
        }
        self.execute(plan, envelope, attempt).await
    }

    /// Performs `plan` as it is (also: an approved plan, exactly as it was recorded).
    pub async fn execute(&self, plan: &Plan, envelope: &Envelope, attempt: u32) -> Result<Ran, ProcessError> {
        let done = self
            .store
            .executed_keys(&plan.event_id.to_string())
            .await
            .map_err(|e| ProcessError::transient(format!("store: {e}")))?;
        let pending: Vec<&PlannedAction> = plan
            .actions
            .iter()
            .filter(|planned| !done.contains(&planned.idempotency_key))
            .collect();
        let already_done = plan.actions.len() - pending.len();
        let records =
            self.planned_records(plan, pending.iter().copied(), envelope, attempt, "planned", false);
        self.audit.append_all(records).await.map_err(audit_error)?;
        if already_done > 0 {
            let mut record = self.record(plan, envelope, AuditKind::Skipped, None, attempt);
            record.outcome = Outcome::status(format!(
                "{already_done} action(s) already executed for this event"
            ));
            self.audit.append(record).await.map_err(audit_error)?;
        }

        // An action that can never succeed (a group deleted meanwhile, a group the IdP manages)
        // must not keep a leaver in every group after it: the actions after a refused one are
        // still performed, unless they need it (see `needs_what_came_before`). A transient
        // failure stops the plan at once instead: the retry performs what is left, and what was
        // done is not done again.
        let mut refused: Vec<String> = Vec::new();
        let mut held_back = 0;
        for planned in &pending {
            if !refused.is_empty() && needs_what_came_before(&planned.action) {
                held_back += 1;
                continue;
            }
            match self.performer.perform(&planned.action, envelope).await {
                Ok(performed) => {
                    let mut record = self.record(plan, envelope, AuditKind::Executed, Some(planned), attempt);
                    record.outcome = Outcome::ok();
                    record.outcome.http_status = performed.http_status;
                    record.outcome.error = performed.note.clone();
                    record.request_id = performed.request_id.clone();
                    self.record_executed(plan, planned, record).await;
                    tracing::info!(
                        action = planned.action.type_name(),
                        target = %planned.action.target(),
                        org_wide = planned.action.org_wide(),
                        "action executed"
                    );
                }
                Err(error) => {
                    let mut record = self.record(plan, envelope, AuditKind::Failed, Some(planned), attempt);
                    record.outcome = Outcome::error(error.message.clone());
                    record.outcome.http_status = error.http_status;
                    record.request_id = error.request_id.clone();
                    self.audit.append(record).await.map_err(audit_error)?;
                    tracing::warn!(action = planned.action.type_name(), target = %planned.action.target(), error = %error.message, "action failed");
                    let message = format!(
                        "{} {}: {}",
                        planned.action.type_name(),
                        planned.action.target(),
                        error.message
                    );
                    if error.kind == ErrorKind::Transient {
                        return Err(ProcessError::transient(match refused.first() {
                            Some(first) => format!(
                                "{message} (before it, {} action(s) failed for good; first: {first})",
                                refused.len()
                            ),
                            None => message,
                        }));
                    }
                    if stops_the_plan(&planned.action) {
                        return Err(ProcessError::permanent(message));
                    }
                    refused.push(message);
                }
            }
        }
        if let Some(first) = refused.first() {
            let held = if held_back > 0 {
                format!(", {held_back} held back as they report or build on the others")
            } else {
                String::new()
            };
            return Err(ProcessError::permanent(format!(
                "{} of {} action(s) failed for good, the others performed{held}; first: {first}",
                refused.len(),
                pending.len()
            )));
        }
        Ok(Ran::Done {
            performed: pending.len(),
            already_done,
        })
    }

    /// Whether `[reactions] dry_run` is on.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Records what an approved plan would do, as a dry run (`planned` records marked
    /// `dry_run`), when dry run was switched on after the plan was asked for.
    pub async fn record_dry_run(
        &self,
        plan: &Plan,
        envelope: &Envelope,
        attempt: u32,
    ) -> Result<(), ProcessError> {
        let records = self.planned_records(plan, &plan.actions, envelope, attempt, "dry_run", true);
        self.audit.append_all(records).await.map_err(audit_error)?;
        Ok(())
    }

    /// Records that an approval's plan will not run (what it was about changed since), moving
    /// it from `from` (pending or approved) to `superseded` in the same transaction as the
    /// `skipped` record.
    pub async fn supersede(
        &self,
        approval: &Approval,
        from: ApprovalState,
        plan: &Plan,
        envelope: &Envelope,
        attempt: u32,
        why: &str,
    ) -> Result<(), ProcessError> {
        let mut record = self.record(plan, envelope, AuditKind::Skipped, None, attempt);
        record.outcome = Outcome::status(format!("superseded (approval {})", approval.id));
        record.outcome.error = Some(why.to_owned());
        let moved = super::approvals::transition(
            &self.audit,
            Some(&self.outbox),
            approval,
            (from, ApprovalState::Superseded),
            "gatehouse",
            Some(why),
            record,
        )
        .await
        .map_err(audit_error)?;
        if !moved {
            tracing::info!(approval = %approval.id, "approval was settled meanwhile; nothing to supersede");
        }
        Ok(())
    }

    /// A pending approval that asks for exactly `plan`'s actions about the same account, from
    /// the same policy and tenant, for an event of the same type: another copy of the fact (the
    /// same leaver reported by the admin webhook and the org-events poll, or by HR twice) asks
    /// nobody again. Copies about one account are handled one at a time (the worker's account
    /// claim), so two cannot both miss each other's approval. Only a pending one: an approved
    /// one may never run (held by dry run, dead-lettered), and a copy must not be lost in it.
    async fn same_plan_waiting(
        &self,
        plan: &Plan,
        envelope: &Envelope,
    ) -> Result<Option<Approval>, ProcessError> {
        let Some(account) = envelope.subject.account_id.as_deref() else {
            return Ok(None);
        };
        let pending = self
            .store
            .pending_approvals_for(account)
            .await
            .map_err(|e| ProcessError::transient(format!("store: {e}")))?;
        let actions: Vec<&Action> = plan.actions.iter().map(|planned| &planned.action).collect();
        // The waiting plan must yield exactly when this one would: the same type (an observed
        // deactivation's plan yields when the person is active again, a removal's does not),
        // and a decision's plan never waits on an observation's.
        let yields_alike = |waiting: &Envelope| {
            waiting.event_type == envelope.event_type
                && (envelope.authority != Authority::Decision || waiting.authority == Authority::Decision)
        };
        // Nor one about to expire: a copy joined to it would expire with it, unseen.
        let joinable_until = chrono::Utc::now()
            .checked_add_signed(self.approval_ttl.as_delta() / 10)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        Ok(pending.into_iter().find(|approval| {
            super::approvals::expires_at(approval.created_at, self.approval_ttl) > joinable_until
                && approval.handler == plan.handler
                && approval.tenant() == envelope.tenant_name()
                && approval.event_id != plan.event_id.to_string()
                && serde_json::from_str::<Envelope>(&approval.envelope).is_ok_and(|w| yields_alike(&w))
                && serde_json::from_str::<Plan>(&approval.plan).is_ok_and(|waiting| {
                    waiting
                        .actions
                        .iter()
                        .map(|planned| &planned.action)
                        .eq(actions.iter().copied())
                })
        }))
    }

    async fn request_approval(
        &self,
        plan: &Plan,
        envelope: &Envelope,
        attempt: u32,
    ) -> Result<Ran, ProcessError> {
        if let Some(waiting) = self.same_plan_waiting(plan, envelope).await? {
            let mut record = self.record(plan, envelope, AuditKind::Skipped, None, attempt);
            record.outcome = Outcome::status(format!("already asked (approval {})", waiting.id));
            record.outcome.error = Some(format!(
                "the same plan already waits for approval {} (event {}): not asked again",
                waiting.id, waiting.event_id
            ));
            record.warnings = plan.warnings.clone();
            self.audit.append(record).await.map_err(audit_error)?;
            tracing::info!(approval = %waiting.id, handler = %plan.handler, "the same plan already waits for approval; not asked again");
            return Ok(Ran::Pending {
                approval_id: waiting.id,
            });
        }
        let plan_json =
            serde_json::to_string(plan).map_err(|e| ProcessError::permanent(format!("plan: {e}")))?;
        let envelope_json =
            serde_json::to_string(envelope).map_err(|e| ProcessError::permanent(format!("envelope: {e}")))?;
        let event_type = envelope.event_type.to_string();
        let new = NewApproval {
            event_id: &envelope.id.to_string(),
            handler: &plan.handler,
            event_type: &event_type,
            account_id: envelope.subject.account_id.as_deref(),
            plan: &plan_json,
            envelope: &envelope_json,
        };
        // The pending plan and its `planned` records commit together.
        let write = async {
            let mut tx = self.store.begin_write().await.map_err(audit_error)?;
            let (approval, created) = approvals::request(&mut tx, &new)
                .await
                .map_err(|e| ProcessError::transient(format!("store: {e}")))?;
            if created {
                let records =
                    self.planned_records(plan, &plan.actions, envelope, attempt, "pending_approval", false);
                self.audit
                    .append_in(&mut tx, records)
                    .await
                    .map_err(audit_error)?;
                // Where people decide (Slack) hears of it with the plan, or neither is written.
                let expires = super::approvals::expires_at(approval.created_at, self.approval_ttl);
                let asks = self
                    .outbox
                    .for_approval(&approval.id, plan, envelope, expires)
                    .map_err(|e| ProcessError::permanent(format!("approval message: {e}")))?;
                crate::store::outbox::enqueue_in(&mut tx, &asks)
                    .await
                    .map_err(|e| ProcessError::transient(format!("store: {e}")))?;
            }
            tx.commit().await.map_err(audit_error)?;
            Ok((approval, created))
        };
        let (approval, created) = self.audit.bounded(write, audit_error).await?;
        if created {
            tracing::warn!(approval = %approval.id, handler = %plan.handler, actions = plan.actions.len(), "plan waits for approval (gatehouse approvals approve …)");
        }
        Ok(Ran::Pending {
            approval_id: approval.id,
        })
    }

    /// A `planned` record per action with outcome `status`; the first carries the plan's
    /// warnings.
    fn planned_records<'a>(
        &self,
        plan: &Plan,
        actions: impl IntoIterator<Item = &'a PlannedAction>,
        envelope: &Envelope,
        attempt: u32,
        status: &str,
        dry_run: bool,
    ) -> Vec<NewRecord> {
        actions
            .into_iter()
            .enumerate()
            .map(|(i, planned)| {
                let mut record = self.record(plan, envelope, AuditKind::Planned, Some(planned), attempt);
                record.dry_run = dry_run;
                record.outcome = Outcome::status(status);
                if i == 0 {
                    record.warnings = plan.warnings.clone();
                }
                record
            })
            .collect()
    }

    /// The action's row and its `executed` record, in one transaction. The action already
    /// happened, so a failed write is retried here, backing off, until it is durable: handing it
    /// to the queue's ladder would perform the action again. Holding the event meanwhile is the
    /// worker's fail-closed stance anyway; only the end of the shutdown grace period (or a crash)
    /// interrupts it, and then the next holder performs the action again, which is idempotent.
    async fn record_executed(&self, plan: &Plan, planned: &PlannedAction, record: NewRecord) {
        let mut delay = std::time::Duration::from_millis(200);
        while let Err(error) = self.write_executed(plan, planned, record.clone()).await {
            tracing::error!(error = %error.message, action = planned.action.type_name(), target = %planned.action.target(), retry_in_ms = delay.as_millis() as u64, "performed but cannot record it yet; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(10));
        }
    }

    async fn write_executed(
        &self,
        plan: &Plan,
        planned: &PlannedAction,
        record: NewRecord,
    ) -> Result<(), ProcessError> {
        let event_id = plan.event_id.to_string();
        let target = planned.action.target();
        let request_id = record.request_id.clone();
        let write = async {
            let mut tx = self.store.begin_write().await.map_err(audit_error)?;
            executed_actions::insert(
                &mut tx,
                &ExecutedAction {
                    idempotency_key: &planned.idempotency_key,
                    event_id: &event_id,
                    handler: &plan.handler,
                    action_type: planned.action.type_name(),
                    target: &target,
                    request_id: request_id.as_deref(),
                },
            )
            .await
            .map_err(audit_error)?;
            self.audit
                .append_in(&mut tx, vec![record])
                .await
                .map_err(audit_error)?;
            tx.commit().await.map_err(audit_error)?;
            Ok(())
        };
        self.audit.bounded(write, audit_error).await
    }

    fn record(
        &self,
        plan: &Plan,
        envelope: &Envelope,
        kind: AuditKind,
        planned: Option<&PlannedAction>,
        attempt: u32,
    ) -> NewRecord {
        let mut record = NewRecord::about(envelope, kind);
        record.handler = Some(plan.handler.clone());
        record.attempt = attempt;
        record.account_id = planned
            .and_then(|p| p.action.account_id().map(str::to_owned))
            .or_else(|| envelope.subject.account_id.clone());
        record.action = planned.map(|p| ActionRef {
            action_type: p.action.type_name().to_owned(),
            target: p.action.target(),
            org_wide: p.action.org_wide(),
        });
        record
    }
}
