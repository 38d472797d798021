//! The audit trail: records filtered by person, kind, time and tenant (read with
//! `audit::query`, as `gatehouse audit query` and `GET /audit` read them), each expandable to
//! the whole record, under a badge saying whether the hash chain verifies up to its head.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::super::session::Operator;
use super::super::{ConsoleError, ConsoleState};
use super::{Frame, page, time};
use crate::audit::query::{AuditFilters, query as audit_query};
use crate::audit::{AuditKind, ChainStatus, ChainWatch};
use crate::store::Store;

/// Records per page.
const PAGE_SIZE: usize = 100;

/// How long one check of the chain is shown before the next page view checks it again.
const BADGE_TTL: Duration = Duration::from_secs(15);

/// The chain's last check, shared by page views: a check costs the records appended since the
/// last one plus a slice of the older ones ([`ChainWatch`]), never a walk of the whole trail
/// unless it is broken.
#[derive(Debug, Default)]
pub struct ChainBadgeCache(tokio::sync::Mutex<(ChainWatch, Option<(Instant, Badge)>)>);

#[derive(Debug, Clone, Serialize)]
pub struct Badge {
    intact: bool,
    head_seq: u64,
    /// The chain is verified from this record to the head (1: all of it).
    verified_from: u64,
    /// The first broken link, when there is one.
    broken: Option<String>,
    at: String,
    /// When every record was last verified again from the first, if a round has been completed.
    last_round_at: Option<String>,
    /// The round going on: the next record it verifies, and its last.
    round_next: u64,
    round_end: u64,
}

impl ChainBadgeCache {
    async fn get(&self, store: &Store) -> Result<Badge, ConsoleError> {
        let mut guard = self.0.lock().await;
        let (watch, shown) = &mut *guard;
        if let Some((at, badge)) = shown.as_ref()
            && at.elapsed() < BADGE_TTL
        {
            return Ok(badge.clone());
        }
        let status: ChainStatus = watch.check(store).await?;
        let badge = Badge {
            intact: status.is_intact(),
            head_seq: status.head_seq,
            verified_from: status.verified_from,
            broken: status.broken.as_ref().map(|b| b.to_string()),
            at: time(chrono::Utc::now()),
            last_round_at: status.last_round_at.map(time),
            round_next: status.round.0,
            round_end: status.round.1,
        };
        *shown = Some((Instant::now(), badge.clone()));
        Ok(badge)
    }
}

/// The filters, as the form sends them (empty fields mean no filter).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Filters {
    #[serde(default)]
    account_id: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: String,
    #[serde(default)]
    tenant: String,
    /// Where the page starts: records older than this `seq` (the previous page's last).
    #[serde(default)]
    before_seq: Option<u64>,
}

fn given(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

#[derive(Debug, Serialize)]
struct RecordView {
    seq: u64,
    time: String,
    kind: &'static str,
    tenant: Option<String>,
    account: Option<String>,
    handler: Option<String>,
    action: Option<String>,
    org_wide: bool,
    status: String,
    error: Option<String>,
    failed: bool,
    /// The whole record, pretty-printed, for the expanded view.
    json: String,
}

/// `GET /console/audit`.
pub async fn list(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
    Query(mut filters): Query<Filters>,
) -> Result<Response, ConsoleError> {
    // The last day unless the form says otherwise (an empty field: all of it).
    let since = filters.since.get_or_insert_with(|| "24h".to_owned()).clone();
    let parsed = AuditFilters {
        account_id: given(&filters.account_id),
        tenant: given(&filters.tenant),
        event_id: None,
        kinds: given(&filters.kind).into_iter().collect(),
        since: given(&since),
        until: given(&filters.until),
        after_seq: None,
        limit: PAGE_SIZE,
    }
    .parse();
    let (records, older, problem) = match parsed {
        Ok(mut query) => {
            // Newest first: what just happened is what an operator looks for.
            query.newest_first = true;
            query.before_seq = filters.before_seq;
            let records = audit_query(&state.store, &query).await?;
            let older = (records.len() == PAGE_SIZE)
                .then(|| records.last().map(|r| r.seq))
                .flatten();
            (records, older, None)
        }
        Err(problem) => (Vec::new(), None, Some(problem)),
    };
    let records: Vec<RecordView> = records
        .iter()
        .map(|r| RecordView {
            seq: r.seq,
            time: time(r.time),
            kind: r.record.kind.as_str(),
            tenant: r.record.tenant.clone(),
            account: r.record.account_id.clone(),
            handler: r.record.handler.clone(),
            action: r
                .record
                .action
                .as_ref()
                .map(|a| format!("{} {}", a.action_type, a.target)),
            org_wide: r.record.action.as_ref().is_some_and(|a| a.org_wide),
            status: r.record.outcome.status.clone(),
            error: r.record.outcome.error.clone(),
            failed: matches!(
                r.record.kind,
                AuditKind::Failed | AuditKind::DeadLettered | AuditKind::Refused
            ),
            json: serde_json::to_string_pretty(r).unwrap_or_default(),
        })
        .collect();
    let next_query = older.map(|before| {
        let next = Filters {
            before_seq: Some(before),
            ..filters.clone()
        };
        query_string(&next)
    });
    let badge = state.chain_badge.get(&state.store).await?;
    let kinds: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
    page(
        &operator,
        "audit.html",
        serde_json::json!({
            "frame": Frame::new(&operator, "audit"),
            "filters": filters,
            "kinds": kinds,
            "tenants": state.settings.tenant_names(),
            "records": records,
            "problem": problem,
            "next_query": next_query,
            "badge": badge,
        }),
    )
}

/// The filters as a query string (for the next page's link).
fn query_string(filters: &Filters) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("account_id", &filters.account_id)
        .append_pair("kind", &filters.kind)
        .append_pair("since", filters.since.as_deref().unwrap_or_default())
        .append_pair("until", &filters.until)
        .append_pair("tenant", &filters.tenant);
    if let Some(before) = filters.before_seq {
        query.append_pair("before_seq", &before.to_string());
    }
    query.finish()
}
