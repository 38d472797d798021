//! One delivery, from receipt to settlement, in steps ([`Job`]'s methods), each of which either
//! hands the delivery on or settles it ([`Settled`], the outcome label):
//!
//! 1. Parse the envelope; a body that is not one can never succeed: dead-letter it.
//! 2. Admit it ([`Job::admit`]): a processor may send it back for later without counting an
//!    attempt or recording anything (its tenant already holds all the slots it may).
//! 3. Hold the account it is about ([`Job::hold_account`]): one delivery acts on an account at a
//!    time across every worker (`crate::store::account_claims` says why); held by another: wait
//!    for it a little, then come back after the first rung without counting an attempt or
//!    recording anything. Let go once the delivery is settled.
//! 4. Claim the dedupe key ([`Job::claim`]). Already completed: a duplicate, recorded in the audit
//!    trail and acked without acting. Held by another live delivery: someone is on it, come back
//!    after the first rung without counting a failure. Each delivery claims as its own owner, so
//!    two copies handed to the same process cannot both act. On a first attempt the claim commits
//!    together with the `received` audit record.
//! 5. Process ([`Job::run`]), renewing the claims' leases meanwhile. A claim lost meanwhile (this
//!    worker stalled past its lease and another took over) stops the processing: the delivery
//!    comes back later and finds the outcome.
//! 6. Settle ([`Job::settle`]). Success: mark the claim completed (durable) and only then ack.
//!    Transient failure: record it, release the claim and retry on the ladder, or dead-letter once
//!    attempts are exhausted; during shutdown, give it back instead, no attempt counted (the
//!    Atlassian clients stop waiting to retry when shutdown begins). Permanent failure: record
//!    it, release and dead-letter with the reason.
//!
//! Fail closed: whenever the store or the audit trail cannot be written, the worker waits for it
//! while holding the delivery (so consumption stalls instead of failing events), never acting or
//! acking unrecorded. At shutdown a delivery still waiting is given back untouched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use handlers::Envelope;
use handlers::ports::ErrorKind;
use tracing::Instrument;

use super::{Context, ProcessError, Processed};
use crate::audit::{AuditKind, NewRecord, Outcome};
use crate::queue::Delivery;
use crate::store::{AccountClaim, Claim, dedupe};

pub(super) async fn handle(context: &Context, delivery: Delivery) {
    let started = Instant::now();
    let metrics = &context.metrics.worker;
    let envelope: Envelope = match serde_json::from_slice(&delivery.body) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::error!(%error, message_id = %delivery.message_id, "not an envelope; dead-lettering");
            let reason = format!("malformed envelope: {error}");
            // On the trail as every parked event is (the dead-letter recorder takes the worker's
            // word for it); about no event, since none can be read. Fail closed: given back if
            // it cannot be recorded before shutdown.
            let mut record = NewRecord::new(ulid::Ulid::nil(), AuditKind::DeadLettered);
            record.attempt = delivery.attempt;
            let message_id = crate::printable::printable(&delivery.message_id, 64);
            record.outcome = Outcome::error(format!("{reason} (message {message_id})"));
            if !audit(context, "record the malformed envelope", record).await {
                settle(delivery.release().await);
                metrics.outcome("unknown", Settled::Released.label());
                return;
            }
            settle(delivery.dead_letter(&reason, Some(&reason)).await);
            metrics.outcome("unknown", Settled::DeadLettered.label());
            return;
        }
    };
    let span = tracing::info_span!(
        "event",
        event_id = %envelope.id,
        event_type = %envelope.event_type,
        tenant = %envelope.tenant_name(),
        dedupe_key = %envelope.dedupe_key,
        attempt = delivery.attempt,
    );
    let outcome = handle_envelope(context, delivery, &envelope)
        .instrument(span)
        .await;
    metrics.outcome(envelope.tenant_name(), outcome);
    metrics
        .processing_seconds
        .observe(started.elapsed().as_secs_f64());
    if !metrics.oldest_age_sampled.load(Ordering::Relaxed) {
        let age = (chrono::Utc::now() - envelope.received_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0;
        metrics.oldest_message_age_seconds.set(age);
    }
}

