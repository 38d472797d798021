//! Events gatehouse publishes itself (`approval.granted`, `policy.violation`): source and
//! routing-key kind `gatehouse`, scheme `internal`, a body gatehouse wrote.

use handlers::{Envelope, EventType, Scheme};
use serde::{Deserialize, Serialize};

use crate::queue::OutgoingMessage;

/// The routing-key prefix of envelopes gatehouse publishes itself (`gatehouse.policy.violation`).
pub const OWN_KIND: &str = handlers::OWN_SOURCE;

/// The body of `approval.granted`: which recorded plan to perform.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApprovalGranted {
    pub approval_id: String,
}

/// An envelope of gatehouse's own, with `body` as its payload.
pub fn envelope(
    event_type: EventType,
    dedupe_key: String,
    body: &impl Serialize,
) -> Result<Envelope, serde_json::Error> {
    let payload = serde_json::value::to_raw_value(body)?;
    Ok(Envelope::new(
        event_type,
        OWN_KIND,
        Scheme::Internal,
        dedupe_key,
        payload,
    ))
}

/// `envelope` ready to publish.
pub fn message(envelope: &Envelope) -> OutgoingMessage {
    OutgoingMessage::from_envelope(envelope, OWN_KIND)
}
