//! The hash chain: the canonical bytes of a record and the hash that links it to the one before.
//!
//! Anyone holding the records (from the store, `GET /audit`, an export or the stream) can check
//! the chain without gatehouse, so the definition is exact:
//!
//! - **Canonical JSON** of a record is the JSON object of every [`AuditRecord`] field except
//!   `hash` (`seq`, `id`, `time`, the writer's fields flattened, `prev_hash`), with
//!   - absent optional fields left out (never `null`; `action.org_wide` only when true,
//!     `warnings` only when non-empty), exactly as the record serializes;
//!   - object keys sorted by their UTF-8 bytes, at every level;
//!   - no whitespace; strings escaped minimally (`"`, `\`, and control characters, as
//!     `\b \f \n \r \t` or `\u00XX`; everything else literal UTF-8); integers in decimal;
//!   - `time` written as RFC 3339 UTC with exactly three fractional digits: `2026-05-01T12:00:00.000Z`.
//!
//!   This is what Python's `json.dumps(record, sort_keys=True, separators=(",", ":"),
//!   ensure_ascii=False)` produces once `hash` is removed and `time` reformatted.
//! - **`hash`** = lowercase hex of `SHA-256(prev_hash ‖ canonical)`, where `prev_hash` is the 64
//!   ASCII hex characters of the previous record's hash and `‖` is concatenation.
//! - The first record's `prev_hash` is [`GENESIS`], 64 zeros.
//!
//! Records carry millisecond time (the store keeps unix milliseconds), so a record read back
//! hashes the same as when it was written.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::record::AuditRecord;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical bytes the hash covers (see the module docs).
pub fn canonical(record: &AuditRecord) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(record)?;
    if let Value::Object(map) = &mut value {
        map.remove("hash");
        map.insert("time".to_owned(), Value::String(format_time(record.time)));
    }
    let mut out = Vec::with_capacity(512);
    write_canonical(&value, &mut out)?;
    Ok(out)
}

/// `hex(SHA-256(prev_hash ‖ canonical))`.
pub fn compute_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(prev_hash.as_bytes());
    context.update(canonical);
    hex::encode(context.finish().as_ref())
}

/// The hash `record` should carry, given its own `prev_hash`.
pub fn hash_of(record: &AuditRecord) -> Result<String, serde_json::Error> {
    Ok(compute_hash(&record.prev_hash, &canonical(record)?))
}

/// The time format of the canonical form: RFC 3339, UTC, milliseconds.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `time` cut to whole milliseconds, the precision the store keeps.
pub fn truncate_to_millis(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or(time)
}

