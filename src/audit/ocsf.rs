//! Records as OCSF events (schema 1.3.0), for SIEMs that speak OCSF.
//!
//! Each record becomes one event of one of three classes:
//! - **3001 Account Change**: an action on an account's lifecycle (`scim.deactivate`,
//!   `admin.suspend_user`, `…create…`, `…delete…`): activity Create 1, Enable 2, Disable 5,
//!   Delete 6, Other 99; `user.uid` is the account id (or the action target).
//! - **3006 Group Management**: an action on a group or its members (`confluence.remove_member`,
//!   `…remove_from_all_groups`, `…add_to_group`, `…create_group`): Add User 3, Remove User 4,
//!   Delete 5, Create 6, Other 99; `group.uid` from a `group:<id>` target.
//! - **6003 API Activity**: every other record: other actions (activity from the verb: Create 1,
//!   Read 2, Update 3, Delete 4, Other 99), and records about an event rather than an action
//!   (`received`, `duplicate`, `dead_lettered`, `replayed`, `approved`, `rejected`: Other 99,
//!   `api.operation` = `gatehouse.<kind>`).
//!
//! Every event carries the base required fields (`activity_id`, `category_uid`, `class_uid`,
//! `metadata` with `product` and `version`, `severity_id`, `time` in epoch milliseconds,
//! `type_uid` = class × 100 + activity) and its class's (`user`, `group`, or `actor` + `api` +
//! `src_endpoint`). `status_id` is Success for `ok`, Failure for `failed` records and failed
//! outcomes, Other (with `status`) for planned or skipped actions, so a SIEM never mistakes a
//! plan for a change. What OCSF has no place for (seq, hashes, kind, dry run, attempt, warnings)
//! is under `unmapped`; `metadata.uid` is the record id and `metadata.correlation_uid` the event id.

use serde_json::{Map, Value, json};

use super::chain::format_time;
use super::record::{AuditKind, AuditRecord};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

pub const ACCOUNT_CHANGE: u32 = 3001;
pub const GROUP_MANAGEMENT: u32 = 3006;
pub const API_ACTIVITY: u32 = 6003;

/// The OCSF event for `record`.
pub fn to_ocsf(record: &AuditRecord) -> Value {
    let r = &record.record;
    let (class_uid, activity_id, activity_name) = classify(record);
    let (status_id, status) = status_of(record);
    let severity_id = match r.kind {
        AuditKind::Failed | AuditKind::DeadLettered => 3, // Medium: someone should look.
        _ if r.action.as_ref().is_some_and(|a| a.org_wide) && r.kind == AuditKind::Executed => 2,
        _ => 1, // Informational
    };
    let mut event = Map::new();
    event.insert("class_uid".into(), json!(class_uid));
    event.insert("class_name".into(), json!(class_name(class_uid)));
    event.insert("category_uid".into(), json!(class_uid / 1000));
    event.insert("category_name".into(), json!(category_name(class_uid)));
    event.insert("activity_id".into(), json!(activity_id));
    event.insert("activity_name".into(), json!(activity_name));
    event.insert(
        "type_uid".into(),
        json!(u64::from(class_uid) * 100 + u64::from(activity_id)),
    );
    event.insert("severity_id".into(), json!(severity_id));
    event.insert("time".into(), json!(record.time.timestamp_millis()));
    event.insert("status_id".into(), json!(status_id));
    event.insert("status".into(), json!(status));
    if let Some(code) = r.outcome.http_status {
        event.insert("status_code".into(), json!(code.to_string()));
    }
    if let Some(error) = &r.outcome.error {
        event.insert("status_detail".into(), json!(error));
    }
    let mut metadata = json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "gatehouse",
                "vendor_name": "gatehouse",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "uid": record.id.to_string(),
            "correlation_uid": r.event_id.to_string(),
            "original_time": format_time(record.time),
            "log_name": "gatehouse.audit",
    });
    if let Some(tenant) = &r.tenant {
        // The configured tenant: OCSF's tenant of a multi-tenant product, and the Atlassian
        // organization the event happened in.
        metadata["tenant_uid"] = json!(tenant);
        event.insert(
            "cloud".into(),
            json!({"provider": "Atlassian", "account": {"uid": tenant, "name": tenant}}),
        );
    }
    event.insert("metadata".into(), metadata);
    event.insert(
        "actor".into(),
        json!({"app_name": "gatehouse", "invoked_by": r.handler.clone().unwrap_or_else(|| "gatehouse".into())}),
    );
    let target = r.action.as_ref().map(|a| a.target.as_str()).unwrap_or_default();
    let account = r
        .account_id
        .clone()
        .or_else(|| part(target, "account"))
        .unwrap_or_default();
    // The class requires the object, and the object a `uid` or `name`: say "unknown" rather than
    // emit an invalid event when a record names neither.
    let entity = |uid: String| {
        if uid.is_empty() {
            json!({"name": "unknown"})
        } else {
            json!({"uid": uid})
        }
    };
    match class_uid {
        ACCOUNT_CHANGE => {
            let uid = if account.is_empty() {
                target.to_owned()
            } else {
                account
            };
            event.insert("user".into(), entity(uid));
        }
        GROUP_MANAGEMENT => {
            let group = part(target, "group").unwrap_or_else(|| target.to_owned());
            event.insert("group".into(), entity(group));
            if !account.is_empty() {
                event.insert("user".into(), json!({"uid": account}));
            }
        }
        _ => {
            if !account.is_empty() {
                event.insert("user".into(), json!({"uid": account}));
            }
        }
    }
    let operation = match &r.action {
        Some(action) => action.action_type.clone(),
        None => format!("gatehouse.{}", r.kind.as_str()),
    };
    let mut api = json!({"operation": operation});
    if let Some(request_id) = &r.request_id {
        api["request"] = json!({"uid": request_id});
    }
    event.insert("api".into(), api);
    event.insert("src_endpoint".into(), json!({"svc_name": "gatehouse"}));
    let mut unmapped = json!({
        "seq": record.seq,
        "kind": r.kind.as_str(),
        "dry_run": r.dry_run,
        "attempt": r.attempt,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    });
    if let Some(action) = &r.action {
        unmapped["target"] = json!(action.target);
        if action.org_wide {
            unmapped["org_wide"] = json!(true);
        }
    }
    if !r.warnings.is_empty() {
        unmapped["warnings"] = json!(r.warnings);
    }
    if let Some(authority) = r.authority {
        unmapped["authority"] = json!(authority.as_str());
    }
    event.insert("unmapped".into(), unmapped);
    Value::Object(event)
}

