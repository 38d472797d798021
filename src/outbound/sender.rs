//! Sends the outbox: per endpoint, up to `max_in_flight` deliveries at once on tasks of their
//! own, so a slow or dead endpoint holds only its own deliveries. Each attempt ends in one of
//! three ways, recorded with its compact attempt row:
//! - delivered: a 2xx (for Slack, a 2xx whose body does not say `"ok": false`);
//! - retried on the endpoint's ladder: a 5xx, 429, 408 or 425 (a `Retry-After` is honoured when
//!   longer than the rung), a timeout, a connection failure;
//! - dead, with the reason: the ladder is spent, or retrying cannot help (another 4xx, a
//!   redirect, which is never followed, a target refused as private).
//!
//! A delivery is taken under a lease longer than an attempt can last; a sender that dies
//! mid-attempt leaves it to be taken again when the lease runs out (at least once).
//!
//! Slack, with a bot token: where an approval's request went (`chat.postMessage` answers with
//! the channel and the message's `ts`) is remembered, and a settlement's update is sent as
//! `chat.update` of that message. While the request is still to be posted, the update waits for
//! it (without spending its own ladder); when the request will never be posted that way (Slack
//! refused it, an incoming webhook or an older gatehouse posted it), the update is dead with that
//! reason; one a later settlement of the same approval has overtaken is not sent at all. A
//! request Slack is known to have (posted by an attempt that ended before it was settled) is not
//! posted again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::metrics::{Endpoint, EndpointOutcome, OutboundMetrics};
use super::{signing, slack, target};
use crate::atlassian::retry::parse_retry_after;
use crate::config::{SLACK_OUTBOX, Settings, SlackSettings, SourceSecret, target_problem};
use crate::pacing::sleep_unless;
use crate::printable::printable;
use crate::store::outbox::{Attempt, DeliveryState, Settlement, Taken};
use crate::store::slack_messages::SlackMessage;
use crate::store::{Store, StoreError};

/// How often an idle endpoint looks for due deliveries (a read; taking one is a write).
const IDLE_POLL: Duration = Duration::from_millis(250);

/// The longest `Retry-After` honoured; a receiver asking for more is retried after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// How long attempts in flight may finish after shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How much of a refusing receiver's body is kept with the attempt.
const ERROR_BODY_CHARS: usize = 200;

/// How much of a refusing receiver's body is read to find those characters.
const ERROR_BODY_BYTES: usize = 4 * 1024;

/// How much of Slack's answer is read (its `{"ok": …}` is a few hundred bytes).
const SLACK_ANSWER_BYTES: usize = 64 * 1024;

/// The shortest pause an endpoint's request to slow down makes (a `Retry-After: 0` included).
const MIN_PAUSE: Duration = Duration::from_secs(1);

/// The Web API's `error` codes that mean Slack's trouble, not the request's (retried); every
/// other code is the request's and refused for good.
const SLACK_TRANSIENT_ERRORS: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// How an endpoint's deliveries are made.
#[derive(Debug)]
enum Style {
    /// `[[outbound]]`: Standard Webhooks signatures.
    Signed { url: String, secrets: Vec<SourceSecret> },
    /// `[approvals.slack]`: new messages to the incoming webhook or `chat.postMessage` (with the
    /// bot token), updates to a click's `response_url`.
    Slack(Box<SlackSettings>),
}

/// One endpoint's deliveries.
#[derive(Debug)]
struct Route {
    name: String,
    style: Style,
    client: reqwest::Client,
    timeout: Duration,
    ladder: Vec<Duration>,
    max_in_flight: usize,
    allow_http: bool,
    allow_private: bool,
    /// Until when this process sends nothing to the endpoint: it asked to slow down (a 429 or
    /// 503 with `Retry-After`, Slack's `ratelimited`). Without it, every other delivery in the
    /// backlog would meet the same refusal and spend a rung of its ladder on it.
    paused_until: std::sync::Mutex<Option<Instant>>,
}