/// How a delivery was settled (the `outcome` label of `gatehouse_worker_attempts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Processed and acked.
    Done,
    /// Nothing reacts to it (or the reactor said so), recorded as skipped and acked.
    Skipped,
    /// A copy of a fact already handled, recorded and acked.
    Duplicate,
    /// Another delivery holds the fact (or took it over): back after the first rung, no attempt
    /// counted.
    Busy,
    /// Another delivery is acting on the same account: back after the first rung, no attempt
    /// counted.
    AccountBusy,
    /// Not admitted now (its tenant's slots are full): back later, no attempt counted.
    Postponed,
    /// Given back, no attempt counted (shutting down: while the store was away, or while an
    /// Atlassian call waited to retry).
    Released,
    /// Failed transiently: back after its rung of the ladder.
    Retried,
    /// Failed for good, or out of attempts: parked with its reason.
    DeadLettered,
}

impl Settled {
    fn label(self) -> &'static str {
        match self {
            Settled::Done => "ok",
            Settled::Skipped => "skipped",
            Settled::Duplicate => "duplicate",
            Settled::Busy => "busy",
            Settled::AccountBusy => "account_busy",
            Settled::Postponed => "postponed",
            Settled::Released => "released",
            Settled::Retried => "retried",
            Settled::DeadLettered => "dead_lettered",
        }
    }
}

/// One step of the way: go on (with what it handed over), or the delivery is settled.
enum Step<T> {
    Go(T),
    Stop(Settled),
}

/// What every step of one delivery needs.
struct Job<'a> {
    context: &'a Context,
    envelope: &'a Envelope,
    key: &'a str,
    event_id: String,
    /// One owner per delivery, not per process: two copies of a fact consumed by the same
    /// worker must not both hold the claim.
    owner: String,
    /// The (tenant, account) this delivery acts on, held one delivery at a time; `None` for
    /// events about no account and those nothing reacts to.
    account: Option<(&'a str, &'a str)>,
    /// Whether this delivery holds its account now (so that settling lets it go).
    holds_account: AtomicBool,
    lease: Duration,
    retention: Duration,
}

/// How long a delivery waits in the worker for another event about the same account to finish
/// before it goes back to the queue (a slot is held meanwhile).
const ACCOUNT_WAIT: Duration = Duration::from_secs(2);

/// Returns how the delivery was settled: admitted, claimed (with its first record), processed
/// while the claim is renewed, then settled by the result.
async fn handle_envelope(context: &Context, delivery: Delivery, envelope: &Envelope) -> &'static str {
    let worker = &context.settings.worker;
    let ignored = context.processor.ignores(envelope);
    let job = Job {
        context,
        envelope,
        key: envelope.dedupe_key.as_str(),
        event_id: envelope.id.to_string(),
        owner: format!("{}/{}", context.owner, ulid::Ulid::generate()),
        account: envelope
            .subject
            .account_id
            .as_deref()
            .filter(|_| ignored.is_none())
            .map(|account| (envelope.tenant_name(), account)),
        holds_account: AtomicBool::new(false),
        lease: Duration::from_secs(worker.claim_lease_seconds),
        retention: Duration::from_secs(worker.dedupe_retention_days * 86_400),
    };
    let settled = async {
        // Held until the delivery is settled (a tenant's share of the slots, say).
        let (_admitted, delivery) = match job.admit(delivery).await {
            Step::Go(admitted) => admitted,
            Step::Stop(settled) => return settled,
        };
        let delivery = match job.hold_account(delivery).await {
            Step::Go(delivery) => delivery,
            Step::Stop(settled) => return settled,
        };
        let delivery = match job.claim(delivery, ignored.as_deref()).await {
            Step::Go(delivery) => delivery,
            Step::Stop(settled) => return settled,
        };
        if let Some(why) = &ignored {
            tracing::info!(%why, "skipped");
            return job.complete(delivery, Settled::Skipped).await;
        }
        let (delivery, result) = match job.run(delivery).await {
            Step::Go(ran) => ran,
            Step::Stop(settled) => return settled,
        };
        job.settle(delivery, result).await
    };
    let settled = settled.await;
    job.let_account_go().await;
    settled.label()
}

