//! Outbound deliveries: events and audit records sent to the HTTPS endpoints of `[[outbound]]`
//! (signed per Standard Webhooks), and approval messages posted to Slack.
//!
//! Everything goes through the outbox (`store::outbox`), a queue of its own in the store on both
//! queue backends. A delivery is written in the very transaction of what it carries: an event's
//! delivery with the worker's claim of the event, an audit record's with the record, a Slack
//! message with its pending approval. So nothing is sent that did not happen, and nothing that
//! happened is lost between the two. [`sender`] then sends each at least once, per endpoint, on
//! its own tasks: a slow endpoint delays only its own deliveries, never another's or the
//! reactions.
//!
//! Receivers dedupe on `webhook-id` (the delivery's id, the same on every attempt).

pub mod metrics;
pub mod sender;
pub mod signing;
pub mod slack;
pub mod target;

use handlers::Envelope;
use serde::Serialize;

use crate::audit::AuditRecord;
use crate::config::{OutboundSettings, Settings, SlackSettings, Span};
use crate::store::outbox::NewDelivery;

pub use metrics::OutboundMetrics;

/// The body every endpoint receives: Standard Webhooks' recommended shape.
#[derive(Serialize)]
struct Payload<'a, T: Serialize> {
    /// `user.deactivated`, `policy.violation`, … for events; `audit.{kind}` for audit records.
    #[serde(rename = "type")]
    message_type: &'a str,
    timestamp: chrono::DateTime<chrono::Utc>,
    data: &'a T,
}

/// Which deliveries an event or a record makes: the endpoints' subscriptions, kept by every
/// writer (the worker's claim, the audit log).
#[derive(Debug, Clone)]
pub struct Outbox {
    subscriptions: Vec<OutboundSettings>,
    slack: Option<SlackSettings>,
    /// How long a plan waits for a decision (shown in the Slack message).
    approval_ttl: Span,
}

impl Default for Outbox {
    /// An outbox with no endpoints and no Slack: nothing is sent.
    fn default() -> Self {
        Outbox {
            subscriptions: Vec::new(),
            slack: None,
            approval_ttl: crate::config::ReactionSettings::default().approval_ttl,
        }
    }
}

impl Outbox {
    pub fn from_settings(settings: &Settings) -> Self {
        Outbox {
            subscriptions: settings.outbound.clone(),
            slack: settings.approvals.slack.clone(),
            approval_ttl: settings.reactions.approval_ttl,
        }
    }

    /// The deliveries of `envelope`'s event, one per endpoint subscribed to its type.
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
        let payload = serde_json::to_string(&Payload {
            message_type: &message_type,
            timestamp: envelope.occurred_at,
            data: envelope,
        })?;
        Ok(wanted
            .into_iter()
            .map(|s| NewDelivery {
                endpoint: s.name.clone(),
                source_key: format!("event:{}", envelope.id),
                message_type: message_type.clone().into_owned(),
                url: None,
                payload: payload.clone(),
            })
            .collect())
    }

    /// The deliveries of `records`, one per endpoint subscribed to each record's kind.
    pub fn for_records(&self, records: &[AuditRecord]) -> Result<Vec<NewDelivery>, serde_json::Error> {
        let mut deliveries = Vec::new();
        for record in records {
            let tenant = record
                .record
                .tenant
                .as_deref()
                .unwrap_or(handlers::DEFAULT_TENANT);
            let mut payload = None;
            for subscription in &self.subscriptions {
                if !subscription.audit_kinds.contains(&record.record.kind)
                    || !subscription.serves_tenant(tenant)
                {
                    continue;
                }
                let message_type = format!("audit.{}", record.record.kind.as_str());
                let payload = match &payload {
                    Some(payload) => String::clone(payload),
                    None => payload
                        .insert(serde_json::to_string(&Payload {
                            message_type: &message_type,
                            timestamp: record.time,
                            data: record,
                        })?)
                        .clone(),
                };
                deliveries.push(NewDelivery {
                    endpoint: subscription.name.clone(),
                    source_key: format!("audit:{}", record.seq),
                    message_type,
                    url: None,
                    payload,
                });
            }
        }
        Ok(deliveries)
    }

    /// The Slack message asking to decide on a plan that started waiting, when Slack is
    /// configured.
    pub fn for_approval(
        &self,
        approval_id: &str,
        created_at: chrono::DateTime<chrono::Utc>,
        plan: &handlers::Plan,
        envelope: &Envelope,
    ) -> Result<Vec<NewDelivery>, serde_json::Error> {
        let expires_at = crate::reactions::approvals::expires_at(created_at, self.approval_ttl);
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
