//! Sources with their secrets' expiry (ids and dates only, never a value), each tenant's last
//! reconciler run (or that it never ran), and the queue's depth.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use serde::Serialize;

use super::super::session::Operator;
use super::super::{ConsoleError, ConsoleState};
use super::{Frame, page, span, time};
use crate::config::{Ending, ending};

#[derive(Debug, Serialize)]
struct SecretView {
    id: String,
    not_after: Option<String>,
    /// `live`, `expiring` (within 30 days), `expired`, or `no end date`.
    state: &'static str,
    left: Option<String>,
}

#[derive(Debug, Serialize)]
struct SourceView {
    name: String,
    scheme: String,
    tenant: Option<String>,
    authority: String,
    allowed_types: Vec<String>,
    secrets: Vec<SecretView>,
}

#[derive(Debug, Serialize)]
struct FindingView {
    event_type: String,
    account_id: String,
    group: Option<String>,
    reason: String,
}

#[derive(Debug, Serialize)]
struct ReconcileView {
    tenant: String,
    ran_at: Option<String>,
    ago: Option<String>,
    groups_scanned: u64,
    accounts_checked: u64,
    findings: Vec<FindingView>,
    /// Accounts found again whose plan already waits for a person.
    awaiting_approval: Vec<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct QueueView {
    work: u64,
    retry: u64,
    oldest: Option<String>,
    dead_letters: u64,
    error: Option<String>,
}

fn label<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `GET /console/status`.
pub async fn show(
    State(state): State<Arc<ConsoleState>>,
    operator: Operator,
) -> Result<Response, ConsoleError> {
    let now = Utc::now();
    let settings = &state.settings;
    let sources: Vec<SourceView> = settings
        .sources
        .iter()
        .map(|source| SourceView {
            name: source.name.clone(),
            scheme: label(&source.scheme),
            tenant: source.tenant.clone(),
            authority: label(&source.authority),
            allowed_types: source.allowed_types(),
            secrets: source
                .secrets
                .iter()
                .map(|secret| SecretView {
                    id: secret.id.clone(),
                    not_after: secret.not_after.map(time),
                    // The same judgement as `check-config`'s warnings.
                    state: match secret.not_after.map(|end| ending(end, now)) {
                        None => "no end date",
                        Some(Some(Ending::Past)) => "expired",
                        Some(Some(Ending::Soon)) => "expiring",
                        Some(None) => "live",
                    },
                    left: secret
                        .not_after
                        .filter(|end| *end >= now)
                        .map(|end| span((end - now).num_seconds())),
                })
                .collect(),
        })
        .collect();

    let mut reconciler = Vec::new();
    for tenant in settings.tenant_names() {
        let run = state.store.last_reconcile_run(&tenant).await?;
        reconciler.push(match run {
            None => ReconcileView {
                tenant,
                ran_at: None,
                ago: None,
                groups_scanned: 0,
                accounts_checked: 0,
                findings: Vec::new(),
                awaiting_approval: Vec::new(),
                error: None,
            },
            Some(run) => {
                let findings = serde_json::from_str::<Vec<serde_json::Value>>(&run.findings)
                    .unwrap_or_default()
                    .iter()
                    .map(|f| {
                        let text = |key: &str| f.get(key).and_then(|v| v.as_str()).map(str::to_owned);
                        FindingView {
                            event_type: text("event_type").unwrap_or_default(),
                            account_id: text("account_id").unwrap_or_default(),
                            group: text("group"),
                            reason: text("reason").unwrap_or_default(),
                        }
                    })
                    .collect();
                ReconcileView {
                    tenant,
                    ran_at: Some(time(run.ran_at)),
                    ago: Some(span((now - run.ran_at).num_seconds())),
                    groups_scanned: run.groups_scanned,
                    accounts_checked: run.accounts_checked,
                    findings,
                    awaiting_approval: serde_json::from_str(&run.awaiting_approval).unwrap_or_default(),
                    error: run.error,
                }
            }
        });
    }

    let dead_letters = state.store.count_dead_letters().await?;
    let queue = match state.queue.depths().await {
        Ok(depths) => QueueView {
            work: depths.work,
            retry: depths.retry,
            oldest: depths.oldest_age_seconds.map(|age| span(age.round() as i64)),
            dead_letters,
            error: None,
        },
        Err(error) => {
            tracing::warn!(%error, "console: cannot read the queue's depth");
            QueueView {
                work: 0,
                retry: 0,
                oldest: None,
                dead_letters,
                error: Some(error.to_string()),
            }
        }
    };
    page(
        &operator,
        "status.html",
        serde_json::json!({
            "frame": Frame::new(&operator, "status"),
            "sources": sources,
            "reconciler": reconciler,
            "reconcile_enabled": settings.reconcile.enabled,
            "queue": queue,
            "backend": label(&settings.queue.backend),
        }),
    )
}
