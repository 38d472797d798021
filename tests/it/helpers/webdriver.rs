//! A minimal W3C WebDriver client over reqwest, for the console's browser tests: sessions,
//! navigation, finding, clicking and typing, text, cookies, scripts and screenshots. That is all
//! the tests need, and it spares the build a WebDriver crate with its own HTTP stack.
//! Every failure panics with what the driver said: these are tests.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// The key W3C WebDriver names an element reference with.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session.
pub struct WebDriver {
    http: reqwest::Client,
    /// `{driver}/session/{id}`.
    session: String,
}

/// An element of the page the session shows.
pub struct Element<'a> {
    driver: &'a WebDriver,
    id: String,
}

/// What the driver answered: the `value`, or its error code and message.
type Answer = Result<Value, (String, String)>;

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("chromedriver answers");
    let body: Value = response.json().await.expect("chromedriver answers JSON");
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    match value.get("error").and_then(Value::as_str) {
        Some(error) => Err((
            error.to_owned(),
            value["message"].as_str().unwrap_or_default().to_owned(),
        )),
        None => Ok(value),
    }
}

impl WebDriver {
    /// A new session on the driver at `url` with `capabilities` (always matched).
    pub async fn new_session(url: &str, capabilities: Value) -> WebDriver {
        let http = crate::helpers::http();
        let request = http
            .post(format!("{url}/session"))
            .json(&json!({ "capabilities": { "alwaysMatch": capabilities } }));
        let value = send(request)
            .await
            .unwrap_or_else(|e| panic!("a chromedriver session: {e:?}"));
        let id = value["sessionId"].as_str().expect("a session id").to_owned();
        WebDriver {
            http,
            session: format!("{url}/session/{id}"),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        send(self.http.get(format!("{}{path}", self.session))).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        send(self.http.post(format!("{}{path}", self.session)).json(&body)).await
    }

    fn element(&self, value: &Value) -> Element<'_> {
        Element {
            driver: self,
            id: value[ELEMENT_KEY]
                .as_str()
                .expect("an element reference")
                .to_owned(),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }))
            .await
            .unwrap_or_else(|e| panic!("navigating to {url}: {e:?}"));
    }

    /// The path of the page shown.
    pub async fn current_path(&self) -> String {
        let url = self.get("/url").await.expect("the current URL");
        url::Url::parse(url.as_str().unwrap_or_default())
            .expect("a URL")
            .path()
            .to_owned()
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        let source = self.get("/source").await.expect("the page source");
        source.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching `css`, if there is one now.
    pub async fn find(&self, css: &str) -> Option<Element<'_>> {
        let found = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        match found {
            Ok(value) => Some(self.element(&value)),
            Err((error, _)) if error == "no such element" => None,
            Err(e) => panic!("finding {css}: {e:?}"),
        }
    }

    /// Every element matching `css` now.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self
            .post("/elements", json!({ "using": "css selector", "value": css }))
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e:?}"));
        found
            .as_array()
            .map(|all| all.iter().map(|v| self.element(v)).collect())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {timeout:?} for {css}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` in the page with `args`; its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
            .unwrap_or_else(|e| panic!("running a script: {e:?}"))
    }

    /// The value of the browser's cookie `name` for the page shown, if it holds one.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        match self.get(&format!("/cookie/{name}")).await {
            Ok(cookie) => cookie["value"].as_str().map(str::to_owned),
            Err((error, _)) if error == "no such cookie" => None,
            Err(e) => panic!("reading cookie {name}: {e:?}"),
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let png = self.get("/screenshot").await.expect("a screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("base64")
    }

    /// Ends the session (and its browser).
    pub async fn close(&self) {
        let _ = send(self.http.delete(&self.session)).await;
    }
}

impl Element<'_> {
    pub async fn click(&self) {
        self.driver
            .post(&format!("/element/{}/click", self.id), json!({}))
            .await
            .unwrap_or_else(|e| panic!("clicking: {e:?}"));
    }

    pub async fn send_keys(&self, text: &str) {
        self.driver
            .post(&format!("/element/{}/value", self.id), json!({ "text": text }))
            .await
            .unwrap_or_else(|e| panic!("typing: {e:?}"));
    }

    /// The element's rendered text.
    pub async fn text(&self) -> String {
        let text = self
            .driver
            .get(&format!("/element/{}/text", self.id))
            .await
            .unwrap_or_else(|e| panic!("reading text: {e:?}"));
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The first element inside this one matching `css`.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let found = self
            .driver
            .post(
                &format!("/element/{}/element", self.id),
                json!({ "using": "css selector", "value": css }),
            )
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e:?}"));
        self.driver.element(&found)
    }
}
