//! Performing actions for real: Confluence, SCIM and user management through the rate-limited
//! clients, and violation notices onto the events exchange.

use std::sync::Arc;

use async_trait::async_trait;
use handlers::plan::{ScimUserRef, Violation};
use handlers::{Action, Envelope, EventType};

use super::own_events;
use super::perform::{ActionError, Perform, Performed};
use crate::atlassian::{ApiError, AtlassianClients, NewScimUser, Receipt};
use crate::queue::Queue;

impl From<ApiError> for ActionError {
    fn from(error: ApiError) -> Self {
        ActionError {
            kind: error.kind_for_events(),
            http_status: error.status(),
            request_id: error.request_id().map(str::to_owned),
            message: error.to_string(),
        }
    }
}

fn receipt(receipt: Receipt) -> Performed {
    Performed {
        request_id: receipt.request_id,
        http_status: Some(receipt.status),
        note: None,
    }
}

/// Performs against Atlassian and the queue.
pub struct LivePerformer {
    /// Absent without `[atlassian]`: then only notices can be performed.
    clients: Option<Arc<AtlassianClients>>,
    queue: Arc<dyn Queue>,
}

impl std::fmt::Debug for LivePerformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePerformer").finish_non_exhaustive()
    }
}

impl LivePerformer {
    pub fn new(clients: Option<Arc<AtlassianClients>>, queue: Arc<dyn Queue>) -> Self {
        LivePerformer { clients, queue }
    }

    fn clients(&self) -> Result<&AtlassianClients, ActionError> {
        self.clients
            .as_deref()
            .ok_or_else(|| ActionError::permanent("no [atlassian] section is configured"))
    }

    async fn scim_user_id(&self, user: &ScimUserRef) -> Result<String, ActionError> {
        let scim = self.clients()?.scim()?;
        let found = match user {
            ScimUserRef::Id(id) => return Ok(id.clone()),
            ScimUserRef::ExternalId(id) => scim.user_by_external_id(id).await?,
            ScimUserRef::UserName(name) => scim.user_by_user_name(name).await?,
        };
        // Created by an earlier action of the plan: if the directory does not show it yet, it
        // will (retry), it is not a reason to give up.
        found
            .map(|u| u.id)
            .ok_or_else(|| ActionError::transient(format!("{user} not found in the SCIM directory yet")))
    }

    async fn notify(&self, violation: &Violation, envelope: &Envelope) -> Result<Performed, ActionError> {
        let body = serde_json::json!({ "violation": violation, "event_id": envelope.id, "event_type": envelope.event_type });
        let target = violation
            .account_id
            .clone()
            .or_else(|| violation.group.as_ref().and_then(|g| g.name.clone()));
        // One notice per event, rule and target, however often the event is retried.
        let key = handlers::internal_dedupe_key(
            "violation",
            &format!(
                "{}:{}:{}",
                envelope.id,
                violation.rule,
                target.unwrap_or_default()
            ),
        );
        let mut notice = own_events::envelope(EventType::PolicyViolation, key, &body)
            .map_err(|e| ActionError::permanent(format!("violation: {e}")))?;
        notice.tenant = envelope.tenant.clone();
        notice.subject.account_id = violation.account_id.clone();
        notice.subject.group = violation.group.clone();
        notice.actor.account_id = violation.actor_account_id.clone();
        let message = own_events::message(&notice);
        self.queue
            .publish(&message)
            .await
            .map_err(|e| ActionError::transient(format!("cannot publish the violation notice: {e}")))?;
        Ok(Performed {
            request_id: None,
            http_status: None,
            note: Some(format!("policy.violation {} published", notice.id)),
        })
    }
}

#[async_trait]
impl Perform for LivePerformer {
    async fn perform(&self, action: &Action, envelope: &Envelope) -> Result<Performed, ActionError> {
        match action {
            Action::ConfluenceRemoveMember {
                group_id, account_id, ..
            } => Ok(receipt(
                self.clients()?
                    .confluence()?
                    .remove_member(group_id, account_id)
                    .await?,
            )),
            Action::ConfluenceAddMember {
                group_id, account_id, ..
            } => Ok(receipt(
                self.clients()?
                    .confluence()?
                    .add_member(group_id, account_id)
                    .await?,
            )),
            Action::ScimDeactivate { user_id, .. } => {
                Ok(receipt(self.clients()?.scim()?.set_active(user_id, false).await?))
            }
            Action::ScimCreateUser {
                user_name,
                external_id,
                display_name,
                email,
            } => {
                let created = self
                    .clients()?
                    .scim()?
                    .create_user(&NewScimUser {
                        user_name: user_name.clone(),
                        external_id: external_id.clone(),
                        display_name: display_name.clone(),
                        given_name: None,
                        family_name: None,
                        email: email.clone(),
                        active: true,
                    })
                    .await?;
                Ok(Performed {
                    request_id: created.request_id,
                    http_status: Some(if created.created { 201 } else { 409 }),
                    note: (!created.created)
                        .then(|| format!("already existed as scim-user:{}", created.user.id)),
                })
            }
            Action::ScimAddGroupMember { group_id, user, .. } => {
                let user_id = self.scim_user_id(user).await?;
                Ok(receipt(
                    self.clients()?
                        .scim()?
                        .add_group_member(group_id, &user_id)
                        .await?,
                ))
            }
            Action::LifecycleDisable { account_id } => {
                let message = format!(
                    "Disabled by gatehouse after {} (event {})",
                    envelope.event_type, envelope.id
                );
                Ok(receipt(
                    self.clients()?
                        .admin()?
                        .lifecycle_disable(account_id, Some(&message))
                        .await?,
                ))
            }
            Action::Notify { violation } => self.notify(violation, envelope).await,
        }
    }
}