/// Is `value` a well-formed hash (64 lowercase hex digits)?
#[cfg(test)]
fn is_hash(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                write_canonical(value, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        // Scalars: serde_json's compact output is already the canonical one.
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ActionRef, AuditKind, NewRecord, Outcome};

    fn sample() -> AuditRecord {
        let mut record = NewRecord::new("01J0000000000000000000000A".parse().unwrap(), AuditKind::Executed);
        record.account_id = Some("557058:abc".into());
        record.handler = Some("deprovision".into());
        record.action = Some(ActionRef {
            action_type: "confluence.remove_member".into(),
            target: "group:g1/account:557058:abc".into(),
            org_wide: false,
        });
        record.outcome = Outcome {
            status: "ok".into(),
            http_status: Some(204),
            error: None,
        };
        record.warnings = vec!["naïve \"quote\"\n".into()];
        AuditRecord {
            seq: 7,
            id: "01J0000000000000000000000B".parse().unwrap(),
            time: DateTime::from_timestamp_millis(1_777_777_777_000).unwrap(),
            record,
            prev_hash: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn canonical_form_is_sorted_compact_and_fixed_millis() {
        let canonical = String::from_utf8(canonical(&sample()).unwrap()).unwrap();
        assert_eq!(
            canonical,
            r#"{"account_id":"557058:abc","action":{"target":"group:g1/account:557058:abc","type":"confluence.remove_member"},"attempt":1,"dry_run":false,"event_id":"01J0000000000000000000000A","handler":"deprovision","id":"01J0000000000000000000000B","kind":"executed","outcome":{"http_status":204,"status":"ok"},"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":7,"time":"2026-05-03T03:09:37.000Z","warnings":["naïve \"quote\"\n"]}"#
        );
    }

    #[test]
    fn hash_matches_an_independent_implementation() {
        // Computed with Python: hashlib.sha256((prev_hash + json.dumps(record, sort_keys=True,
        // separators=(",", ":"), ensure_ascii=False)).encode()).hexdigest()
        assert_eq!(
            hash_of(&sample()).unwrap(),
            "71e2d229a7673f7cb7f1e22b72c2913ed59c80bbc56ed6f07d295cf6ab51dc60"
        );
    }

    #[test]
    fn the_hash_field_itself_is_not_covered() {
        let mut record = sample();
        let before = hash_of(&record).unwrap();
        record.hash = "anything".into();
        assert_eq!(hash_of(&record).unwrap(), before);
        record.record.attempt = 2;
        assert_ne!(hash_of(&record).unwrap(), before);
    }

    #[test]
    fn hash_shape() {
        assert!(is_hash(GENESIS));
        assert!(is_hash(&compute_hash(GENESIS, b"{}")));
        assert!(!is_hash("ABC"));
    }

    mod props {
        use proptest::prelude::*;
        use ulid::Ulid;

        use super::*;

        /// What JSON escaping and byte-wise key order could trip over, or anything at all.
        fn text() -> impl Strategy<Value = String> {
            const AWKWARD: &[&str] = &[
                "",
                "\"",
                "\\",
                "\u{0}",
                "\u{1f}",
                "\u{7f}",
                "\u{8}\u{c}\n\r\t",
                "\u{2028}",
                "é",
                "😀",
                "\u{feff}",
                "\\u0041",
                "}{,:",
            ];
            prop_oneof![
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..32)
                    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                prop::collection::vec(prop::sample::select(AWKWARD), 0..6).prop_map(|parts| parts.concat()),
            ]
        }

        fn new_record() -> impl Strategy<Value = NewRecord> {
            (
                (any::<u128>(), prop::sample::select(AuditKind::ALL.to_vec())),
                (prop::option::of(text()), prop::option::of(text())),
                prop::option::of((text(), text(), any::<bool>())),
                (any::<bool>(), any::<u32>()),
                (text(), prop::option::of(any::<u16>()), prop::option::of(text())),
                prop::option::of(text()),
                (
                    prop::collection::vec(text(), 0..3),
                    prop::option::of(prop::sample::select(vec![
                        handlers::Authority::Observation,
                        handlers::Authority::Decision,
                    ])),
                    prop::option::of(text()),
                ),
            )
                .prop_map(
                    |(
                        (event_id, kind),
                        (account_id, handler),
                        action,
                        (dry_run, attempt),
                        outcome,
                        request_id,
                        (warnings, authority, tenant),
                    )| {
                        NewRecord {
                            event_id: Ulid(event_id),
                            kind,
                            account_id,
                            handler,
                            action: action.map(|(action_type, target, org_wide)| ActionRef {
                                action_type,
                                target,
                                org_wide,
                            }),
                            dry_run,
                            attempt,
                            outcome: Outcome {
                                status: outcome.0,
                                http_status: outcome.1,
                                error: outcome.2,
                            },
                            request_id,
                            warnings,
                            authority,
                            tenant,
                        }
                    },
                )
        }

        /// Records as the log writes them: millisecond time (here between 1970 and 9999).
        fn record() -> impl Strategy<Value = AuditRecord> {
            (
                any::<u64>(),
                any::<u128>(),
                0i64..=253_402_300_799_999,
                new_record(),
                text(),
                text(),
            )
                .prop_map(|(seq, id, millis, record, prev_hash, hash)| AuditRecord {
                    seq,
                    id: Ulid(id),
                    time: DateTime::from_timestamp_millis(millis).expect("in chrono's range"),
                    record,
                    prev_hash,
                    hash,
                })
        }

        /// A string as the module docs define canonical escaping, written independently of
        /// serde_json.
        fn escaped(value: &str) -> String {
            let mut out = String::from("\"");
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }

        proptest! {
            #[test]
            fn canonical_form_is_deterministic_and_the_hash_verifies(mut record in record()) {
                let canonical_bytes = canonical(&record).unwrap();
                prop_assert_eq!(&canonical(&record.clone()).unwrap(), &canonical_bytes);
                let text = String::from_utf8(canonical_bytes.clone()).unwrap();
                // Canonical JSON is JSON, and writing it canonically again changes nothing.
                let value: Value = serde_json::from_str(&text).unwrap();
                let mut again = Vec::new();
                write_canonical(&value, &mut again).unwrap();
                prop_assert_eq!(&again, &canonical_bytes);
                prop_assert!(value.get("hash").is_none());
                let time = format_time(record.time);
                prop_assert_eq!(value["time"].as_str(), Some(time.as_str()));
                // Every string is there, escaped as the docs say.
                let strings = [
                    record.record.handler.as_deref(),
                    record.record.account_id.as_deref(),
                    Some(record.record.outcome.status.as_str()),
                    record.record.outcome.error.as_deref(),
                    record.record.request_id.as_deref(),
                    Some(record.prev_hash.as_str()),
                ];
                for string in strings.into_iter().flatten() {
                    prop_assert!(text.contains(&escaped(string)), "{:?} not in {}", string, text);
                }

                record.hash = hash_of(&record).unwrap();
                prop_assert!(is_hash(&record.hash));
                prop_assert_eq!(&record.hash, &compute_hash(&record.prev_hash, &canonical_bytes));
                // The hash does not cover itself.
                prop_assert_eq!(hash_of(&record).unwrap(), record.hash.clone());
            }

            #[test]
            fn records_round_trip_through_json(mut record in record()) {
                record.hash = hash_of(&record).unwrap();
                let json = serde_json::to_string(&record).unwrap();
                let back: AuditRecord = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&back, &record);
                prop_assert_eq!(hash_of(&back).unwrap(), record.hash);
            }
        }
    }
}
