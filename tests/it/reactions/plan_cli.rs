//! `gatehouse plan --event FILE.json` against the simulator: the plan is printed, nothing is
//! changed or queued. (The binary runs as a child process awaited asynchronously: the in-process
//! simulator must keep serving meanwhile.)

use gatehouse_sim::{Behaviour, Seed, SeedGroup, SeedUser, SimAccountStatus, Simulator};

use crate::helpers::TempDir;

/// A config pointing at `sim`, with `policies` (TOML) appended; written into `dir`.
fn config_for(sim: &gatehouse_sim::SimHandle, dir: &TempDir, policies: &str) -> std::path::PathBuf {
    let token = dir.0.join("api-token");
    std::fs::write(&token, "sim-api-token\n").unwrap();
    let admin_key = dir.0.join("admin-key");
    std::fs::write(&admin_key, "sim-admin-key").unwrap();
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[store]
url = "sqlite://{store}/gatehouse.db"

[atlassian]
confluence_base_url = "{site}"
auth = {{ kind = "basic", email = "bot@example.com", token = "file:{token}" }}
admin_base_url = "{api}"
admin_api_key = "file:{admin_key}"
{policies}"#,
            store = dir.0.display(),
            site = sim.site_base_url(),
            token = token.display(),
            api = sim.api_base_url(),
            admin_key = admin_key.display(),
        ),
    )
    .unwrap();
    config
}

/// Writes `envelope` into `dir` and runs `gatehouse plan` on it with `extra` arguments.
async fn plan(
    config: &std::path::Path,
    dir: &TempDir,
    envelope: &handlers::Envelope,
    extra: &[&str],
) -> std::process::Output {
    let event = dir.0.join("event.json");
    std::fs::write(&event, serde_json::to_string(envelope).unwrap()).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("plan")
        .args(extra)
        .arg("--config")
        .arg(config)
        .arg("--event")
        .arg(&event)
        .output()
        .await
        .unwrap()
}

fn envelope(event_type: handlers::EventType, account: &str) -> handlers::Envelope {
    let mut envelope = handlers::Envelope::new(
        event_type,
        "relay",
        handlers::Scheme::StandardWebhooks,
        "msg-1",
        serde_json::value::RawValue::from_string("{}".into()).unwrap(),
    );
    envelope.subject.account_id = Some(account.into());
    envelope
}

#[tokio::test]
async fn plan_prints_what_would_happen_and_changes_nothing() {
    let mut ann = SeedUser::new("ann", "Ann");
    ann.status = SimAccountStatus::Inactive;
    let seed = Seed {
        users: vec![ann],
        groups: vec![
            SeedGroup::new("g-eng", "eng", vec!["ann".into()]),
            SeedGroup::new("g-all", "all-staff", vec!["ann".into()]),
        ],
        ..Seed::default()
    };
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    let dir = TempDir::new();
    let config = config_for(
        &sim,
        &dir,
        r#"
[[policies]]
name = "deprovision"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups", "lifecycle.disable"]
keep_groups = ["all-staff"]
allow_org_wide = true
"#,
    );
    let envelope = envelope(handlers::EventType::UserDeactivated, "ann");
    let output = plan(&config, &dir, &envelope, &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("policy deprovision"), "{stdout}");
    assert!(
        stdout.contains("authority: observation (from relay): checked against Atlassian's current state"),
        "{stdout}"
    );
    assert!(
        stdout.contains("confluence.remove_member group:g-eng/account:ann"),
        "{stdout}"
    );
    assert!(!stdout.contains("g-all"), "the keep-list stays: {stdout}");
    assert!(
        stdout.contains("lifecycle.disable account:ann [ORG-WIDE, needs approval]"),
        "{stdout}"
    );

    let state = sim.state();
    assert_eq!(state.group("g-eng").unwrap().members.len(), 1, "nothing changed");
    let requests = sim.requests();
    // Only reads (the v2 users-bulk status read is a POST).
    assert!(
        requests
            .iter()
            .all(|r| r.method == "GET" || r.path.ends_with("/users-bulk")),
        "only reads"
    );

    let json = plan(&config, &dir, &envelope, &["--format", "json"]).await;
    let plans: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(plans[0]["actions"].as_array().unwrap().len(), 2);

    // The same event as a decision says so.
    let mut decision = envelope.clone();
    decision.authority = handlers::Authority::Decision;
    let output = plan(&config, &dir, &decision, &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("authority: decision (from relay): acted on whatever Atlassian shows now"),
        "{stdout}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn escape_sequences_a_sender_wrote_cannot_hide_what_a_plan_does() {
    let seed = Seed {
        users: vec![SeedUser::new("mallory", "Mallory")],
        groups: vec![SeedGroup::new("g-admins", "confluence-administrators", vec![])],
        ..Seed::default()
    };
    let sim = Simulator::start(seed, Behaviour::default()).await.unwrap();
    let dir = TempDir::new();
    let config = config_for(
        &sim,
        &dir,
        r#"
[[policies]]
name = "admins-guard"
on = "group.member_added"
actions = ["confluence.revert_protected_membership"]
protected_groups = [{ name = "confluence-administrators" }]
"#,
    );
    // The group's name, as the sender wrote it, erases the line above and the one it is on.
    let mut intrusion = envelope(handlers::EventType::GroupMemberAdded, "mallory");
    intrusion.subject.group = Some(handlers::GroupRef {
        id: Some("g-admins".into()),
        name: Some("\u{1b}[1A\u{1b}[2K\u{1b}[2Kharmless\u{9b}2K\u{202e}".into()),
    });
    let output = plan(&config, &dir, &intrusion, &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{9b}') && !stdout.contains('\u{202e}'),
        "{stdout:?}"
    );
    assert!(stdout.contains("\\u{1b}[1A"), "shown, not obeyed: {stdout}");
    assert!(
        stdout.contains("confluence.remove_member group:g-admins/account:mallory"),
        "{stdout}"
    );
    sim.stop().await;
}
