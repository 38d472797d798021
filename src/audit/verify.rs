//! Walking the chain: recompute every hash, check every link, and name the first broken one.
//!
//! The walk goes up to the head recorded when it starts (appends may continue meanwhile) and
//! reads pages of [`PAGE`] records, so memory stays flat on any length. For each `seq` in turn it
//! checks, in this order:
//! 1. the row exists (`Missing`: deleted, or the chain was cut at the end: the head says more);
//! 2. the row can be read back as a record (`Unreadable`);
//! 3. its `prev_hash` is the previous record's `hash` (`Reordered` when it is the hash of another
//!    row, i.e. rows were swapped or renumbered; `PrevHashMismatch` otherwise);
//! 4. its `hash` is the hash of its canonical form (`HashMismatch`: a field was edited);
//! 5. at the end, the last record is the head (`HeadMismatch`), and no record lies beyond the
//!    head or outside the numbering (`BeyondHead`: rows added behind the head's back, or the
//!    head moved back, which would hide every record after it from the walk while queries, the
//!    stream and the console still show them).
//!
//! This proves the rows were not altered *unless* whoever altered them also recomputed every later
//! hash and the head; an anchor outside the store defeats that: the copy in the RabbitMQ stream,
//! or the head hash `verify` prints, kept elsewhere.

use sqlx::{AssertSqlSafe, Row};

use super::chain::{self, GENESIS};
use super::log::{AuditError, COLUMNS, decode, head};
use super::record::AuditRecord;
use crate::store::Store;

/// Records read per query.
pub const PAGE: i64 = 1_000;

/// Why a link is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// No record with this `seq` (deleted).
    Missing,
    /// The row cannot be decoded (a column edited into something invalid).
    Unreadable(String),
    /// `prev_hash` is the hash of the record at `links_to`: rows were swapped or renumbered.
    Reordered { links_to: u64 },
    /// `prev_hash` is not the previous record's hash, nor any record's.
    PrevHashMismatch { expected: String, found: String },
    /// The stored hash is not the hash of the stored fields: the record was edited.
    HashMismatch { stored: String, computed: String },
    /// The chain's head (written with every append) disagrees with the last record.
    HeadMismatch { head_seq: u64, head_hash: String },
    /// The record's hash is not the one kept outside the store for it (`--anchor`): the chain
    /// was rewritten, this record or one before it, with every later hash recomputed.
    AnchorMismatch {
        anchor_hash: String,
        stored_hash: String,
    },
    /// Records past the head (up to `max_seq`), or without a `seq` (or one below 1): never appended through the
    /// chain, or the head was moved back over them.
    BeyondHead {
        head_seq: u64,
        max_seq: u64,
        unnumbered: u64,
    },
}

impl std::fmt::Display for BreakReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BreakReason::Missing => write!(f, "record missing (deleted)"),
            BreakReason::Unreadable(why) => write!(f, "record unreadable ({why})"),
            BreakReason::Reordered { links_to } => write!(
                f,
                "records reordered: its prev_hash is the hash of seq {links_to}"
            ),
            BreakReason::PrevHashMismatch { expected, found } => write!(
                f,
                "prev_hash {found} is not the previous record's hash {expected}"
            ),
            BreakReason::HashMismatch { stored, computed } => write!(
                f,
                "record altered: stored hash {stored}, its content hashes to {computed}"
            ),
            BreakReason::HeadMismatch { head_seq, head_hash } => write!(
                f,
                "the chain head (seq {head_seq}, hash {head_hash}) does not match the last record"
            ),
            BreakReason::AnchorMismatch {
                anchor_hash,
                stored_hash,
            } => write!(
                f,
                "its hash {stored_hash} is not the anchor's {anchor_hash} (kept outside the store): \
                 the chain was rewritten at or before this record"
            ),
            BreakReason::BeyondHead {
                head_seq,
                max_seq,
                unnumbered,
            } => {
                write!(f, "records outside the chain (the head is seq {head_seq})")?;
                if max_seq > head_seq {
                    write!(f, ": records up to seq {max_seq} lie past it")?;
                }
                if *unnumbered > 0 {
                    write!(f, "; {unnumbered} record(s) have no seq, or one below 1")?;
                }
                write!(f, " (added behind the chain, or the head moved back)")
            }
        }
    }
}

