//! Watching groups: a membership of a protected group that is not allowed is reverted and
//! reported; a new group whose name breaks the naming rule, or the removal of a protected group,
//! is reported. Reports are `policy.violation` envelopes other automations subscribe to.

use super::{Policy, account_of};
use crate::event::{Envelope, EventType, GroupRef};
use crate::handler::Ports;
use crate::plan::{Action, Plan, Violation};
use crate::ports::PortError;

pub(super) async fn revert_membership(
    policy: &Policy,
    envelope: &Envelope,
    ports: &Ports<'_>,
    plan: &mut Plan,
) -> Result<(), PortError> {
    let account = account_of(envelope)?;
    let group = envelope.subject.group.clone().unwrap_or_default();
    // Events name groups by id, by name, or both; protected groups are configured by name.
    let name = match (&group.name, &group.id) {
        (Some(name), _) => name.clone(),
        (None, Some(_)) => {
            plan.warnings
                .push("group named by id only: cannot match it against protected groups".to_owned());
            return Ok(());
        }
        (None, None) => return Err(PortError::permanent("group.member_added event names no group")),
    };
    let Some(protected) = policy.config.protected_groups.iter().find(|p| p.name == name) else {
        return Ok(());
    };
    let actor = envelope.actor.account_id.as_deref();
    if protected.allow.iter().any(|a| a == account)
        || actor.is_some_and(|a| protected.allowed_actors.iter().any(|x| x == a))
    {
        return Ok(());
    }
    let group_id = match &group.id {
        Some(id) => id.clone(),
        None => match ports.confluence.group_by_name(&name).await? {
            Some(found) => found.id,
            None => {
                plan.warnings
                    .push(format!("protected group `{name}` no longer exists"));
                return Ok(());
            }
        },
    };
    plan.push(
        Action::ConfluenceRemoveMember {
            group_id: group_id.clone(),
            group_name: name.clone(),
            account_id: account.to_owned(),
        },
        format!("{account} is not allowed in protected group `{name}`"),
    );
    plan.push(
        Action::Notify {
            violation: Violation {
                rule: "protected_group_intrusion".to_owned(),
                summary: format!("{account} was added to protected group `{name}` and removed again"),
                account_id: Some(account.to_owned()),
                group: Some(GroupRef {
                    id: Some(group_id),
                    name: Some(name),
                }),
                actor_account_id: actor.map(str::to_owned),
            },
        },
        "protected group intrusion",
    );
    Ok(())
}

pub(super) fn group_changes(policy: &Policy, envelope: &Envelope, plan: &mut Plan) {
    let group = envelope.subject.group.clone().unwrap_or_default();
    let name = group.name.clone().unwrap_or_default();
    let actor = envelope.actor.account_id.clone();
    let violation = match envelope.event_type {
        EventType::GroupCreated => {
            let broken = policy
                .config
                .naming
                .as_ref()
                .map(|rule| rule.check(&name))
                .unwrap_or_default();
            (!broken.is_empty()).then(|| Violation {
                rule: "group_naming".to_owned(),
                summary: format!("new group `{name}` {}", broken.join("; ")),
                account_id: None,
                group: Some(group.clone()),
                actor_account_id: actor,
            })
        }
        EventType::GroupRemoved => policy
            .config
            .protected_groups
            .iter()
            .any(|p| p.name == name)
            .then(|| Violation {
                rule: "protected_group_removed".to_owned(),
                summary: format!("protected group `{name}` was removed"),
                account_id: None,
                group: Some(group.clone()),
                actor_account_id: actor,
            }),
        _ => None,
    };
    if let Some(violation) = violation {
        let reason = violation.summary.clone();
        plan.push(Action::Notify { violation }, reason);
    }
}