/// `(class_uid, activity_id, activity_name)`.
fn classify(record: &AuditRecord) -> (u32, u32, &'static str) {
    let Some(action) = &record.record.action else {
        return (API_ACTIVITY, 99, "Other");
    };
    let name = action.action_type.to_ascii_lowercase();
    let verb = name.rsplit('.').next().unwrap_or(&name);
    let has = |word: &str| verb.contains(word);
    if has("group") || has("member") {
        return if has("remove") || has("revoke") {
            (GROUP_MANAGEMENT, 4, "Remove User")
        } else if has("add") || has("grant") {
            (GROUP_MANAGEMENT, 3, "Add User")
        } else if has("delete") {
            (GROUP_MANAGEMENT, 5, "Delete")
        } else if has("create") {
            (GROUP_MANAGEMENT, 6, "Create")
        } else {
            (GROUP_MANAGEMENT, 99, "Other")
        };
    }
    if has("deactivate") || has("disable") || has("suspend") {
        return (ACCOUNT_CHANGE, 5, "Disable");
    }
    if has("activate") || has("enable") || has("restore") {
        return (ACCOUNT_CHANGE, 2, "Enable");
    }
    let about_user = has("user") || has("account") || name.starts_with("scim.");
    if about_user {
        return if has("create") || has("provision") {
            (ACCOUNT_CHANGE, 1, "Create")
        } else if has("delete") || has("remove") {
            (ACCOUNT_CHANGE, 6, "Delete")
        } else {
            (ACCOUNT_CHANGE, 99, "Other")
        };
    }
    if has("create") || has("add") {
        (API_ACTIVITY, 1, "Create")
    } else if has("get") || has("read") || has("list") || has("lookup") {
        (API_ACTIVITY, 2, "Read")
    } else if has("update") || has("set") {
        (API_ACTIVITY, 3, "Update")
    } else if has("delete") || has("remove") {
        (API_ACTIVITY, 4, "Delete")
    } else {
        (API_ACTIVITY, 99, "Other")
    }
}

