//! Fail closed: when the store (and with it the audit trail) goes away, a worker neither acts nor
//! acks; when it is back, every event is handled exactly once and on the record.

use std::time::Duration;

use gatehouse::config::SensitiveUrl;

use super::scripted::Scripted;
use super::{Backend, audit_kinds, eventually, publish, settings, worker};
use crate::helpers::{TcpProxy, TempDir};
use crate::store::PgDatabase;

#[tokio::test]
async fn a_worker_whose_store_goes_away_stops_acking_loses_nothing_and_resumes() {
    let db = PgDatabase::create().await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_port(Some(proxy.addr.port())).unwrap();
    let dir = TempDir::new();
    let mut settings = settings(Backend::Rabbitmq, &dir);
    settings.store.url = SensitiveUrl::new(url.to_string());
    let processor = Scripted::new();
    let app = worker(settings, processor.clone()).await;

    let before = publish(&app, "before", "fact-before").await;
    eventually(Duration::from_secs(20), "handled before the outage", || async {
        processor.completions("before") == 1
    })
    .await;

    proxy.cut();
    let during: Vec<String> = {
        let mut ids = Vec::new();
        for account in ["during-1", "during-2"] {
            ids.push(publish(&app, account, &format!("fact-{account}")).await);
        }
        ids
    };
    eventually(Duration::from_secs(20), "readiness red", || async {
        !app.ready().await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Nothing was done without a record: no claim, no audit, no action.
    assert!(processor.calls("during-1").is_empty() && processor.calls("during-2").is_empty());

    proxy.restore();
    eventually(Duration::from_secs(30), "handled after the outage", || async {
        processor.completions("during-1") == 1 && processor.completions("during-2") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(processor.calls("during-1").len(), 1);
    assert_eq!(processor.calls("during-2").len(), 1);
    assert_eq!(audit_kinds(&app, &before).await, ["received"]);
    for id in &during {
        assert_eq!(audit_kinds(&app, id).await, ["received"]);
    }
    let report = gatehouse::audit::verify(&app.store, 1, |_| {}).await.unwrap();
    assert!(report.broken.is_none(), "{report:?}");
    app.stop().await;
    db.drop_now().await;
}
