//! A person arrives or comes back: add them to the configured default groups, warning about any
//! group that is not mapped to the Confluence product (membership alone grants no access).

use super::{Policy, account_of};
use crate::event::{Envelope, EventType};
use crate::handler::Ports;
use crate::plan::{Action, Plan};
use crate::ports::{AccountStatus, PortError};

/// False (with a note) when a `user.reactivated` event is stale: the account is deactivated now.
pub(super) async fn still_active(
    envelope: &Envelope,
    ports: &Ports<'_>,
    plan: &mut Plan,
) -> Result<bool, PortError> {
    if envelope.event_type != EventType::UserReactivated {
        return Ok(true);
    }
    let account = account_of(envelope)?;
    match ports.confluence.account_status(account).await? {
        Some(AccountStatus::Inactive | AccountStatus::Closed) => {
            plan.note = Some(format!(
                "account {account} is deactivated now: this reactivation is stale (a newer deactivation wins), nothing to do"
            ));
            Ok(false)
        }
        _ => Ok(true),
    }
}

pub(super) async fn add_to_groups(
    policy: &Policy,
    envelope: &Envelope,
    ports: &Ports<'_>,
    plan: &mut Plan,
) -> Result<(), PortError> {
    let account = account_of(envelope)?;
    for name in &policy.config.groups {
        match ports.confluence.group_by_name(name).await? {
            Some(group) => {
                plan.push(
                    Action::ConfluenceAddMember {
                        group_id: group.id,
                        group_name: group.name,
                        account_id: account.to_owned(),
                    },
                    format!("{}: default group `{name}`", envelope.event_type),
                );
                if let Some(warning) = policy.unmapped_warning(name) {
                    plan.warnings.push(warning);
                }
            }
            None => plan.warnings.push(format!(
                "default group `{name}` does not exist in Confluence (names are case-sensitive): not added"
            )),
        }
    }
    Ok(())
}
