//! The endpoints following the trail (`[[outbound]] audit_kinds`): each record of a kind an
//! endpoint subscribed to becomes an outbox delivery, written in the transaction that appends the
//! record, so an endpoint gets every such record once and never one that was rolled back.

use crate::config::{OutboundSettings, Settings};
use crate::store::outbox::{NewDelivery, payload};

use super::record::AuditRecord;

/// What each endpoint wants of the trail.
#[derive(Debug, Clone, Default)]
pub struct TrailFollowers {
    endpoints: Vec<OutboundSettings>,
}

impl TrailFollowers {
    pub fn from_settings(settings: &Settings) -> Self {
        TrailFollowers {
            endpoints: settings
                .outbound
                .iter()
                .filter(|endpoint| !endpoint.audit_kinds.is_empty())
                .cloned()
                .collect(),
        }
    }

    /// The deliveries of `records`: one per endpoint subscribed to each record's kind and tenant,
    /// as `audit.{kind}` with the record (its `seq` and hashes included) as `data`.
    pub fn deliveries(&self, records: &[AuditRecord]) -> Result<Vec<NewDelivery>, serde_json::Error> {
        let mut deliveries = Vec::new();
        if self.endpoints.is_empty() {
            return Ok(deliveries);
        }
        for record in records {
            let tenant = record
                .record
                .tenant
                .as_deref()
                .unwrap_or(handlers::DEFAULT_TENANT);
            let wanted: Vec<&OutboundSettings> = self
                .endpoints
                .iter()
                .filter(|e| e.audit_kinds.contains(&record.record.kind) && e.serves_tenant(tenant))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let message_type = format!("audit.{}", record.record.kind.as_str());
            let body = payload(&message_type, record.time, record)?;
            deliveries.extend(wanted.into_iter().map(|endpoint| NewDelivery {
                endpoint: endpoint.name.clone(),
                source_key: format!("audit:{}", record.seq),
                message_type: message_type.clone(),
                url: None,
                payload: body.clone(),
            }));
        }
        Ok(deliveries)
    }
}