/// The first broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: u64,
    pub reason: BreakReason,
}

impl std::fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {}: {}", self.seq, self.reason)
    }
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The first `seq` checked.
    pub from: u64,
    /// The head when the walk started: the walk covers `from..=head_seq`.
    pub head_seq: u64,
    pub head_hash: String,
    /// Records checked and found good.
    pub checked: u64,
    pub broken: Option<BrokenLink>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Verifies the chain from `from` (1 = everything) to the current head. `progress` is called with
/// each `seq` checked. An `Err` means the store could not be read, not that the chain is broken.
pub async fn verify(store: &Store, from: u64, progress: impl FnMut(u64)) -> Result<VerifyReport, AuditError> {
    walk(store, from, None, progress).await
}

/// Verifies the records `from..=to` only (up to the head when `to` is past it): their links and
/// hashes, trusting the record before `from` as [`verify`] does. The head and the records outside
/// the chain are checked only when the slice reaches the head. A long chain is re-verified slice
/// by slice this way ([`super::watch`]) instead of in one walk.
pub async fn verify_slice(store: &Store, from: u64, to: u64) -> Result<VerifyReport, AuditError> {
    walk(store, from, Some(to), |_| {}).await
}

async fn walk(
    store: &Store,
    from: u64,
    to: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, AuditError> {
    let from = from.max(1);
    let (head_seq, head_hash) = head(store).await?;
    let last = to.map_or(head_seq, |to| to.min(head_seq));
    let mut report = VerifyReport {
        from,
        head_seq,
        head_hash: head_hash.clone(),
        checked: 0,
        broken: None,
    };
    let broken = |seq, reason| Some(BrokenLink { seq, reason });

    // The anchor: the hash of the record before `from`, trusted as the starting point.
    let mut prev_hash = if from == 1 {
        GENESIS.to_owned()
    } else {
        // Past the head too: the record before `from` must exist. `from` just past the head
        // (nothing new since the last check) verifies nothing and is intact; further past, the
        // records the caller counts on are gone (or `from` is wrong), which is not intact.
        let row = sqlx::query("SELECT hash FROM audit_records WHERE seq = $1")
            .bind(from as i64 - 1)
            .fetch_optional(store.pool())
            .await?;
        match row {
            Some(row) => row.try_get("hash")?,
            None => {
                report.broken = broken(from - 1, BreakReason::Missing);
                return Ok(report);
            }
        }
    };

    let mut expected = from;
    let sql =
        format!("SELECT {COLUMNS} FROM audit_records WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3");
    while expected <= last {
        let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(expected as i64)
            .bind(last as i64)
            .bind(PAGE)
            .fetch_all(store.pool())
            .await?;
        if rows.is_empty() {
            // Everything from `expected` to the end of the walk is gone.
            report.broken = broken(expected, BreakReason::Missing);
            return Ok(report);
        }
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            if seq != expected as i64 {
                report.broken = broken(expected, BreakReason::Missing);
                return Ok(report);
            }
            let record = match decode(row) {
                Ok(record) => record,
                Err(why) => {
                    report.broken = broken(expected, BreakReason::Unreadable(why));
                    return Ok(report);
                }
            };
            if record.prev_hash != prev_hash {
                let reason = match seq_with_hash(store, &record.prev_hash).await? {
                    Some(other) if other != expected.saturating_sub(1) => {
                        BreakReason::Reordered { links_to: other }
                    }
                    _ => BreakReason::PrevHashMismatch {
                        expected: prev_hash,
                        found: record.prev_hash.clone(),
                    },
                };
                report.broken = broken(expected, reason);
                return Ok(report);
            }
            if let Some(reason) = altered(&record)? {
                report.broken = broken(expected, reason);
                return Ok(report);
            }
            prev_hash = record.hash;
            report.checked += 1;
            progress(expected);
            expected += 1;
        }
    }
    if last < head_seq {
        // A slice short of the head: what lies beyond it is another slice's to check.
        return Ok(report);
    }
    if head_seq > 0 && prev_hash != head_hash && from <= head_seq {
        report.broken = broken(head_seq, BreakReason::HeadMismatch { head_seq, head_hash });
        return Ok(report);
    }
    report.broken = outside_the_chain(store)
        .await?
        .map(|(head_seq, max_seq, unnumbered)| BrokenLink {
            seq: head_seq + 1,
            reason: BreakReason::BeyondHead {
                head_seq,
                max_seq,
                unnumbered,
            },
        });
    Ok(report)
}

