//! A person arrives or comes back: add them to the configured default groups, warning about any
//! group that is not mapped to the Confluence product (membership alone grants no access).

use super::{Policy, account_of};
use crate::event::Envelope;
use crate::handler::Ports;
use crate::plan::{Action, Plan};
use crate::ports::PortError;

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
