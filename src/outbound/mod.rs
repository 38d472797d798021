//! Outbound deliveries: events and audit records sent to the HTTPS endpoints of `[[outbound]]`
//! (signed per Standard Webhooks), and approval messages posted to Slack.
//!
//! Everything goes through the outbox (`store::outbox`), a queue of its own in the store on both
//! queue backends. A delivery is written in the very transaction of what it carries: an event's
//! with the worker's claim of the event ([`Outbox::for_event`]), an audit record's with the record
//! (`audit::followers`), a Slack message with its pending approval ([`Outbox::for_approval`]), its
//! replacement with the settlement that ended the approval ([`Outbox::for_settlement`]). So
//! nothing is sent that did not happen, and nothing that happened is lost between the two.
//! [`sender`] then sends each at least once, per endpoint, on tasks of its own: a slow endpoint
//! delays only its own deliveries, never another's or the reactions.
//!
//! Receivers dedupe on `webhook-id` (the delivery's id, the same on every attempt).

pub mod metrics;
pub mod sender;
pub mod signing;
pub mod slack;
pub mod target;

use chrono::{DateTime, Utc};
use handlers::{Envelope, Plan};

use crate::config::{OutboundSettings, Settings, SlackSettings};
use crate::store::ApprovalState;
use crate::store::outbox::{NewDelivery, payload};

pub use metrics::OutboundMetrics;

/// Which deliveries an event or a waiting plan makes: the endpoints' subscriptions to event
/// types, and Slack.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    subscriptions: Vec<OutboundSettings>,
    slack: Option<SlackSettings>,
}

impl Outbox {
    pub fn from_settings(settings: &Settings) -> Self {
        Outbox {
            subscriptions: settings
                .outbound
                .iter()
                .filter(|endpoint| !endpoint.types.is_empty())
                .cloned()
                .collect(),
            slack: settings.approvals.slack.clone(),
        }
    }

    /// The deliveries of `envelope`'s event, one per endpoint subscribed to its type and tenant,
    /// with the envelope as `data`.
    pub fn for_event(&self, envelope: &Envelope) -> Result<Vec<NewDelivery>, serde_json::Error> {
        let tenant = envelope.tenant_name();
        let wanted: Vec<&OutboundSettings> = self
            .subscriptions
            .iter()
            .filter(|s| s.serves_tenant(tenant) && s.types.iter().any(|p| p.matches(&envelope.event_type)))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let message_type = envelope.event_type.as_str();
        let body = payload(&message_type, envelope.occurred_at, envelope)?;
        Ok(wanted
            .into_iter()
            .map(|s| NewDelivery {
                endpoint: s.name.clone(),
                source_key: format!("event:{}", envelope.id),
                message_type: message_type.clone().into_owned(),
                url: None,
                payload: body.clone(),
            })
            .collect())
    }

    /// The update replacing approval `approval_id`'s Slack message once it moved to `to` outside
    /// Slack (a click's own update does that for decisions made in Slack), when Slack is
    /// configured with a bot token.
    pub fn for_settlement(
        &self,
        approval_id: &str,
        to: ApprovalState,
        by: &str,
        note: Option<&str>,
    ) -> Result<Vec<NewDelivery>, serde_json::Error> {
        match &self.slack {
            Some(slack) => Ok(slack::settled_update(slack, approval_id, to, by, note)?
                .into_iter()
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    /// The Slack message asking to decide on approval `approval_id` of `plan`, waiting until
    /// `expires_at`, when Slack is configured.
    pub fn for_approval(
        &self,
        approval_id: &str,
        plan: &Plan,
        envelope: &Envelope,
        expires_at: DateTime<Utc>,
    ) -> Result<Vec<NewDelivery>, serde_json::Error> {
        match &self.slack {
            Some(slack) => Ok(vec![slack::approval_request(
                slack,
                approval_id,
                plan,
                envelope,
                expires_at,
            )?]),
            None => Ok(Vec::new()),
        }
    }
}
