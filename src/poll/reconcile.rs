//! The reconciler: compares the real state with what events said, and queues what no webhook
//! reported.
//!
//! - Deactivated accounts (Confluence v2 `accountStatus`, and/or SCIM `active = false`) that still
//!   hold Confluence memberships (other than the keep-list) → `user.deactivated`.
//! - Protected groups' members against the last snapshot in the store → `group.member_added` /
//!   `group.member_removed`, each change checked against the account's own groups. The first run
//!   only takes the snapshot. In a strict group (see [`strict_groups`]) a member found added,
//!   not allowed and still there a day later is found again, once a day.
//!
//! Findings are queued with scheme `reconcile` and a dedupe key that names the finding, so the
//! same unresolved finding found again is a duplicate, not a second action (a deactivated
//! account's finding for one day: the next day it is queued again if still unresolved, unless
//! its group removals already wait for approval). A dry run only
//! reports: nothing is queued and no snapshot moves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use handlers::policy::{Capability, PolicyConfig};
use handlers::ports::{AccountStatus, Group};
use handlers::{Envelope, EventType, GroupRef, Scheme};
use ring::digest;

use super::metrics::{Job, PollMetrics, RepairLabel};
use crate::atlassian::{ApiError, ConfluenceClient, ScimClient};
use crate::config::{DeactivationSource, Settings};
use crate::queue::{OutgoingMessage, PublishError, Queue};
use crate::store::{ApprovalState, GroupSnapshot, ReconcileRun, Store, StoreError};

/// The routing-key prefix, envelope `source` and dedupe-key namespace of reconciler findings
/// (`reconcile.user.deactivated`).
pub const KIND: &str = handlers::RECONCILE_SOURCE;

/// Why a round failed. The message carries the cause's own (no `source`: a report of the whole
/// chain, as `anyhow`'s `{:#}` prints it, would say the cause twice).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Atlassian: {0}")]
    Atlassian(ApiError),
    #[error("store: {0}")]
    Store(StoreError),
    #[error("queue: {0}")]
    Queue(PublishError),
    #[error("no queue to publish findings to (only a dry run can do without)")]
    NoQueue,
    /// Two rounds at once would compare against the same snapshots and save them over each
    /// other (one's listing replacing the other's newer one); a dry run saves nothing and does
    /// not wait.
    #[error(
        "another reconcile of tenant `{0}` is running (the background reconciler or `gatehouse reconcile`); try again when it is over"
    )]
    RoundRunning(String),
}

impl From<ApiError> for ReconcileError {
    fn from(error: ApiError) -> Self {
        ReconcileError::Atlassian(error)
    }
}

impl From<StoreError> for ReconcileError {
    fn from(error: StoreError) -> Self {
        ReconcileError::Store(error)
    }
}

impl From<PublishError> for ReconcileError {
    fn from(error: PublishError) -> Self {
        ReconcileError::Queue(error)
    }
}

/// One thing the real state says that no event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub event_type: EventType,
    pub account_id: String,
    pub group: Option<GroupRef>,
    /// Why, for logs and the CLI.
    pub reason: String,
    pub dedupe_key: String,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub groups_scanned: usize,
    pub accounts_checked: usize,
    /// Protected groups seen for the first time (snapshot taken, nothing compared).
    pub baselines: Vec<String>,
    /// Deactivated accounts still holding groups whose plan already waits for a person
    /// (`gatehouse approvals`): not queued again.
    pub awaiting_approval: Vec<String>,
    /// Groups whose members could not be read (403): their leavers were not looked for.
    pub unreadable_groups: Vec<String>,
    /// Names on a keep-list (`[reconcile] ignore_groups`, a policy's `keep_groups`) that name no
    /// group on the site, each with the site's group it differs from only in case, if any: a
    /// misspelt name keeps nobody in the group it meant.
    pub kept_groups_not_found: Vec<(String, Option<String>)>,
}

impl Report {
    /// The findings as a JSON array (`event_type`, `account_id`, `group`, `reason`), as the store
    /// keeps the last run for the operator console.
    pub fn findings_json(&self) -> String {
        let findings: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|finding| {
                serde_json::json!({
                    "event_type": finding.event_type.to_string(),
                    "account_id": finding.account_id,
                    "group": finding.group.as_ref().and_then(|g| g.name.clone().or_else(|| g.id.clone())),
                    "reason": finding.reason,
                })
            })
            .collect();
        serde_json::Value::Array(findings).to_string()
    }
}

