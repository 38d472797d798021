//! The AMQP headers gatehouse sets on its messages, and reading them back.
//!
//! Subscribers may rely on `gatehouse-event-id`; the `x-gatehouse-*` ones carry retry and
//! dead-letter state between hops and are informational for anyone else.

use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::queue::Failure;

/// The envelope id (the AMQP `message_id` is the dedupe key).
pub const EVENT_ID: &str = "gatehouse-event-id";
/// The original `{kind}.{type}` routing key, kept across hops through the default exchange.
pub const ROUTING_KEY: &str = "x-gatehouse-routing-key";
/// Failed attempts so far.
pub const ATTEMPTS: &str = "x-gatehouse-attempts";
/// JSON array of `{attempt, at, error}`: every failure so far (bounded).
pub const HISTORY: &str = "x-gatehouse-history";
/// The last failure's error.
pub const LAST_ERROR: &str = "x-gatehouse-last-error";
/// Why the message was dead-lettered.
pub const DEAD_REASON: &str = "x-gatehouse-dead-reason";
/// Identifies one dead-lettering, so recording it twice is harmless.
pub const DEAD_ID: &str = "x-gatehouse-dead-id";

pub fn text(table: &FieldTable, name: &str) -> Option<String> {
    match table.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

pub fn history(table: Option<&FieldTable>) -> Vec<Failure> {
    table
        .and_then(|t| text(t, HISTORY))
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default()
}

pub fn set_text(table: &mut FieldTable, name: &str, value: &str) {
    table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
}

/// The reason the broker gave when it last dead-lettered a message itself (e.g.
/// `delivery_limit`), if it did: the newest `x-death` entry's (RabbitMQ keeps it first), not
/// `x-first-death-reason`, which a message that went through a retry queue carries from that
/// queue's expiry (`expired`) however it was parked afterwards.
pub fn broker_death_reason(table: Option<&FieldTable>) -> Option<String> {
    let table = table?;
    deaths(table)
        .and_then(<[AMQPValue]>::first)
        .and_then(as_table)
        .and_then(|newest| text(newest, "reason"))
        .or_else(|| text(table, "x-first-death-reason"))
}

/// The `x-death` entries the broker keeps (tables), newest first.
fn deaths(table: &FieldTable) -> Option<&[AMQPValue]> {
    match table.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => Some(deaths.as_slice()),
        _ => None,
    }
}

fn as_table(value: &AMQPValue) -> Option<&FieldTable> {
    match value {
        AMQPValue::FieldTable(table) => Some(table),
        _ => None,
    }
}

/// The routing key a message had before the broker first dead-lettered it (the oldest
/// `x-death` entry's `routing-keys`).
pub fn original_routing_key(table: Option<&FieldTable>) -> Option<String> {
    let oldest = as_table(deaths(table?)?.last()?)?;
    let AMQPValue::FieldArray(keys) = oldest.inner().get("routing-keys")? else {
        return None;
    };
    match keys.as_slice().first()? {
        AMQPValue::LongString(key) => Some(String::from_utf8_lossy(key.as_bytes()).into_owned()),
        AMQPValue::ShortString(key) => Some(key.as_str().to_owned()),
        _ => None,
    }
}

/// Records a retry or dead-letter hop's state on `table`.
pub fn record_failures(table: &mut FieldTable, attempts: u32, history: &[Failure], routing_key: &str) {
    table.insert(ATTEMPTS.into(), AMQPValue::LongUInt(attempts));
    set_text(
        table,
        HISTORY,
        &serde_json::to_string(history).unwrap_or_else(|_| "[]".to_owned()),
    );
    if let Some(last) = history.last() {
        set_text(table, LAST_ERROR, &last.error);
    }
    set_text(table, ROUTING_KEY, routing_key);
}

#[cfg(test)]
mod tests {
    use lapin::types::{FieldArray, LongString, ShortString};

    use super::*;

    fn death(reason: &str) -> AMQPValue {
        let mut entry = FieldTable::default();
        entry.insert(
            ShortString::from("reason"),
            AMQPValue::LongString(LongString::from(reason)),
        );
        AMQPValue::FieldTable(entry)
    }

    /// A message that expired out of a retry queue, then was parked at the delivery limit:
    /// parked for the delivery limit, whatever its first death was.
    #[test]
    fn the_newest_death_gives_the_reason() {
        let mut table = FieldTable::default();
        table.insert(
            ShortString::from("x-first-death-reason"),
            AMQPValue::LongString(LongString::from("expired")),
        );
        table.insert(
            ShortString::from("x-death"),
            AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit"), death("expired")])),
        );
        assert_eq!(
            broker_death_reason(Some(&table)).as_deref(),
            Some("delivery_limit")
        );
        // Without `x-death`, the first death's reason is all there is.
        let mut first_only = FieldTable::default();
        first_only.insert(
            ShortString::from("x-first-death-reason"),
            AMQPValue::LongString(LongString::from("rejected")),
        );
        assert_eq!(
            broker_death_reason(Some(&first_only)).as_deref(),
            Some("rejected")
        );
        assert_eq!(broker_death_reason(None), None);
    }
}
