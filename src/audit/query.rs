//! Reading the trail: filtered pages in `seq` order, shared by `gatehouse audit query|tail|export`,
//! `GET /audit` and the stream relay.
//!
//! Pages are keyed by `seq` (`after_seq`), never by offset, so a reader that follows the trail
//! while it grows neither skips nor repeats a record. Filters combine with AND; `since` is
//! inclusive and `until` exclusive.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use ulid::Ulid;

use super::log::{AuditError, COLUMNS, decode, row_seq};
use super::record::{AuditKind, AuditRecord};
use crate::store::{Store, to_millis};

/// What to read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Records about this Atlassian account.
    pub account_id: Option<String>,
    /// Records about this configured tenant.
    pub tenant: Option<String>,
    /// Records about this event.
    pub event_id: Option<Ulid>,
    /// Records of any of these kinds (empty: every kind).
    pub kinds: Vec<AuditKind>,
    /// Records at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Records before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Records with a greater `seq` (the previous page's last).
    pub after_seq: Option<u64>,
    /// Records with a smaller `seq` (the previous page's last, reading newest first).
    pub before_seq: Option<u64>,
    /// Newest first (`seq` descending) instead of in chain order.
    pub newest_first: bool,
    /// At most this many records (0: no limit).
    pub limit: usize,
}

/// The filters as a person or a SIEM writes them (`gatehouse audit query --…`, `GET /audit?…`):
/// parsed into an [`AuditQuery`] in one place, so both read the same values the same way.
#[derive(Debug, Clone, Default)]
pub struct AuditFilters<'a> {
    pub account_id: Option<&'a str>,
    pub tenant: Option<&'a str>,
    /// A ULID.
    pub event_id: Option<&'a str>,
    /// Kind names (`received`, `executed`, …); blanks ignored.
    pub kinds: Vec<&'a str>,
    /// RFC 3339, a date (midnight UTC), or an age before now (`90s`, `15m`, `24h`, `7d`).
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub after_seq: Option<u64>,
    pub limit: usize,
}

impl AuditFilters<'_> {
    /// The query these filters say, or what is wrong with one of them (named as written).
    pub fn parse(&self) -> Result<AuditQuery, String> {
        Ok(AuditQuery {
            account_id: self.account_id.map(str::to_owned),
            tenant: self.tenant.map(str::to_owned),
            event_id: self
                .event_id
                .map(|e| e.parse().map_err(|_| format!("event_id `{e}` is not a ULID")))
                .transpose()?,
            kinds: super::log::parse_kinds(self.kinds.iter().copied())?,
            since: self
                .since
                .map(|t| parse_time(t).map_err(|e| format!("since: {e}")))
                .transpose()?,
            until: self
                .until
                .map(|t| parse_time(t).map_err(|e| format!("until: {e}")))
                .transpose()?,
            after_seq: self.after_seq,
            before_seq: None,
            newest_first: false,
            limit: self.limit,
        })
    }
}

/// RFC 3339, a date (midnight UTC), or an age (`90s`, `15m`, `24h`, `7d`) before now.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    crate::config::Span::parse(text)
        .and_then(|age| Utc::now().checked_sub_signed(age.as_delta()))
        .ok_or_else(|| format!("`{text}` is not a time (RFC 3339, YYYY-MM-DD, or an age like 15m, 24h, 7d)"))
}

/// One page and where the next starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Pass as `after_seq` for the next page; `None` when this page was the last one (for now).
    pub next_after_seq: Option<u64>,
}

/// Reads the records `query` selects, in `seq` order (descending when `newest_first`).
pub async fn query(store: &Store, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
    let mut conditions = Vec::new();
    let mut binds: Vec<Bind> = Vec::new();
    let param = |bind: Bind, binds: &mut Vec<Bind>| {
        binds.push(bind);
        format!("${}", binds.len())
    };
    if let Some(account) = &query.account_id {
        conditions.push(format!(
            "account_id = {}",
            param(Bind::Text(account.clone()), &mut binds)
        ));
    }
    if let Some(tenant) = &query.tenant {
        conditions.push(format!(
            "tenant = {}",
            param(Bind::Text(tenant.clone()), &mut binds)
        ));
    }
    if let Some(event) = &query.event_id {
        conditions.push(format!(
            "event_id = {}",
            param(Bind::Text(event.to_string()), &mut binds)
        ));
    }
    if !query.kinds.is_empty() {
        let list: Vec<String> = query
            .kinds
            .iter()
            .map(|k| param(Bind::Text(k.as_str().to_owned()), &mut binds))
            .collect();
        conditions.push(format!("kind IN ({})", list.join(", ")));
    }
    if let Some(since) = query.since {
        conditions.push(format!(
            "time >= {}",
            param(Bind::Int(to_millis(since)), &mut binds)
        ));
    }
    if let Some(until) = query.until {
        conditions.push(format!(
            "time < {}",
            param(Bind::Int(to_millis(until)), &mut binds)
        ));
    }
    if let Some(after) = query.after_seq {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        conditions.push(format!("seq > {}", param(Bind::Int(after), &mut binds)));
    }
    if let Some(before) = query.before_seq {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        conditions.push(format!("seq < {}", param(Bind::Int(before), &mut binds)));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM audit_records");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(if query.newest_first {
        " ORDER BY seq DESC"
    } else {
        " ORDER BY seq"
    });
    if query.limit > 0 {
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        sql.push_str(&format!(" LIMIT {}", param(Bind::Int(limit), &mut binds)));
    }
    // Every value is bound; only placeholders and fixed column names are formatted in.
    let mut statement = sqlx::query(AssertSqlSafe(sql));
    for bind in binds {
        statement = match bind {
            Bind::Text(text) => statement.bind(text),
            Bind::Int(int) => statement.bind(int),
        };
    }
    let rows = statement.fetch_all(store.pool()).await?;
    rows.iter()
        .map(|row| {
            decode(row).map_err(|reason| AuditError::Corrupt {
                seq: row_seq(row).unwrap_or(-1),
                reason,
            })
        })
        .collect()
}

/// A page of at most `query.limit` records, with the cursor of the next.
pub async fn page(store: &Store, query: &AuditQuery) -> Result<AuditPage, AuditError> {
    let records = self::query(store, query).await?;
    let full = query.limit > 0 && records.len() == query.limit;
    let next_after_seq = if full { records.last().map(|r| r.seq) } else { None };
    Ok(AuditPage {
        records,
        next_after_seq,
    })
}

/// The first `seq` recorded at or after `time` (for `tail --from TIME`); `None` if none yet.
pub async fn first_seq_since(store: &Store, time: DateTime<Utc>) -> Result<Option<u64>, AuditError> {
    let records = query(
        store,
        &AuditQuery {
            since: Some(time),
            limit: 1,
            ..AuditQuery::default()
        },
    )
    .await?;
    Ok(records.first().map(|r| r.seq))
}

enum Bind {
    Text(String),
    Int(i64),
}
