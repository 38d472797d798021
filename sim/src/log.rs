//! The request log: every request the simulator received, in arrival order, with who made it and
//! how it was answered. Tests count requests here instead of timing them.
//!
//! An entry is written when the request arrives and completed when the answer leaves, so a
//! request the client gave up on (a timeout) is still counted, with no status.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::lock;

/// A request's position in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seq(pub u64);

/// One received request. Never holds a credential: `principal` describes who it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub seq: u64,
    /// Arrival, unix milliseconds.
    pub at_ms: i64,
    /// Answer, unix milliseconds (absent when the client hung up first).
    pub done_ms: Option<i64>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The route template that matched, e.g. `/wiki/rest/api/group/{group}/membersByGroupId`.
    pub route: Option<String>,
    /// `basic:{email}`, `oauth:{client}:access-{n}`, `refresh:{client}:rt-{n}`, `scim-token`,
    /// `admin-key`, or `anonymous`.
    pub principal: Option<String>,
    pub status: Option<u16>,
    /// `burst` or `quota` when the simulator's own rate limit answered 429.
    pub rate_limited: Option<String>,
    /// A deprecated (name-based) endpoint was used.
    pub deprecated: bool,
    /// The cloud id of the tenant whose world served (or refused) it; `None` when it matched no
    /// world (an unknown cloud id, directory, org or credential, an unknown route) and for the
    /// simulator's own `/_sim` calls.
    #[serde(default)]
    pub cloud_id: Option<String>,
}

impl LoggedRequest {
    /// The value of query parameter `name`, if present (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    next: u64,
    entries: BTreeMap<u64, LoggedRequest>,
}

impl RequestLog {
    pub fn begin(&self, method: &str, path: &str, query: Option<&str>) -> Seq {
        let mut inner = lock(&self.inner);
        let seq = inner.next;
        inner.next += 1;
        inner.entries.insert(
            seq,
            LoggedRequest {
                seq,
                at_ms: chrono::Utc::now().timestamp_millis(),
                done_ms: None,
                method: method.to_owned(),
                path: path.to_owned(),
                query: query.map(str::to_owned),
                route: None,
                principal: None,
                status: None,
                rate_limited: None,
                deprecated: false,
                cloud_id: None,
            },
        );
        Seq(seq)
    }

    fn update(&self, seq: Seq, change: impl FnOnce(&mut LoggedRequest)) {
        if let Some(entry) = lock(&self.inner).entries.get_mut(&seq.0) {
            change(entry);
        }
    }

    pub fn set_route(&self, seq: Seq, route: &str) {
        self.update(seq, |e| e.route = Some(route.to_owned()));
    }

    pub fn set_principal(&self, seq: Seq, principal: String) {
        self.update(seq, |e| e.principal = Some(principal));
    }

    pub fn set_rate_limited(&self, seq: Seq, why: &str) {
        self.update(seq, |e| e.rate_limited = Some(why.to_owned()));
    }

    pub fn set_cloud_id(&self, seq: Seq, cloud_id: &str) {
        self.update(seq, |e| e.cloud_id = Some(cloud_id.to_owned()));
    }

    pub fn set_deprecated(&self, seq: Seq) {
        self.update(seq, |e| e.deprecated = true);
    }

    pub fn finish(&self, seq: Seq, status: u16) {
        self.update(seq, |e| {
            e.status = Some(status);
            e.done_ms = Some(chrono::Utc::now().timestamp_millis());
        });
    }

    /// Who made request `seq` (set by the gate), for events' actors; `fallback` when the gate
    /// did not say (no credentials checked on that route).
    pub fn actor(&self, seq: Seq, fallback: &str) -> String {
        lock(&self.inner)
            .entries
            .get(&seq.0)
            .and_then(|entry| entry.principal.clone())
            .unwrap_or_else(|| fallback.to_owned())
    }

    pub fn entries(&self) -> Vec<LoggedRequest> {
        lock(&self.inner).entries.values().cloned().collect()
    }

    pub fn clear(&self) {
        lock(&self.inner).entries.clear();
    }

    /// Forgets the entries one world served, keeping the others'.
    pub fn clear_tenant(&self, cloud_id: &str) {
        lock(&self.inner)
            .entries
            .retain(|_, entry| entry.cloud_id.as_deref() != Some(cloud_id));
    }
}
