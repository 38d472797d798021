//! The reconciler: a membership added directly in Atlassian to a protected group is found and
//! reverted; a deactivated account still holding groups is found; a dry run changes nothing and
//! says what it would do; a killed holder's reconciler is taken over by another process.

use gatehouse_sim::{Behaviour, Seed, SeedGroup, SeedUser, SimAccountStatus, Simulator};

use gatehouse::app::Roles;

use crate::helpers::{TempDir, TestApp};
use crate::queue::eventually;
use crate::reactions::{LONG, World, policies};

/// `admin-1` in `confluence-administrators`, `mallory` in nothing, and a policy that reverts any
/// membership of that group but `admin-1`'s.
fn admins_and_their_guard() -> (Seed, Vec<handlers::policy::PolicyConfig>) {
    let seed = Seed {
        users: vec![
            SeedUser::new("admin-1", "Admin"),
            SeedUser::new("mallory", "Mallory"),
        ],
        groups: vec![SeedGroup::new(
            "g-admins",
            "confluence-administrators",
            vec!["admin-1".into()],
        )],
        ..Seed::default()
    };
    let guard = policies(
        r#"
        [[policies]]
        on = "group.member_added"
        actions = ["confluence.revert_protected_membership"]
        protected_groups = [{ name = "confluence-administrators", allow = ["admin-1"] }]
        "#,
    );
    (seed, guard)
}

