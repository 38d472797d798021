//! The load generator `ingest` and `scale` send webhooks with, to gatehouse and to the minimal
//! relay alike. Like wrk: a fixed number of HTTP/1.1 keep-alive connections, one request in
//! flight on each, and every request built, signed and given its own delivery id before the
//! clock starts. What it spends during the run is the exchange alone, so the 2 cores it shares
//! with the server and the broker go to what is measured (reqwest, used before, spent about
//! 80 µs of CPU a request here: more than gatehouse itself).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::harness::hub_signature;

/// The header that names a delivery; gatehouse dedupes on it, so every request has its own.
const DELIVERY_HEADER: &str = "x-atlassian-webhook-identifier";

/// What a run measured.
pub struct Driven {
    pub elapsed: Duration,
    /// One per request, to its answer (or its failure).
    pub latencies: Vec<Duration>,
    /// Requests not answered 202, including those that failed on the wire.
    pub failures: usize,
}

/// Webhooks ready to send: each body with its `X-Hub-Signature` and a delivery id unique across
/// every connection and every load ever prepared (a ULID per load, then the request's index).
pub struct Load {
    requests: Vec<Prepared>,
}

struct Prepared {
    body: Bytes,
    signature: HeaderValue,
    delivery: HeaderValue,
}

impl Load {
    /// Signs `bodies` with `secret`. Done before a measured phase: the signing is the sender's
    /// work, not the load's.
    pub fn prepare(secret: &str, bodies: &[Vec<u8>]) -> anyhow::Result<Load> {
        let run = ulid::Ulid::generate().to_string().to_lowercase();
        let requests = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                Ok(Prepared {
                    signature: HeaderValue::from_str(&hub_signature(secret, body))?,
                    delivery: HeaderValue::from_str(&format!("bench-{run}-{i}"))?,
                    body: Bytes::copy_from_slice(body),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Load { requests })
    }

    /// Sends every request once over `concurrency` connections to each of `urls`, each request
    /// to the next URL in turn (a load balancer's round robin), and times each to its answer.
    /// The connections are opened before the clock starts; one the server closes is opened again
    /// (the request on it counts as a failure).
    pub async fn drive(&self, urls: &[String], concurrency: usize) -> anyhow::Result<Driven> {
        anyhow::ensure!(!urls.is_empty(), "nowhere to send to");
        let targets = urls
            .iter()
            .map(|url| Target::parse(url))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let workers = join_all((0..concurrency.max(1)).map(|_| Worker::connect(&targets)))
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let outcomes = join_all(
            workers
                .into_iter()
                .map(|worker| worker.run(self, &targets, &next)),
        )
        .await;
        let elapsed = started.elapsed();
        let mut latencies = Vec::with_capacity(self.requests.len());
        let mut failures = 0;
        for (mut l, f) in outcomes {
            latencies.append(&mut l);
            failures += f;
        }
        Ok(Driven {
            elapsed,
            latencies,
            failures,
        })
    }
}

/// A URL split into where to connect and what to ask for.
struct Target {
    authority: String,
    host: HeaderValue,
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("load target {url:?}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "load target {url:?}: only http:// is driven"
        );
        let authority = uri
            .authority()
            .with_context(|| format!("load target {url:?} names no host"))?
            .to_string();
        Ok(Target {
            host: HeaderValue::from_str(&authority)?,
            authority,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection's own task reads and writes the socket; it ends when `sender` is dropped.
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// One simulated sender: a connection to each target, one request at a time.
struct Worker {
    connections: Vec<Option<SendRequest<Full<Bytes>>>>,
}

impl Worker {
    async fn connect(targets: &[Target]) -> anyhow::Result<Worker> {
        let mut connections = Vec::with_capacity(targets.len());
        for target in targets {
            connections.push(Some(target.connect().await?));
        }
        Ok(Worker { connections })
    }

    /// Takes the next unsent request until none is left; returns latencies and failures.
    async fn run(mut self, load: &Load, targets: &[Target], next: &AtomicUsize) -> (Vec<Duration>, usize) {
        let mut latencies = Vec::new();
        let mut failures = 0;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(prepared) = load.requests.get(i) else {
                break;
            };
            let which = i % targets.len();
            let sent = Instant::now();
            let accepted = self.send(&targets[which], which, prepared).await;
            latencies.push(sent.elapsed());
            if !accepted {
                failures += 1;
            }
        }
        (latencies, failures)
    }

    /// Whether the request was answered 202. A connection that failed is dropped, to be opened
    /// again for the next request.
    async fn send(&mut self, target: &Target, which: usize, prepared: &Prepared) -> bool {
        let connection = match &mut self.connections[which] {
            Some(open) => open,
            slot @ None => match target.connect().await {
                Ok(opened) => slot.insert(opened),
                Err(_) => return false,
            },
        };
        let request = Request::post(target.path.as_str())
            .header(HOST, target.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("x-hub-signature", prepared.signature.clone())
            .header(DELIVERY_HEADER, prepared.delivery.clone())
            .body(Full::new(prepared.body.clone()));
        let answered = match request {
            Ok(request) => match async {
                connection.ready().await?;
                connection.send_request(request).await
            }
            .await
            {
                // The body is read to the end so the connection can carry the next request.
                Ok(response) => {
                    let status = response.status();
                    response.into_body().collect().await.is_ok().then_some(status)
                }
                Err(_) => None,
            },
            Err(_) => None,
        };
        match answered {
            Some(status) => status == StatusCode::ACCEPTED,
            None => {
                self.connections[which] = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::*;

    /// A server that records what it was sent and refuses every body that says `"refuse"`.
    async fn recorder() -> anyhow::Result<(String, Arc<Mutex<Vec<(String, String, Bytes)>>>)> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let refuse = body.as_ref() == b"refuse";
                if let Ok(mut seen) = record.lock() {
                    seen.push((header(DELIVERY_HEADER), header("x-hub-signature"), body));
                }
                if refuse {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::ACCEPTED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((url, seen))
    }

    #[tokio::test]
    async fn every_request_is_sent_once_signed_with_its_own_delivery_id() -> anyhow::Result<()> {
        let (url, seen) = recorder().await?;
        let bodies: Vec<Vec<u8>> = (0..500)
            .map(|i| {
                if i % 50 == 0 {
                    b"refuse".to_vec()
                } else {
                    format!("{{\"i\":{i}}}").into_bytes()
                }
            })
            .collect();
        let first = Load::prepare("s3cret", &bodies)?;
        let driven = first.drive(std::slice::from_ref(&url), 16).await?;
        assert_eq!(driven.latencies.len(), 500);
        assert_eq!(driven.failures, 10, "the ten refused bodies, and only those");
        // A second load of the same bodies: new delivery ids all the same.
        Load::prepare("s3cret", &bodies)?
            .drive(&[url.clone(), url], 4)
            .await?;

        let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        assert_eq!(seen.len(), 1_000);
        let ids: HashSet<&str> = seen.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids.len(), 1_000, "a delivery id was sent twice");
        for (_, signature, body) in &seen {
            assert_eq!(signature, &hub_signature("s3cret", body));
        }
        let sent: HashSet<&[u8]> = seen[..500].iter().map(|(_, _, body)| body.as_ref()).collect();
        assert_eq!(sent.len(), 491, "every distinct body of the first load arrived");
        Ok(())
    }

    #[tokio::test]
    async fn a_target_it_cannot_drive_is_refused_before_sending() {
        let load = Load { requests: Vec::new() };
        assert!(load.drive(&[], 1).await.is_err());
        assert!(
            load.drive(&["https://127.0.0.1:1/x".to_owned()], 1)
                .await
                .is_err()
        );
        assert!(load.drive(&["not a url".to_owned()], 1).await.is_err());
    }
}
