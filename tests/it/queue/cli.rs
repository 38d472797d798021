//! `gatehouse dlq …` as an operator uses it: the real binary, a config file, the store.

use std::process::Output;
use std::time::Duration;

use super::scripted::{Scripted, Step};
use super::{Backend, dead_letters, eventually, publish, settings, worker};
use crate::helpers::TempDir;

fn gatehouse(config: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run gatehouse")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dlq_list_show_replay_and_purge() {
    let dir = TempDir::new();
    let settings = settings(Backend::Embedded, &dir);
    let config = dir.0.join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[queue]\nbackend = \"embedded\"\n[store]\nurl = \"{}\"\n",
            settings.store.url.expose()
        ),
    )
    .unwrap();

    let processor = Scripted::new();
    processor.script("hank", vec![Step::Permanent]);
    processor.script("ivy", vec![Step::Permanent]);
    let app = worker(settings.clone(), processor.clone()).await;
    publish(&app, "hank", "fact-hank").await;
    publish(&app, "ivy", "fact-ivy").await;
    eventually(Duration::from_secs(20), "two dead letters", || async {
        dead_letters(&app).await.len() == 2
    })
    .await;
    app.shutdown().await;
    let letters = {
        let store = gatehouse::store::Store::connect(&settings.store).await.unwrap();
        store.dead_letters(&Default::default()).await.unwrap()
    };
    let hank = letters
        .iter()
        .find(|l| l.subject.as_deref() == Some("hank"))
        .unwrap()
        .id
        .clone();
    let ivy = letters
        .iter()
        .find(|l| l.subject.as_deref() == Some("ivy"))
        .unwrap()
        .id
        .clone();

    let listed = gatehouse(&config, &["dlq", "list"]);
    assert!(listed.status.success(), "{listed:?}");
    let (out, err) = text(&listed);
    assert!(out.starts_with("ID"), "{out}");
    assert!(out.contains(&hank) && out.contains(&ivy), "{out}");
    assert!(
        out.contains("user.deactivated") && out.contains("permanent failure: simulated 400"),
        "{out}"
    );
    assert!(err.contains("2 dead letter(s)"), "{err}");

    let shown = gatehouse(&config, &["dlq", "show", &hank]);
    let (out, _) = text(&shown);
    assert!(shown.status.success());
    assert!(out.contains("failure history:") && out.contains("#1 "), "{out}");
    assert!(out.contains("\"account_id\": \"hank\""), "{out}");

    let dry = gatehouse(&config, &["dlq", "replay", "--all", "--dry-run"]);
    assert!(dry.status.success());
    assert!(
        text(&dry)
            .1
            .contains("dry run: 2 dead letter(s) would be replayed")
    );

    // Purging asks first; with no terminal to ask on, nothing happens without --yes.
    let refused = gatehouse(&config, &["dlq", "purge", &hank]);
    assert!(!refused.status.success());
    assert!(text(&refused).1.contains("not purged"));
    let purged = gatehouse(&config, &["dlq", "purge", &hank, "--yes"]);
    assert!(purged.status.success(), "{purged:?}");

    let replayed = gatehouse(&config, &["dlq", "replay", &ivy]);
    assert!(replayed.status.success(), "{replayed:?}");
    assert!(text(&replayed).1.contains("1 replayed, 0 failed"));
    let again = gatehouse(&config, &["dlq", "replay", &ivy]);
    assert!(!again.status.success());
    assert!(text(&again).1.contains("already replayed"));
    let missing = gatehouse(&config, &["dlq", "show", "no-such-id"]);
    assert!(!missing.status.success());
    assert!(text(&missing).1.contains("no dead letter no-such-id"));

    // The replayed event is processed by a worker (the script has no failure left for ivy).
    let app = worker(settings, processor.clone()).await;
    eventually(Duration::from_secs(20), "ivy handled", || async {
        processor.completions("ivy") == 1
    })
    .await;
    assert!(dead_letters(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn serve_with_the_default_config_needs_no_external_service() {
    let dir = TempDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--config", default])
        .env("GATEHOUSE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "GATEHOUSE__STORE__URL",
            format!("sqlite://{}/data/gatehouse.db", dir.0.display()),
        )
        // Point RabbitMQ at a closed port: the default must not need it.
        .env("GATEHOUSE__QUEUE__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    gatehouse::app::install_crypto_provider();
    let http = crate::helpers::http();
    eventually(Duration::from_secs(20), "ready", || async {
        matches!(http.get(format!("http://127.0.0.1:{port}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    // The worker runs too: it samples the (embedded) queue's depth.
    eventually(Duration::from_secs(20), "queue depth exported", || async {
        let metrics = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics.contains(r#"gatehouse_queue_depth{queue="work"} 0"#)
    })
    .await;
    // SIGTERM: a clean stop.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
