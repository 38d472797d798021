//! A person leaves: take their Confluence group memberships away (keeping the keep-list), and,
//! only where the policy opted in, deactivate them organization-wide.
//! (A stale deactivation never gets here: see `freshness`.)

use super::{Policy, account_of};
use crate::event::Envelope;
use crate::handler::Ports;
use crate::plan::{Action, Plan};
use crate::ports::PortError;

pub(super) async fn remove_from_all_groups(
    policy: &Policy,
    envelope: &Envelope,
    ports: &Ports<'_>,
    plan: &mut Plan,
) -> Result<(), PortError> {
    let account = account_of(envelope)?;
    let groups = ports.confluence.groups_of(account).await?;
    let keep = &policy.config.keep_groups;
    for group in groups {
        if keep.iter().any(|k| k == &group.name) {
            continue;
        }
        // Confluence group names are case-sensitive: a keep-list entry in another case keeps
        // nothing, which the plan says rather than removing the group without a word.
        if let Some(near) = keep.iter().find(|k| k.eq_ignore_ascii_case(&group.name)) {
            plan.warnings.push(format!(
                "keep_groups names `{near}`, but the group is `{}` (names are case-sensitive): not kept",
                group.name
            ));
        }
        plan.push(
            Action::ConfluenceRemoveMember {
                group_id: group.id,
                group_name: group.name.clone(),
                account_id: account.to_owned(),
            },
            format!(
                "{}: {account} loses access to `{}`",
                envelope.event_type, group.name
            ),
        );
    }
    Ok(())
}

pub(super) async fn scim_deactivate(
    envelope: &Envelope,
    ports: &Ports<'_>,
    plan: &mut Plan,
) -> Result<(), PortError> {
    let account = account_of(envelope)?;
    let scim = ports.scim("scim.deactivate")?;
    match scim.user_by_account_id(account).await? {
        Some(user) if user.active => plan.push(
            Action::ScimDeactivate {
                user_id: user.id,
                account_id: Some(account.to_owned()),
            },
            format!(
                "{}: deactivate {account} in the identity directory (organization-wide)",
                envelope.event_type
            ),
        ),
        Some(_) => {}
        None => plan.warnings.push(format!(
            "no SCIM user is linked to account {account}: nothing to deactivate there"
        )),
    }
    Ok(())
}

pub(super) fn lifecycle_disable(envelope: &Envelope, plan: &mut Plan) -> Result<(), PortError> {
    let account = account_of(envelope)?;
    plan.push(
        Action::LifecycleDisable {
            account_id: account.to_owned(),
        },
        format!(
            "{}: disable managed account {account} (organization-wide)",
            envelope.event_type
        ),
    );
    Ok(())
}
