//! Observations of an account's status can arrive stale or reordered (webhooks are best effort,
//! polls lag, a deactivation can arrive after the reactivation that undid it). So before acting on
//! an observed deactivation, reactivation or creation, the account's current status is read, and an event
//! that the current status contradicts is left alone: the newer change wins. A *decision* (HR or
//! the IdP says so) is not checked: Atlassian showing the person active is the very thing to
//! change; decisions are ordered among themselves by the runtime.

use super::account_of;
use crate::event::{Authority, Envelope, EventType};
use crate::handler::Ports;
use crate::plan::Plan;
use crate::ports::{AccountStatus, PortError};

/// False (with a note on the plan) when the account's current status contradicts `envelope`.
pub(super) async fn is_current(
    envelope: &Envelope,
    ports: &Ports<'_>,
    plan: &mut Plan,
) -> Result<bool, PortError> {
    if envelope.authority == Authority::Decision {
        return Ok(true);
    }
    let (contradicting, now): (&[AccountStatus], &str) = match envelope.event_type {
        EventType::UserDeactivated => (&[AccountStatus::Active], "active"),
        // A person created and deactivated in quick succession: the creation's default groups
        // would give a leaver access again.
        EventType::UserReactivated | EventType::UserCreated => {
            (&[AccountStatus::Inactive, AccountStatus::Closed], "deactivated")
        }
        _ => return Ok(true),
    };
    let account = account_of(envelope)?;
    match ports.confluence.account_status(account).await? {
        Some(status) if contradicting.contains(&status) => {
            plan.note = Some(format!(
                "account {account} is {now} now: this {} is stale (a newer change wins), nothing to do",
                envelope.event_type
            ));
            Ok(false)
        }
        _ => Ok(true),
    }
}
