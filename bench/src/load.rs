//! The load generator `ingest` and `scale` send webhooks with, to gatehouse and to the minimal
//! relay alike. Like wrk: a fixed number of HTTP/1.1 keep-alive connections, one request in
//! flight on each, and every body signed and given its own delivery id before the clock starts
//! (during the run a request is assembled from those shared parts). What it spends during the
//! run is little more than the exchange, so the 2 cores it shares with the server and the broker
//! go to what is measured (reqwest, used before, spent about 80 µs of CPU a request here: more
//! than gatehouse itself).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::harness::hub_signature;

/// The header that names a delivery. Every request has its own, as a sender's deliveries do
/// (on a hub-signature source gatehouse dedupes on the body's digest instead: the bodies
/// `ingest` sends are each different too).
const DELIVERY_HEADER: &str = "x-atlassian-webhook-identifier";

/// What a run measured.
pub struct Driven {
    pub elapsed: Duration,
    /// One per accepted request, to its 202.
    pub latencies: Vec<Duration>,
    /// Requests not answered 202, including those that failed on the wire.
    pub failures: usize,
}

impl Driven {
    /// Requests answered 202, per second of the run.
    pub fn accepted_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
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

    /// Sends every request once, `concurrency` at a time, each to the next of `urls` in turn (a
    /// load balancer's round robin), and times each to its answer. Each of the `concurrency`
    /// senders keeps a connection to every URL, opened before the clock starts.
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

    /// `prepared` as a request to this target: its parts are shared, not copied.
    fn request(&self, prepared: &Prepared) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        Request::post(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("x-hub-signature", prepared.signature.clone())
            .header(DELIVERY_HEADER, prepared.delivery.clone())
            .body(Full::new(prepared.body.clone()))
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

    /// Takes the next unsent request until none is left; returns the latencies of the accepted
    /// ones and the number of the others.
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
            if self.send(&targets[which], which, prepared).await {
                latencies.push(sent.elapsed());
            } else {
                failures += 1;
            }
        }
        (latencies, failures)
    }

    /// Whether the request was answered 202. A request that never left (the server had closed
    /// the connection since its last answer) is sent once more on a new connection, as an HTTP
    /// client's pool does; one that was sent and not answered is a failure. A connection that
    /// failed, or whose answer said `Connection: close`, is dropped and opened again when next
    /// needed.
    async fn send(&mut self, target: &Target, which: usize, prepared: &Prepared) -> bool {
        let Ok(mut request) = target.request(prepared) else {
            return false;
        };
        for _ in 0..2 {
            let Some(connection) = self.connection(target, which).await else {
                return false;
            };
            if connection.ready().await.is_err() {
                self.connections[which] = None;
                continue;
            }
            match connection.try_send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let closes = response
                        .headers()
                        .get(CONNECTION)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    // Read to the end, so the connection can carry the next request.
                    let read = response.into_body().collect().await.is_ok();
                    if closes || !read {
                        self.connections[which] = None;
                    }
                    return read && status == StatusCode::ACCEPTED;
                }
                Err(mut failed) => {
                    self.connections[which] = None;
                    match failed.take_message() {
                        Some(unsent) => request = unsent,
                        None => return false,
                    }
                }
            }
        }
        false
    }

    /// This worker's open connection to target `which`, opened if it has none.
    async fn connection(&mut self, target: &Target, which: usize) -> Option<&mut SendRequest<Full<Bytes>>> {
        if self.connections[which].is_none() {
            self.connections[which] = Some(target.connect().await.ok()?);
        }
        self.connections[which].as_mut()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
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
                // A refusal closes its connection, as an overloaded server's 503 does.
                if refuse {
                    (StatusCode::INTERNAL_SERVER_ERROR, [(CONNECTION, "close")]).into_response()
                } else {
                    StatusCode::ACCEPTED.into_response()
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
        assert_eq!(driven.failures, 10, "the ten refused bodies, and only those");
        assert_eq!(driven.latencies.len(), 490, "one latency per accepted request");
        // A second load of the same bodies still gets delivery ids of its own.
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