/// Waits for the reconciler's first snapshot of the admins, then adds `mallory` to them
/// directly in Atlassian.
async fn baseline_then_mallory(world: &World) {
    eventually(LONG, "a baseline snapshot", || async {
        world
            .app
            .store
            .group_snapshot("default", "g-admins")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let added = crate::helpers::http()
        .put(world.sim.url("/_sim/groups/g-admins/members/mallory"))
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success(), "{}", added.status());
}

#[tokio::test]
async fn a_membership_added_directly_to_a_protected_group_is_found_and_reverted() {
    let (seed, guard) = admins_and_their_guard();
    let world = World::start(seed, guard, |s| {
        s.reconcile.enabled = true;
        s.reconcile.interval_seconds = 1;
    })
    .await;
    // The first run takes the snapshot; then someone adds Mallory in the admin console (no
    // webhook exists for that).
    baseline_then_mallory(&world).await;
    assert_eq!(world.groups_of("mallory").await, ["confluence-administrators"]);
    eventually(LONG, "mallory removed again", || async {
        world.groups_of("mallory").await.is_empty()
    })
    .await;
    assert_eq!(world.groups_of("admin-1").await, ["confluence-administrators"]);
    let metrics = world.app.metrics.render();
    assert!(
        metrics
            .contains(r#"gatehouse_reconcile_repaired_total{tenant="default",kind="group.member_added"} 1"#),
        "{metrics}"
    );
    world.stop().await;
}

/// A protected group with owners who may add anyone (`allowed_actors`): the reconciler cannot
/// tell who added Mallory, so the removal waits for a person instead of undoing what may be an
/// owner's addition; approved, it is performed.
#[tokio::test]
async fn a_membership_found_in_a_group_with_allowed_actors_waits_for_a_person() {
    let (seed, _) = admins_and_their_guard();
    let guard = policies(
        r#"
        [[policies]]
        on = "group.member_added"
        actions = ["confluence.revert_protected_membership"]
        protected_groups = [{ name = "confluence-administrators", allow = ["admin-1"], allowed_actors = ["admin-1"] }]
        "#,
    );
    let world = World::start(seed, guard, |s| {
        s.reconcile.enabled = true;
        s.reconcile.interval_seconds = 1;
    })
    .await;
    baseline_then_mallory(&world).await;
    let pending = || async {
        world
            .app
            .store
            .approvals(gatehouse::store::ApprovalState::Pending)
            .await
            .unwrap()
    };
    eventually(LONG, "the removal waits for a person", || async {
        !pending().await.is_empty()
    })
    .await;
    let waiting = pending().await.remove(0);
    assert_eq!(waiting.event_type, "group.member_added");
    assert_eq!(waiting.account_id.as_deref(), Some("mallory"));
    assert!(
        waiting.plan.contains("waits for a person's approval"),
        "{}",
        waiting.plan
    );
    // Later reconciler runs do not ask again (in a group with allowed_actors an addition is
    // found once), and nothing was removed meanwhile.
    let last_run = || async {
        world
            .app
            .store
            .last_reconcile_run("default")
            .await
            .unwrap()
            .map(|run| run.ran_at)
    };
    let asked_at = waiting.created_at;
    eventually(LONG, "two more reconciler runs", || async {
        last_run()
            .await
            .is_some_and(|ran| ran > asked_at + chrono::Duration::seconds(1))
    })
    .await;
    assert_eq!(pending().await.len(), 1);
    assert_eq!(world.groups_of("mallory").await, ["confluence-administrators"]);
    assert!(world.requests().await.iter().all(|r| r.method != "DELETE"));

    gatehouse::reactions::approvals::approve(
        gatehouse::reactions::approvals::Deciders::new(&world.app.audit, &Default::default()),
        world.app.queue.as_ref(),
        ("default", &waiting.id),
        "security-lead",
        gatehouse::config::Span::parse("7d").unwrap(),
    )
    .await
    .unwrap();
    eventually(LONG, "mallory removed once approved", || async {
        world.groups_of("mallory").await.is_empty()
    })
    .await;
    assert_eq!(world.groups_of("admin-1").await, ["confluence-administrators"]);
    world.stop().await;
}

/// One policy's keep-list does not hide a group from the reconciler when another policy, the
/// one acting on its findings, removes it: the leaver in it is found and removed.
#[tokio::test]
async fn a_group_kept_by_one_policy_is_still_reconciled_for_another_that_removes_it() {
    let seed = leaver_in(&[("g-x", "team-x")]);
    let leavers = policies(
        r#"
        [[policies]]
        name = "hr-leaver"
        on = "user.deactivated"
        sources = ["relay"]
        actions = ["confluence.remove_from_all_groups"]
        keep_groups = ["team-x"]

        [[policies]]
        name = "found-leaver"
        on = "user.deactivated"
        sources = ["reconcile"]
        actions = ["confluence.remove_from_all_groups"]
        "#,
    );
    let world = World::start(seed, leavers, |s| {
        s.reconcile.enabled = true;
        s.reconcile.interval_seconds = 1;
    })
    .await;
    eventually(LONG, "the leaver found and removed from team-x", || async {
        world.groups_of("gone").await.is_empty()
    })
    .await;
    world.stop().await;
}

/// The reconciler runs in one process at a time. Its holder runs it once (an hour apart) and is
/// then killed; another process takes the lease over within `singleton_lease_seconds` and runs
/// it at once, finding what was changed meanwhile.
#[tokio::test]
async fn a_killed_reconcilers_lease_is_taken_over_by_another_process() {
    let (seed, guard) = admins_and_their_guard();
    // The embedded queue: a killed process leaves no broker connection holding deliveries.
    let world = World::start(seed, guard, |s| {
        s.queue.backend = gatehouse::config::QueueBackend::Embedded;
        s.queue.embedded_poll_ms = 25;
        s.reconcile.enabled = true;
        s.reconcile.interval_seconds = 3_600;
        s.worker.singleton_lease_seconds = 5;
    })
    .await;
    // The holder takes the snapshot; Mallory is added after it, and the holder would not look
    // again for an hour. (Added before the second process starts: on a loaded machine it may
    // take the lease from a holder that stalled past it even before the kill, and must still
    // find her.)
    baseline_then_mallory(&world).await;
    let second = TestApp::start_roles(world.app.settings.clone(), None, Roles::WORKER).await;
    let World { sim, app: first, .. } = world;
    // The store's folder stays: the second process works in it.
    let _folder = first.kill();
    let in_group = || {
        sim.state()
            .groups
            .iter()
            .any(|g| g.name == "confluence-administrators" && g.members.contains("mallory"))
    };
    assert!(in_group());
    eventually(
        LONG,
        "the second process reconciled and removed mallory",
        || async { !in_group() },
    )
    .await;
    let metrics = second.metrics.render();
    assert!(
        metrics
            .contains(r#"gatehouse_reconcile_repaired_total{tenant="default",kind="group.member_added"} 1"#),
        "{metrics}"
    );
    second.stop().await;
    sim.stop().await;
}

/// The store the CLI runs of [`config`] write to.
async fn store_of(dir: &TempDir) -> gatehouse::store::Store {
    gatehouse::store::Store::connect(&gatehouse::config::StoreSettings {
        url: gatehouse::config::SensitiveUrl::new(format!("sqlite://{}/gatehouse.db", dir.0.display())),
        max_connections: 2,
        encryption_key: None,
        retired_encryption_keys: Vec::new(),
    })
    .await
    .unwrap()
}

fn config(dir: &TempDir, sim: &gatehouse_sim::SimHandle) -> std::path::PathBuf {
    config_with(dir, sim, "")
}

/// [`config`] with `extra` TOML after it (policies).
fn config_with(dir: &TempDir, sim: &gatehouse_sim::SimHandle, extra: &str) -> std::path::PathBuf {
    let token = dir.0.join("api-token");
    std::fs::write(&token, "sim-api-token").unwrap();
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[queue]
backend = "embedded"
[store]
url = "sqlite://{store}/gatehouse.db"
[atlassian]
confluence_base_url = "{site}"
auth = {{ kind = "basic", email = "bot@example.com", token = "file:{token}" }}
[reconcile]
protected_groups = ["team-x"]
ignore_groups = ["all-staff"]
{extra}
"#,
            store = dir.0.display(),
            site = sim.site_base_url(),
            token = token.display(),
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn a_failed_round_is_tried_again_soon_not_a_whole_interval_later() {
    let (seed, guard) = admins_and_their_guard();
    // Atlassian refuses the first group listing for good (a 403 is not retried by the client):
    // the first round fails.
    let refusal = gatehouse_sim::Fault::status("/rest/api/group", 403, 1);
    let world = World::start_with_faults(seed, guard, vec![refusal], |settings| {
        settings.reconcile.enabled = true;
        settings.reconcile.interval_seconds = 3_600;
        settings.reconcile.retry_after_failure_seconds = 1;
    })
    .await;
    world.reconciled().await;
    let refused = world
        .requests()
        .await
        .into_iter()
        .filter(|r| r.status == Some(403))
        .count();
    assert_eq!(refused, 1, "the first round met the refusal");
    let metrics = world.app.metrics.render();
    assert!(
        metrics.contains(r#"gatehouse_reconcile_failures_total{tenant="default"} 1"#)
            && metrics.contains(r#"gatehouse_reconcile_last_success_timestamp_seconds{tenant="default"}"#),
        "{metrics}"
    );
    assert!(
        world
            .app
            .store
            .group_snapshot("default", "g-admins")
            .await
            .unwrap()
            .is_some()
    );
    world.stop().await;
}

/// A site where the deactivated account `gone` is a member of each `(id, name)` group.
fn leaver_in(groups: &[(&str, &str)]) -> Seed {
    let mut gone = SeedUser::new("gone", "Gone");
    gone.status = SimAccountStatus::Inactive;
    Seed {
        users: vec![gone],
        groups: groups
            .iter()
            .map(|&(id, name)| SeedGroup::new(id, name, vec!["gone".into()]))
            .collect(),
        ..Seed::default()
    }
}

async fn reconcile(config: &std::path::Path, dry_run: bool) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command.args(["reconcile", "--config"]).arg(config);
    if dry_run {
        command.arg("--dry-run");
    }
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_dry_run_reconcile_changes_nothing_and_prints_what_it_would_do() {
    let mut gone = SeedUser::new("gone", "Gone");
    gone.status = SimAccountStatus::Inactive;
    let seed = Seed {
        users: vec![gone, SeedUser::new("stays", "Stays")],
        groups: vec![
            SeedGroup::new("g-x", "team-x", vec!["gone".into(), "stays".into()]),
            SeedGroup::new("g-all", "all-staff", vec!["gone".into(), "stays".into()]),
        ],
        ..Seed::default()
    };
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    let dir = TempDir::new();
    let config = config(&dir, &sim);

    let (ok, stdout, stderr) = reconcile(&config, true).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.starts_with("WOULD QUEUE"), "{stdout}");
    assert!(
        stdout.contains("user.deactivated") && stdout.contains("gone"),
        "{stdout}"
    );
    assert!(stdout.contains("team-x") && !stdout.contains("stays"), "{stdout}");
    assert!(
        !stdout.contains("all-staff"),
        "ignored groups are not findings: {stdout}"
    );
    assert!(
        stderr.contains("dry run: nothing queued, snapshots unchanged"),
        "{stderr}"
    );
    let store = store_of(&dir).await;
    assert!(
        store.group_snapshot("default", "g-x").await.unwrap().is_none(),
        "no snapshot taken"
    );
    let queued = |store: gatehouse::store::Store| async move {
        let audit = gatehouse::audit::AuditLog::new(store.clone(), &Default::default());
        let queue = gatehouse::queue::embedded::EmbeddedQueue::new(store, Default::default(), audit);
        gatehouse::queue::Queue::depths(&queue).await.unwrap().work
    };
    assert_eq!(queued(store.clone()).await, 0);
    let requests = sim.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.method == "GET" || r.path.ends_with("/users-bulk")),
        "only reads"
    );

    // A round already running (the background reconciler of a process on this store holds the
    // round's lock): this one queues and saves nothing and says why; a dry run still reads.
    let lock = "reconcile-round@default";
    let held = std::time::Duration::from_secs(60);
    assert!(store.acquire_lease(lock, "another-process", held).await.unwrap());
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("another reconcile of tenant `default` is running"),
        "{stderr}"
    );
    assert_eq!(queued(store.clone()).await, 0);
    assert!(store.group_snapshot("default", "g-x").await.unwrap().is_none());
    assert!(reconcile(&config, true).await.0);
    store.release_lease(lock, "another-process").await.unwrap();

    // For real: the finding is queued and the snapshot taken.
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("1 finding(s) queued"), "{stderr}");
    eventually(LONG, "queued", || async { queued(store.clone()).await == 1 }).await;
    assert!(store.group_snapshot("default", "g-x").await.unwrap().is_some());

    let waiting = |event_id: &'static str, handler: &'static str, action: handlers::Action| {
        let store = store.clone();
        async move {
            let mut plan = handlers::Plan::new(handler, event_id.parse().unwrap());
            plan.push(action, "test");
            let plan = serde_json::to_string(&plan).unwrap();
            let mut tx = store.begin_write().await.unwrap();
            gatehouse::store::approvals::request(
                &mut tx,
                &gatehouse::store::NewApproval {
                    event_id,
                    handler,
                    event_type: "user.deactivated",
                    account_id: Some("gone"),
                    plan: &plan,
                    envelope: "{}",
                },
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    };
    // An organization-wide disable waits for a person (a policy of its own): the groups are
    // still found, whatever that plan waits for.
    waiting(
        "01JABCDEFGHJKMNPQRSTVWXYZ1",
        "leaver-org",
        handlers::Action::LifecycleDisable {
            account_id: "gone".into(),
        },
    )
    .await;
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("1 finding(s) queued"), "{stderr}");

    // The group removals themselves now wait for a person: later runs say so instead of
    // queueing them again.
    waiting(
        "01JABCDEFGHJKMNPQRSTVWXYZ0",
        "deprovision",
        handlers::Action::ConfluenceRemoveMember {
            group_id: "g-x".into(),
            group_name: "team-x".into(),
            account_id: "gone".into(),
        },
    )
    .await;
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(
        ok,
        "{stdout}
{stderr}"
    );
    assert!(
        stderr.contains("deactivated account gone still holds groups; its plan waits for approval"),
        "{stderr}"
    );
    assert!(stderr.contains("0 finding(s) queued"), "{stderr}");
    assert_eq!(queued(store.clone()).await, 2, "nothing more queued");
    sim.stop().await;
}

/// A member found added to a protected group nobody may add anyone to, and still there on a
/// later day (the revert was a dry run, refused, or failed), is found again once a day instead
/// of being taken into the snapshot for good; an allowed member never is.
#[tokio::test]
async fn a_protected_group_intruder_still_there_a_day_later_is_found_again() {
    let seed = Seed {
        users: vec![
            SeedUser::new("admin-1", "Admin"),
            SeedUser::new("mallory", "Mallory"),
        ],
        groups: vec![SeedGroup::new(
            "g-admins",
            "confluence-administrators",
            vec!["admin-1".into(), "mallory".into()],
        )],
        ..Seed::default()
    };
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    let dir = TempDir::new();
    let config = config_with(
        &dir,
        &sim,
        r#"
[[policies]]
name = "admins-guard"
on = "group.member_added"
actions = ["confluence.revert_protected_membership"]
protected_groups = [{ name = "confluence-administrators", allow = ["admin-1"] }]
"#,
    );
    let store = store_of(&dir).await;
    // The last snapshot knew only the admin: Mallory was added since.
    store
        .save_group_snapshot(&gatehouse::store::GroupSnapshot {
            tenant: "default".into(),
            group_id: "g-admins".into(),
            group_name: "confluence-administrators".into(),
            members: vec!["admin-1".into()],
            taken_at: chrono::Utc::now() - chrono::Duration::hours(1),
        })
        .await
        .unwrap();
    let key = "protected-intruders@default:g-admins";
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();

    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("1 finding(s) queued"), "{stderr}");
    let unresolved = store.poll_cursor(key).await.unwrap().unwrap();
    assert_eq!(unresolved, format!(r#"{{"mallory":"{today}"}}"#));

    // Later the same day (the revert may still be on its way): nothing more.
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("0 finding(s) queued"), "{stderr}");

    // A day later she is still there: found again.
    store
        .save_poll_cursor(key, r#"{"mallory":"2020-01-01"}"#)
        .await
        .unwrap();
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("1 finding(s) queued"), "{stderr}");
    assert!(
        stdout.contains("mallory")
            && stdout.contains("still in protected group")
            && !stdout.contains("admin-1"),
        "{stdout}"
    );
    // Gone at last: forgotten.
    let removed = crate::helpers::http()
        .delete(sim.url("/_sim/groups/g-admins/members/mallory"))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(store.poll_cursor(key).await.unwrap().unwrap(), "{}");
    store.close().await;
    sim.stop().await;
}

/// A protected group listed a page at a time while a member leaves: the offsets shift and a
/// member is skipped. The reconciler checks each change against the account's own groups, so
/// the skipped member is not reported removed (and then added again, and reverted).
#[tokio::test]
async fn a_member_skipped_by_a_shifting_page_is_not_reported_removed() {
    let members: Vec<String> = ["a-1", "b-2", "c-3", "d-4"].map(String::from).to_vec();
    let seed = Seed {
        users: members
            .iter()
            .map(|m| SeedUser::new(m.as_str(), m.as_str()))
            .collect(),
        groups: vec![SeedGroup::new("g-x", "team-x", members.clone())],
        ..Seed::default()
    };
    let behaviour = Behaviour {
        v1_max_limit: 2,
        ..Behaviour::default()
    };
    let sim = Simulator::start(seed, behaviour).await.unwrap();
    let dir = TempDir::new();
    let config = config(&dir, &sim);
    // The baseline.
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(ok, "{stdout}\n{stderr}");
    sim.clear_requests();
    // The second page of the group's listing waits; meanwhile the first member leaves, so the
    // second page starts one further on and `c-3` is never listed.
    let mut fault = gatehouse_sim::Fault::delay("g-x/membersByGroupId?start=2", 5_000, 1);
    fault.method = Some("GET".into());
    sim.tenant_at(0).unwrap().add_fault(fault);
    let run = tokio::spawn({
        let config = config.clone();
        async move { reconcile(&config, false).await }
    });
    eventually(LONG, "the second page asked for", || async {
        sim.requests().iter().any(|r| {
            r.path.ends_with("g-x/membersByGroupId")
                && r.query.as_deref().is_some_and(|q| q.contains("start=2"))
        })
    })
    .await;
    let left = crate::helpers::http()
        .delete(sim.url("/_sim/groups/g-x/members/a-1"))
        .send()
        .await
        .unwrap();
    assert!(left.status().is_success(), "{}", left.status());
    let (ok, stdout, stderr) = run.await.unwrap();
    assert!(ok, "{stdout}\n{stderr}");
    assert!(!stdout.contains("c-3"), "c-3 never left: {stdout}");
    let store = store_of(&dir).await;
    let snapshot = store.group_snapshot("default", "g-x").await.unwrap().unwrap();
    assert!(
        snapshot.members.contains(&"c-3".to_owned()),
        "{:?}",
        snapshot.members
    );
    store.close().await;
    sim.stop().await;
}

/// Many changes at once (an old snapshot, a bulk change) are checked with a second listing of
/// the group rather than one request per account.
#[tokio::test]
async fn many_changes_at_once_are_checked_with_a_second_listing() {
    let members: Vec<String> = (0..21).map(|i| format!("m-{i:02}")).collect();
    let seed = Seed {
        users: members
            .iter()
            .map(|m| SeedUser::new(m.as_str(), m.as_str()))
            .collect(),
        groups: vec![SeedGroup::new("g-x", "team-x", members.clone())],
        ..Seed::default()
    };
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    let dir = TempDir::new();
    let config = config(&dir, &sim);
    let store = store_of(&dir).await;
    store
        .save_group_snapshot(&gatehouse::store::GroupSnapshot {
            tenant: "default".into(),
            group_id: "g-x".into(),
            group_name: "team-x".into(),
            members: Vec::new(),
            taken_at: chrono::Utc::now() - chrono::Duration::days(30),
        })
        .await
        .unwrap();
    let (ok, stdout, stderr) = reconcile(&config, false).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("21 finding(s) queued"), "{stderr}");
    let requests = sim.requests();
    let listings = requests
        .iter()
        .filter(|r| r.path.ends_with("g-x/membersByGroupId") && r.query_param("start") == Some("0"))
        .count();
    assert_eq!(listings, 2, "the scan's listing and one more");
    assert!(
        requests.iter().all(|r| !r.path.ends_with("/user/memberof")),
        "no request per account"
    );
    store.close().await;
    sim.stop().await;
}

/// One group whose members cannot be read (403: restricted) or that was deleted during the scan
/// (404) does not keep the leavers of every other group in their groups: it is left out, and
/// the CLI says which.
#[tokio::test]
async fn a_group_that_cannot_be_read_does_not_hide_the_leavers_of_the_others() {
    let seed = leaver_in(&[
        ("g-secret", "secret"),
        ("g-vanished", "vanished"),
        ("g-x", "team-x"),
    ]);
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    for (group, status) in [("g-secret", 403), ("g-vanished", 404)] {
        sim.tenant_at(0).unwrap().add_fault(gatehouse_sim::Fault::status(
            format!("/group/{group}/membersByGroupId"),
            status,
            100,
        ));
    }
    let dir = TempDir::new();
    let config = config(&dir, &sim);
    let (ok, stdout, stderr) = reconcile(&config, true).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("gone") && stdout.contains("team-x"), "{stdout}");
    assert!(
        stderr.contains("the members of group `secret` cannot be read (403)"),
        "{stderr}"
    );
    assert!(!stderr.contains("group `vanished` cannot"), "{stderr}");
    sim.stop().await;
}

