//! A processor whose behaviour per account is scripted by the test, recording every call.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gatehouse::worker::{Process, ProcessError, Processed};
use handlers::Envelope;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub enum Step {
    Ok,
    Transient,
    Permanent,
    /// Take this long, then succeed.
    Sleep(Duration),
    /// Block until the test adds a permit, then succeed.
    Gate(std::sync::Arc<Semaphore>),
    /// Panic (a bug in a policy or performer).
    Panic,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub account: String,
    pub event_id: String,
    pub attempt: u32,
    pub at: Instant,
    pub finished: bool,
}

#[derive(Default)]
pub struct Scripted {
    steps: Mutex<HashMap<String, VecDeque<Step>>>,
    calls: Mutex<Vec<Call>>,
}

impl Scripted {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Scripted::default())
    }

    /// What the next calls for `account` do (then: succeed).
    pub fn script(&self, account: &str, steps: Vec<Step>) {
        self.steps
            .lock()
            .unwrap()
            .insert(account.to_owned(), steps.into());
    }

    /// Every failure from now on for `account`.
    pub fn always(&self, account: &str, step: Step, times: usize) {
        self.script(account, vec![step; times]);
    }

    pub fn calls(&self, account: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.account == account)
            .cloned()
            .collect()
    }

    /// Calls for `account` that ran to success.
    pub fn completions(&self, account: &str) -> usize {
        self.calls(account).iter().filter(|c| c.finished).count()
    }
}

#[async_trait]
impl Process for Scripted {
    async fn process(&self, envelope: &Envelope, attempt: u32) -> Result<Processed, ProcessError> {
        let account = envelope.subject.account_id.clone().unwrap_or_default();
        let step = self
            .steps
            .lock()
            .unwrap()
            .get_mut(&account)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Step::Ok);
        let index = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                account: account.clone(),
                event_id: envelope.id.to_string(),
                attempt,
                at: Instant::now(),
                finished: false,
            });
            calls.len() - 1
        };
        let result = match step {
            Step::Ok => Ok(Processed::Done),
            Step::Transient => Err(ProcessError::transient(format!("simulated 503 for {account}"))),
            Step::Permanent => Err(ProcessError::permanent(format!("simulated 400 for {account}"))),
            Step::Sleep(duration) => {
                tokio::time::sleep(duration).await;
                Ok(Processed::Done)
            }
            Step::Gate(gate) => {
                let permit = gate.acquire().await.unwrap();
                permit.forget();
                Ok(Processed::Done)
            }
            Step::Panic => panic!("simulated bug for {account}"),
        };
        if result.is_ok() {
            self.calls.lock().unwrap()[index].finished = true;
        }
        result
    }
}