/// The site's groups and the members of those not on the keep-list, as one run read them.
#[derive(Debug)]
struct Scan {
    groups: Vec<Group>,
    /// Group id → member account ids.
    members_of: BTreeMap<String, Vec<String>>,
}

/// The progress of a long run, for the CLI's progress bar.
pub trait ReconcileProgress: Send + Sync {
    fn phase(&self, name: &str, total: usize);
    fn step(&self, item: &str);
}

/// No progress reporting.
#[derive(Debug)]
pub struct Quiet;

impl ReconcileProgress for Quiet {
    fn phase(&self, _name: &str, _total: usize) {}
    fn step(&self, _item: &str) {}
}

pub struct Reconciler {
    /// The tenant reconciled: its site is read, its findings carry it.
    tenant: String,
    confluence: ConfluenceClient,
    scim: Option<ScimClient>,
    store: Store,
    /// Absent for dry runs only.
    queue: Option<Arc<dyn Queue>>,
    metrics: PollMetrics,
    sources: Vec<DeactivationSource>,
    ignore_groups: BTreeSet<String>,
    protected_groups: BTreeSet<String>,
    /// Protected groups nobody may add anyone to (every policy reverting additions to it has no
    /// `allowed_actors`), by name, with the members every such policy allows: a member found
    /// added who is still there on a later day was not removed (dry run, a refusal, a failure)
    /// and is found again, once a day, instead of being taken into the snapshot for good.
    strict_groups: BTreeMap<String, BTreeSet<String>>,
    /// Every name on a keep-list (`[reconcile] ignore_groups`, each policy's `keep_groups`),
    /// checked against the site's groups each round.
    kept_names: BTreeSet<String>,
    /// How long a round's lock (`reconcile-round@{tenant}`) holds without being renewed: a
    /// process that died mid-round leaves it to others after this.
    round_lease: Duration,
}

/// Puts `account` in `members` or takes it out.
fn set_member(members: &mut BTreeSet<String>, account: &str, member: bool) {
    if member {
        members.insert(account.to_owned());
    } else {
        members.remove(account);
    }
}

/// What the store keeps of a strict group's members found added and not allowed, until they
/// are gone: account → the day (UTC, `YYYY-MM-DD`) they were first found.
type Unresolved = BTreeMap<String, String>;

/// The store key of `tenant`'s unresolved members of group `group_id`.
fn unresolved_key(tenant: &str, group_id: &str) -> String {
    format!("protected-intruders@{tenant}:{group_id}")
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("tenant", &self.tenant)
            .field("sources", &self.sources)
            .field("protected_groups", &self.protected_groups)
            .finish_non_exhaustive()
    }
}

fn short_hash(parts: &[&str]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part.as_bytes());
        ctx.update(b"\n");
    }
    hex::encode(&ctx.finish().as_ref()[..8])
}

impl Reconciler {
    /// One background round: reconciles (queuing what it finds) and keeps the run, or why it
    /// failed, for the operator console. True when the round failed.
    pub async fn run_recorded(&self) -> bool {
        let tenant = &self.tenant;
        let ran = self.run_once(false, &Quiet).await;
        if let Err(ReconcileError::RoundRunning(_)) = &ran {
            // Not a failure: a round started elsewhere (`gatehouse reconcile`) is doing the work.
            tracing::info!(%tenant, "another reconcile round of this tenant is running; this one is skipped");
            return false;
        }
        if let Err(ReconcileError::Atlassian(error)) = &ran
            && error.is_interrupted()
        {
            // Not a failure either: the process is stopping; the next round starts afresh.
            tracing::info!(%tenant, "reconcile round cut short by shutdown");
            return false;
        }
        self.metrics.round(Job::Reconciler, &self.tenant, ran.is_ok());
        let run = match ran {
            Ok(report) => {
                tracing::info!(%tenant, findings = report.findings.len(), "reconciled");
                ReconcileRun {
                    tenant: tenant.clone(),
                    ran_at: chrono::Utc::now(),
                    findings: report.findings_json(),
                    groups_scanned: report.groups_scanned as u64,
                    accounts_checked: report.accounts_checked as u64,
                    awaiting_approval: serde_json::json!(report.awaiting_approval).to_string(),
                    error: None,
                }
            }
            Err(error) => {
                tracing::warn!(%tenant, %error, "reconciling failed; retrying after reconcile.retry_after_failure_seconds");
                ReconcileRun {
                    tenant: tenant.clone(),
                    ran_at: chrono::Utc::now(),
                    findings: "[]".to_owned(),
                    groups_scanned: 0,
                    accounts_checked: 0,
                    awaiting_approval: "[]".to_owned(),
                    error: Some(error.to_string()),
                }
            }
        };
        // Kept for the operator console; the run's work is done either way.
        if let Err(error) = self.store.record_reconcile_run(&run).await {
            tracing::warn!(%tenant, %error, "cannot record the reconciler's run for the console");
        }
        run.error.is_some()
    }