/// A name on a keep-list that names no group of the site (misspelt, or in another case: names
/// are case-sensitive) keeps nobody in the group it meant: the reconciler, which lists every
/// group, says so, and the leaver's finding names the group.
#[tokio::test]
async fn a_group_to_keep_that_names_no_group_is_warned_about() {
    let seed = leaver_in(&[("g-x", "team-x"), ("g-all", "all-staff")]);
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    let dir = TempDir::new();
    let config = config_with(
        &dir,
        &sim,
        r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
keep_groups = ["Team-X", "no-such-group"]
"#,
    );
    let (ok, stdout, stderr) = reconcile(&config, true).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the group to keep `Team-X`") && stderr.contains("`team-x` differs only in case"),
        "{stderr}"
    );
    assert!(stderr.contains("the group to keep `no-such-group`"), "{stderr}");
    // `all-staff` ([reconcile] ignore_groups) names a group: no warning about it.
    assert!(!stderr.contains("keep `all-staff`"), "{stderr}");
    assert!(
        stdout.contains("team-x"),
        "the misspelt name kept nobody: {stdout}"
    );
    sim.stop().await;
}

/// Shutdown while a round waits out a rate-limit pause: the round stops waiting and is not
/// recorded as failed (the console would show a failure that was only a restart).
#[tokio::test]
async fn a_round_cut_short_by_shutdown_is_not_a_failure() {
    let (seed, guard) = admins_and_their_guard();
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    let dir = TempDir::new();
    let mut settings = crate::reactions::settings_for_sim(&sim, &dir);
    settings.policies = guard;
    settings.reconcile.enabled = true;
    settings.reconcile.interval_seconds = 1;
    settings.atlassian.as_mut().unwrap().retry.max_wait_ms = 600_000;
    let app = TestApp::start(settings.clone(), None).await;
    let paused = gatehouse_sim::Fault {
        retry_after_seconds: Some(200),
        ..gatehouse_sim::Fault::status("membersByGroupId", 429, 1_000)
    };
    let response = crate::helpers::http()
        .post(sim.url("/_sim/faults"))
        .json(&paused)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    eventually(LONG, "a listing refused with a long Retry-After", || async {
        sim.requests()
            .iter()
            .any(|r| r.path.contains("membersByGroupId") && r.status == Some(429))
    })
    .await;
    let metrics = app.metrics.clone();
    if tokio::time::timeout(std::time::Duration::from_secs(60), app.stop())
        .await
        .is_err()
    {
        // The app was dropped unfinished: its queues are still on the shared broker.
        crate::helpers::delete_topology(&settings).await;
        panic!("shutdown waited for the round");
    }
    let store = gatehouse::app::open_store(&settings).await.unwrap();
    let last = store.last_reconcile_run("default").await.unwrap();
    assert!(last.as_ref().is_none_or(|run| run.error.is_none()), "{last:?}");
    store.close().await;
    assert!(
        !metrics
            .render()
            .contains(r#"gatehouse_reconcile_failures_total{tenant="default"} 1"#),
        "a shutdown counted as a failed round"
    );
    sim.stop().await;
}
