//! The organization events poller: reads the events-stream from the saved cursor, queues every
//! event durably, and only then saves the cursor after the page.
//!
//! A restart resumes exactly where the last saved cursor points; a crash between queuing a page
//! and saving its cursor queues that page again, and the worker's dedupe claim (the org event id
//! is the dedupe key) absorbs the copies. The stream keeps its cursor valid past the last event,
//! so an empty page just means "poll again later". An event that cannot be read is skipped with
//! a warning naming it (and counted in `gatehouse_poll_events_unreadable_total`): the cursor
//! only moves past whole pages, so failing on it would stop the stream there for good.

use std::sync::Arc;

use chrono::Utc;
use handlers::identifier::{self, IdKind};
use handlers::{Envelope, GroupRef, Scheme};

use super::mapping::ActionMap;
use super::metrics::{Job, PollMetrics, TypeLabel};
use crate::atlassian::metrics::TenantLabels;
use crate::atlassian::{AdminClient, EventsCursor, EventsQuery, OrgEvent};
use crate::config::PollSettings;
use crate::queue::{OutgoingMessage, Queue};
use crate::store::Store;

/// The cursor's name in the store, before the tenant (`org-events@{tenant}`).
pub const CURSOR: &str = "org-events";
/// The envelope `source` (and dedupe-key namespace) of polled events.
pub const SOURCE: &str = handlers::ORG_EVENTS_SOURCE;

/// Why one poll did not complete (the next one retries; nothing was skipped).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("events-stream: {0}")]
    Atlassian(#[from] crate::atlassian::ApiError),
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::PublishError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot build an envelope: {0}")]
    Envelope(String),
}

/// Polls one organization.
pub struct OrgEventsPoller {
    /// The tenant whose organization this is: its events carry it.
    tenant: String,
    /// The cursor's (and the request log's) name: [`CURSOR`]`@{tenant}`.
    cursor: String,
    admin: AdminClient,
    org_id: Option<String>,
    queue: Arc<dyn Queue>,
    store: Store,
    settings: PollSettings,
    actions: ActionMap,
    metrics: PollMetrics,
}

impl std::fmt::Debug for OrgEventsPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgEventsPoller")
            .field("tenant", &self.tenant)
            .field("org_id", &self.org_id)
            .finish_non_exhaustive()
    }
}

impl OrgEventsPoller {
    pub fn new(
        tenant: &str,
        admin: AdminClient,
        org_id: Option<String>,
        queue: Arc<dyn Queue>,
        store: Store,
        settings: PollSettings,
        metrics: PollMetrics,
    ) -> Self {
        OrgEventsPoller {
            tenant: tenant.to_owned(),
            cursor: format!("{CURSOR}@{tenant}"),
            actions: ActionMap::new(&settings.actions),
            admin,
            org_id,
            queue,
            store,
            settings,
            metrics,
        }
    }

    /// How long until the events-stream may be asked again: never more than
    /// `poll.requests_per_window` requests in any `window_seconds`, counting every process's and
    /// every earlier run's requests (their times are in the store).
    async fn window_wait(&self) -> Result<Option<std::time::Duration>, PollError> {
        let window = chrono::Duration::seconds(i64::try_from(self.settings.window_seconds).unwrap_or(60));
        let now = Utc::now();
        let recent = self.store.requests_since(&self.cursor, now - window).await?;
        let allowed = self.settings.requests_per_window as usize;
        if recent.len() < allowed {
            return Ok(None);
        }
        // The request whose leaving the window makes room for one more.
        let frees = recent[recent.len() - allowed] + window;
        Ok(Some(
            (frees - now).to_std().unwrap_or_default() + std::time::Duration::from_millis(1),
        ))
    }

    /// When polling first started for this tenant, kept in the store: until Atlassian gives a
    /// cursor, every round reads from then, so the deactivations of a first start whose first
    /// rounds failed (a wrong key, the broker away), or whose first pages came without a cursor,
    /// are read once it works, instead of each round starting from its own "now".
    async fn first_start(&self) -> Result<chrono::DateTime<Utc>, PollError> {
        let key = format!("{}:started", self.cursor);
        if let Some(started) = self.store.poll_cursor(&key).await?
            && let Ok(started) = chrono::DateTime::parse_from_rfc3339(&started)
        {
            return Ok(started.with_timezone(&Utc));
        }
        let now = Utc::now();
        self.store.save_poll_cursor(&key, &now.to_rfc3339()).await?;
        Ok(now)
    }