    /// A reconciler of `tenant` for `settings`: `[reconcile]` plus what the tenant's policies
    /// keep and protect.
    pub fn new(
        tenant: &str,
        settings: &Settings,
        confluence: ConfluenceClient,
        scim: Option<ScimClient>,
        store: Store,
        queue: Option<Arc<dyn Queue>>,
        metrics: PollMetrics,
    ) -> Self {
        let reconcile = &settings.reconcile;
        let mut ignore_groups: BTreeSet<String> = reconcile.ignore_groups.iter().cloned().collect();
        let mut protected_groups: BTreeSet<String> = reconcile.protected_groups.iter().cloned().collect();
        let policies: Vec<&PolicyConfig> = settings
            .policies
            .iter()
            .filter(|p| p.applies_to_tenant(tenant))
            .collect();
        for policy in &policies {
            protected_groups.extend(policy.protected_groups.iter().map(|p| p.name.clone()));
        }
        let kept_names = ignore_groups
            .iter()
            .cloned()
            .chain(policies.iter().flat_map(|p| p.keep_groups.iter().cloned()))
            .collect();
        ignore_groups.extend(kept_groups(&policies));
        Reconciler {
            tenant: tenant.to_owned(),
            confluence,
            scim,
            store,
            queue,
            metrics,
            sources: reconcile.deactivated_from.clone(),
            ignore_groups,
            strict_groups: strict_groups(&policies),
            protected_groups,
            kept_names,
            round_lease: Duration::from_secs(settings.worker.singleton_lease_seconds),
        }
    }
}

/// The groups a deactivated account may keep without being a finding, besides `[reconcile]
/// ignore_groups`: those every policy that would take groups from a leaver the reconciler
/// reports keeps (one policy's keep-list does not hide a group from another that removes it);
/// when no policy does, every deactivation policy's (a finding would come every day, and
/// nothing would act on it).
fn kept_groups(policies: &[&PolicyConfig]) -> BTreeSet<String> {
    let removers: Vec<&&PolicyConfig> = policies
        .iter()
        .filter(|p| {
            p.on.contains(&EventType::UserDeactivated)
                && p.accepts_source(KIND)
                && p.actions.contains(&Capability::RemoveFromAllGroups)
        })
        .collect();
    match removers.split_first() {
        Some((first, others)) => first
            .keep_groups
            .iter()
            .filter(|group| others.iter().all(|p| p.keep_groups.contains(group)))
            .cloned()
            .collect(),
        None => policies
            .iter()
            .filter(|p| p.on.contains(&EventType::UserDeactivated))
            .flat_map(|p| p.keep_groups.iter().cloned())
            .collect(),
    }
}

/// The protected groups (by name) whose every member not allowed is an intrusion, with the
/// members allowed: those that a policy reverting the reconciler's additions protects, where
/// none of those policies lets an actor add anyone (`allowed_actors`) or has a person approve
/// the removal (a person who rejected it, or let it expire, must not be asked again each day).
/// A member is allowed only when every such policy allows them (any other would remove them).
fn strict_groups(policies: &[&PolicyConfig]) -> BTreeMap<String, BTreeSet<String>> {
    let reverters: Vec<&&PolicyConfig> = policies
        .iter()
        .filter(|p| {
            p.on.contains(&EventType::GroupMemberAdded)
                && p.accepts_source(KIND)
                && p.actions.contains(&Capability::RevertProtectedMembership)
        })
        .collect();
    let mut strict: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for policy in reverters {
        for protected in &policy.protected_groups {
            let allowed: BTreeSet<String> = protected.allow.iter().cloned().collect();
            let entry = strict
                .entry(protected.name.clone())
                .or_insert_with(|| Some(allowed.clone()));
            let asks_a_person = policy.requires_approval(&handlers::Action::ConfluenceRemoveMember {
                group_id: String::new(),
                group_name: protected.name.clone(),
                account_id: String::new(),
            });
            *entry = match entry.take() {
                Some(_) if !protected.allowed_actors.is_empty() || asks_a_person => None,
                Some(so_far) => Some(so_far.intersection(&allowed).cloned().collect()),
                None => None,
            };
        }
    }
    strict
        .into_iter()
        .filter_map(|(name, allowed)| Some((name, allowed?)))
        .collect()
}

