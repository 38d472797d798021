//! OCSF output validates against each class's required attributes and the constraints of the
//! objects they hold (tests/fixtures/ocsf/required-1.3.0.json, transcribed from the schema), for
//! every kind of record, read back from the store.

use gatehouse::audit::ocsf::to_ocsf;
use gatehouse::audit::query::{AuditQuery, query};
use gatehouse::audit::{ActionRef, AuditKind, AuditLog, NewRecord, Outcome};
use gatehouse::config::AuditSettings;
use serde_json::Value;
use ulid::Ulid;

use super::{open_store, sqlite_url};
use crate::helpers::TempDir;

fn schema() -> Value {
    serde_json::from_str(include_str!("../../fixtures/ocsf/required-1.3.0.json")).unwrap()
}

fn present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

/// Every violation of the schema's requirements in `event`.
pub fn violations(event: &Value) -> Vec<String> {
    let schema = schema();
    let mut problems = Vec::new();
    let class = event["class_uid"].as_u64().unwrap_or(0);
    let Some(class_schema) = schema["classes"].get(class.to_string()) else {
        return vec![format!("class_uid {class} is not one gatehouse exports")];
    };
    let required = schema["base_required"]
        .as_array()
        .unwrap()
        .iter()
        .chain(class_schema["required"].as_array().unwrap());
    for attribute in required {
        let name = attribute.as_str().unwrap();
        if !present(&event[name]) {
            problems.push(format!("class {class}: required `{name}` missing"));
        }
    }
    for attribute in schema["integer_attributes"].as_array().unwrap() {
        let name = attribute.as_str().unwrap();
        if !event[name].is_null() && !event[name].is_i64() && !event[name].is_u64() {
            problems.push(format!("`{name}` must be an integer"));
        }
    }
    let activity = event["activity_id"].as_u64().unwrap_or(u64::MAX);
    if !class_schema["activity_ids"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a.as_u64() == Some(activity))
    {
        problems.push(format!("activity_id {activity} not defined for class {class}"));
    }
    if event["type_uid"].as_u64() != class.checked_mul(100).and_then(|c| c.checked_add(activity)) {
        problems.push("type_uid must be class_uid * 100 + activity_id".into());
    }
    if event["category_uid"] != class_schema["category_uid"] {
        problems.push("category_uid does not match the class".into());
    }
    if !schema["severity_ids"]
        .as_array()
        .unwrap()
        .contains(&event["severity_id"])
    {
        problems.push("severity_id not in the enum".into());
    }
    if !event["status_id"].is_null()
        && !schema["status_ids"]
            .as_array()
            .unwrap()
            .contains(&event["status_id"])
    {
        problems.push("status_id not in the enum".into());
    }
    // Objects: their own required attributes and at-least-one constraints.
    let mut objects: Vec<(String, Value, String)> = Vec::new();
    for (attribute, object) in schema["attribute_objects"].as_object().unwrap() {
        if present(&event[attribute]) {
            objects.push((
                attribute.clone(),
                event[attribute].clone(),
                object.as_str().unwrap().to_owned(),
            ));
        }
    }
    if present(&event["metadata"]["product"]) {
        objects.push((
            "metadata.product".into(),
            event["metadata"]["product"].clone(),
            "product".into(),
        ));
    }
    for (path, value, object) in objects {
        let rules = &schema["objects"][object.as_str()];
        for name in rules["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !present(&value[name]) {
                problems.push(format!("`{path}.{name}` is required"));
            }
        }
        if let Some(any) = rules["at_least_one"].as_array()
            && !any.iter().any(|name| present(&value[name.as_str().unwrap()]))
        {
            problems.push(format!("`{path}` needs at least one of {any:?}"));
        }
    }
    problems
}

fn action(kind: AuditKind, action_type: &str, target: &str) -> NewRecord {
    let mut record = NewRecord::new(Ulid::generate(), kind);
    record.action = Some(ActionRef {
        action_type: action_type.into(),
        target: target.into(),
        org_wide: action_type.starts_with("scim."),
    });
    record
}

#[tokio::test]
async fn every_kind_of_record_maps_to_a_valid_ocsf_event() {
    let dir = TempDir::new();
    let store = open_store(&sqlite_url(&dir)).await;
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    let mut records = Vec::new();
    for kind in [
        AuditKind::Received,
        AuditKind::Duplicate,
        AuditKind::DeadLettered,
        AuditKind::Replayed,
        AuditKind::Approved,
        AuditKind::Rejected,
    ] {
        let mut record = NewRecord::new(Ulid::generate(), kind);
        record.account_id = (kind == AuditKind::Received).then(|| "557058:a".to_owned());
        records.push(record);
    }
    for kind in [
        AuditKind::Planned,
        AuditKind::Executed,
        AuditKind::Skipped,
        AuditKind::Failed,
    ] {
        records.push(action(
            kind,
            "confluence.remove_member",
            "group:g1/account:557058:a",
        ));
        records.push(action(
            kind,
            "confluence.remove_from_all_groups",
            "account:557058:a",
        ));
        records.push(action(kind, "scim.deactivate", "account:557058:a"));
        records.push(action(kind, "admin.restore_user", "account:557058:a"));
        records.push(action(kind, "scim.create_user", "user:new"));
        records.push(action(kind, "confluence.create_group", "group:new-group"));
        records.push(action(kind, "notify.post_message", "channel:sec"));
    }
    let mut failed = action(AuditKind::Failed, "scim.deactivate", "");
    failed.outcome = Outcome {
        status: "error".into(),
        http_status: Some(500),
        error: Some("boom".into()),
    };
    failed.request_id = Some("req-1".into());
    records.push(failed);
    log.append_all(records).await.unwrap();

    let stored = query(&store, &AuditQuery::default()).await.unwrap();
    let mut classes = std::collections::BTreeSet::new();
    for record in &stored {
        let event = to_ocsf(record);
        let problems = violations(&event);
        assert!(problems.is_empty(), "seq {}: {problems:?}\n{event:#}", record.seq);
        classes.insert(event["class_uid"].as_u64().unwrap());
        assert_eq!(event["metadata"]["uid"], record.id.to_string());
        assert_eq!(
            event["metadata"]["correlation_uid"],
            record.record.event_id.to_string()
        );
        assert_eq!(event["unmapped"]["seq"], record.seq);
        assert_eq!(event["time"], record.time.timestamp_millis());
    }
    assert_eq!(classes.into_iter().collect::<Vec<_>>(), [3001, 3006, 6003]);
    store.close().await;
}

#[test]
fn the_validator_catches_missing_fields() {
    assert!(!violations(&serde_json::json!({"class_uid": 3001})).is_empty());
    let mut event = serde_json::json!({
        "class_uid": 3006, "category_uid": 3, "activity_id": 4, "type_uid": 300604,
        "severity_id": 1, "time": 1, "metadata": {"version": "1.3.0", "product": {"name": "x"}},
        "group": {"uid": "g"}
    });
    assert!(violations(&event).is_empty(), "{:?}", violations(&event));
    event["group"] = serde_json::json!({"desc": "no name or uid"});
    assert_eq!(violations(&event).len(), 1);
}
