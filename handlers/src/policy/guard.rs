//! Watching groups: a membership of a protected group that is not allowed is reverted and
//! reported; a new group whose name breaks the naming rule, or the removal of a protected group,
//! is reported. Reports are `policy.violation` envelopes other automations subscribe to.

use super::{Policy, ProtectedGroup, account_of};
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
    // Groups are matched by id: names are case-sensitive and an event may name a group one way
    // and mean another. An event naming only a name is resolved to its id first.
    let group_id = match (&group.id, &group.name) {
        (Some(id), _) => id.clone(),
        (None, Some(name)) => match ports.confluence.group_by_name(name).await? {
            Some(found) => found.id,
            None => {
                plan.warnings.push(format!(
                    "group `{name}` named by the event does not exist (names are case-sensitive): nothing to revert"
                ));
                return Ok(());
            }
        },
        (None, None) => return Err(PortError::permanent("group.member_added event names no group")),
    };
    let Some(protected) = protected_group_with_id(policy, &group_id, ports, plan).await? else {
        return Ok(());
    };
    let name = protected.name.clone();
    if let Some(said) = group.name.as_deref().filter(|said| *said != name) {
        plan.warnings.push(format!(
            "the event calls group {group_id} `{said}`, but it is protected group `{name}`"
        ));
    }
    let actor = envelope.actor.account_id.as_deref();
    let allowed_actor = actor.filter(|a| protected.allowed_actors.iter().any(|x| x == a));
    if let Some(actor) = allowed_actor
        && !envelope.scheme.signs_payload()
    {
        plan.warnings.push(format!(
            "actor {actor} is in allowed_actors, but {} does not sign the actor: not believed",
            envelope.scheme
        ));
    }
    if protected.allow.iter().any(|a| a == account)
        || (allowed_actor.is_some() && envelope.scheme.signs_payload())
    {
        return Ok(());
    }
    // Who added them is unknown (the reconciler found the membership: Confluence sends no
    // membership events), or claimed to be an allowed actor by a sender that does not sign it,
    // and the group has owners who may add anyone: reverting at once would undo every owner's
    // addition. A person decides instead.
    let ask_first = !protected.allowed_actors.is_empty()
        && (actor.is_none() || (allowed_actor.is_some() && !envelope.scheme.signs_payload()));
    if ask_first {
        plan.warnings.push(format!(
            "it is not known whether one of protected group `{name}`'s allowed_actors added \
             {account}: the removal waits for a person's approval"
        ));
    }
    let first = plan.actions.len();
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
    if ask_first {
        for planned in &mut plan.actions[first..] {
            planned.needs_approval = true;
        }
    }
    Ok(())
}

/// The protected group whose id is `group_id`, resolving each configured name to its id (a
/// configured name that no group has is warned about).
async fn protected_group_with_id<'p>(
    policy: &'p Policy,
    group_id: &str,
    ports: &Ports<'_>,
    plan: &mut Plan,
) -> Result<Option<&'p ProtectedGroup>, PortError> {
    for protected in &policy.config.protected_groups {
        match ports.confluence.group_by_name(&protected.name).await? {
            Some(found) if found.id == group_id => return Ok(Some(protected)),
            Some(_) => {}
            None => plan.warnings.push(format!(
                "protected group `{}` does not exist in Confluence (names are case-sensitive)",
                protected.name
            )),
        }
    }
    Ok(None)
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
