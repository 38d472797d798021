//! Steady signed load for a fault scenario: `user.deactivated` webhooks at a fixed rate, each a
//! fresh delivery id about a fresh account (so every acknowledged webhook names exactly one
//! person whose memberships must go), every answer tallied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use crate::harness::standard_webhooks_at;
use crate::react::WHSEC;

/// How the sender misbehaves, if at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sending {
    /// Each delivery once, the sender's clock right.
    Once,
    /// Each delivery once, signed with a timestamp this many seconds off.
    Skewed(i64),
    /// Each delivery sent three times at once (a sender retrying in a storm).
    Thrice,
}

/// What the load was answered.
#[derive(Debug, Default, Clone)]
pub struct LoadTally {
    /// Requests sent (copies included).
    pub sent: u64,
    /// 202: acknowledged, the promise that it will be acted on.
    pub accepted: Vec<Acknowledged>,
    /// 200 `duplicate`: a copy recognized at the door.
    pub duplicates: u64,
    /// 5xx: refused for now (the sender retries).
    pub unavailable: u64,
    /// 4xx: refused for good.
    pub refused: u64,
    /// No answer: connection refused or reset (gatehouse down), or no answer in time.
    pub no_answer: u64,
    /// The slowest answer of any kind.
    pub slowest: Duration,
    /// The slowest 5xx.
    pub slowest_unavailable: Duration,
    /// When the first and the last 5xx or unanswered request came back.
    pub unavailable_between: Option<(Instant, Instant)>,
}

impl LoadTally {
    /// Adds `other`'s answers to these.
    pub fn merge(&mut self, other: LoadTally) {
        self.sent += other.sent;
        self.accepted.extend(other.accepted);
        self.duplicates += other.duplicates;
        self.unavailable += other.unavailable;
        self.refused += other.refused;
        self.no_answer += other.no_answer;
        self.slowest = self.slowest.max(other.slowest);
        self.slowest_unavailable = self.slowest_unavailable.max(other.slowest_unavailable);
        self.unavailable_between = match (self.unavailable_between, other.unavailable_between) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, other) => one.or(other),
        };
    }

    fn unavailable_now(&mut self) {
        let now = Instant::now();
        self.unavailable_between = Some(match self.unavailable_between {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }
}

/// An acknowledged webhook.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub account: String,
    pub event_id: String,
}

/// Load running in the background.
#[derive(Debug)]
pub struct Load {
    tally: Arc<Mutex<LoadTally>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// A request gets this long before it counts as unanswered: a hang shows as a slowest answer at
/// this bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

impl Load {
    /// Sends to `urls` in turn at `per_second`, at most `parallel` in flight, one account of
    /// `accounts` per delivery, until stopped or out of accounts.
    pub fn start(
        urls: Vec<String>,
        accounts: Vec<String>,
        per_second: f64,
        parallel: usize,
        sending: Sending,
    ) -> Load {
        let tally = Arc::new(Mutex::new(LoadTally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(send_all(
            urls,
            accounts,
            per_second,
            parallel,
            sending,
            tally.clone(),
            stop.clone(),
        ));
        Load { tally, stop, task }
    }

    /// Stops sending, waits for the answers in flight, and returns the tally.
    pub async fn finish(self) -> LoadTally {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.tally.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Waits until every account was sent (or `limit` passed), then finishes.
    pub async fn drain(self, limit: Duration) -> LoadTally {
        let deadline = Instant::now() + limit;
        while !self.task.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.finish().await
    }
}

async fn send_all(
    urls: Vec<String>,
    accounts: Vec<String>,
    per_second: f64,
    parallel: usize,
    sending: Sending,
    tally: Arc<Mutex<LoadTally>>,
    stop: Arc<AtomicBool>,
) {
    let Ok(http) = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() else {
        return;
    };
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sends = tokio::task::JoinSet::new();
    for (sent, account) in accounts.into_iter().enumerate() {
        ticker.tick().await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let copies = if sending == Sending::Thrice { 3 } else { 1 };
        let skew = match sending {
            Sending::Skewed(seconds) => seconds,
            _ => 0,
        };
        let delivery_id = format!("msg_{}", ulid::Ulid::generate());
        let body = json!({"type": "user.deactivated", "timestamp": chrono::Utc::now().to_rfc3339(), "data": {"account_id": account}})
            .to_string()
            .into_bytes();
        for _ in 0..copies {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let http = http.clone();
            let Some(url) = urls.get(sent % urls.len().max(1)).cloned() else {
                return;
            };
            let account = account.clone();
            let delivery_id = delivery_id.clone();
            let body = body.clone();
            let tally = tally.clone();
            sends.spawn(async move {
                let answer = send_one(&http, &url, &delivery_id, &body, skew).await;
                drop(permit);
                if let Ok(mut tally) = tally.lock() {
                    record(&mut tally, account, answer);
                }
            });
        }
    }
    while sends.join_next().await.is_some() {}
}

/// How one request was answered, and how long it took.
#[derive(Debug)]
enum Answered {
    Status(u16, Option<String>, Duration),
    Nothing(Duration),
}

async fn send_one(http: &reqwest::Client, url: &str, delivery_id: &str, body: &[u8], skew: i64) -> Answered {
    let started = Instant::now();
    let timestamp = chrono::Utc::now().timestamp() + skew;
    let Ok(headers) = standard_webhooks_at(WHSEC, delivery_id, body, timestamp) else {
        return Answered::Nothing(started.elapsed());
    };
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let id = if status == 202 {
                response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
            } else {
                None
            };
            Answered::Status(status, id, started.elapsed())
        }
        Err(_) => Answered::Nothing(started.elapsed()),
    }
}

fn record(tally: &mut LoadTally, account: String, answer: Answered) {
    tally.sent += 1;
    let took = match answer {
        Answered::Status(202, event_id, took) => {
            tally.accepted.push(Acknowledged {
                account,
                event_id: event_id.unwrap_or_default(),
            });
            took
        }
        Answered::Status(200, _, took) => {
            tally.duplicates += 1;
            took
        }
        Answered::Status(status, _, took) if status >= 500 => {
            tally.unavailable += 1;
            tally.slowest_unavailable = tally.slowest_unavailable.max(took);
            tally.unavailable_now();
            took
        }
        Answered::Status(_, _, took) => {
            tally.refused += 1;
            took
        }
        Answered::Nothing(took) => {
            tally.no_answer += 1;
            tally.unavailable_now();
            took
        }
    };
    tally.slowest = tally.slowest.max(took);
}