impl Reconciler {
    /// One full comparison; queues the findings unless `dry_run`.
    pub async fn run_once(
        &self,
        dry_run: bool,
        progress: &dyn ReconcileProgress,
    ) -> Result<Report, ReconcileError> {
        if dry_run {
            return self.round(true, progress).await;
        }
        // One round that queues and saves at a time per tenant, whichever process started it.
        let lock = format!("reconcile-round@{}", self.tenant);
        super::with_lease(&self.store, &lock, self.round_lease, self.round(false, progress))
            .await?
            .unwrap_or_else(|| Err(ReconcileError::RoundRunning(self.tenant.clone())))
    }

    async fn round(&self, dry_run: bool, progress: &dyn ReconcileProgress) -> Result<Report, ReconcileError> {
        let mut report = Report::default();
        let scan = self.deactivated_with_memberships(&mut report, progress).await?;
        // The leavers found are queued before the protected groups are compared: one group
        // refused there must not keep every leaver in their groups (the round still fails, and
        // no snapshot moves).
        if !dry_run {
            for finding in &report.findings {
                self.queue_finding(finding).await?;
            }
        }
        let leavers = report.findings.len();
        let (snapshots, unresolved) = self
            .protected_group_changes(&mut report, scan.as_ref(), progress)
            .await?;
        if !dry_run {
            for finding in &report.findings[leavers..] {
                self.queue_finding(finding).await?;
            }
            // Moved only once the changes they reveal are queued: a crash in between finds the
            // same changes again, with the same dedupe keys, which the worker absorbs.
            for (key, members) in &unresolved {
                self.store.save_poll_cursor(key, members).await?;
            }
            for snapshot in &snapshots {
                self.store.save_group_snapshot(snapshot).await?;
            }
        }
        Ok(report)
    }

    /// Says which keep-list names name no group of the site (the scan lists them all).
    fn check_kept_names(&self, groups: &[Group], report: &mut Report) {
        for kept in &self.kept_names {
            if groups.iter().any(|group| &group.name == kept) {
                continue;
            }
            let in_another_case = groups
                .iter()
                .find(|group| group.name.to_lowercase() == kept.to_lowercase())
                .map(|group| group.name.clone());
            tracing::warn!(
                tenant = %self.tenant,
                group = %kept,
                in_another_case = in_another_case.as_deref().unwrap_or(""),
                "a group to keep (reconcile.ignore_groups or a policy's keep_groups) names no group on the site (names are case-sensitive); leavers are not kept in the group it meant"
            );
            report.kept_groups_not_found.push((kept.clone(), in_another_case));
        }
    }

