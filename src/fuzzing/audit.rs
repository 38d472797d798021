//! Targets for the audit trail's own parsers and transforms: a record read back (the canonical
//! form its hash covers, src/audit/chain.rs, and its OCSF rendering), and the scrubbing and
//! keyed hashing every record's free text goes through before it is written.

use crate::audit::chain::{canonical, compute_hash, hash_of};
use crate::audit::hashing::{PiiHasher, lookup, pii};
use crate::audit::ocsf::to_ocsf;
use crate::audit::record::AuditRecord;
use crate::audit::scrub::{MIN_SECRET_LEN, Scrubber};
use crate::config::{AuditSettings, PiiKind, Secret};

use super::{fields, text};

/// A record as JSON (a row read back, an export, the stream): its canonical form is
/// deterministic JSON without `hash`, survives a JSON round trip of the record, and the hash
/// over it is the one [`hash_of`] gives.
pub fn canonical_form(data: &[u8]) {
    let Ok(record) = serde_json::from_slice::<AuditRecord>(data) else {
        return;
    };
    let Ok(bytes) = canonical(&record) else {
        return;
    };
    assert_eq!(canonical(&record.clone()).ok().as_deref(), Some(bytes.as_slice()));
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(error) => panic!("canonical form is not JSON: {error}"),
    };
    assert!(value.get("hash").is_none());
    // Keys sorted at every level: writing the parsed form again in sorted order changes nothing.
    assert_eq!(serde_json::to_vec(&value).ok().as_deref(), Some(bytes.as_slice()));
    let hash = hash_of(&record).unwrap_or_default();
    assert_eq!(hash, compute_hash(&record.prev_hash, &bytes));
    assert_eq!(hash.len(), 64);
    let json = serde_json::to_vec(&record).unwrap_or_default();
    match serde_json::from_slice::<AuditRecord>(&json) {
        Ok(back) => {
            assert_eq!(back, record);
            assert_eq!(canonical(&back).ok().as_deref(), Some(bytes.as_slice()));
        }
        Err(error) => panic!("a record did not read back: {error}"),
    }
    let ocsf = to_ocsf(&record);
    assert!(ocsf.is_object());
}

/// `configured secret \n display name \n free text`: the text scrubbed with the secret known
/// (stable, and no known secret left), and hashed with and without a key.
pub fn scrub_and_hash(data: &[u8]) {
    let [secret, name, free_text] = fields::<3>(data).map(text);
    let known = [
        Secret::new(secret.clone()),
        Secret::new("fuzz-known-secret-value"),
    ];
    let scrubber = Scrubber::new(known.clone());
    let scrubbed = scrubber.apply(&free_text);
    assert_eq!(scrubber.apply(&scrubbed), scrubbed, "scrubbing is not stable");
    for secret in &known {
        let value = secret.expose();
        if value.len() >= MIN_SECRET_LEN {
            assert!(
                !scrubbed.contains(value),
                "a known secret was left in {scrubbed:?}"
            );
        }
    }

    let marked = format!("{free_text} {}", pii(&name));
    let key = Secret::new("fuzz-audit-hash-key");
    let keyed = PiiHasher::new(&AuditSettings {
        hash_key: Some(key.clone()),
        hash_fields: vec![PiiKind::Email, PiiKind::DisplayName],
        ..AuditSettings::default()
    });
    let plain = PiiHasher::new(&AuditSettings::default());
    for hasher in [&keyed, &plain] {
        let out = hasher.apply(&marked);
        // No marker survives to be read as a span later.
        assert!(!out.contains(['\u{2}', '\u{3}']), "{out:?}");
    }
    assert_eq!(lookup(&key, &name), lookup(&key, &name));
}
