//! `gatehouse probe`, the container health check: exit 0 with the answer while the process it
//! names in the config is ready (or, `--live`, alive); exit 1 once nothing answers there.

use crate::helpers::{TempDir, TestApp, run_gatehouse};

#[tokio::test]
async fn the_probe_answers_for_the_process_its_config_names() {
    let app = TestApp::spawn(|_| {}).await;
    let dir = TempDir::new();
    let config = dir.0.join("probe.toml");
    std::fs::write(&config, format!("[server]\nlisten = \"{}\"\n", app.addr)).unwrap();
    let config = config.to_string_lossy().into_owned();

    let (ready, stdout, _) = run_gatehouse(&["probe", "--config", &config]).await;
    assert!(ready, "{stdout}");
    assert!(
        stdout.starts_with("200 ") && stdout.contains("\"ready\""),
        "{stdout}"
    );
    let (alive, stdout, _) = run_gatehouse(&["probe", "--live", "--config", &config]).await;
    assert!(alive, "{stdout}");

    app.stop().await;
    let (ready, _, stderr) = run_gatehouse(&["probe", "--config", &config]).await;
    assert!(!ready);
    assert!(stderr.contains("no answer"), "{stderr}");
}
