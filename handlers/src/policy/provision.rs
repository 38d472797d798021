//! A provisioning request from an HR system or IdP relay: find the person in the SCIM directory
//! (by external id, then user name) or create them, then add them to the requested SCIM groups
//! that the policy allows (`allowed_groups`). A request naming any other group (an attacker
//! asking for `confluence-administrators`) gets a warning in the plan and nothing is sent for it.
//! Every group not mapped to the Confluence product is warned about: such a person exists but
//! cannot log in.
//!
//! The request's `data` (Standard Webhooks relay body): `email` (the user name), `name`,
//! `external_id`, `groups` (SCIM group display names).

use serde::Deserialize;

use super::Policy;
use crate::event::Envelope;
use crate::handler::Ports;
use crate::plan::{Action, Plan, ScimUserRef};
use crate::ports::PortError;

#[derive(Debug, Deserialize)]
struct Body {
    data: Request,
}

#[derive(Debug, Deserialize)]
struct Request {
    email: Option<String>,
    #[serde(default, alias = "user_name")]
    username: Option<String>,
    #[serde(default, alias = "display_name")]
    name: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

pub(super) async fn provision(
    policy: &Policy,
    envelope: &Envelope,
    ports: &Ports<'_>,
    plan: &mut Plan,
) -> Result<(), PortError> {
    let scim = ports.scim("scim.provision")?;
    let body: Body = serde_json::from_str(envelope.payload.get())
        .map_err(|e| PortError::permanent(format!("provisioning request is malformed: {e}")))?;
    let request = body.data;
    let user_name = request
        .username
        .clone()
        .or_else(|| request.email.clone())
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| PortError::permanent("provisioning request has no email or username"))?;

    let existing = match &request.external_id {
        Some(external_id) => match scim.user_by_external_id(external_id).await? {
            Some(user) => Some(user),
            None => match scim.user_by_user_name(&user_name).await? {
                // The name is someone else's (a former employee's account, say): their groups
                // must not go to them, as creating the user would refuse too (409).
                Some(other) if other.external_id.as_deref().is_some_and(|id| id != external_id) => {
                    return Err(PortError::permanent(format!(
                        "SCIM user {user_name} exists with another externalId, not {external_id}: not the person requested; resolve it in the directory"
                    )));
                }
                found => found,
            },
        },
        None => scim.user_by_user_name(&user_name).await?,
    };
    let user = match existing {
        Some(user) => {
            if !user.active {
                plan.warnings.push(format!(
                    "SCIM user {user_name} exists but is deactivated: adding groups does not reactivate them"
                ));
            }
            ScimUserRef::Id(user.id)
        }
        None => {
            plan.push(
                Action::ScimCreateUser {
                    user_name: user_name.clone(),
                    external_id: request.external_id.clone(),
                    display_name: request.name.clone(),
                    email: request.email.clone(),
                },
                format!("provisioning request: create {user_name} in the identity directory"),
            );
            match &request.external_id {
                Some(external_id) => ScimUserRef::ExternalId(external_id.clone()),
                None => ScimUserRef::UserName(user_name.clone()),
            }
        }
    };
    for name in &request.groups {
        if !policy.config.allowed_groups.iter().any(|allowed| allowed == name) {
            plan.warnings.push(format!(
                "requested group `{name}` is not in this policy's allowed_groups: refused, not added"
            ));
            continue;
        }
        match scim.group_by_display_name(name).await? {
            Some(group) => {
                plan.push(
                    Action::ScimAddGroupMember {
                        group_id: group.id,
                        group_name: group.display_name,
                        user: user.clone(),
                    },
                    format!("provisioning request: {user_name} joins `{name}`"),
                );
                if let Some(warning) = policy.unmapped_warning(name) {
                    plan.warnings.push(warning);
                }
            }
            None => plan
                .warnings
                .push(format!("SCIM group `{name}` does not exist: not added")),
        }
    }
    Ok(())
}