/// Checks an anchor kept outside the store: the record at `seq` must exist and have `hash`
/// (what `verify` printed as the head hash then). A chain rewritten whole, every hash
/// recomputed, verifies from the store alone; it does not match the anchor.
pub async fn check_anchor(store: &Store, seq: u64, hash: &str) -> Result<Option<BrokenLink>, AuditError> {
    let sql = format!("SELECT {COLUMNS} FROM audit_records WHERE seq = $1");
    let row = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .fetch_optional(store.pool())
        .await?;
    let Some(row) = row else {
        return Ok(Some(BrokenLink {
            seq,
            reason: BreakReason::Missing,
        }));
    };
    // The record itself, not only its hash column: with `--from` past it, the walk never
    // hashes it, and its fields could be edited under an unchanged hash.
    let record = match decode(&row) {
        Ok(record) => record,
        Err(why) => {
            return Ok(Some(BrokenLink {
                seq,
                reason: BreakReason::Unreadable(why),
            }));
        }
    };
    let reason = if let Some(reason) = altered(&record)? {
        Some(reason)
    } else if !record.hash.eq_ignore_ascii_case(hash) {
        Some(BreakReason::AnchorMismatch {
            anchor_hash: hash.to_owned(),
            stored_hash: record.hash,
        })
    } else {
        None
    };
    Ok(reason.map(|reason| BrokenLink { seq, reason }))
}

/// `HashMismatch` when `record`'s stored hash is not the hash of its fields (it was edited).
fn altered(record: &AuditRecord) -> Result<Option<BreakReason>, AuditError> {
    let computed = chain::hash_of(record)?;
    Ok((computed != record.hash).then(|| BreakReason::HashMismatch {
        stored: record.hash.clone(),
        computed,
    }))
}

/// Records past the head or without a `seq` (or one below 1), if any: `(head, highest seq, unnumbered rows)`.
/// Appends write a record and move the head in one transaction, so every committed record is at
/// most the head read after it; the records are therefore counted first, the head read after
/// (appends going on meanwhile only move the head further).
async fn outside_the_chain(store: &Store) -> Result<Option<(u64, u64, u64)>, AuditError> {
    // Two queries the index on `seq` answers, so a `--from` check stays cheap on a long trail.
    let max_seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS max_seq FROM audit_records")
        .fetch_one(store.pool())
        .await?
        .try_get("max_seq")?;
    let unnumbered: i64 =
        sqlx::query("SELECT COUNT(*) AS unnumbered FROM audit_records WHERE seq IS NULL OR seq < 1")
            .fetch_one(store.pool())
            .await?
            .try_get("unnumbered")?;
    let max_seq = u64::try_from(max_seq).unwrap_or(0);
    let unnumbered = u64::try_from(unnumbered).unwrap_or(0);
    let (head_seq, _) = head(store).await?;
    Ok((max_seq > head_seq || unnumbered > 0).then_some((head_seq, max_seq, unnumbered)))
}

/// The `seq` of the record whose hash is `hash`, if any.
async fn seq_with_hash(store: &Store, hash: &str) -> Result<Option<u64>, AuditError> {
    let row = sqlx::query("SELECT seq FROM audit_records WHERE hash = $1 ORDER BY seq LIMIT 1")
        .bind(hash)
        .fetch_optional(store.pool())
        .await?;
    Ok(row
        .map(|row| row.try_get::<i64, _>("seq"))
        .transpose()?
        .and_then(|seq| u64::try_from(seq).ok()))
}
