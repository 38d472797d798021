//! `gatehouse directory` end to end: the real binary, a config file, the simulator.

use std::process::Output;

use gatehouse_sim::{Behaviour, Simulator};

use super::{API_TOKEN, accounts, seed};
use crate::helpers::TempDir;

/// Runs the gatehouse binary with `config` and `args` (off the async runtime, which serves the
/// simulator meanwhile).
async fn gatehouse(config: &str, args: &[&str]) -> Output {
    let dir = TempDir::new();
    let path = dir.0.join("gatehouse.toml");
    let config = config.replace("{dir}", &dir.0.display().to_string());
    std::fs::write(&path, config).unwrap();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--config")
            .arg(&path)
            .args(&args)
            .env("GH_TEST_ATLASSIAN_TOKEN", API_TOKEN)
            .env("GATEHOUSE__LOG__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        drop(dir);
        output
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_members_and_groups_list_everything() {
    let users = accounts("acc", 60);
    let all: Vec<String> = users.iter().map(|u| u.account_id.clone()).collect();
    let sim = Simulator::start(
        seed(
            users,
            vec![
                ("grp-users", "confluence-users", all.clone()),
                ("grp-admins", "confluence-administrators", all[..2].to_vec()),
            ],
        ),
        Behaviour::default(),
    )
    .await
    .unwrap();
    let config = format!(
        r#"
        [store]
        url = "sqlite://{{dir}}/gatehouse.db"
        [atlassian]
        confluence_base_url = "{}"
        auth = {{ kind = "basic", email = "bot@example.com", token = "env:GH_TEST_ATLASSIAN_TOKEN" }}
        [atlassian.retry]
        base_delay_ms = 20
        max_delay_ms = 200
        "#,
        sim.site_base_url()
    );

    let csv = gatehouse(
        &config,
        &["directory", "members", "confluence-users", "--format", "csv"],
    )
    .await;
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let out = text(&csv.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "account_id,display_name,email,account_type");
    assert_eq!(lines.len(), 61, "{out}");
    assert!(lines.contains(&"acc-0000,User 0,,atlassian"), "{out}");
    assert!(text(&csv.stderr).contains("60 members in `confluence-users`"));

    let json = gatehouse(
        &config,
        &["directory", "members", "grp-admins", "--id", "--format", "json"],
    )
    .await;
    assert!(json.status.success(), "{}", text(&json.stderr));
    let members: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(members.as_array().unwrap().len(), 2);
    assert!(members[0]["email"].is_null());

    let near = gatehouse(&config, &["directory", "members", "Confluence-Users"]).await;
    assert_eq!(near.status.code(), Some(1));
    assert!(
        text(&near.stderr).contains("did you mean `confluence-users`? (group names are case-sensitive)"),
        "{}",
        text(&near.stderr)
    );
    let unknown = gatehouse(&config, &["directory", "members", "nobody-group"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("no Confluence group is named `nobody-group`"));

    let groups = gatehouse(&config, &["directory", "groups", "acc-0001"]).await;
    assert!(groups.status.success(), "{}", text(&groups.stderr));
    assert_eq!(
        text(&groups.stdout),
        "ID          NAME\ngrp-admins  confluence-administrators\ngrp-users   confluence-users\n"
    );
    for output in [&csv, &json, &near, &groups] {
        assert!(!text(&output.stderr).contains(API_TOKEN));
    }

    let unconfigured = gatehouse(
        "[store]\nurl = \"sqlite://{dir}/g.db\"\n",
        &["directory", "groups", "x"],
    )
    .await;
    assert_eq!(unconfigured.status.code(), Some(2));
}