impl Job<'_> {
    /// Asks the processor whether the event may start now; if not, it comes back later and
    /// nothing is recorded (however often that happens).
    async fn admit(&self, delivery: Delivery) -> Step<(Option<tokio::sync::OwnedSemaphorePermit>, Delivery)> {
        match self.context.processor.admit(self.envelope) {
            super::Admission::Now(permit) => Step::Go((permit, delivery)),
            super::Admission::Later { why, after } => {
                let queue = &self.context.settings.queue;
                let rung = queue.rung_for(after);
                tracing::info!(%why, retry_in_ms = queue.retry_delay(rung).as_millis() as u64, "not now; back later (no attempt counted)");
                settle(delivery.postpone_at(rung).await);
                Step::Stop(Settled::Postponed)
            }
        }
    }

    /// Holds the account the event is about, waiting while the store cannot say. Held by
    /// another delivery, it waits in the worker for up to [`ACCOUNT_WAIT`] (the other is usually
    /// done within a plan's time: a leaver's removals should not sit out a retry rung for it),
    /// then sends this one back for later, recording nothing.
    async fn hold_account(&self, delivery: Delivery) -> Step<Delivery> {
        let Some((tenant, account)) = self.account else {
            return Step::Go(delivery);
        };
        let context = self.context;
        let claim = || {
            persist(context, "claim the account", || {
                context
                    .store
                    .claim_account(tenant, account, &self.owner, &self.event_id, self.lease)
            })
        };
        let mut claimed = claim().await;
        if matches!(claimed, Some(AccountClaim::Busy { .. })) {
            context.metrics.worker.account_waits.inc();
            let waiting_since = Instant::now();
            let mut pause = Duration::from_millis(25);
            while matches!(claimed, Some(AccountClaim::Busy { .. }))
                && waiting_since.elapsed() + pause <= ACCOUNT_WAIT
            {
                if !crate::pacing::sleep_unless(pause, &context.stopping).await {
                    break;
                }
                pause = (pause * 2).min(Duration::from_millis(400));
                claimed = claim().await;
            }
        }
        match claimed {
            Some(AccountClaim::Acquired) => {
                self.holds_account.store(true, Ordering::Relaxed);
                Step::Go(delivery)
            }
            Some(AccountClaim::Busy { event_id }) => {
                tracing::info!(account, acting_on = %event_id, "another event about this account is being acted on; checking back later");
                settle(delivery.postpone().await);
                Step::Stop(Settled::AccountBusy)
            }
            None => {
                settle(delivery.release().await);
                Step::Stop(Settled::Released)
            }
        }
    }

    /// Lets the account go once the delivery is settled. One try: a claim left behind (the store
    /// went away just now) is free when its lease runs out.
    async fn let_account_go(&self) {
        if let Some((tenant, account)) = self.account
            && self.holds_account.load(Ordering::Relaxed)
            && let Err(error) = self
                .context
                .store
                .release_account(tenant, account, &self.owner)
                .await
        {
            tracing::warn!(%error, account, "cannot let the account go; it is free again when the lease runs out");
        }
    }

    /// Claims the dedupe key. The claim and, on a first attempt, the `received` record commit
    /// together: one write. An event nothing reacts to (`ignored`) gets its one `skipped` record
    /// there instead.
    async fn claim(&self, delivery: Delivery, ignored: Option<&str>) -> Step<Delivery> {
        let context = self.context;
        let first = match ignored {
            None => record(self.envelope, AuditKind::Received, 1),
            Some(why) => {
                let mut skipped = record(self.envelope, AuditKind::Skipped, delivery.attempt);
                skipped.outcome = Outcome::status("skipped");
                skipped.outcome.error = Some(why.to_owned());
                skipped
            }
        };
        let records_with_claim = ignored.is_some() || delivery.attempt == 1;
        let claim = persist(context, "claim the event", || async {
            let claim_and_record = async {
                let mut tx = context.store.begin_write().await?;
                let claim = dedupe::claim_in(
                    &mut tx,
                    self.key,
                    &self.event_id,
                    &self.owner,
                    self.lease,
                    self.retention,
                )
                .await?;
                if claim == Claim::Acquired && records_with_claim {
                    context.audit.append_in(&mut tx, vec![first.clone()]).await?;
                    // Endpoints following this type get the event once, with its claim.
                    let deliveries = context.outbox.for_event(self.envelope)?;
                    if !deliveries.is_empty() {
                        crate::store::outbox::enqueue_in(&mut tx, &deliveries).await?;
                    }
                }
                tx.commit().await?;
                Ok(claim)
            };
            context
                .audit
                .bounded(claim_and_record, |timed_out| timed_out)
                .await
        });
        let Some(claim) = claim.await else {
            // Shutting down while the store is away: give the message back untouched.
            settle(delivery.release().await);
            return Step::Stop(Settled::Released);
        };
        match claim {
            Claim::Acquired => Step::Go(delivery),
            Claim::Completed { event_id: first } => {
                tracing::info!(first_event_id = %first, "duplicate of an event already handled; not acting again");
                let mut duplicate = record(self.envelope, AuditKind::Duplicate, delivery.attempt);
                duplicate.outcome = Outcome::status(format!("duplicate of event {first}"));
                if !audit(context, "record the duplicate", duplicate).await {
                    settle(delivery.release().await);
                    return Step::Stop(Settled::Released);
                }
                settle(delivery.ack().await);
                Step::Stop(Settled::Duplicate)
            }
            Claim::Busy { owner } => {
                tracing::info!(%owner, "another worker is handling this event now; checking back later");
                settle(delivery.postpone().await);
                Step::Stop(Settled::Busy)
            }
        }
    }

    /// Processes the event, renewing the claims' leases (the event's and its account's)
    /// meanwhile. The renewal is polled in this task (not spawned), so a worker that is killed
    /// stops renewing at once and its claims can be taken over after the lease; a claim lost
    /// meanwhile stops the processing.
    async fn run(&self, delivery: Delivery) -> Step<(Delivery, Result<Processed, ProcessError>)> {
        let context = self.context;
        let renew = async {
            let mut tick = tokio::time::interval((self.lease / 3).max(Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tick.tick().await;
                match context.store.renew_claim(self.key, &self.owner, self.lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(error) => tracing::warn!(%error, "cannot renew the claim on this event"),
                }
                if let Some((tenant, account)) = self.account {
                    match context
                        .store
                        .renew_account_claim(tenant, account, &self.owner, self.lease)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(error) => tracing::warn!(%error, "cannot renew the claim on this account"),
                    }
                }
            }
        };
        // A panic in a policy or a performer (a bug) fails this attempt instead of the task: the
        // delivery is settled on the ladder (parked once attempts run out) and the claims let
        // go, rather than left unacknowledged and held until leases and broker timeouts end.
        let process =
            std::panic::AssertUnwindSafe(context.processor.process(self.envelope, delivery.attempt))
                .catch_unwind()
                .map(|outcome| {
                    outcome.unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".to_owned());
                        tracing::error!(panic = %what, "processing panicked; failing this attempt");
                        Err(ProcessError::transient(format!("processing panicked: {what}")))
                    })
                });
        tokio::select! {
            result = process => Step::Go((delivery, result)),
            () = renew => {
                // Stopped at an await point. Actions recorded as executed are skipped by the new
                // holder; one caught between its call and its record is performed again, which the
                // performer treats as already done (e.g. removing a membership that is gone).
                tracing::warn!("lost a claim on this event or its account (lease expired and taken over); stopping");
                settle(delivery.postpone().await);
                Step::Stop(Settled::Busy)
            }
        }
    }

    /// Settles by the processing's result: success completes the claim, then acks; a failure is
    /// recorded, the claim released, and the message retried on the ladder or dead-lettered.
    async fn settle(&self, delivery: Delivery, result: Result<Processed, ProcessError>) -> Settled {
        let context = self.context;
        match result {
            Ok(processed) => {
                if let Processed::Skipped(why) = &processed {
                    tracing::info!(%why, "skipped");
                    let mut skipped = record(self.envelope, AuditKind::Skipped, delivery.attempt);
                    skipped.outcome = Outcome::status("skipped");
                    skipped.outcome.error = Some(why.clone());
                    if !audit(context, "record the skip", skipped).await {
                        return self.give_back(delivery).await;
                    }
                }
                let settled = match processed {
                    Processed::Done => Settled::Done,
                    Processed::Skipped(_) => Settled::Skipped,
                };
                self.complete(delivery, settled).await
            }
            // Shutting down, and the processing stopped on a transient failure: most likely an
            // Atlassian call that stopped waiting to retry (`ApiError::interrupted`). Handed back
            // without counting an attempt, so that restarts during an Atlassian outage do not use
            // up the event's attempts; what it performed is recorded and not performed again.
            Err(error) if error.kind == ErrorKind::Transient && context.stopping.is_cancelled() => {
                tracing::info!(error = %error.message, "shutting down: handing the event back, to be performed later");
                self.give_back(delivery).await
            }
            Err(error) => {
                let max_attempts = context.settings.queue.max_attempts();
                let parks = error.kind == ErrorKind::Permanent || delivery.attempt >= max_attempts;
                let kind = if parks {
                    AuditKind::DeadLettered
                } else {
                    AuditKind::Failed
                };
                let mut failed = record(self.envelope, kind, delivery.attempt);
                failed.outcome = Outcome::error(error.message.clone());
                if !audit(context, "record the failure", failed).await {
                    return self.give_back(delivery).await;
                }
                let _ = persist(context, "release the claim", || {
                    context.store.release_claim(self.key, &self.owner)
                })
                .await;
                if parks {
                    let reason = if error.kind == ErrorKind::Permanent {
                        format!("permanent failure: {}", error.message)
                    } else {
                        format!(
                            "gave up after {} attempts; last error: {}",
                            delivery.attempt, error.message
                        )
                    };
                    tracing::error!(%reason, attempts = delivery.attempt, "dead-lettering");
                    settle(delivery.dead_letter(&reason, Some(&error.message)).await);
                    Settled::DeadLettered
                } else {
                    let rung = usize::try_from(delivery.attempt.saturating_sub(1)).unwrap_or(usize::MAX);
                    let delay = context.settings.queue.retry_delay(rung);
                    tracing::warn!(error = %error.message, retry_in_ms = delay.as_millis() as u64, "transient failure; will retry");
                    settle(delivery.retry(rung, &error.message).await);
                    Settled::Retried
                }
            }
        }
    }

    /// Marks the claim completed (durably), then acks; `Released` when shutdown came first (the
    /// message comes back; the work is idempotent).
    async fn complete(&self, delivery: Delivery, settled: Settled) -> Settled {
        let context = self.context;
        let completed = persist(context, "record completion", || {
            context
                .store
                .complete_claim(self.key, &self.owner, self.retention)
        });
        match completed.await {
            Some(true) => {}
            Some(false) => {
                tracing::warn!(
                    "the claim was taken over before completion was recorded; the new holder completes it"
                )
            }
            None => {
                settle(delivery.release().await);
                return Settled::Released;
            }
        }
        settle(delivery.ack().await);
        settled
    }

    /// Gives the claim and the message back, no attempt counted (shutting down).
    async fn give_back(&self, delivery: Delivery) -> Settled {
        let _ = self.context.store.release_claim(self.key, &self.owner).await;
        settle(delivery.release().await);
        Settled::Released
    }
}

/// Appends `record` to the audit trail, waiting while it cannot; false at shutdown.
async fn audit(context: &Context, what: &str, record: NewRecord) -> bool {
    persist(context, what, || context.audit.append(record.clone()))
        .await
        .is_some()
}

/// An audit record about `envelope`.
fn record(envelope: &Envelope, kind: AuditKind, attempt: u32) -> NewRecord {
    let mut record = NewRecord::about(envelope, kind);
    record.attempt = attempt;
    record
}

/// Runs a store or audit write until it succeeds, backing off while it fails: a worker that
/// cannot record must not act, and must not fail events for our own outage either. `None` when
/// shutdown began first.
async fn persist<T, E, F, Fut>(context: &Context, what: &str, mut call: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = crate::pacing::OutageBackoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match call().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::error!(%error, retry_in_ms = backoff.delay().as_millis() as u64, "store unavailable: cannot {what}; waiting");
                if !backoff.wait(&context.stopping).await {
                    return None;
                }
            }
        }
    }
}

fn settle(result: Result<(), crate::queue::QueueError>) {
    if let Err(error) = result {
        // The queue hands the message out again; the claim makes the copy harmless.
        tracing::warn!(%error, "could not settle the delivery");
    }
}
