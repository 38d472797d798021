//! `GET /audit`: off without a token, 401 without the right one, filtered and paged by seq.

use gatehouse::audit::{AuditLog, AuditRecord};
use gatehouse::config::{AuditSettings, Secret};
use serde_json::Value;

use super::{open_store, sample};
use crate::helpers::TestApp;

const TOKEN: &str = "siem-pull-token-0123456789";

async fn get(app: &TestApp, query: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(app.url(&format!("/audit{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn records(app: &TestApp, query: &str) -> (Vec<AuditRecord>, Value) {
    let response = get(app, query, Some(TOKEN)).await;
    assert_eq!(response.status(), 200, "{query}");
    let body: Value = response.json().await.unwrap();
    let records = serde_json::from_value(body["records"].clone()).unwrap();
    (records, body["next_after_seq"].clone())
}

#[tokio::test]
async fn siems_pull_pages_with_a_bearer_token() {
    let app = TestApp::spawn(|s| s.audit.api_token = Some(Secret::new(TOKEN))).await;
    let store = open_store(app.settings.store.url.expose()).await;
    let log = AuditLog::new(store.clone(), &AuditSettings::default());
    for i in 0..12 {
        log.append(sample(i)).await.unwrap();
    }

    let denied = get(&app, "", None).await;
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Bearer");
    assert_eq!(get(&app, "", Some("siem-pull-token-wrong")).await.status(), 401);
    assert_eq!(get(&app, "", Some(&TOKEN[..10])).await.status(), 401);

    // Paging by seq: 5, 5, 2, then no cursor.
    let response = get(&app, "?limit=5", Some(TOKEN)).await;
    assert_eq!(response.headers()["x-next-after-seq"], "5");
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "records name people"
    );
    let (page, next) = records(&app, "?limit=5").await;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(next, 5);
    let (page, next) = records(&app, "?limit=5&after_seq=5").await;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);
    let (page, next) = records(&app, &format!("?limit=5&after_seq={next}")).await;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [11, 12]);
    assert!(next.is_null());

    // Filters: by person, by kind, by event, by time.
    let (page, _) = records(&app, "?account_id=557058:acc-0").await;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 8]);
    let (page, _) = records(&app, "?kind=failed,planned").await;
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 5, 7, 10, 12]);
    let event = page[0].record.event_id;
    let (page, _) = records(&app, &format!("?event_id={event}")).await;
    assert_eq!(page.len(), 1);
    let (page, _) = records(&app, "?since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z").await;
    assert_eq!(page.len(), 12);
    let (page, _) = records(&app, "?until=2000-01-01T00:00:00Z").await;
    assert!(page.is_empty());

    // Formats.
    let response = get(&app, "?format=jsonl&limit=3", Some(TOKEN)).await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.text().await.unwrap().lines().count(), 3);
    let response = get(&app, "?format=ocsf", Some(TOKEN)).await;
    let body: Value = response.json().await.unwrap();
    for event in body["records"].as_array().unwrap() {
        let problems = super::ocsf::violations(event);
        assert!(problems.is_empty(), "{problems:?}");
    }

    // Bad requests say what is wrong.
    for query in [
        "?since=yesterday",
        "?kind=bogus",
        "?event_id=nope",
        "?format=xml",
        "?unknown=1",
    ] {
        assert_eq!(get(&app, query, Some(TOKEN)).await.status(), 400, "{query}");
    }
    store.close().await;
    app.stop().await;
}

#[tokio::test]
async fn without_a_token_the_endpoint_does_not_exist() {
    let app = TestApp::spawn(|_| {}).await;
    assert_eq!(get(&app, "", Some(TOKEN)).await.status(), 404);
    assert_eq!(get(&app, "", None).await.status(), 404);
    app.stop().await;
}