/// What one attempt came to, before the ladder is applied.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// Worth another try, after at least this long when the receiver said so.
    Retryable(String, Option<Duration>),
    /// Not attempted: what it needs is not there yet, and may be at this time (no rung spent).
    Waits(String, DateTime<Utc>),
    /// Not sent, and never to be: something later made it pointless (settled as delivered, with
    /// the reason).
    Obsolete(String),
    /// Retrying cannot help.
    Permanent(String),
}

/// Every endpoint's sender.
#[derive(Debug)]
pub struct Sender {
    store: Store,
    metrics: OutboundMetrics,
    routes: Vec<Arc<Route>>,
}

impl Sender {
    /// The senders of every configured endpoint, and Slack's when configured.
    pub fn from_settings(
        settings: &Settings,
        store: Store,
        metrics: OutboundMetrics,
    ) -> anyhow::Result<Sender> {
        crate::tls::install_crypto_provider();
        let seconds = |list: &[u64]| list.iter().map(|s| Duration::from_secs(*s)).collect();
        let mut routes = Vec::new();
        for endpoint in &settings.outbound {
            let timeout = Duration::from_secs(endpoint.timeout_seconds);
            routes.push(Arc::new(Route {
                name: endpoint.name.clone(),
                style: Style::Signed {
                    url: endpoint.url.clone(),
                    secrets: endpoint.secrets.clone(),
                },
                client: target::client(timeout, endpoint.allow_private_addresses)?,
                timeout,
                ladder: seconds(&endpoint.retry_seconds),
                max_in_flight: endpoint.max_in_flight,
                allow_http: endpoint.allow_http,
                allow_private: endpoint.allow_private_addresses,
                paused_until: std::sync::Mutex::new(None),
            }));
        }
        if let Some(slack) = &settings.approvals.slack {
            let timeout = Duration::from_secs(slack.timeout_seconds);
            routes.push(Arc::new(Route {
                name: SLACK_OUTBOX.to_owned(),
                style: Style::Slack(Box::new(slack.clone())),
                client: target::client(timeout, slack.allow_private_addresses)?,
                timeout,
                ladder: seconds(&slack.retry_seconds),
                // Slack allows about one message a second per channel.
                max_in_flight: 1,
                allow_http: slack.allow_http,
                allow_private: slack.allow_private_addresses,
                paused_until: std::sync::Mutex::new(None),
            }));
        }
        Ok(Sender {
            store,
            metrics,
            routes,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Sends until `stop`, then lets attempts in flight finish (each is bounded by its timeout).
    pub async fn run(self, stop: CancellationToken) {
        self.warn_of_orphans().await;
        let sender = Arc::new(self);
        let mut routes = JoinSet::new();
        for route in &sender.routes {
            routes.spawn(sender.clone().run_route(route.clone(), stop.clone()));
        }
        routes.spawn(sender.clone().sample_backlog(stop.clone()));
        while routes.join_next().await.is_some() {}
    }

    /// Says so when deliveries wait for an endpoint no longer configured (renamed or removed):
    /// nothing sends them, and no gauge counts them.
    pub async fn warn_of_orphans(&self) {
        let Ok(backlog) = self.store.outbound_backlog().await else {
            return;
        };
        for (endpoint, count, oldest) in backlog {
            if !self.routes.iter().any(|route| route.name == endpoint) {
                tracing::warn!(
                    %endpoint,
                    pending = count,
                    %oldest,
                    "deliveries wait for an endpoint that is no longer configured: nothing sends them \
                     (configure it again under that name, or see them with `gatehouse outbound list`)"
                );
            }
        }
    }

    /// Keeps the backlog gauges current.
    async fn sample_backlog(self: Arc<Self>, stop: CancellationToken) {
        loop {
            match self.store.outbound_backlog().await {
                Ok(backlog) => {
                    let now = Utc::now();
                    for route in &self.routes {
                        let label = Endpoint {
                            endpoint: route.name.clone(),
                        };
                        let (count, oldest) = backlog
                            .iter()
                            .find(|(name, ..)| name == &route.name)
                            .map_or((0, 0), |(_, count, oldest)| {
                                (*count, (now - *oldest).num_seconds().max(0))
                            });
                        self.metrics
                            .pending
                            .get_or_create(&label)
                            .set(i64::try_from(count).unwrap_or(i64::MAX));
                        self.metrics
                            .oldest_pending_seconds
                            .get_or_create(&label)
                            .set(oldest);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot read the outbox backlog for metrics"),
            }
            if !sleep_unless(Duration::from_secs(15), &stop).await {
                return;
            }
        }
    }

    async fn run_route(self: Arc<Self>, route: Arc<Route>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(route.max_in_flight));
        let mut attempts = JoinSet::new();
        // Longer than any attempt: a live sender always settles before another may take over.
        let lease = route.timeout * 2 + Duration::from_secs(30);
        loop {
            while attempts.try_join_next().is_some() {}
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            // Looked at once a slot is free: the attempt that held it may have set the pause.
            if let Some(wait) = route.pause_left()
                && !sleep_unless(wait, &stop).await
            {
                break;
            }
            let taken = match self.store.has_due_outbound(&route.name).await {
                Ok(true) => self.store.take_outbound(&route.name, lease).await,
                Ok(false) => Ok(None),
                Err(error) => Err(error),
            };
            match taken {
                Ok(Some(taken)) => {
                    let (sender, route) = (self.clone(), route.clone());
                    attempts.spawn(async move {
                        sender.deliver(&route, taken).await;
                        drop(slot);
                    });
                }
                Ok(None) => {
                    drop(slot);
                    if !sleep_unless(IDLE_POLL, &stop).await {
                        break;
                    }
                }
                Err(error) => {
                    drop(slot);
                    tracing::warn!(endpoint = %route.name, %error, "cannot read the outbox; trying again in a second");
                    if !sleep_unless(Duration::from_secs(1), &stop).await {
                        break;
                    }
                }
            }
        }
        // Attempts in flight finish within a grace period; any still hanging are dropped, and
        // their deliveries are taken again once their lease runs out.
        let finish = async { while attempts.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, finish).await.is_err() {
            tracing::info!(endpoint = %route.name, "outbound attempts still in flight at shutdown; they are sent again after their lease");
        }
    }

    /// One attempt at `taken`, settled and recorded.
    async fn deliver(&self, route: &Route, taken: Taken) {
        let delivery = &taken.delivery;
        let at = Utc::now();
        let started = Instant::now();
        let mut posted = None;
        let outcome = match self.updating(route, &taken).await {
            Ok(updating) => route.attempt(&taken, at, updating.as_ref(), &mut posted).await,
            Err(waits) => (waits, None),
        };
        if let (Some(message), Outcome::Delivered) = (posted, &outcome.0)
            && delivery.message_type == slack::REQUEST
            && let Some(approval) = slack::approval_of(&delivery.source_key)
            && let Err(error) = self.store.record_slack_message(approval, &message).await
        {
            tracing::warn!(endpoint = %route.name, delivery = %delivery.id, %error, "cannot remember where the approval's Slack message went; a later settlement will not replace it");
        }
        let elapsed = started.elapsed();
        let label = Endpoint {
            endpoint: route.name.clone(),
        };
        self.metrics
            .attempt_seconds
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        if let Some(pause) = outcome.0.slow_down() {
            route.pause(pause);
        }
        let (settlement, status, error) = route.settle(delivery.failures, at, outcome);
        let word = match &settlement {
            // Settled without being sent: see `Outcome::Obsolete`.
            Settlement::Delivered if error.is_some() => "skipped",
            Settlement::Delivered => "delivered",
            Settlement::Retry(_) => "retried",
            Settlement::Wait(_) => "waited",
            Settlement::Dead => "dead",
        };
        self.metrics
            .attempts
            .get_or_create(&EndpointOutcome {
                endpoint: route.name.clone(),
                outcome: word,
            })
            .inc();
        match &settlement {
            Settlement::Delivered => {
                tracing::debug!(endpoint = %route.name, delivery = %delivery.id, "outbound delivery delivered")
            }
            Settlement::Retry(next) => {
                tracing::info!(endpoint = %route.name, delivery = %delivery.id, error = error.as_deref().unwrap_or(""), %next, "outbound delivery failed; retrying")
            }
            Settlement::Wait(next) => {
                tracing::debug!(endpoint = %route.name, delivery = %delivery.id, why = error.as_deref().unwrap_or(""), %next, "outbound delivery waits")
            }
            Settlement::Dead => {
                tracing::warn!(endpoint = %route.name, delivery = %delivery.id, error = error.as_deref().unwrap_or(""), "outbound delivery is dead (gatehouse outbound replay sends it again)")
            }
        }
        let attempt = Attempt {
            attempt: delivery.attempts,
            at,
            millis: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            status,
            error,
        };
        match self.store.settle_outbound(&taken, &attempt, &settlement).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(endpoint = %route.name, delivery = %delivery.id, "the delivery's lease ran out during the attempt; another sender has it")
            }
            Err(error) => {
                tracing::warn!(endpoint = %route.name, delivery = %delivery.id, %error, "cannot record the attempt; the delivery is taken again when its lease runs out")
            }
        }
    }

    /// For a settlement's update to Slack, the message it replaces. `Err` when it is not to be
    /// sent now: overtaken by a later settlement of the approval, waiting for the request to be
    /// posted, or with nothing to replace (the request was not posted through `chat.postMessage`);
    /// and for an approval's request, when Slack already has it (below).
    async fn updating(&self, route: &Route, taken: &Taken) -> Result<Option<SlackMessage>, Outcome> {
        let delivery = &taken.delivery;
        if !matches!(route.style, Style::Slack(_)) {
            return Ok(None);
        }
        let unreadable =
            |error: StoreError| Outcome::Retryable(format!("cannot read the store: {error}"), None);
        if delivery.message_type == slack::REQUEST {
            // Posted and remembered by an attempt whose settlement was lost (the process ended
            // between the two): posting it again would leave a second message with live
            // buttons, which no settlement's update would ever replace.
            if let Some(approval) = slack::approval_of(&delivery.source_key)
                && let Some(posted) = self.store.slack_message(approval).await.map_err(unreadable)?
            {
                return Err(Outcome::Obsolete(format!(
                    "already posted to Slack (channel {}, ts {}) by an attempt that was not recorded",
                    posted.channel, posted.ts
                )));
            }
            return Ok(None);
        }
        if delivery.message_type != slack::SETTLED_UPDATE {
            return Ok(None);
        }
        let Some((approval, announced)) = slack::settled_of(&delivery.source_key) else {
            return Err(Outcome::Permanent(format!(
                "{} names no approval and state",
                delivery.source_key
            )));
        };
        if let Some(current) = self.store.approval(approval).await.map_err(unreadable)?
            && !slack::still_current(announced, current.state)
        {
            return Err(Outcome::Obsolete(format!(
                "approval {approval} is {} now: its own update replaces the message",
                current.state.as_str()
            )));
        }
        if let Some(message) = self.store.slack_message(approval).await.map_err(unreadable)? {
            return Ok(Some(message));
        }
        let request = self
            .store
            .outbound_delivery_of(SLACK_OUTBOX, &slack::request_key(approval))
            .await
            .map_err(unreadable)?;
        match request {
            // Due again just after the request's next attempt (or in a moment, if it is being
            // made now).
            Some(request) if request.state == DeliveryState::Pending => Err(Outcome::Waits(
                "the approval's request is not posted to Slack yet".to_owned(),
                request.next_attempt_at.max(Utc::now()) + chrono::Duration::milliseconds(500),
            )),
            // Posted meanwhile: another sender remembered the message and settled the request
            // after it was looked for above.
            _ => match self.store.slack_message(approval).await.map_err(unreadable)? {
                Some(message) => Ok(Some(message)),
                None => Err(Outcome::Permanent(
                    "nothing to replace: the approval's request was not posted through \
                     chat.postMessage (Slack refused it, or an incoming webhook or an older gatehouse \
                     posted it)"
                        .to_owned(),
                )),
            },
        }
    }
}

impl Outcome {
    /// How long the endpoint asked every sender to hold off, if it did.
    fn slow_down(&self) -> Option<Duration> {
        match self {
            Outcome::Retryable(_, Some(after)) => Some((*after).clamp(MIN_PAUSE, MAX_RETRY_AFTER)),
            _ => None,
        }
    }
}

impl Route {
    /// Holds this endpoint's deliveries back for `pause` (a longer pause already set stands).
    fn pause(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut paused = crate::locking::lock(&self.paused_until);
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// What is left of the endpoint's pause, if any.
    fn pause_left(&self) -> Option<Duration> {
        let paused = *crate::locking::lock(&self.paused_until);
        paused
            .map(|until| until.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    /// Makes one attempt (no retries here: the outbox's ladder retries). `updating`: the message
    /// a settlement's update replaces; `posted` is set to where a new Slack message went, when
    /// Slack said.
    async fn attempt(
        &self,
        taken: &Taken,
        at: DateTime<Utc>,
        updating: Option<&SlackMessage>,
        posted: &mut Option<SlackMessage>,
    ) -> (Outcome, Option<u16>) {
        let delivery = &taken.delivery;
        let mut body = delivery.payload.as_bytes().to_vec();
        let url = match (&self.style, &delivery.url) {
            (Style::Signed { url, .. }, _) => url.clone(),
            (Style::Slack(slack), None) if delivery.message_type == slack::SETTLED_UPDATE => {
                let (Some(url), Some(message)) = (slack.update_url(), updating) else {
                    return (
                        Outcome::Permanent(
                            "a settlement's update needs a bot token and a posted request".into(),
                        ),
                        None,
                    );
                };
                match with_message(&delivery.payload, message) {
                    Ok(update) => body = update,
                    Err(error) => return (Outcome::Permanent(format!("unreadable update: {error}")), None),
                }
                url
            }
            // A click's response_url: checked again, it came from a (signed) request.
            // Said without the URL: a response URL is a credential (it posts into the channel).
            (Style::Slack(slack), Some(url)) if !slack.is_response_url(url) => {
                return (
                    Outcome::Permanent(
                        "the click's response URL is not under approvals.slack.hooks_url".into(),
                    ),
                    None,
                );
            }
            (Style::Slack(_), Some(url)) => url.clone(),
            (Style::Slack(slack), None) => slack.post_url(),
        };
        if let Some(problem) = target_problem(&url, self.allow_http, self.allow_private) {
            // A Slack target may be a credential (a webhook or response URL): never repeated.
            let problem = match self.style {
                Style::Slack(_) => problem.replace(url.as_str(), "the URL"),
                Style::Signed { .. } => problem,
            };
            return (Outcome::Permanent(format!("refused target: {problem}")), None);
        }
        let mut request = self.client.post(&url);
        match &self.style {
            Style::Signed { secrets, .. } => {
                let Some(signed) = signing::sign(&delivery.id, at, &body, secrets) else {
                    return (
                        Outcome::Permanent(
                            "no live secret to sign with (outbound secrets have all ended)".into(),
                        ),
                        None,
                    );
                };
                request = request
                    .header("webhook-id", signed.id)
                    .header("webhook-timestamp", signed.timestamp)
                    .header("webhook-signature", signed.signature);
            }
            // New messages and settlements' updates go to the Web API with the bot token;
            // response URLs need none.
            Style::Slack(slack) => {
                if let (None, Some(token)) = (&delivery.url, &slack.bot_token) {
                    request = request.bearer_auth(token.expose());
                }
            }
        }
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return (self.failed_to_send(error), None),
        };
        let status = response.status();
        let code = Some(status.as_u16());
        if status.is_success() {
            if matches!(self.style, Style::Slack(_)) {
                let (verdict, answered) = slack_verdict(response).await;
                *posted = answered;
                return (verdict, code);
            }
            return (Outcome::Delivered, code);
        }
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere")
                .to_owned();
            return (
                Outcome::Permanent(format!("answered {status} to {to}: redirects are not followed")),
                code,
            );
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let said = body_excerpt(response).await;
        let what = format!("answered {status}{said}");
        let retryable = status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429);
        if retryable {
            (Outcome::Retryable(what, retry_after), code)
        } else {
            (Outcome::Permanent(format!("{what}: retrying cannot help")), code)
        }
    }

    /// Why a request did not reach its endpoint, without the endpoint's URL: reqwest names it in
    /// its errors, and a Slack incoming webhook's URL (or a click's `response_url`) is the
    /// credential itself. The reason is logged, stored and shown by `gatehouse outbound`.
    fn failed_to_send(&self, error: reqwest::Error) -> Outcome {
        let error = error.without_url();
        if let Some(refused) = target::refused_target(&error) {
            return Outcome::Permanent(refused);
        }
        if error.is_timeout() {
            return Outcome::Retryable(format!("no answer within {}s", self.timeout.as_secs()), None);
        }
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            reason = format!("{reason}: {inner}");
            source = inner.source();
        }
        Outcome::Retryable(format!("could not send: {reason}"), None)
    }

    /// Applies the ladder: `failures` before this attempt. Returns the settlement, the status and
    /// the error to record.
    fn settle(
        &self,
        failures: u32,
        at: DateTime<Utc>,
        (outcome, status): (Outcome, Option<u16>),
    ) -> (Settlement, Option<u16>, Option<String>) {
        match outcome {
            Outcome::Delivered => (Settlement::Delivered, status, None),
            Outcome::Waits(reason, until) => (Settlement::Wait(until), status, Some(reason)),
            Outcome::Obsolete(reason) => (Settlement::Delivered, status, Some(reason)),
            Outcome::Permanent(reason) => (Settlement::Dead, status, Some(reason)),
            Outcome::Retryable(reason, retry_after) => match self.ladder.get(failures as usize) {
                Some(rung) => {
                    let wait = retry_after.map_or(*rung, |asked| asked.min(MAX_RETRY_AFTER).max(*rung));
                    let next = at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                    (Settlement::Retry(next), status, Some(reason))
                }
                None => (
                    Settlement::Dead,
                    status,
                    Some(format!("gave up after {} attempts: {reason}", failures + 1)),
                ),
            },
        }
    }
}

/// Slack answers 200 with `{"ok": false, "error": …}` for refusals of the Web API; incoming
/// webhooks and response URLs answer `ok` or `{"ok": true}`. A `chat.postMessage` that went
/// through also says where (`channel`, `ts`): returned when both are there and plausible (short,
/// printable), as what a settlement's update will name.
async fn slack_verdict(response: reqwest::Response) -> (Outcome, Option<SlackMessage>) {
    verdict_of(&read_at_most(response, SLACK_ANSWER_BYTES).await)
}

/// [`slack_verdict`] of an answer's text.
fn verdict_of(text: &str) -> (Outcome, Option<SlackMessage>) {
    #[derive(serde::Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        ts: Option<String>,
    }
    let plausible = |id: &str| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic());
    match serde_json::from_str::<Answer>(text) {
        Ok(Answer { ok: false, error, .. }) => {
            let error = printable(error.as_deref().unwrap_or("unknown"), ERROR_BODY_CHARS);
            // Slack's own trouble, answered with 200 and `ok: false`, passes: retried like a 5xx.
            // `ratelimited` comes without a `Retry-After`: the shortest pause, which every rung
            // of the ladder outlasts anyway.
            let outcome = if error == "ratelimited" {
                Outcome::Retryable("Slack: ratelimited".to_owned(), Some(MIN_PAUSE))
            } else if SLACK_TRANSIENT_ERRORS.contains(&error.as_str()) {
                Outcome::Retryable(format!("Slack: {error}"), None)
            } else {
                Outcome::Permanent(format!("Slack refused the message: {error}"))
            };
            (outcome, None)
        }
        Ok(Answer {
            channel: Some(channel),
            ts: Some(ts),
            ..
        }) if plausible(&channel) && plausible(&ts) => {
            (Outcome::Delivered, Some(SlackMessage { channel, ts }))
        }
        _ => (Outcome::Delivered, None),
    }
}