    /// Findings about deactivated accounts; returns the scan of the site's groups when the
    /// Confluence source made one (the protected groups are compared from it).
    async fn deactivated_with_memberships(
        &self,
        report: &mut Report,
        progress: &dyn ReconcileProgress,
    ) -> Result<Option<Scan>, ReconcileError> {
        // account → the names of its groups that are not on the keep-list.
        let mut holdings: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut deactivated: BTreeSet<String> = BTreeSet::new();
        let mut scan = None;
        if self.sources.contains(&DeactivationSource::Confluence) {
            let groups = self.confluence.groups(&crate::atlassian::no_progress).await?;
            progress.phase("scanning groups", groups.len());
            let mut members_of = BTreeMap::new();
            for group in &groups {
                progress.step(&group.name);
                if self.ignore_groups.contains(&group.name) {
                    continue;
                }
                let members: Vec<String> = match self
                    .confluence
                    .group_members(&group.id, &crate::atlassian::no_progress)
                    .await
                {
                    Ok(members) => members.into_iter().map(|member| member.account_id).collect(),
                    // Deleted since the site's groups were listed: no one holds it any more.
                    Err(error) if error.status() == Some(404) => continue,
                    // One group this account may not read (a restricted group) must not keep
                    // every leaver of every other group in their groups: it is left out of this
                    // scan, and said so each round.
                    Err(error) if error.status() == Some(403) => {
                        tracing::warn!(tenant = %self.tenant, group = %group.name, %error, "a group's members cannot be read (403); its leavers are not looked for");
                        report.unreadable_groups.push(group.name.clone());
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                for account in &members {
                    holdings
                        .entry(account.clone())
                        .or_default()
                        .insert(group.id.clone(), group.name.clone());
                }
                members_of.insert(group.id.clone(), members);
            }
            report.groups_scanned = groups.len();
            self.check_kept_names(&groups, report);
            let accounts: Vec<String> = holdings.keys().cloned().collect();
            progress.phase("reading account status", accounts.len());
            for chunk in accounts.chunks(100) {
                for status in self.confluence.users_bulk(chunk).await? {
                    if matches!(status.status, AccountStatus::Inactive | AccountStatus::Closed) {
                        deactivated.insert(status.user.account_id.clone());
                    }
                    progress.step(&status.user.account_id);
                }
            }
            report.accounts_checked = accounts.len();
            scan = Some(Scan { groups, members_of });
        }
        if self.sources.contains(&DeactivationSource::Scim)
            && let Some(scim) = &self.scim
        {
            let users = scim.users(&crate::atlassian::no_progress).await?;
            let inactive: Vec<String> = users
                .into_iter()
                .filter(|u| !u.active)
                .filter_map(|u| u.atlassian_account_id)
                .collect();
            progress.phase("checking SCIM-deactivated accounts", inactive.len());
            for account in inactive {
                // After a scan, an account it did not see holds no group that counts.
                if scan.is_none() {
                    for group in self
                        .confluence
                        .member_groups(&account, &crate::atlassian::no_progress)
                        .await?
                    {
                        if !self.ignore_groups.contains(&group.name) {
                            holdings
                                .entry(account.clone())
                                .or_default()
                                .insert(group.id, group.name);
                        }
                    }
                }
                progress.step(&account);
                deactivated.insert(account);
            }
        }
        // A finding whose group removals wait for approval is not queued again each day: one
        // pending plan per account is enough for the person deciding. Only when the removals
        // themselves wait: an unrelated plan waiting (an organization-wide disable, a policy of
        // its own) must not keep a re-added group from being found; a copy of that plan joins
        // its pending approval in the worker instead of asking again.
        let awaiting: BTreeSet<String> = self
            .store
            .approvals(ApprovalState::Pending)
            .await?
            .into_iter()
            .filter(|a| a.event_type == EventType::UserDeactivated.as_str())
            .filter(|a| a.tenant() == self.tenant)
            // A stored plan that cannot be read counts as waiting, as every plan did before.
            .filter(|a| {
                serde_json::from_str::<handlers::Plan>(&a.plan).map_or(true, |plan| {
                    plan.actions.iter().any(|planned| {
                        matches!(planned.action, handlers::Action::ConfluenceRemoveMember { .. })
                    })
                })
            })
            .filter_map(|a| a.account_id)
            .collect();
        for account in deactivated {
            let Some(groups) = holdings.get(&account).filter(|g| !g.is_empty()) else {
                continue;
            };
            if awaiting.contains(&account) {
                report.awaiting_approval.push(account);
                continue;
            }
            let ids: Vec<&str> = groups.keys().map(String::as_str).collect();
            let names: Vec<&str> = groups.values().map(String::as_str).collect();
            report.findings.push(Finding {
                event_type: EventType::UserDeactivated,
                // The same account holding the same groups on the same day is the same finding:
                // found again the next day (re-added since, or a plan that did not act then) it
                // is queued again rather than absorbed for the whole dedupe retention.
                dedupe_key: handlers::internal_dedupe_key(
                    KIND,
                    &format!(
                        "{}:user.deactivated:{account}:{}:{}",
                        self.tenant,
                        short_hash(&ids),
                        Utc::now().format("%Y-%m-%d")
                    ),
                ),
                reason: format!(
                    "deactivated account still in {} group(s): {}",
                    groups.len(),
                    names.join(", ")
                ),
                account_id: account,
                group: None,
            });
        }
        Ok(scan)
    }

    /// Findings about protected groups, read from `scan` where it has them; returns the new
    /// snapshots to save.
    async fn protected_group_changes(
        &self,
        report: &mut Report,
        scan: Option<&Scan>,
        progress: &dyn ReconcileProgress,
    ) -> Result<(Vec<GroupSnapshot>, Vec<(String, String)>), ReconcileError> {
        let mut snapshots = Vec::new();
        let mut unresolved_lists = Vec::new();
        let today = Utc::now().format("%Y-%m-%d").to_string();
        progress.phase("comparing protected groups", self.protected_groups.len());
        for name in &self.protected_groups {
            progress.step(name);
            let group = match scan {
                Some(scan) => scan.groups.iter().find(|g| &g.name == name).cloned(),
                None => self.confluence.group_named(name).await?,
            };
            let Some(group) = group else {
                tracing::warn!(group = %name, "protected group does not exist (names are case-sensitive)");
                continue;
            };
            let mut members = match scan.and_then(|scan| scan.members_of.get(&group.id)) {
                Some(members) => members.clone(),
                None => self
                    .confluence
                    .group_members(&group.id, &crate::atlassian::no_progress)
                    .await?
                    .into_iter()
                    .map(|u| u.account_id)
                    .collect(),
            };
            members.sort();
            members.dedup();
            let now = Utc::now();
            let group_ref = GroupRef {
                id: Some(group.id.clone()),
                name: Some(group.name.clone()),
            };
            match self.store.group_snapshot(&self.tenant, &group.id).await? {
                None => report.baselines.push(group.name.clone()),
                Some(previous) => {
                    members = self
                        .confirmed_members(&group.id, &previous.members, members)
                        .await?;
                    let before: BTreeSet<&String> = previous.members.iter().collect();
                    let after: BTreeSet<&String> = members.iter().collect();
                    // The snapshot's time makes each change its own fact: an account added,
                    // removed and added again is two additions.
                    let since = previous.taken_at.timestamp_millis();
                    let changes = [
                        (EventType::GroupMemberAdded, &after, &before, "added to"),
                        (EventType::GroupMemberRemoved, &before, &after, "removed from"),
                    ];
                    if let Some(allowed) = self.strict_groups.get(&group.name) {
                        let still = self
                            .still_there(&group_ref, allowed, (&before, &after), &today, report)
                            .await?;
                        unresolved_lists.extend(still);
                    }
                    for (event_type, now_in, not_in, verb) in changes {
                        for account in now_in.difference(not_in) {
                            report.findings.push(Finding {
                                dedupe_key: self.change_key(
                                    &event_type,
                                    &group.id,
                                    account,
                                    &since.to_string(),
                                ),
                                event_type: event_type.clone(),
                                account_id: (*account).clone(),
                                group: Some(group_ref.clone()),
                                reason: format!(
                                    "{verb} protected group `{}` since the last snapshot",
                                    group.name
                                ),
                            });
                        }
                    }
                }
            }
            snapshots.push(GroupSnapshot {
                tenant: self.tenant.clone(),
                group_id: group.id.clone(),
                group_name: group.name.clone(),
                members,
                taken_at: now,
            });
        }
        Ok((snapshots, unresolved_lists))
    }

    /// The dedupe key of a change to `group_id`'s members: `when` makes each its own fact.
    fn change_key(&self, event_type: &EventType, group_id: &str, account: &str, when: &str) -> String {
        handlers::internal_dedupe_key(
            KIND,
            &format!(
                "{}:{}:{group_id}:{account}:{when}",
                self.tenant,
                event_type.as_str()
            ),
        )
    }

    /// In a strict group: the members found added earlier, not allowed and still there on a
    /// later day than they were first found (`today`) are findings again (their removal did not
    /// happen); returns what the store is to keep of them (key, JSON), if anything.
    async fn still_there(
        &self,
        group: &GroupRef,
        allowed: &BTreeSet<String>,
        (before, after): (&BTreeSet<&String>, &BTreeSet<&String>),
        today: &str,
        report: &mut Report,
    ) -> Result<Option<(String, String)>, ReconcileError> {
        let group_id = group.id.as_deref().unwrap_or_default();
        let group_name = group.name.as_deref().unwrap_or_default();
        let key = unresolved_key(&self.tenant, group_id);
        let stored = self.store.poll_cursor(&key).await?;
        let earlier: Unresolved = match stored.as_deref() {
            Some(json) => {
                serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?
            }
            None => Unresolved::new(),
        };
        let unwanted = |account: &String| after.contains(account) && !allowed.contains(account);
        let mut unresolved = Unresolved::new();
        for (account, first_found) in earlier {
            if !unwanted(&account) {
                continue;
            }
            if first_found.as_str() < today {
                report.findings.push(Finding {
                    dedupe_key: self.change_key(
                        &EventType::GroupMemberAdded,
                        group_id,
                        &account,
                        &format!("unresolved:{today}"),
                    ),
                    event_type: EventType::GroupMemberAdded,
                    account_id: account.clone(),
                    group: Some(group.clone()),
                    reason: format!(
                        "still in protected group `{group_name}` since {first_found}, not on its allow list: found again"
                    ),
                });
            }
            unresolved.insert(account, first_found);
        }
        for account in after.difference(before) {
            if !allowed.contains(*account) {
                unresolved
                    .entry((*account).clone())
                    .or_insert_with(|| today.to_owned());
            }
        }
        if stored.is_none() && unresolved.is_empty() {
            return Ok(None);
        }
        let json = serde_json::to_string(&unresolved).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some((key, json)))
    }

    /// `listed` (a group's members as listed now), with each change since `before` checked: a
    /// listing paged by offset skips a member when someone earlier in it leaves while it is read
    /// (and repeats one when someone joins), and a member skipped so would be reported removed,
    /// then added again, and perhaps removed by a policy. A few changes are checked against each
    /// account's own groups (an answer that fails leaves the listing's word); many (an old
    /// snapshot, a bulk change) against a second listing of the group: present when either
    /// listing shows them, added only when both do.
    async fn confirmed_members(
        &self,
        group_id: &str,
        before: &[String],
        listed: Vec<String>,
    ) -> Result<Vec<String>, ReconcileError> {
        /// More changes than this are checked with a second listing, not one call each.
        const CHECKED_ONE_BY_ONE: usize = 20;
        let before: BTreeSet<&String> = before.iter().collect();
        let mut confirmed: BTreeSet<String> = listed.iter().cloned().collect();
        let listed: BTreeSet<&String> = listed.iter().collect();
        let changed: Vec<&String> = listed.symmetric_difference(&before).copied().collect();
        if changed.len() > CHECKED_ONE_BY_ONE {
            let again: BTreeSet<String> = self
                .confluence
                .group_members(group_id, &crate::atlassian::no_progress)
                .await?
                .into_iter()
                .map(|member| member.account_id)
                .collect();
            for account in changed {
                let member = if before.contains(account) {
                    listed.contains(account) || again.contains(account)
                } else {
                    listed.contains(account) && again.contains(account)
                };
                set_member(&mut confirmed, account, member);
            }
            return Ok(confirmed.into_iter().collect());
        }
        for account in changed {
            let member = match self
                .confluence
                .member_groups(account, &crate::atlassian::no_progress)
                .await
            {
                Ok(groups) => groups.iter().any(|group| group.id == group_id),
                // The site answered the group's listing: an account it does not know (closed
                // since) is in no group.
                Err(error) if error.status() == Some(404) => false,
                Err(error) => {
                    tracing::warn!(group_id, account = %account, %error, "cannot check a change in a protected group against the account's groups; the listing's word stands");
                    listed.contains(account)
                }
            };
            if member != listed.contains(account) {
                tracing::info!(group_id, account = %account, member, "a paged listing disagreed with the account's own groups; the account's groups win");
            }
            set_member(&mut confirmed, account, member);
        }
        Ok(confirmed.into_iter().collect())
    }

    async fn queue_finding(&self, finding: &Finding) -> Result<(), ReconcileError> {
        let body = serde_json::json!({ "reconcile": { "reason": finding.reason } });
        let payload = serde_json::value::to_raw_value(&body)
            .map_err(|e| ReconcileError::Store(StoreError::Corrupt(e.to_string())))?;
        let mut envelope = Envelope::new(
            finding.event_type.clone(),
            KIND,
            Scheme::Reconcile,
            finding.dedupe_key.clone(),
            payload,
        );
        envelope.tenant.name = Some(self.tenant.clone());
        envelope.subject.account_id = Some(finding.account_id.clone());
        envelope.subject.group = finding.group.clone();
        let message = OutgoingMessage::from_envelope(&envelope, KIND);
        let queue = self.queue.as_ref().ok_or(ReconcileError::NoQueue)?;
        queue.publish(&message).await?;
        // Findings are of known types, whose names are static.
        let kind = match finding.event_type.as_str() {
            std::borrow::Cow::Borrowed(kind) => kind,
            std::borrow::Cow::Owned(_) => "other",
        };
        self.metrics
            .repaired
            .get_or_create(&RepairLabel {
                tenant: self.tenant.clone(),
                kind,
            })
            .inc();
        tracing::warn!(
            tenant = %self.tenant,
            finding = kind,
            account_id = %finding.account_id,
            group = finding.group.as_ref().and_then(|g| g.name.as_deref()).unwrap_or(""),
            reason = %finding.reason,
            event_id = %envelope.id,
            "reconciler repair: no webhook reported this"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(toml_text: &str) -> Vec<PolicyConfig> {
        #[derive(serde::Deserialize)]
        struct File {
            policies: Vec<PolicyConfig>,
        }
        toml::from_str::<File>(toml_text).expect("test policies").policies
    }

    #[test]
    fn strict_groups_are_those_no_actor_may_add_to_with_the_members_every_reverter_allows() {
        let configs = policies(
            r#"
            [[policies]]
            name = "a"
            on = "group.member_added"
            actions = ["confluence.revert_protected_membership"]
            protected_groups = [
                { name = "admins", allow = ["ann", "bob"] },
                { name = "owned", allowed_actors = ["owner"] },
            ]

            [[policies]]
            name = "b"
            on = "group.member_added"
            actions = ["confluence.revert_protected_membership"]
            protected_groups = [{ name = "admins", allow = ["bob"] }]

            [[policies]]
            name = "c"
            on = ["group.created", "group.removed"]
            actions = ["notify.group_changes"]
            protected_groups = [{ name = "reported-only" }]

            [[policies]]
            name = "d"
            on = "group.member_added"
            sources = ["relay"]
            actions = ["confluence.revert_protected_membership"]
            protected_groups = [{ name = "webhooks-only" }]
            "#,
        );
        let refs: Vec<&PolicyConfig> = configs.iter().collect();
        let strict = strict_groups(&refs);
        let mut asked = policies(
            r#"
            [[policies]]
            name = "e"
            on = "group.member_added"
            actions = ["confluence.revert_protected_membership"]
            approval = { "confluence.remove_member" = "required" }
            protected_groups = [{ name = "admins", allow = ["bob"] }]
            "#,
        );
        asked.extend(configs.iter().cloned());
        let with_a_person: Vec<&PolicyConfig> = asked.iter().collect();
        assert!(
            strict_groups(&with_a_person).is_empty(),
            "a removal a person approves is asked once, not each day"
        );
        let expected: BTreeMap<String, BTreeSet<String>> =
            [("admins".to_owned(), ["bob".to_owned()].into_iter().collect())]
                .into_iter()
                .collect();
        assert_eq!(strict, expected);
    }

    #[test]
    fn a_group_is_kept_only_when_every_policy_acting_on_findings_keeps_it() {
        let configs = policies(
            r#"
            [[policies]]
            name = "hr"
            on = "user.deactivated"
            sources = ["relay"]
            actions = ["confluence.remove_from_all_groups"]
            keep_groups = ["all-staff", "team-x"]

            [[policies]]
            name = "found-a"
            on = "user.deactivated"
            actions = ["confluence.remove_from_all_groups"]
            keep_groups = ["all-staff", "team-y"]

            [[policies]]
            name = "found-b"
            on = ["user.deactivated", "user.removed"]
            actions = ["confluence.remove_from_all_groups"]
            keep_groups = ["all-staff"]
            "#,
        );
        let refs: Vec<&PolicyConfig> = configs.iter().collect();
        assert_eq!(kept_groups(&refs), BTreeSet::from(["all-staff".to_owned()]));
        // Only the HR policy: nothing acts on the findings, so every keep-list counts.
        assert_eq!(
            kept_groups(&refs[..1]),
            BTreeSet::from(["all-staff".to_owned(), "team-x".to_owned()])
        );
    }
}
