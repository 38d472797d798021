//! A local HTTP receiver for what gatehouse sends out (outbound webhooks, Slack posts): it
//! records every request and answers each path from a script (`503` twice, then `200`; hang;
//! redirect), `200 ok` once the script for a path is used up.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status, headers and a body.
    Answer(u16, Vec<(&'static str, String)>, String),
    /// Answer `200 ok` only after this long (a slow receiver).
    Hang(Duration),
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply::Answer(code, Vec::new(), String::new())
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Received>,
    script: HashMap<String, VecDeque<Reply>>,
    /// The answer for a path once its script is used up (`200 ok` when absent).
    fallback: HashMap<String, Reply>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { answer(state, uri, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests to `path` with `replies`, in order.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut shared = self.shared.lock().unwrap();
        shared.script.entry(path.to_owned()).or_default().extend(replies);
    }

    /// Answers every request to `path` (after its script) with `reply`.
    pub fn always(&self, path: &str, reply: Reply) {
        self.shared
            .lock()
            .unwrap()
            .fallback
            .insert(path.to_owned(), reply);
    }

    /// Every request so far to `path`.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        let shared = self.shared.lock().unwrap();
        shared
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(shared: Arc<Mutex<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let reply = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(Received {
            path: path.clone(),
            headers,
            body,
        });
        let scripted = shared.script.get_mut(&path).and_then(VecDeque::pop_front);
        scripted.or_else(|| shared.fallback.get(&path).cloned())
    };
    match reply {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Reply::Hang(length)) => {
            tokio::time::sleep(length).await;
            (StatusCode::OK, "ok").into_response()
        }
        Some(Reply::Answer(code, headers, body)) => {
            let mut response = (StatusCode::from_u16(code).unwrap(), body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
    }
}