/// A settlement's update (`{"text", "blocks"}`) addressed to `message`, as `chat.update` takes it.
fn with_message(payload: &str, message: &SlackMessage) -> Result<Vec<u8>, serde_json::Error> {
    let mut update: serde_json::Map<String, serde_json::Value> = serde_json::from_str(payload)?;
    update.insert("channel".to_owned(), message.channel.clone().into());
    update.insert("ts".to_owned(), message.ts.clone().into());
    serde_json::to_vec(&update)
}

/// `: <the first characters of the body>`, printable only, or nothing.
async fn body_excerpt(response: reqwest::Response) -> String {
    let text = read_at_most(response, ERROR_BODY_BYTES).await;
    let excerpt = printable(&text, ERROR_BODY_CHARS);
    if excerpt.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", excerpt.trim())
    }
}

/// The first `limit` bytes of a receiver's answer (lossily UTF-8): however much it sends, no more
/// is read into memory.
async fn read_at_most(mut response: reqwest::Response, limit: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk[..chunk.len().min(limit - bytes.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_slack_says_a_message_went_is_kept_only_when_plausible() {
        let (outcome, posted) = verdict_of(r#"{"ok":true,"channel":"C0APPROVALS","ts":"1764900000.000100"}"#);
        assert!(matches!(outcome, Outcome::Delivered));
        assert_eq!(
            posted,
            Some(SlackMessage {
                channel: "C0APPROVALS".into(),
                ts: "1764900000.000100".into()
            })
        );
        let long = "C".repeat(65);
        for answer in [
            r#"{"ok":true}"#.to_owned(),
            "ok".to_owned(),
            r#"{"ok":true,"channel":"C1"}"#.to_owned(),
            format!(r#"{{"ok":true,"channel":"{long}","ts":"1.2"}}"#),
            r#"{"ok":true,"channel":"C1 <!here>","ts":"1.2"}"#.to_owned(),
            r#"{"ok":true,"channel":"C1","ts":"1.2
"}"#
            .to_owned(),
            r#"{"ok":true,"channel":"","ts":"1.2"}"#.to_owned(),
        ] {
            let (outcome, posted) = verdict_of(&answer);
            assert!(matches!(outcome, Outcome::Delivered), "{answer}");
            assert_eq!(posted, None, "{answer}");
        }
        let (outcome, posted) = verdict_of(r#"{"ok":false,"error":"ratelimited","channel":"C1","ts":"1.2"}"#);
        assert!(matches!(outcome, Outcome::Retryable(..)));
        assert_eq!(posted, None);
        // Slack's own trouble passes; the request's does not.
        for code in [
            "internal_error",
            "fatal_error",
            "service_unavailable",
            "request_timeout",
        ] {
            let (outcome, _) = verdict_of(&format!(r#"{{"ok":false,"error":"{code}"}}"#));
            assert!(
                matches!(&outcome, Outcome::Retryable(why, None) if why.contains(code)),
                "{code}"
            );
        }
        assert!(matches!(
            verdict_of(r#"{"ok":false,"error":"channel_not_found"}"#).0,
            Outcome::Permanent(why) if why.contains("channel_not_found")
        ));
    }

    fn route(ladder: &[u64]) -> Route {
        Route {
            name: "soar".into(),
            style: Style::Signed {
                url: "https://soar.example.com/".into(),
                secrets: Vec::new(),
            },
            client: reqwest::Client::new(),
            timeout: Duration::from_secs(10),
            ladder: ladder.iter().map(|s| Duration::from_secs(*s)).collect(),
            max_in_flight: 1,
            allow_http: false,
            allow_private: false,
            paused_until: std::sync::Mutex::new(None),
        }
    }

    /// An endpoint that asks to slow down is left alone that long by every delivery of this
    /// process (a longer pause already set stands); nothing else pauses it.
    #[test]
    fn a_request_to_slow_down_pauses_the_endpoint() {
        crate::app::install_crypto_provider();
        let route = route(&[5]);
        assert_eq!(route.pause_left(), None);
        let asked = Outcome::Retryable("answered 429".into(), Some(Duration::from_secs(30)));
        route.pause(asked.slow_down().unwrap());
        let left = route.pause_left().unwrap();
        assert!(
            left > Duration::from_secs(25) && left <= Duration::from_secs(30),
            "{left:?}"
        );
        route.pause(Duration::from_secs(1));
        assert!(
            route.pause_left().unwrap() > Duration::from_secs(25),
            "the longer pause stands"
        );
        // `Retry-After: 0` still pauses a moment; Slack's `ratelimited` too.
        let zero = Outcome::Retryable("answered 429".into(), Some(Duration::ZERO));
        assert_eq!(zero.slow_down(), Some(MIN_PAUSE));
        let (slack, _) = verdict_of(r#"{"ok":false,"error":"ratelimited"}"#);
        assert_eq!(slack.slow_down(), Some(MIN_PAUSE));
        for other in [
            Outcome::Retryable("answered 503".into(), None),
            Outcome::Permanent("answered 400".into()),
            Outcome::Delivered,
        ] {
            assert_eq!(other.slow_down(), None, "{other:?}");
        }
    }

    /// A click's response URL is a credential (it posts into the channel): a refusal of one says
    /// why without it, so it reaches neither the outbox's `last_error` nor the logs.
    #[tokio::test]
    async fn a_refused_response_url_is_not_repeated() {
        crate::app::install_crypto_provider();
        let slack = SlackSettings::with_webhook(
            crate::config::Secret::new("https://hooks.slack.com/services/T/B/x"),
            crate::config::Secret::new("signing-secret-0123456789"),
            vec!["U1".to_owned()],
        );
        let route = Route {
            name: "slack".into(),
            style: Style::Slack(Box::new(slack)),
            ..route(&[5])
        };
        let now = Utc::now();
        for url in [
            // Not under hooks_url (changed since the click was queued).
            "https://hooks.example.org/actions/T1/B2/SECRET-PART",
            // Under it, but over plain http.
            "http://hooks.slack.com/actions/T1/B2/SECRET-PART",
        ] {
            let taken = Taken {
                delivery: crate::store::outbox::OutboundDelivery {
                    id: "01DELIVERY".into(),
                    endpoint: "slack".into(),
                    source_key: "k".into(),
                    message_type: "approval.click".into(),
                    url: Some(url.to_owned()),
                    payload: "{}".into(),
                    state: crate::store::outbox::DeliveryState::Pending,
                    attempts: 0,
                    failures: 0,
                    next_attempt_at: now,
                    last_status: None,
                    last_error: None,
                    created_at: now,
                    finished_at: None,
                },
                token: "t".into(),
            };
            let (outcome, status) = route.attempt(&taken, now, None, &mut None).await;
            assert_eq!(status, None);
            match outcome {
                Outcome::Permanent(why) => assert!(!why.contains("SECRET"), "{why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_ladder_retries_honours_retry_after_and_ends_dead_with_the_reason() {
        crate::app::install_crypto_provider();
        let route = route(&[5, 30]);
        let at = Utc::now();
        let retry = |failures, after| {
            route.settle(
                failures,
                at,
                (Outcome::Retryable("answered 503".into(), after), Some(503)),
            )
        };
        assert_eq!(
            retry(0, None).0,
            Settlement::Retry(at + chrono::Duration::seconds(5))
        );
        assert_eq!(
            retry(1, None).0,
            Settlement::Retry(at + chrono::Duration::seconds(30))
        );
        // A longer Retry-After wins over the rung, up to an hour; a shorter one does not.
        let asked = Some(Duration::from_secs(120));
        assert_eq!(
            retry(0, asked).0,
            Settlement::Retry(at + chrono::Duration::seconds(120))
        );
        let huge = Some(Duration::from_secs(86_400));
        assert_eq!(
            retry(0, huge).0,
            Settlement::Retry(at + chrono::Duration::seconds(3_600))
        );
        assert_eq!(
            retry(1, Some(Duration::from_secs(1))).0,
            Settlement::Retry(at + chrono::Duration::seconds(30))
        );
        let (dead, status, error) = retry(2, None);
        assert_eq!(dead, Settlement::Dead);
        assert_eq!(status, Some(503));
        assert_eq!(error.unwrap(), "gave up after 3 attempts: answered 503");
        let (dead, _, error) = route.settle(0, at, (Outcome::Permanent("answered 400".into()), Some(400)));
        assert_eq!(dead, Settlement::Dead);
        assert_eq!(error.unwrap(), "answered 400");
    }
}
