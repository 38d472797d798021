//! `gatehouse demo`, as a newcomer runs it: the whole story goes as expected, the trail verifies,
//! and the data it keeps is usable with the config it wrote.

use crate::console::sign_in_at;
use crate::helpers::{TempDir, TestApp, run_gatehouse as gatehouse};

#[tokio::test]
async fn the_demo_tells_the_whole_story_and_ends_with_an_intact_chain() {
    let dir = TempDir::new();
    let data = dir.0.join("demo");
    let data = data.to_str().unwrap();
    // Run inside a deployment, whose overrides must not reach it (its store, its broker).
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["demo", "--data", data])
        .env("GATEHOUSE__QUEUE__BACKEND", "rabbitmq")
        .env("GATEHOUSE__QUEUE__URL", "amqp://nobody@127.0.0.1:1/%2f")
        .env(
            "GATEHOUSE__STORE__URL",
            "postgres://nobody@127.0.0.1:1/production",
        )
        .output()
        .await
        .unwrap();
    let (ok, stdout, stderr) = (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("\n   ok: ").count(), 5, "{stdout}");
    assert!(!stdout.contains("NOT AS EXPECTED"), "{stdout}");
    for seen in [
        "ok: ada is in all-staff",
        "ok: alan is in all-staff, confluence-users",
        "ok: eve@acme.example exists in the SCIM directory",
        "ok: mallory is in all-staff, confluence-users",
        "lifecycle.disable ORG-WIDE account:bob -> pending_approval",
        "audit verify: chain intact",
    ] {
        assert!(stdout.contains(seen), "`{seen}` missing from:\n{stdout}");
    }
    // What it kept works with the config it wrote: the trail verifies, Bob's plan still waits.
    let config = format!("{data}/gatehouse.toml");
    let (ok, stdout, stderr) = gatehouse(&["--config", &config, "audit", "verify"]).await;
    assert!(ok && stdout.contains("chain intact"), "{stdout}\n{stderr}");
    // Another program's variable that is not UTF-8 does not stop gatehouse reading its config.
    let checked = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["--config", &config, "check-config"])
        .env(
            "OTHER_PROGRAMS_VARIABLE",
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(vec![0xff, 0xfe]),
        )
        .output()
        .await
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let (ok, _, stderr) = gatehouse(&["--config", &config, "approvals", "list"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("1 pending approval(s) of tenant `acme`"),
        "{stderr}"
    );
    // The console is on, with a `demo` admin whose password was kept with the other secrets.
    let password = std::fs::read_to_string(format!("{data}/secrets/console-password")).unwrap();
    assert!(password.len() >= 20, "{password}");
    let (settings, _) = gatehouse::config::Settings::load(std::path::Path::new(&config)).unwrap();
    assert!(settings.console.enabled);
    let app = TestApp::start(settings, None).await;
    assert!(sign_in_at(&app, "demo", "not-the-password").await.is_err());
    let session = sign_in_at(&app, "demo", &password).await;
    assert!(session.is_ok_and(|cookie| cookie.starts_with("gatehouse_console=")));
    app.stop().await;
}

/// `gatehouse demo | head -1`: the reader goes away after the first line. The demo still ends
/// well (no panic on the closed pipe), and its temporary folder, which holds the demo's secrets,
/// is gone afterwards.
#[tokio::test]
async fn the_demo_read_in_part_ends_well_and_leaves_no_secrets_behind() {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;
    let tmp = TempDir::new();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["--config", "/surely/not/there.toml", "demo"])
        .env("TMPDIR", &tmp.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).await.unwrap();
    assert_eq!(first.trim(), "gatehouse demo");
    drop(stdout);
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A config it was given is not read, and it says so.
    assert!(
        stderr.contains("the demo writes and uses a config of its own; /surely/not/there.toml"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