    /// Reads and queues one page; true when it held events, readable or not, and a cursor (more may be
    /// waiting). Reads nothing while the events-stream's own limit is spent (the next round
    /// looks again: waiting here could outlast the poller's lease, and another process could
    /// start polling meanwhile).
    pub async fn poll_once(&self) -> Result<bool, PollError> {
        if let Some(wait) = self.window_wait().await? {
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "the events-stream's limit is spent; next round"
            );
            return Ok(false);
        }
        let cursor = self.store.poll_cursor(&self.cursor).await?.map(EventsCursor);
        let query = EventsQuery {
            // Only the very first read starts from a time; after that the cursor says where.
            from: match (&cursor, self.settings.backfill_from) {
                (Some(_), _) => None,
                (None, Some(backfill_from)) => Some(backfill_from),
                (None, None) => Some(self.first_start().await?),
            },
            to: None,
            limit: Some(self.settings.page_size),
        };
        // Counted before it is sent (a request cut short by shutdown still counts), then moved to
        // when the answer came: Atlassian saw the request before that, so the next one, a window
        // after this, is a window after Atlassian's count too.
        let sent = Utc::now();
        self.store.record_request(&self.cursor, sent).await?;
        let page = self.admin.events_page(cursor.as_ref(), &query).await;
        self.store
            .request_answered(&self.cursor, sent, Utc::now())
            .await?;
        let page = page?;
        for event in &page.events {
            let envelope = self.envelope(event)?;
            let message = OutgoingMessage::from_envelope(&envelope, &self.settings.kind);
            self.queue.publish(&message).await?;
            let label = match &envelope.event_type {
                handlers::EventType::Other(_) => "other".to_owned(),
                known => known.to_string(),
            };
            self.metrics
                .events
                .get_or_create(&TypeLabel {
                    tenant: self.tenant.clone(),
                    event_type: label,
                })
                .inc();
            tracing::info!(
                tenant = %self.tenant,
                org_event = %event.id,
                action = %event.action,
                event_type = %envelope.event_type,
                event_id = %envelope.id,
                "org event queued"
            );
        }
        // Saved only now that every event of the page is durably queued.
        if let Some(next) = &page.next {
            self.store.save_poll_cursor(&self.cursor, next.as_str()).await?;
        }
        // Skipped, not retried: the same event would be unreadable again, and waiting for it
        // would hold back every event after it. Counted and logged once the cursor is past it
        // (a page read again after a failure to queue it is not counted twice); a page that came
        // without a cursor is read again from where the last one left off, and its unreadable
        // events are counted each time it is.
        for skipped in &page.skipped {
            self.metrics
                .unreadable
                .get_or_create(&TenantLabels {
                    tenant: self.tenant.as_str().into(),
                })
                .inc();
            tracing::warn!(
                tenant = %self.tenant,
                org_event = skipped.id.as_deref().unwrap_or("(no id)"),
                position = skipped.position,
                reason = %skipped.reason,
                "an org event cannot be read: skipped, not acted on (the rest of its page was queued)"
            );
        }
        // More may be waiting only where a cursor says where: a page without one would be read
        // again at once, from the same place.
        Ok(page.next.is_some() && (!page.events.is_empty() || !page.skipped.is_empty()))
    }

    /// The envelope for an org event.
    pub fn envelope(&self, event: &OrgEvent) -> Result<Envelope, PollError> {
        let payload =
            serde_json::value::to_raw_value(&event.raw).map_err(|e| PollError::Envelope(e.to_string()))?;
        let mut envelope = Envelope::new(
            self.actions.type_for(&event.action),
            SOURCE,
            Scheme::Poll,
            // Event ids are only unique within an organization.
            handlers::internal_dedupe_key(SOURCE, &format!("{}:{}", self.tenant, event.id)),
            payload,
        );
        if let Some(time) = event.time {
            envelope.occurred_at = time;
        }
        envelope.tenant.name = Some(self.tenant.clone());
        envelope.tenant.org_id = self.org_id.clone();
        if let Some(user) = event.subject("users") {
            envelope.subject.account_id = checked(IdKind::Account, &user.id, event);
            envelope.subject.email = user
                .attributes
                .get("email")
                .and_then(|e| e.as_str())
                .map(str::to_owned);
        }
        if let Some(group) = event.subject("groups") {
            envelope.subject.group = Some(GroupRef {
                id: checked(IdKind::Group, &group.id, event),
                name: group
                    .attributes
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(str::to_owned),
            });
        }
        envelope.actor.account_id = event
            .actor_id
            .as_deref()
            .and_then(|id| checked(IdKind::Account, id, event));
        envelope.delivery.id = Some(event.id.clone());
        Ok(envelope)
    }

    /// Polls until `shutdown`, as the one poller among all processes (held with `lease`, see
    /// [`super::run_singleton`]).
    pub async fn run(self, lease: std::time::Duration, shutdown: tokio_util::sync::CancellationToken) {
        let interval = std::time::Duration::from_secs(self.settings.interval_seconds);
        let store = self.store.clone();
        tracing::info!(tenant = %self.tenant, org_id = ?self.org_id, interval_seconds = interval.as_secs(), "organization events poller started");
        let stop = shutdown.clone();
        let name = format!("org-events-poller@{}", self.tenant);
        super::run_singleton(store, &name, interval, lease, shutdown, || async {
            // Waiting for the stream's limit (up to a minute) must not hold up a shutdown; a page
            // cut short is read again, and the worker's dedupe absorbs what was queued of it.
            // Stop first: a call that gave up because of it (`ApiError::interrupted`) is no
            // failed round.
            let polled = tokio::select! {
                biased;
                _ = stop.cancelled() => return false,
                polled = self.poll_once() => polled,
            };
            self.metrics
                .round(Job::EventsPoller, &self.tenant, polled.is_ok());
            match polled {
                Ok(more) => more,
                Err(error) => {
                    tracing::warn!(%error, "polling the events-stream failed; retrying next round");
                    false
                }
            }
        })
        .await;
    }
}

/// `id` when it looks like an Atlassian id of `kind` (as the webhook normalizer requires);
/// otherwise none, with a warning. The event is still queued and recorded, naming no one, so no
/// policy acts on what it says and the poller is not stuck on the page (refusing the event would
/// leave the cursor before it for good).
fn checked(kind: IdKind, id: &str, event: &OrgEvent) -> Option<String> {
    match identifier::check(kind, id) {
        Ok(id) => Some(id.to_owned()),
        Err(error) => {
            tracing::warn!(org_event = %event.id, %error, "an org event names an id that is none; queued without it");
            None
        }
    }
}