/// `(status_id, status)`: 1 Success, 2 Failure, 99 Other.
fn status_of(record: &AuditRecord) -> (u32, String) {
    let r = &record.record;
    let failed_outcome = matches!(r.outcome.status.as_str(), "error" | "failed");
    match r.kind {
        AuditKind::Failed | AuditKind::DeadLettered => (2, "Failure".into()),
        _ if failed_outcome => (2, "Failure".into()),
        AuditKind::Planned | AuditKind::Skipped => (99, r.kind.as_str().into()),
        _ if r.dry_run => (99, "dry_run".into()),
        _ if r.outcome.status == "ok" => (1, "Success".into()),
        _ => (99, r.outcome.status.clone()),
    }
}

fn class_name(class_uid: u32) -> &'static str {
    match class_uid {
        ACCOUNT_CHANGE => "Account Change",
        GROUP_MANAGEMENT => "Group Management",
        _ => "API Activity",
    }
}

fn category_name(class_uid: u32) -> &'static str {
    match class_uid / 1000 {
        3 => "Identity & Access Management",
        _ => "Application Activity",
    }
}

/// The value after `name:` in a target such as `group:g1/account:557058:abc` (up to the next `/`).
fn part(target: &str, name: &str) -> Option<String> {
    target
        .split('/')
        .find_map(|segment| segment.strip_prefix(name)?.strip_prefix(':'))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ActionRef, NewRecord};

    fn record(kind: AuditKind, action: Option<(&str, &str)>) -> AuditRecord {
        let mut r = NewRecord::new(ulid::Ulid::nil(), kind);
        r.action = action.map(|(t, target)| ActionRef {
            action_type: t.into(),
            target: target.into(),
            org_wide: false,
        });
        AuditRecord {
            seq: 1,
            id: ulid::Ulid::nil(),
            time: chrono::Utc::now(),
            record: r,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn classes_and_activities() {
        let cases = [
            ("confluence.remove_member", "group:g1/account:a1", 3006, 4),
            ("confluence.remove_from_all_groups", "account:a1", 3006, 4),
            ("confluence.add_to_group", "group:g2/account:a1", 3006, 3),
            ("confluence.create_group", "group:g3", 3006, 6),
            ("scim.deactivate", "account:a1", 3001, 5),
            ("admin.suspend_user", "account:a1", 3001, 5),
            ("admin.restore_user", "account:a1", 3001, 2),
            ("scim.create_user", "account:a1", 3001, 1),
            ("scim.delete_user", "account:a1", 3001, 6),
            ("notify.post_message", "channel:x", 6003, 99),
            ("confluence.update_space", "space:x", 6003, 3),
        ];
        for (action, target, class, activity) in cases {
            let event = to_ocsf(&record(AuditKind::Executed, Some((action, target))));
            assert_eq!(event["class_uid"], class, "{action}");
            assert_eq!(event["activity_id"], activity, "{action}");
            assert_eq!(event["type_uid"], class * 100 + activity, "{action}");
        }
        let event = to_ocsf(&record(AuditKind::Received, None));
        assert_eq!(event["class_uid"], 6003);
        assert_eq!(event["api"]["operation"], "gatehouse.received");
    }

    #[test]
    fn the_tenant_is_the_cloud_account_and_the_metadata_tenant() {
        let mut with = record(AuditKind::Executed, None);
        with.record.tenant = Some("prod".to_owned());
        let event = to_ocsf(&with);
        assert_eq!(event["metadata"]["tenant_uid"], "prod");
        assert_eq!(event["cloud"]["provider"], "Atlassian");
        assert_eq!(event["cloud"]["account"]["uid"], "prod");
        let without = to_ocsf(&record(AuditKind::Executed, None));
        assert!(without.get("cloud").is_none());
        assert!(without["metadata"].get("tenant_uid").is_none());
    }

    #[test]
    fn targets_fill_user_and_group() {
        let event = to_ocsf(&record(
            AuditKind::Executed,
            Some(("confluence.remove_member", "group:g1/account:557058:abc")),
        ));
        assert_eq!(event["group"]["uid"], "g1");
        assert_eq!(event["user"]["uid"], "557058:abc");
        assert_eq!(event["status_id"], 1);
    }

    #[test]
    fn plans_are_not_successes() {
        let event = to_ocsf(&record(
            AuditKind::Planned,
            Some(("scim.deactivate", "account:a")),
        ));
        assert_eq!(event["status_id"], 99);
        assert_eq!(event["status"], "planned");
        let event = to_ocsf(&record(AuditKind::Failed, Some(("scim.deactivate", "account:a"))));
        assert_eq!(event["status_id"], 2);
        assert_eq!(event["severity_id"], 3);
    }
}
